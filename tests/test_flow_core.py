"""zecon_core.flow: the rectified-flow shift and inversion, exact on a constant-velocity model (pure torch)."""
from __future__ import annotations

import pytest
import torch

from zecon_core.flow import FLOW_SHIFT, invert
from zecon_core.guidance.core import LOSS_NAMES, GuidanceConfig, GuidanceInputs, ZeconGuidance
from zecon_core.guidance.draws import Draws
from zecon_core.latent import EPS_SHIFT, N_REF, LatentGuidance, LatentSource


def constant_velocity(c):
    """A flow model whose velocity is ``c`` everywhere: D(x, σ) = x − σ·c."""
    def denoise(x, sigma):
        return x - sigma.reshape(-1, *([1] * (x.ndim - 1))) * c
    return denoise


def euler_down(denoise, x, sigmas):
    """k-diffusion's sample_euler (no churn), ComfyUI's 'euler': with CONST it is the flow's Euler step."""
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        x = x + (s_next - s) * (x - denoise(x, s * x.new_ones(x.shape[0]))) / s
    return x


def mse_guidance(source, rule, strength=1.0, weight=3.0):
    """The latent guidance with only the MSE loss on (no decoder, no features): ∇_{ẑ0}L = 2w(ẑ0 − z_src)/N."""
    config = GuidanceConfig(**{k: 0.0 for k in LOSS_NAMES}).replace(mse=weight)
    zero = torch.zeros(1, 1)
    losses = ZeconGuidance(config, GuidanceInputs(None, zero, zero), Draws([0] * source.shape[0]))
    return LatentGuidance(losses, None, LatentSource(source), strength=strength, rule=rule)


@pytest.fixture
def case():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 16, 8, 8, generator=g, dtype=torch.float64)
    c = torch.randn(2, 16, 8, 8, generator=g, dtype=torch.float64)
    return x0, c


def test_inversion_then_zero_strength_euler_returns_to_the_source_exactly(case):
    x0, c = case
    up = torch.tensor([0.0, 0.02, 0.3, 0.55, 0.9], dtype=torch.float64)
    xt = invert(constant_velocity(c), x0, up)
    torch.testing.assert_close(xt, x0 + up[-1] * c, rtol=0, atol=1e-13)   # the flow ODE's solution, v = c
    torch.testing.assert_close(euler_down(constant_velocity(c), xt, up.flip(0)), x0, rtol=0, atol=1e-13)


def test_zero_strength_guidance_is_the_plain_prediction_and_reconstructs(case):
    x0, c = case
    up = torch.tensor([0.0, 0.1, 0.4, 0.7], dtype=torch.float64)
    xt = invert(constant_velocity(c), x0, up)
    guidance = mse_guidance(x0.float() + 1, FLOW_SHIFT, strength=0.0)

    def guided(x, sigma):
        return guidance(lambda xx: constant_velocity(c)(xx, sigma), x, sigma, 0, "shortcut")[0]

    torch.testing.assert_close(euler_down(guided, xt, up.flip(0)), x0, rtol=0, atol=1e-5)


@pytest.mark.parametrize("sigma", [0.05, 0.5, 0.93])
def test_the_shift_equals_the_written_formula_in_both_modes(case, sigma):
    x0, c = case
    x0, c = x0.float(), c.float()
    src = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1))
    s = torch.full((2,), sigma)
    x = (1 - sigma) * x0 + sigma * torch.randn(x0.shape, generator=torch.Generator().manual_seed(2))
    den = constant_velocity(c)(x, s)
    w, strength, n = 3.0, 0.7, x0[0].numel()
    grad = 2 * w * (den - src) / n                       # ∇_{ẑ0} L of w·mean((ẑ0 − src)²) per image
    out = {}
    for mode in ("shortcut", "full"):
        out[mode], values = mse_guidance(src, FLOW_SHIFT, strength, w)(lambda xx: constant_velocity(c)(xx, s), x, s, 0,
                                                                         mode)
        assert set(values) == {"mse"}
    norm = n / N_REF * strength
    torch.testing.assert_close(out["shortcut"], den - sigma ** 2 / ((1 - sigma) ** 2 + sigma ** 2) * norm * grad,
                               rtol=1e-5, atol=1e-6)
    # full: ∂D/∂x = I for a constant velocity, so ∇_x L = ∇_{ẑ0} L
    torch.testing.assert_close(out["full"], den - sigma ** 2 / (1 - sigma) * norm * grad, rtol=1e-5, atol=1e-6)


