"""The guidance shift for rectified-flow models.

Noise form (ComfyUI's CONST ``model_sampling``): x = (1 − σ)·z0 + σ·ε and D = x − σ·v ≈ z0.

Derivation. Write α = 1 − σ. Dividing by α, x/α = z0 + (σ/α)·ε: the k-diffusion form with
σ_k = σ/α (ComfyUI's own equivalence: half-logSNR = −logit σ = −log σ_k). The denoiser is the
same function in both coordinates. In the k-diffusion form, adding −∇L to the score (Tweedie:
D = x_k + σ_k² ∇ log p) shifts the prediction by −σ_k² ∇_{x_k}L (the latent backbone's rule,
the original's DDIM guidance, Dhariwal & Nichol 2021 eq. 14). As x = α·x_k, ∇_{x_k}L = α·∇_xL, so

    full mode:      D' = D − (σ²/α²)·α·∇_xL = D − σ²/(1 − σ) · ∇_xL.

Shortcut mode replaces the model's Jacobian ∂D/∂x by that of the ideal denoiser of unit-variance
data (z0, ε ~ N(0, 1)): D = E[z0 | x] = α·x / (α² + σ²), so ∇_xL ≈ α/(α² + σ²)·∇_{ẑ0}L and

    shortcut mode:  D' = D − σ² / ((1 − σ)² + σ²) · ∇_{ẑ0}L,

which is σ_k²/(1 + σ_k²), the latent backbone's σ²/(1 + σ²) in k-diffusion coordinates: bounded in
[0, 1] and finite at σ = 1 (it is 1 there: at pure noise the prediction moves by the whole step).
The full-mode factor σ²/(1 − σ) is singular at σ = 1, where x carries no information about z0:
full mode is refused there (:meth:`FlowShift.check`); shortcut mode is not.

Both modes keep the latent backbone's per-element normalisation (× N/N_REF, N = the latent's
elements, N_REF = 3·256·256), the guider's ``strength`` and the region mask, so a weight means
the same on every family. ``zecon_core.latent.LatentGuidance`` applies the rule; with the ε
rule's α = 1 it is the SD backbone's shift exactly.
"""

from __future__ import annotations

import torch

from ..latent.guidance import ShiftRule

__all__ = ["FLOW_SHIFT", "FlowShift"]


class FlowShift(ShiftRule):
    """α(σ) = 1 − σ (rectified flow); full mode refused at σ ≥ 1 (its factor σ²/(1 − σ) is infinite)."""

    name = "flow"

    def signal(self, sigma: torch.Tensor) -> torch.Tensor:
        return 1 - sigma

    def check(self, sigma: torch.Tensor, mode: str) -> None:
        if mode == "full" and bool((sigma >= 1).any()):
            raise ValueError(
                f"mode: full mode cannot guide at σ = {float(sigma.max()):.4g} (pure noise: the flow shift "
                f"σ²/(1 − σ)·∇L is infinite there). Start the sampler below σ = 1 (ZeCon Latent Inversion with "
                f"denoise < 1, or the low part of SplitSigmas), set start_percent past the first step, or use "
                f"shortcut mode.")


FLOW_SHIFT = FlowShift()
