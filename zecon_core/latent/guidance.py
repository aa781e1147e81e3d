"""The guided denoised prediction of the latent backbone.

k-diffusion convention: x = z0 + σ ε, a denoiser D(x, σ) ≈ z0, and guidance by a loss L
shifts the prediction, D' = D − σ² ∇_x L. For Euler / DDIM this is the original's DDIM
guidance (``condition_score``, Dhariwal & Nichol 2021, eq. 14): shifting ε̂ by
−√(1 − ᾱ) ∇_{x_t} L moves x̂0 by −σ² ∇_x L in x = x_t / √ᾱ. Any ComfyUI sampler takes D'.

The losses are the shared ones (:meth:`zecon_core.guidance.core.ZeconGuidance.gradient`, paper
eq. 8) on this view of the prediction ẑ0: CLIP, VGG and range on the decoded image
decode(ẑ0); ZeCon (PatchNCE on the UNet encoder's features at t = 0, eq. 7) and MSE on ẑ0
itself, against the clean source latent; the image side of the source is decode(source latent).

Modes:

* ``shortcut``: no backward through the diffusion UNet (as in MPGD / RB-Modulation): the UNet's
  Jacobian is replaced by that of the ideal denoiser of unit-variance data, D = x / (1 + σ²), so
  ∇_x L ≈ ∇_{ẑ0} L / (1 + σ²) (SD's latent scale factor makes its latents about unit variance).
  The shift σ²/(1 + σ²) ∇_{ẑ0} L = (1 − ᾱ) ∇_{ẑ0} L stays bounded at any noise level, where taking
  the Jacobian as the identity would overshoot the source by σ² at high noise.
* ``full``: ∇_x L = (∂ẑ0/∂x)ᵀ ∇_{ẑ0} L through the UNet, as the original differentiates
  through the ADM UNet. Both modes compute the same ∇_{ẑ0} L first.

Scale: every loss is a mean, so its gradient per latent element shrinks with the number of
elements N = C·h·w. The shift is multiplied by N / N_REF, N_REF = 3·256·256 the original's pixels
per image, so the original's weights keep the per-element strength they have on the 256-px ADM
at any latent size: D' = D − σ² (N / N_REF) ∇L, times the guider's ``strength``.

Noise form: the shift above is written for x = z0 + σ ε. Other backbones noise as
x = α(σ) z0 + σ ε (rectified flow: α = 1 − σ, ``zecon_core.flow``); a :class:`ShiftRule` gives α
and the same derivation in those coordinates (x/α = z0 + (σ/α) ε) gives the full-mode shift
D' = D − (σ²/α) ∇_x L and the shortcut shift σ²/(α² + σ²) ∇_{ẑ0} L; α = 1 is the rule above.

With a region mask m (``zecon_core.guidance.mask`` at the latent's size, 1 = restyle), the shift is
m σ² ∇L and D'' = m D' + (1 − m) z_src: outside the region the prediction is the source, so the
sample ends on the source latent there (exactly, for samplers whose last step returns D).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..guidance.core import CONTENT_LOSSES, N_REF, GuidanceConfig, LossView, NonFiniteError, ZeconGuidance
from ..guidance.mask import inside, keep_outside

__all__ = ["EPS_SHIFT", "GUIDANCE_MODES", "LATENT_DEFAULTS", "LatentGuidance", "LatentSource", "N_REF", "ShiftRule",
           "needs_decoder", "source_for_batch"]

GUIDANCE_MODES = ("shortcut", "full")

#: The guider's weights when no ZeCon Guidance node sets them: the original's, VGG off, and the ZeCon
#: weight at 8000 instead of 500 — chosen on the miniature world's benchmarks (bench/RESULTS.md, "Quality
#: (miniature world)": latent guider and flow world; 24 edits x 3 seeds each). On the SD1.5-config UNet it
#: keeps the object's geometry better at the same target rate (IoU +0.035 [+0.017, +0.057] at strength 1;
#: success +0.10 [+0.01, +0.21] at strength 4; shapes kept +0.14 [+0.04, +0.26] at strength 10); on the
#: SD3-config MMDiT, shapes kept +0.125 [+0.028, +0.250] and IoU +0.020 [+0.009, +0.032] at strength 1, the
#: same target rate. It never lowered the target rate there. Measured on world models of 1 M parameters only.
LATENT_DEFAULTS = GuidanceConfig(vgg=0.0, zecon=8000.0)

Decode = Callable[[torch.Tensor], torch.Tensor]     # model-space latent [B, C, h, w] -> image [B, 3, H, W] in [-1, 1]


def needs_decoder(on: dict[str, bool]) -> bool:
    """Whether any loss that sees the decoded image (CLIP, VGG, range) is on."""
    return any(v for k, v in on.items() if k not in CONTENT_LOSSES)


class ShiftRule:
    """How the backbone noises a clean latent, x = α(σ)·z0 + σ·ε, and so how far a loss gradient moves D.

    With the k-diffusion sigma σ_k = σ/α and x_k = x/α (x = z0 + σ_k ε in those coordinates) the
    ε-rule D' = D − σ_k² ∇_{x_k} L becomes D' = D − (σ²/α) ∇_x L (as ∇_{x_k} = α ∇_x); the ideal
    denoiser of unit-variance data, D = α x / (α² + σ²), has the Jacobian α / (α² + σ²), so the
    shortcut shift is σ²/(α² + σ²) ∇_{ẑ0} L. This base class is the ε / v form, α = 1: D' = D − σ² ∇_x L
    and σ²/(1 + σ²) ∇_{ẑ0} L.
    """

    name = "eps"

    def signal(self, sigma: torch.Tensor) -> torch.Tensor:
        """α(σ), the clean latent's scale in x."""
        return torch.ones_like(sigma)

    def check(self, sigma: torch.Tensor, mode: str) -> None:
        """Raise ``ValueError`` where the shift of ``mode`` is undefined at ``sigma`` (never for α = 1)."""


