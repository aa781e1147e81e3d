"""Region masks: preparation, blending, the gradient and the crops inside the region, the sampler outside it."""

import pytest
import torch

from zecon_core.guidance.draws import Draws
from zecon_core.guidance.core import LOSS_NAMES, GuidanceConfig, GuidanceInputs
from zecon_core.pixel.guidance import PixelGuidance
from zecon_core.guidance.mask import inside, keep_outside, prepare_mask
from zecon_core.pixel.pipeline import encode_style, invert, sample_guided
from zecon_core.pixel.sampler import step
from zecon_core.pixel.schedule import Schedule

from tiny_models import source_image, tiny_models

OFF = {k: 0.0 for k in LOSS_NAMES}
CFG = GuidanceConfig(**{**OFF, "clip_global_patch": 50.0, "clip_dir_patch": 50.0, "mse": 20.0}, n_patch=2)


def box_mask(h, w, y0, y1, x0, x1):
    m = torch.zeros(h, w)
    m[y0:y1, x0:x1] = 1
    return m


# ------------------------------------------------------------------ prepare_mask
@pytest.mark.parametrize("shape", [(40, 24), (1, 40, 24), (1, 1, 40, 24)])
def test_shapes_are_accepted_and_resized(shape):
    m = box_mask(40, 24, 0, 40, 0, 12).reshape(shape)
    out = prepare_mask(m, 3, 64, 32)
    assert out.shape == (3, 1, 64, 32) and out.dtype == torch.float32
    assert torch.equal(out[0], out[2])                              # one mask broadcasts
    assert out[..., :, :15].min() > 0.99 and out[..., :, 17:].max() < 0.01   # the left half stays the left half
    assert 0 <= float(out.min()) and float(out.max()) <= 1


def test_a_batch_of_masks_pairs_with_the_images():
    m = torch.stack([box_mask(32, 32, 0, 16, 0, 32), box_mask(32, 32, 16, 32, 0, 32)])
    out = prepare_mask(m, 2, 64, 64)
    assert out[0, 0, :30].min() > 0.99 and out[0, 0, 34:].max() < 0.01
    assert out[1, 0, 34:].min() > 0.99 and out[1, 0, :30].max() < 0.01
    with pytest.raises(ValueError, match="2 masks for a batch of 3"):
        prepare_mask(m, 3, 64, 64)


def test_full_mask_is_no_mask():
    assert prepare_mask(torch.ones(1, 50, 70), 2, 64, 64, feather=4) is None
    assert prepare_mask(torch.ones(64, 64, dtype=torch.bool), 1, 64, 64) is None


@pytest.mark.parametrize("mask, message", [
    (torch.zeros(1, 64, 64), "the mask is empty"),
    (torch.stack([box_mask(8, 8, 0, 4, 0, 4), torch.zeros(8, 8)]), "mask 2 of 2 is empty"),
    (torch.full((8, 8), float("nan")), "NaN"),
    (box_mask(8, 8, 0, 4, 0, 4) * 255, r"\[0, 1\], got 0 .. 255"),
    (box_mask(8, 8, 0, 4, 0, 4) - 0.5, r"\[0, 1\]"),
    (torch.zeros(2, 3, 8, 8), r"\[H, W\], \[B, H, W\] or \[B, 1, H, W\]"),
    (torch.zeros(0, 8, 8), "empty"),
    ([[0.0, 1.0]], "must be a tensor"),
])
def test_malformed_or_empty_masks_are_clear_errors(mask, message):
    with pytest.raises(ValueError, match=message):
        prepare_mask(mask, 2, 64, 64)


def test_feather_softens_the_edge_and_stops_at_its_width():
    m = box_mask(64, 64, 20, 44, 20, 44)
    hard = prepare_mask(m, 1, 64, 64)
    assert torch.equal(hard[0, 0], m)
    soft = prepare_mask(m, 1, 64, 64, feather=5)[0, 0]
    assert torch.all(soft[:15] == 0) and torch.all(soft[49:] == 0) and torch.all(soft[:, :15] == 0)
    assert soft[15:20, 32].gt(0).all() and soft[32, 44:49].gt(0).all()          # it reaches 5 px out
    assert 0.3 < float(soft[20, 32]) < 0.7 and soft[28:36, 28:36].min() > 0.999
    with pytest.raises(ValueError, match="feather"):
        prepare_mask(m, 1, 64, 64, feather=-1)


def test_keep_outside_and_inside():
    x, src = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    m = prepare_mask(box_mask(8, 8, 0, 8, 0, 4), 2, 8, 8)
    out = keep_outside(x, src, m)
    assert torch.equal(out[..., :4], x[..., :4]) and torch.equal(out[..., 4:], src[..., 4:])
    assert keep_outside(x, src, None) is x
    g = inside(x, m)
    assert torch.all(g[..., 4:] == 0) and torch.equal(g[..., :4], x[..., :4])
    assert inside(x, None) is x


# ------------------------------------------------------------------ crops in the region
def _boxes(region, n=64):
    p = Draws([0]).views(3, "k", n, 1, 64, 64, crop=True, patch_min=0.01, patch_max=0.05, aug_prob=1.0,
                         region=region)
    return p.crop_boxes


def _hits(boxes, m):
    return [bool(m[y0:y1 + 1, x0:x1 + 1].any()) for x0, y0, x1, y1 in boxes.tolist()]


