"""zecon_core.latent.invert: Euler up the noise levels, exact round trip for a constant-ε model."""
from __future__ import annotations

import pytest
import torch

from zecon_core.guidance.core import NonFiniteError
from zecon_core.latent import invert


def euler_down(denoise, x, sigmas):
    """k-diffusion's sample_euler (no churn): what ComfyUI's 'euler' runs."""
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        d = (x - denoise(x, s * x.new_ones(x.shape[0]))) / s
        x = x + (s_next - s) * d
    return x


def constant_eps(c):
    def denoise(x, sigma):
        return x - sigma.view(-1, 1, 1, 1) * c
    return denoise


def test_inversion_then_euler_returns_to_the_source_for_a_constant_eps_model():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
    c = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
    up = torch.tensor([0.0, 0.03, 0.4, 1.1, 2.9], dtype=torch.float64)
    xt = invert(constant_eps(c), x0, up)
    torch.testing.assert_close(xt, x0 + up[-1] * c)          # the ODE solution for constant ε
    torch.testing.assert_close(euler_down(constant_eps(c), xt, up.flip(0)), x0, rtol=0, atol=1e-12)


def test_inversion_reports_every_step_and_can_be_stopped():
    seen = []

    def callback(step, total, x, den):
        seen.append((step, total))
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        invert(constant_eps(torch.ones(1, 1, 2, 2)), torch.zeros(1, 1, 2, 2), torch.tensor([0.0, 1.0, 2.0, 3.0]),
               callback)
    assert seen == [(1, 3), (2, 3)]


@pytest.mark.parametrize("sigmas, message", [
    (torch.tensor([1.0]), "at least two"),
    (torch.tensor([2.0, 1.0, 0.0]), "ascending"),
    (torch.tensor([0.0, float("nan")]), "finite"),
    (torch.tensor([-1.0, 1.0]), ">= 0"),
])
def test_bad_noise_levels_are_refused(sigmas, message):
    with pytest.raises(ValueError, match=message):
        invert(constant_eps(torch.ones(1)), torch.zeros(1, 1, 1, 1), sigmas)


def test_a_non_finite_latent_is_named():
    def broken(x, sigma):
        return x * float("inf")
    with pytest.raises(NonFiniteError, match="inversion step 1/1"):
        invert(broken, torch.ones(1, 1, 2, 2), torch.tensor([0.0, 1.0]))
