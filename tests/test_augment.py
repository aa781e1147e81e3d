"""Statistics and gradients of the batched CLIP view augmentations."""

import math

import pytest
import torch

from zecon_core.guidance.augment import CROP_SIZE, ViewParams, corners, render_views, sample_view_params


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("h,w,pmin,pmax", [(64, 64, 0.01, 0.3), (256, 256, 0.01, 0.3), (96, 160, 0.05, 0.5)])
def test_crop_area_within_scale_bounds(h, w, pmin, pmax):
    p = sample_view_params(2000, h, w, crop=True, patch_min=pmin, patch_max=pmax, generator=gen())
    b = p.crop_boxes
    cw, ch = (b[:, 2] - b[:, 0] + 1).double(), (b[:, 3] - b[:, 1] + 1).double()
    assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] < w).all() and (b[:, 3] < h).all()
    # width and height are rounded, so the area may leave the interval by the rounding of each side
    lo = (torch.clamp(cw - 0.5, min=0) * torch.clamp(ch - 0.5, min=0)) / (h * w)
    hi = ((cw + 0.5) * (ch + 0.5)) / (h * w)
    assert (lo <= pmax).all() and (hi >= pmin).all()
    area = cw * ch / (h * w)
    assert area.min() < pmin + 0.1 * (pmax - pmin) and area.max() > pmax - 0.1 * (pmax - pmin)
    ratio = cw / ch
    assert (ratio > 3 / 4 * 0.7).all() and (ratio < 4 / 3 / 0.7).all()


def test_each_view_has_its_own_parameters():
    p = sample_view_params(16, 64, 64, crop=True, generator=gen())
    assert len({tuple(b.tolist()) for b in p.crop_boxes}) > 12
    assert len({round(float(m[0, 1]), 6) for m in p.affine}) == 16
    assert len({round(float(m[2, 0]), 9) for m in p.perspective}) == 16


def test_affine_and_perspective_ranges_follow_kornia():
    n, h, w = 500, 64, 96
    p = sample_view_params(n, h, w, crop=False, generator=gen(1))
    angle = torch.rad2deg(torch.atan2(p.affine[:, 1, 0], p.affine[:, 0, 0]))
    assert angle.abs().max() <= 15 + 1e-9 and angle.abs().max() > 14
    # rotation about the centre plus a vertical shift only: the centre moves straight up or down
    c = torch.tensor([(w - 1) / 2, (h - 1) / 2, 1.0], dtype=torch.float64)
    moved = p.affine @ c - c
    assert moved[:, 0].abs().max() < 1e-9
    assert moved[:, 1].abs().max() <= 0.1 * h + 1e-9
    start = corners(h, w)
    end = p.perspective @ torch.cat([start, torch.ones(4, 1, dtype=torch.float64)], 1).t()
    end = (end[:, :2] / end[:, 2:]).transpose(1, 2)
    inward = torch.tensor([[1, 1], [-1, 1], [-1, -1], [1, -1]], dtype=torch.float64)
    shift = (end - start) * inward
    assert (shift >= -1e-6).all()
    assert (shift[..., 0] <= 0.35 * w + 1e-6).all() and (shift[..., 1] <= 0.35 * h + 1e-6).all()


@pytest.mark.parametrize("aug_prob", [0.0, 0.5, 1.0])
def test_aug_prob_is_the_rate_of_each_warp(aug_prob):
    p = sample_view_params(4000, 64, 64, crop=False, aug_prob=aug_prob, generator=gen(2))
    for applied in (p.affine_applied, p.perspective_applied):
        assert abs(applied.double().mean().item() - aug_prob) < 0.03


def test_views_without_warps_are_the_crop_or_the_image():
    x = torch.randn(2, 3, 64, 64)
    p = sample_view_params(3, 64, 64, crop=False, aug_prob=0.0, generator=gen())
    item = torch.tensor([1, 0, 1])
    assert torch.equal(render_views(x, p, item), x[item])
    pc = sample_view_params(3, 64, 64, crop=True, aug_prob=0.0, generator=gen())
    out = render_views(x, pc, item)
    assert out.shape == (3, 3, CROP_SIZE, CROP_SIZE)
    b = pc.crop_boxes[0]
    ref = torch.nn.functional.interpolate(x[1:2, :, b[1]:b[3] + 1, b[0]:b[2] + 1], size=(CROP_SIZE, CROP_SIZE),
                                          mode="bilinear", align_corners=True)
    torch.testing.assert_close(out[0:1], ref, atol=1e-5, rtol=1e-5)


def test_gradients_reach_the_image_through_every_stage():
    x = torch.randn(1, 3, 64, 64, requires_grad=True)
    p = sample_view_params(4, 64, 64, crop=True, aug_prob=1.0, generator=gen())
    out = render_views(x, p, torch.zeros(4, dtype=torch.long))
    out.square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_identity_warp_matrix_is_a_no_op():
    x = torch.randn(1, 3, 32, 48)
    eye = torch.eye(3, dtype=torch.float64)[None]
    p = ViewParams(None, eye, torch.tensor([True]), eye, torch.tensor([True]))
    torch.testing.assert_close(render_views(x, p, torch.zeros(1, dtype=torch.long)), x, atol=1e-5, rtol=0)


def test_same_generator_state_same_views():
    a = sample_view_params(8, 64, 64, crop=True, generator=gen(5))
    b = sample_view_params(8, 64, 64, crop=True, generator=gen(5))
    assert torch.equal(a.crop_boxes, b.crop_boxes) and torch.equal(a.affine, b.affine)
    assert not math.isnan(float(a.perspective.sum()))
