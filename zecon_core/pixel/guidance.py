"""The pixel backbone's view of the shared losses: the original's ``cond_fn``.

At respaced index i with f = sqrt(1 - ᾱ_i), the losses see the blend
x̂ = x̂0 f + x_i (1 - f) of the predicted clean image and the current sample, and
compare it with ŷ = x0 f + q_sample(x0, i, ε) (1 - f), a fresh ε per loss; MSE and
VGG stop at their cut-offs (``mse_max_t`` / ``vgg_max_t``). -∇_{x_i} L goes through
the blend and the UNet.
"""

from __future__ import annotations

import torch

from ..guidance.core import GuidanceConfig, GuidanceInputs, LossView, ZeconGuidance
from ..guidance.draws import Draws
from .diffusion import q_sample
from .schedule import Schedule


def blend_factor(s: Schedule, i: int) -> float:
    """f = sqrt(1 - ᾱ_i) of the respaced schedule (a Python float, as the original's numpy scalar)."""
    return float(s.arrays["sqrt_one_minus_alphas_cumprod"][i])


def output_blend(s: Schedule, i: int, pred_x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """x̂ = x̂0 f + x_i (1 - f): what the losses see of the output."""
    f = blend_factor(s, i)
    return pred_x0 * f + x * (1 - f)


def source_blend(s: Schedule, i: int, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """ŷ = x0 f + q_sample(x0, i, ε) (1 - f): what the losses compare against."""
    f = blend_factor(s, i)
    return x0 * f + q_sample(s, x0, i, noise) * (1 - f)


class PixelGuidance(ZeconGuidance):
    """``guidance(x, i, pred_x0) -> (-∇_x L, {loss: weighted value})`` on the original's schedule ``schedule``.

    ``pred_x0`` must be a differentiable function of ``x`` (the UNet output of this step).
    """

    def __init__(self, config: GuidanceConfig, schedule: Schedule, inputs: GuidanceInputs, draws: Draws, **kwargs):
        super().__init__(config, inputs, draws, **kwargs)
        self.s = schedule

    def __call__(self, x: torch.Tensor, i: int, pred_x0: torch.Tensor):
        """-∇_x L and the weighted loss values of the pixel backbone (the original's ``cond_fn``)."""
        return self.gradient(self.pixel_view(x, i, pred_x0), x, self._on(i), i)

    def pixel_view(self, x: torch.Tensor, i: int, pred_x0: torch.Tensor) -> LossView:
        """The pixel backbone's view: x̂ = x̂0 f + x_i (1 - f) against ŷ = x0 f + q_sample(x0, i, ε_loss) (1 - f)."""
        x_in = output_blend(self.s, i, pred_x0, x)
        x0 = self.inputs.source

        def source(loss):
            return source_blend(self.s, i, x0, self.draws.source_noise(i, loss, x0))

        return LossView(x_in, x_in, pred_x0, source)

    def _on(self, i: int, only: str | None = None) -> dict[str, bool]:
        """The pixel backbone's losses at respaced index ``i``: MSE and VGG stop at their cut-offs."""
        on = self.weights_on(only)
        on["mse"] &= i < self.cfg.mse_max_t
        on["vgg"] &= i < self.cfg.vgg_max_t
        return on

    def terms(self, x: torch.Tensor, i: int, pred_x0: torch.Tensor, only: str | None = None) -> dict[str, torch.Tensor]:
        """Weighted loss terms (each summed over the batch) at respaced index ``i`` (pixel backbone)."""
        return self.view_terms(self.pixel_view(x, i, pred_x0), self._on(i, only), i)

    def diagnose(self, x: torch.Tensor, i: int, pred_x0_fn) -> str:
        """Name the loss whose value or gradient is not finite (pixel backbone; recomputes each loss alone)."""
        return self.diagnose_view(x, i, lambda xx: self.pixel_view(xx, i, pred_x0_fn(xx)), lambda only: self._on(i, only))
