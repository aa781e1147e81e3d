"""Deterministic inversion of a clean latent: Euler on the probability-flow ODE, up the noise levels.

In the k-diffusion convention x_σ = z0 + σ ε and the ODE is dx/dσ = (x − D(x, σ)) / σ
(Karras et al. 2022, eq. 3 with σ(t) = t). Integrating it with Euler from σ = 0 upwards
is DDIM inversion (eta = 0) for ε-prediction models; v-prediction models go through the
same formula because D hides the parameterisation. Run backwards with Euler over the
reversed levels, a constant-ε model returns exactly to where the inversion started.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..guidance.core import NonFiniteError

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]   # (x [B, ...], σ [B]) -> D(x, σ)
Callback = Callable[[int, int, torch.Tensor, torch.Tensor], None]


def check_ascending(sigmas: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``sigmas`` is a 1-D, finite, non-negative, strictly ascending list of 2+ levels."""
    if sigmas.ndim != 1 or sigmas.shape[0] < 2:
        raise ValueError(f"inversion needs at least two noise levels, got sigmas of shape {tuple(sigmas.shape)}")
    if not torch.isfinite(sigmas).all() or (sigmas < 0).any():
        raise ValueError("the noise levels must be finite and >= 0")
    if not (sigmas[1:] > sigmas[:-1]).all():
        raise ValueError("inversion runs up the noise levels: sigmas must be strictly ascending")


def invert(denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor, callback: Callback | None = None) -> torch.Tensor:
    """Carry ``x`` (at noise level ``sigmas[0]``, usually 0) up to ``sigmas[-1]``; returns the latent there.

    One Euler step per interval: ε̂ = (x − D(x, s)) / s, x ← x + (σ_{k+1} − σ_k) ε̂, with s = σ_k,
    or σ_{k+1} for a step that starts at σ = 0 (the noise direction of a clean latent is read at
    the first level above it, as DDIM inversion reads it at its first respaced timestep).
    ``callback(step, total, x, denoised)`` after every step; it may raise to stop.
    """
    check_ascending(sigmas)
    total = sigmas.shape[0] - 1
    ones = x.new_ones(x.shape[0])
    with torch.no_grad():
        for k in range(total):
            s, s_next = sigmas[k], sigmas[k + 1]
            s_eval = s if s > 0 else s_next
            den = denoise(x, s_eval * ones)
            x = x + (s_next - s) * (x - den) / s_eval
            if not torch.isfinite(x).all():
                raise NonFiniteError(f"inversion step {k + 1}/{total} produced a non-finite latent")
            if callback is not None:
                callback(k + 1, total, x, den)
    return x
