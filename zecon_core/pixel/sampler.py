"""DDIM inversion and guided reverse sampling loops.

``denoise(x, i)`` is the network output (``[eps, v]``, float32) at respaced
index ``i``; ``guidance(x, i, pred_x0)`` returns (-∇L, loss values). Each
guided step runs the UNet once, with gradients: its output gives the step's
mean and variance, and its graph carries the guidance gradient (the original
ran the UNet a second time, without gradients, for the mean).
``callback(step, total, x, pred_x0)`` is called after every step with the
number of finished steps; it may raise to stop the loop.

With a region ``mask`` (``mask.prepare_mask``) the guidance gradient acts only
inside the mask, and after every step the region outside it is replaced by the
unguided trajectory of the same start at the same noise level (Blended
Diffusion's blending, with the sampler's own reconstruction of the source as
background): outside the mask the result is the unguided reconstruction.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch

from . import diffusion as D
from ..guidance.draws import Draws
from ..guidance.core import NonFiniteError
from ..guidance.mask import inside, keep_outside
from .schedule import Schedule

Denoise = Callable[[torch.Tensor, int], torch.Tensor]
Callback = Callable[[int, int, torch.Tensor, torch.Tensor], None]
SAMPLERS = ("ddpm", "ddim")


def ddim_invert(denoise: Denoise, x0: torch.Tensor, s: Schedule, steps: int,
                callback: Callback | None = None) -> torch.Tensor:
    """Deterministic DDIM from x0 forward over indices 0..steps-1 (``ddim_reverse_sample_loop``)."""
    x = x0
    with torch.no_grad():
        for i in range(steps):
            out = D.p_mean_variance(s, denoise(x, i), x, i)
            x = D.ddim_inversion_step(s, out.pred_x0, x, i)
            _check_finite(x, f"DDIM inversion step {i + 1}/{steps} produced a non-finite latent")
            if callback is not None:
                callback(i + 1, steps, x, out.pred_x0)
    return x


class StepResult(NamedTuple):
    x: torch.Tensor              # x_{i-1}
    pred_x0: torch.Tensor        # x̂0 of the step (guided for DDIM, the network's for DDPM, as the original yields)
    out: D.MeanVariance          # the network's p(x_{i-1} | x_i), detached
    grad: torch.Tensor | None    # -∇L, or None without guidance


def step(denoise: Denoise, s: Schedule, x: torch.Tensor, i: int, *, method: str = "ddpm", eta: float = 0.0,
         guidance=None, draws: Draws, exact_guidance_index: bool = False,
         mask: torch.Tensor | None = None) -> StepResult:
    """One reverse step at respaced index ``i``.

    ``ddpm``: ancestral step, guidance shifts the mean (``condition_mean``); the step
    noise is drawn before the guidance runs, as in the original. ``ddim``: guidance
    shifts eps (``condition_score``); ``eta`` > 0 adds noise drawn after the guidance.
    ``exact_guidance_index``: the original's guidance recovers its index by flooring
    ``t * N / 1000``, which differs from ``i`` for some sectioned respacings; True uses ``i``.
    ``mask``: the gradient is restricted to it (``mask.inside``).
    """
    noise = draws.step_noise(i, x) if method == "ddpm" else None
    out, grad = _model_output(denoise, s, x, i, guidance, exact_guidance_index)
    if grad is not None:
        grad = inside(grad, mask)
    if method == "ddpm":
        mean = out.mean if grad is None else D.condition_mean(out, grad)
        return StepResult(D.ddpm_step(mean, out.log_variance, i, noise), out.pred_x0, out, grad)
    pred_x0 = out.pred_x0 if grad is None else D.condition_score(s, out, x, i, grad)
    noise = draws.step_noise(i, x) if eta > 0 and i > 0 else None
    return StepResult(D.ddim_step(s, pred_x0, x, i, eta, noise), pred_x0, out, grad)


def sample(denoise: Denoise, x: torch.Tensor, s: Schedule, start: int, *, method: str = "ddpm",
           eta: float = 0.0, guidance=None, draws: Draws, callback: Callback | None = None,
           exact_guidance_index: bool = False, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Reverse process from index ``start`` down to 0; returns (x_0 sample, last x̂0). See ``step``.

    ``mask`` [B, 1, H, W] (or None): restyle inside it only. The unguided trajectory that fills the
    outside runs beside the guided one (one more UNet forward per step, without gradients) and
    uses the same step noise, so a run's draws are those of the unmasked run.
    """
    if method not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {method!r}")
    if not eta >= 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    total = start + 1
    pred_x0 = x
    x_ref = x
    if mask is not None:
        draws = SharedStepNoise(draws)
    for k, i in enumerate(range(start, -1, -1)):
        try:
            x, pred_x0, _, _ = step(denoise, s, x, i, method=method, eta=eta, guidance=guidance, draws=draws,
                                    exact_guidance_index=exact_guidance_index, mask=mask)
            if mask is not None:
                ref = step(denoise, s, x_ref, i, method=method, eta=eta, draws=draws)
                x_ref, x = ref.x, keep_outside(x, ref.x, mask)
                pred_x0 = keep_outside(pred_x0, ref.pred_x0, mask)
        except NonFiniteError as e:
            raise NonFiniteError(f"step {k + 1}/{total} (index {i}): {e}") from None
        _check_finite(x, f"step {k + 1}/{total} (index {i}) produced a non-finite sample")
        if callback is not None:
            callback(k + 1, total, x, pred_x0)
    return x, pred_x0


class SharedStepNoise:
    """Draws' step noise, drawn once per step and handed again to the second trajectory of a masked run."""

    def __init__(self, draws: Draws):
        self.draws = draws
        self.drawn: tuple[int, torch.Tensor] | None = None

    def step_noise(self, i: int, like: torch.Tensor) -> torch.Tensor:
        if self.drawn is None or self.drawn[0] != i:
            self.drawn = (i, self.draws.step_noise(i, like))
        return self.drawn[1]


def _model_output(denoise, s, x, i, guidance, exact_index):
    """p(x_{i-1}|x_i) of the network and, with guidance, -∇L from the same forward pass."""
    if guidance is None:
        with torch.no_grad():
            return D.p_mean_variance(s, denoise(x, i), x, i), None
    gi = i if exact_index else s.guidance_index(i)
    with torch.enable_grad():
        x = x.detach().requires_grad_()
        out = D.p_mean_variance(s, denoise(x, i), x, i)
        pred_g = out.pred_x0 if gi == i else D.p_mean_variance(s, denoise(x, gi), x, gi).pred_x0
        grad, _ = guidance(x, gi, pred_g)
    if not torch.isfinite(grad).all():
        culprit = guidance.diagnose(x, gi, lambda xx: D.p_mean_variance(s, denoise(xx, gi), xx, gi).pred_x0)
        raise NonFiniteError(f"the guidance gradient is not finite; non-finite loss: {culprit}")
    return D.MeanVariance(*(t.detach() for t in out)), grad


def _check_finite(x: torch.Tensor, message: str) -> None:
    if not torch.isfinite(x).all():
        raise NonFiniteError(message)