def test_crops_are_drawn_where_the_mask_is():
    m = box_mask(64, 64, 0, 12, 48, 64)
    assert all(_hits(_boxes(m[None, None]), m))
    assert not all(_hits(_boxes(None), m))       # without a region, crops land anywhere
    # the region changes only where the crops are; the rest of the draws is unchanged
    a = Draws([0]).views(3, "k", 8, 1, 64, 64, crop=False, patch_min=0.01, patch_max=0.3, aug_prob=1.0,
                         region=m[None, None])
    b = Draws([0]).views(3, "k", 8, 1, 64, 64, crop=False, patch_min=0.01, patch_max=0.3, aug_prob=1.0)
    assert torch.equal(a.affine, b.affine) and torch.equal(a.perspective, b.perspective)


class RecordingDraws(Draws):
    def __init__(self, seeds):
        super().__init__(seeds)
        self.regions = []

    def views(self, i, key, n, batch, height, width, **kw):
        self.regions.append((kw["crop"], kw["region"]))
        return super().views(i, key, n, batch, height, width, **kw)


# ------------------------------------------------------------------ the sampler
@pytest.fixture(scope="module")
def setup():
    model, clip, _ = tiny_models()
    x0 = source_image(64, batch=2)
    inv = invert(model, x0, respacing="10", skip=6)
    style = encode_style(clip, "a watercolor painting")
    return model, clip, inv, style


def test_full_mask_equals_no_mask_bit_for_bit(setup):
    model, clip, inv, style = setup
    plain = sample_guided(model, inv, style, clip, CFG, seed=3)
    full = sample_guided(model, inv, style, clip, CFG, seed=3, mask=torch.ones(1, 64, 64), feather=4)
    assert torch.equal(plain, full)


def _masks():
    return torch.stack([box_mask(64, 64, 0, 32, 0, 64), box_mask(64, 64, 16, 48, 24, 56)])


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_outside_the_mask_is_the_unguided_reconstruction(setup, sampler):
    """Pixels beyond the feather keep the unguided run's values; inside, the guidance changes the image.

    DDPM's unguided reconstruction depends on its step noise, so both runs get the same step noise there.
    """
    model, clip, inv, style = setup
    masks, feather = _masks(), 3

    class FixedStepNoise(Draws):
        def step_noise(self, i, like):
            return torch.randn(like.shape, generator=torch.Generator().manual_seed(100 + i)).to(like)

    kinds = {"ddim": Draws, "ddpm": FixedStepNoise}
    guided = sample_guided(model, inv, style, clip, CFG, sampler=sampler, draws=kinds[sampler]([5, 6]),
                           mask=masks, feather=feather)
    with pytest.warns(UserWarning, match="plain reconstruction"):
        plain = sample_guided(model, inv, style, clip, GuidanceConfig(**OFF), sampler=sampler,
                              draws=kinds[sampler]([5, 6]))
    unmasked = sample_guided(model, inv, style, clip, CFG, sampler=sampler, draws=kinds[sampler]([5, 6]))
    m = prepare_mask(masks, 2, 64, 64, feather).expand_as(guided)
    outside, core = m == 0, m > 0.999
    assert outside.sum() > 1000
    torch.testing.assert_close(guided[outside], plain[outside], atol=1e-5, rtol=1e-5)
    assert (guided[core] - plain[core]).abs().mean() > 1e-3            # the region was restyled
    assert (unmasked[outside] - plain[outside]).abs().mean() > 1e-3   # without the mask, the outside changes too


def test_guidance_gradient_is_zero_outside_the_mask(setup):
    model, clip, inv, style = setup
    s = inv.schedule
    m = prepare_mask(_masks(), 2, 64, 64, feather=2)
    x0 = inv.source
    g = PixelGuidance(CFG, s, GuidanceInputs(x0, style.target_embeds, style.source_embeds, m), Draws([0, 1]),
                      features=model.features, clip=clip)

    def denoise(x, i):
        return model(x, s.model_timesteps(i, x.shape[0], x.device))

    for method in ("ddpm", "ddim"):
        res = step(denoise, s, inv.latent, inv.start, method=method, guidance=g, draws=Draws([0, 1]), mask=m)
        grad = res.grad
        assert torch.all(grad[(m == 0).expand_as(grad)] == 0)
        assert grad[(m > 0.999).expand_as(grad)].abs().max() > 0


def test_patch_crops_of_a_masked_run_are_drawn_in_the_region(setup):
    model, clip, inv, style = setup
    draws = RecordingDraws([0, 1])
    sample_guided(model, inv, style, clip, CFG, draws=draws, mask=_masks())
    crops = [r for crop, r in draws.regions if crop]
    assert crops and all(r is not None and r.shape == (2, 1, 64, 64) for r in crops)
    assert torch.equal(crops[0].cpu(), prepare_mask(_masks(), 2, 64, 64))


def test_mask_errors_reach_the_caller(setup):
    model, clip, inv, style = setup
    with pytest.raises(ValueError, match="the mask is empty"):
        sample_guided(model, inv, style, clip, CFG, mask=torch.zeros(64, 64))
    with pytest.raises(ValueError, match="3 masks for a batch of 2"):
        sample_guided(model, inv, style, clip, CFG, mask=torch.ones(3, 64, 64))