def test_full_and_shortcut_share_the_gradient_at_the_prediction(case):
    x0, c = case
    x0, c = x0.float(), c.float()
    sigma = torch.tensor([0.6, 0.6])
    x = 0.4 * x0 + 0.6 * c
    guidance = mse_guidance(x0 * 0.5, FLOW_SHIFT, strength=N_REF / x0[0].numel())   # shift σ²·∇, above float32 noise
    den = constant_velocity(c)(x, sigma)
    g_pred, _ = guidance.prediction_gradient(den, 0)
    scale = guidance.shift_scale(sigma, den)
    full, _ = guidance(lambda xx: constant_velocity(c)(xx, sigma), x, sigma, 0, "full")
    short, _ = guidance(lambda xx: constant_velocity(c)(xx, sigma), x, sigma, 0, "shortcut")
    torch.testing.assert_close((full - den) / scale * (1 - 0.6), g_pred, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close((short - den) / scale * (0.4 ** 2 + 0.6 ** 2), g_pred, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("mode", ["shortcut", "full"])
def test_the_flow_shift_is_the_eps_shift_in_k_diffusion_coordinates(case, mode):
    """x_k = x/(1 − σ), σ_k = σ/(1 − σ): the ε rule there gives the same guided prediction (the derivation)."""
    x0, c = case
    x0, c = x0.float(), c.float()
    sigma = torch.tensor([0.35, 0.8])
    alpha = (1 - sigma).view(-1, 1, 1, 1)
    x = alpha * x0 + sigma.view(-1, 1, 1, 1) * c
    weights = torch.linspace(0.5, 2.0, x0[0].numel()).view(x0[0].shape)

    def denoise_flow(xx):            # a model with a non-identity Jacobian, D = W·x + b
        return weights * xx + 0.1 * c

    def denoise_k(xk):
        return denoise_flow(xk * alpha)

    src, strength = x0 * 0.3, N_REF / x0[0].numel()
    flow, _ = mse_guidance(src, FLOW_SHIFT, strength)(denoise_flow, x, sigma, 0, mode)
    # shortcut: each takes the unit-variance ideal denoiser's Jacobian in its own coordinates
    eps, _ = mse_guidance(src, EPS_SHIFT, strength)(denoise_k, x / alpha, sigma / (1 - sigma), 0, mode)
    assert (flow - denoise_flow(x)).abs().max() > 1e-2
    torch.testing.assert_close(flow, eps, rtol=1e-5, atol=1e-6)


def test_full_mode_is_refused_at_sigma_one_and_shortcut_moves_by_the_whole_gradient(case):
    x0, c = case
    x0, c = x0.float(), c.float()
    one = torch.ones(2)
    guidance = mse_guidance(x0, FLOW_SHIFT)
    with pytest.raises(ValueError, match=r"mode: full mode cannot guide at σ = 1 .*shortcut"):
        guidance(lambda xx: constant_velocity(c)(xx, one), c, one, 0, "full")
    den = constant_velocity(c)(c, one)
    out, _ = guidance(lambda xx: constant_velocity(c)(xx, one), c, one, 0, "shortcut")
    g, _ = guidance.prediction_gradient(den, 0)
    torch.testing.assert_close(out, den + guidance.shift_scale(one, den) * g, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("levels", [[0.0, 0.5, 1.0], [0.0, 0.4, 1.2]])
def test_flow_inversion_refuses_levels_that_reach_one(levels):
    with pytest.raises(ValueError, match=r"^sigmas: the schedule reaches σ = 1"):
        invert(constant_velocity(torch.ones(1)), torch.zeros(1, 1, 2, 2), torch.tensor(levels))


def test_flow_inversion_refuses_a_descending_schedule():
    with pytest.raises(ValueError, match="ascending"):
        invert(constant_velocity(torch.ones(1)), torch.zeros(1, 1, 2, 2), torch.tensor([0.5, 0.2, 0.0]))
