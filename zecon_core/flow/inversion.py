"""Inversion of a clean latent with a rectified-flow model: Euler up the flipped flow sigmas.

With x = (1 − σ)·z0 + σ·ε the flow ODE is dx/dσ = v = ε − z0 = (x − D(x, σ))/σ, so the Euler step
x ← x + (σ_{k+1} − σ_k)·(x − D)/σ_k of ``zecon_core.latent.invert`` is the flow's own Euler step
(and DDIM, η = 0; ComfyUI's ``euler`` and ``ddim`` take the same step down). Nothing in it divides by
1 − σ. The levels must stay below 1: at σ = 1 the sample is pure noise, the inverted latent of
ComfyUI's sampler output convention (x / (1 − σ_last), ``model_sampling.inverse_noise_scaling``)
is infinite, and there is nothing left of the source to keep.
"""

from __future__ import annotations

import torch

from ..latent.inversion import Callback, Denoise, check_ascending
from ..latent.inversion import invert as invert_levels

__all__ = ["check_flow_sigmas", "invert"]


def check_flow_sigmas(sigmas: torch.Tensor, name: str = "sigmas") -> None:
    """Raise ``ValueError`` (naming ``name``) when a flow schedule reaches σ = 1 or leaves [0, 1]."""
    top = float(sigmas.max()) if sigmas.numel() else 0.0
    if top >= 1:
        raise ValueError(
            f"{name}: the schedule reaches σ = {top:.4g}; a rectified-flow model's levels lie in [0, 1) and at "
            f"σ = 1 the picture is pure noise (the inverted latent x/(1 − σ) is infinite and nothing of the source "
            f"is left). Use denoise < 1 or the low part of SplitSigmas.")


def invert(denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, callback: Callback | None = None) -> torch.Tensor:
    """Carry the clean latent ``x`` up the ascending flow levels ``sigmas`` (all < 1); see
    ``zecon_core.latent.invert`` for the step, the read at σ = 0 and ``callback``."""
    check_ascending(sigmas)
    check_flow_sigmas(sigmas)
    return invert_levels(denoise, x, sigmas, callback)
