"""Property-based tests: numeric guidance settings and size policies never crash except with a
validation error, and never produce a non-finite image."""

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zecon_core.guidance.core import LOSS_NAMES, GuidanceConfig, NonFiniteError
from zecon_core.files.images import SIZE_POLICIES, target_size
from zecon_core.pixel.pipeline import encode_style, invert, sample_guided
from zecon_core.pixel.sampler import SAMPLERS

from tiny_models import source_image, tiny_models

numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6))


@settings(max_examples=300, deadline=None)
@given(h=st.integers(1, 20000), w=st.integers(1, 20000), policy=st.sampled_from(SIZE_POLICIES),
       size=st.integers(32, 4096))
def test_size_policies_return_usable_sizes_or_refuse(h, w, policy, size):
    try:
        th, tw = target_size(h, w, policy, size)
    except ValueError as e:
        assert policy == "as_is" and (h % 32 or w % 32), e
        return
    if policy == "resize":
        assert (th, tw) == (size, size)
        return
    assert th % 32 == 0 and tw % 32 == 0 and th >= 32 and tw >= 32
    if policy == "as_is":
        assert (th, tw) == (h, w)
    else:
        short = min(th, tw)
        assert abs(short - size) <= 16 or short == 32
        # the aspect ratio is kept up to the rounding of each side to 32 px
        assert abs(math.log(th / tw) - math.log(h / w)) <= math.log((th + 16) / max(th - 16, 1)) + \
            math.log((tw + 16) / max(tw - 16, 1))


@settings(max_examples=300, deadline=None)
@given(weights=st.fixed_dictionaries({k: numbers for k in LOSS_NAMES}), n_patch=st.integers(-3, 100),
       patch_min=numbers, patch_max=numbers, aug_prob=numbers)
def test_guidance_settings_validate_or_refuse(weights, n_patch, patch_min, patch_max, aug_prob):
    try:
        cfg = GuidanceConfig(**weights, n_patch=n_patch, patch_min=patch_min, patch_max=patch_max, aug_prob=aug_prob)
    except ValueError as e:
        message = str(e)
        assert any(name in message for name in (*LOSS_NAMES, "n_patch", "patch_min", "aug_prob")), message
        return
    assert all(math.isfinite(v) and v >= 0 for v in cfg.weights.values())
    assert cfg.n_patch >= 1 and 0 < cfg.patch_min <= cfg.patch_max <= 1 and 0 <= cfg.aug_prob <= 1


@pytest.fixture(scope="module")
def inversion():
    model, clip, vgg = tiny_models()
    return invert(model, source_image(), respacing="10", skip=8), encode_style(clip, "an ink drawing")


weight = st.one_of(st.just(0.0), st.floats(0, 1e6), st.floats(1e6, 1e30))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(weights=st.fixed_dictionaries({k: weight for k in LOSS_NAMES}), n_patch=st.integers(1, 3),
       patch_min=st.floats(0.001, 1), spread=st.floats(0, 1), aug_prob=st.floats(0, 1),
       sampler=st.sampled_from(SAMPLERS), eta=st.floats(0, 2), seed=st.integers(0, 2**31))
def test_any_valid_guidance_gives_a_finite_image_or_a_clear_error(inversion, weights, n_patch, patch_min, spread,
                                                                   aug_prob, sampler, eta, seed):
    model, clip, vgg = tiny_models()
    inv, style = inversion
    cfg = GuidanceConfig(**weights, n_patch=n_patch, patch_min=patch_min, patch_max=min(1.0, patch_min + spread),
                         aug_prob=aug_prob)
    try:
        out = sample_guided(model, inv, style, clip, cfg, vgg_model=vgg, sampler=sampler, eta=eta, seed=seed)
    except NonFiniteError as e:
        assert "step" in str(e)
        return
    assert torch.isfinite(out).all()
