"""Pure step functions of the diffusion process (Ho et al. 2020; Song et al. 2021).

Each function takes the ``Schedule``, a respaced index ``i`` and tensors, and
returns tensors; nothing here draws random numbers or calls a network. The
arithmetic order follows guided-diffusion's ``gaussian_diffusion.py`` so that
float32 results agree with the original to rounding.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .schedule import Schedule


class MeanVariance(NamedTuple):
    """p(x_{i-1} | x_i) of a learned-range epsilon model (``p_mean_variance``)."""

    mean: torch.Tensor
    variance: torch.Tensor
    log_variance: torch.Tensor
    pred_x0: torch.Tensor


def q_sample(s: Schedule, x0: torch.Tensor, i: int, noise: torch.Tensor) -> torch.Tensor:
    """x_i = sqrt(ᾱ_i) x0 + sqrt(1 - ᾱ_i) ε  (DDPM eq. 4)."""
    return s.coef("sqrt_alphas_cumprod", i, x0) * x0 + s.coef("sqrt_one_minus_alphas_cumprod", i, x0) * noise


def pred_x0_from_eps(s: Schedule, x: torch.Tensor, i: int, eps: torch.Tensor) -> torch.Tensor:
    """x̂0 = sqrt(1/ᾱ_i) x_i - sqrt(1/ᾱ_i - 1) ε."""
    return s.coef("sqrt_recip_alphas_cumprod", i, x) * x - s.coef("sqrt_recipm1_alphas_cumprod", i, x) * eps


def eps_from_pred_x0(s: Schedule, x: torch.Tensor, i: int, pred_x0: torch.Tensor) -> torch.Tensor:
    """ε = (sqrt(1/ᾱ_i) x_i - x̂0) / sqrt(1/ᾱ_i - 1)."""
    return (s.coef("sqrt_recip_alphas_cumprod", i, x) * x - pred_x0) / s.coef("sqrt_recipm1_alphas_cumprod", i, x)


def posterior_mean(s: Schedule, x0: torch.Tensor, x: torch.Tensor, i: int) -> torch.Tensor:
    """Mean of q(x_{i-1} | x_i, x0) (DDPM eq. 7)."""
    return s.coef("posterior_mean_coef1", i, x) * x0 + s.coef("posterior_mean_coef2", i, x) * x


def p_mean_variance(s: Schedule, model_output: torch.Tensor, x: torch.Tensor, i: int) -> MeanVariance:
    """Mean, learned-range variance and x̂0 from a ``[eps, v]`` model output (Nichol & Dhariwal eq. 15)."""
    c = x.shape[1]
    eps, v = model_output[:, :c], model_output[:, c:]
    if v.shape[1] != c:
        raise ValueError(f"the model must predict eps and variance values ({2 * c} channels), got {model_output.shape[1]}")
    min_log = s.coef("posterior_log_variance_clipped", i, x)
    max_log = s.coef("log_betas", i, x)
    frac = (v + 1) / 2
    log_variance = frac * max_log + (1 - frac) * min_log
    pred_x0 = pred_x0_from_eps(s, x, i, eps)
    return MeanVariance(posterior_mean(s, pred_x0, x, i), torch.exp(log_variance), log_variance, pred_x0)


def condition_mean(out: MeanVariance, grad: torch.Tensor) -> torch.Tensor:
    """Guided mean μ + Σ g with g = -∇L (Sohl-Dickstein et al. 2015 / ``condition_mean``)."""
    return out.mean.float() + out.variance * grad.float()


def ddpm_step(mean: torch.Tensor, log_variance: torch.Tensor, i: int, noise: torch.Tensor) -> torch.Tensor:
    """Ancestral step x_{i-1} = mean + exp(log Σ / 2) z, without noise at i = 0."""
    if i == 0:
        return mean
    return mean + torch.exp(0.5 * log_variance) * noise


def condition_score(s: Schedule, out: MeanVariance, x: torch.Tensor, i: int, grad: torch.Tensor) -> torch.Tensor:
    """Guided x̂0 from ε' = ε - sqrt(1 - ᾱ_i) g (Song et al. 2021 / ``condition_score``)."""
    alpha_bar = s.coef("alphas_cumprod", i, x)
    eps = eps_from_pred_x0(s, x, i, out.pred_x0) - (1 - alpha_bar).sqrt() * grad
    return pred_x0_from_eps(s, x, i, eps)


def ddim_step(s: Schedule, pred_x0: torch.Tensor, x: torch.Tensor, i: int, eta: float = 0.0,
              noise: torch.Tensor | None = None) -> torch.Tensor:
    """DDIM update x_{i-1} from x̂0 (DDIM eq. 12); ``noise`` is needed only when eta > 0."""
    eps = eps_from_pred_x0(s, x, i, pred_x0)
    ab = s.coef("alphas_cumprod", i, x)
    ab_prev = s.coef("alphas_cumprod_prev", i, x)
    sigma = eta * torch.sqrt((1 - ab_prev) / (1 - ab)) * torch.sqrt(1 - ab / ab_prev)
    mean = pred_x0 * torch.sqrt(ab_prev) + torch.sqrt(1 - ab_prev - sigma**2) * eps
    if i == 0 or eta == 0:
        return mean
    return mean + sigma * noise


def ddim_inversion_step(s: Schedule, pred_x0: torch.Tensor, x: torch.Tensor, i: int) -> torch.Tensor:
    """Deterministic DDIM step forward in time, x_i -> x_{i+1} (eq. 12 reversed, ``ddim_reverse_sample``)."""
    eps = eps_from_pred_x0(s, x, i, pred_x0)
    ab_next = s.coef("alphas_cumprod_next", i, x)
    return pred_x0 * torch.sqrt(ab_next) + torch.sqrt(1 - ab_next) * eps