EPS_SHIFT = ShiftRule()


@dataclass(eq=False)
class LatentSource:
    """What a latent run keeps of its source: the clean latent (model space) and that latent decoded."""

    latent: torch.Tensor               # [B or 1, C, h, w]
    image: torch.Tensor | None = None  # [B or 1, 3, H, W] in [-1, 1]; None when no loss sees images

    @classmethod
    def decoded(cls, latent: torch.Tensor, decode: Decode | None) -> "LatentSource":
        """The source of ``latent``, decoded once with the decoder the guidance uses (if any)."""
        if decode is None:
            return cls(latent)
        with torch.no_grad():
            return cls(latent, decode(latent).float())


def source_for_batch(latent: torch.Tensor, batch: int) -> torch.Tensor:
    """The source latents of a batch of ``batch`` sampled images: ``latent`` itself, or one source picture
    copied for every image (several seeds or styles of one picture), so every loss compares each image
    with its own copy, exactly as with a batch of copies of that picture."""
    n = latent.shape[0]
    if n == batch:
        return latent
    if n != 1:
        raise ValueError(f"{n} source latents for a batch of {batch} (give one source, or one per image)")
    return latent.expand(batch, *latent.shape[1:]).contiguous()


class LatentGuidance:
    """``guidance(denoise, x, sigma, step, mode) -> (D', {loss: weighted value})``.

    ``losses``: the shared :class:`ZeconGuidance` (its ``features`` take model-space latents);
    ``decode``: model-space latent -> image in [-1, 1], differentiable (None when no loss sees the image,
    see :func:`needs_decoder`); ``source``: the source;
    ``mask``: None, or [B or 1, 1, h, w] in [0, 1] at the latent's size (1 = restyle);
    ``strength``: multiplies the shift; ``rule``: the noise form (:class:`ShiftRule`, default ε / v).
    After each call ``shift_ratio`` holds max |shift| / max |D| of that step (how far the shift outgrows
    the prediction: far above 1, the result is the shift, not a picture).
    """

    def __init__(self, losses: ZeconGuidance, decode: Decode | None, source: LatentSource,
                 mask: torch.Tensor | None = None, strength: float = 1.0, rule: ShiftRule = EPS_SHIFT):
        self.losses, self.decode, self.source, self.mask = losses, decode, source, mask
        self.strength = float(strength)
        self.rule = rule
        self.shift_ratio = 0.0   # of the last call: max |shift| / max |D|
        self.on = losses.weights_on()
        if needs_decoder(self.on) and (decode is None or source.image is None):
            raise ValueError("the CLIP, VGG and range losses need a decoder and the decoded source")

    def shift_scale(self, sigma: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """σ² (N / N_REF) strength per item, shaped to broadcast over ``like`` [B, C, h, w].

        The shift is this times ∇_x L / α (full) or ∇_{ẑ0} L / (α² + σ²) (shortcut); see :class:`ShiftRule`."""
        n = like[0].numel()
        s2 = sigma.to(like).reshape(-1, *([1] * (like.ndim - 1))).pow(2)
        return s2 * (n / N_REF * self.strength)

    def view(self, z0: torch.Tensor) -> LossView:
        """CLIP / VGG / range see decode(ẑ0); ZeCon and MSE see ẑ0 (against the source latent).

        Without a decoder (only ZeCon and MSE on) the view's image is ẑ0 itself, never looked at."""
        image = z0 if self.decode is None else self.decode(z0).float()
        latent, source_image = self.source.latent, self.source.image

        def source(loss):
            return latent if loss in CONTENT_LOSSES else source_image

        return LossView(image, z0, image, source)

    def prediction_gradient(self, z0: torch.Tensor, step: int):
        """-∇_{ẑ0} L at the prediction ``z0`` and the weighted loss values (the same in both modes)."""
        with torch.enable_grad():
            z = z0.detach().float().clone().requires_grad_()
            g, values = self.losses.gradient(self.view(z), z, self.on, step)
        if not torch.isfinite(g).all():
            culprit = self.losses.diagnose_view(z0.float(), step, self.view, self.losses.weights_on)
            raise NonFiniteError(f"the guidance gradient is not finite; non-finite loss: {culprit}")
        return g, values

    def __call__(self, denoise: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, sigma: torch.Tensor,
                 step: int, mode: str = "shortcut"):
        """D' of one model evaluation at noise level ``sigma`` [B]; ``denoise(x) -> D(x, sigma)``.

        ``shortcut``: ``denoise`` runs without gradients; ``full``: with gradients, so it must be
        differentiable with respect to ``x`` (autograd-safe weights).
        """
        if mode not in GUIDANCE_MODES:
            raise ValueError(f"mode must be one of {GUIDANCE_MODES}, got {mode!r}")
        self.rule.check(sigma, mode)
        if mode == "shortcut":
            with torch.no_grad():
                den = denoise(x)
            g, values = self.prediction_gradient(den, step)
            s = sigma.to(g).reshape(-1, *([1] * (g.ndim - 1)))
            g = g / (self.rule.signal(s).pow(2) + s.pow(2))
        else:
            with torch.enable_grad():
                xg = x.detach().clone().requires_grad_()   # a normal tensor, also for an inference-mode x
                den_g = denoise(xg)
                g, values = self.prediction_gradient(den_g, step)
                g = torch.autograd.grad(den_g.float(), xg, g)[0] if values else torch.zeros_like(g)
            den = den_g.detach()
            g = g / self.rule.signal(sigma.to(g).reshape(-1, *([1] * (g.ndim - 1))))
            if not torch.isfinite(g).all():
                raise NonFiniteError("the guidance gradient is not finite after the backward through the UNet")
        shift = self.shift_scale(sigma, g) * inside(g, self.mask)
        self.shift_ratio = float(shift.abs().max() / den.float().abs().max().clamp_min(1e-6))
        out = den.float() + shift
        out = keep_outside(out, self.source.latent.to(out), self.mask)
        return out.to(den.dtype), values
