"""Differentiable, batched CLIP view augmentations (the original used kornia).

A view is: an optional random resized crop (128x128, area fraction in
[patch_min, patch_max]), then with probability ``aug_prob`` a random affine
(±15°, border padding) and with probability ``aug_prob`` a random perspective
(distortion 0.7, zero padding). Parameters are drawn for all views at once
(``sample_view_params``) and applied in one op per stage (``render_views``);
no Python loop runs per view. Sampling is written as gathers, whose backward is
deterministic on the GPU too. Conventions are kornia 0.9's, as the golden
README records them: pixel coordinates with pixel centres at integers, warp
matrices that map input to output pixel coordinates, bilinear sampling.

Distribution details reproduced from kornia as the original called it:
``RandomAffine(translate=0.1)`` shifts only vertically (kornia reads a scalar
translate as (0, 0.1)); perspective corners move inward by up to
0.7 * side / 2; the crop draws area and log aspect ratio (3/4..4/3) up to ten
times and falls back to the whole image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

CROP_SIZE = 128
MAX_DEGREES = 15.0
MAX_TRANSLATE = 0.1
DISTORTION = 0.7


@dataclass
class ViewParams:
    """Augmentation parameters of ``n`` views.

    ``crop_boxes``: [n, 4] int64 (x0, y0, x1, y1), inclusive pixel indices, or None (no crop).
    ``affine`` / ``perspective``: [n, 3, 3] float64 maps from input to output pixel coordinates.
    ``affine_applied`` / ``perspective_applied``: [n] bool.
    """

    crop_boxes: torch.Tensor | None
    affine: torch.Tensor
    affine_applied: torch.Tensor
    perspective: torch.Tensor
    perspective_applied: torch.Tensor

    def __len__(self):
        return self.affine.shape[0]


def sample_view_params(n: int, height: int, width: int, *, crop: bool, patch_min: float = 0.01,
                       patch_max: float = 0.3, aug_prob: float = 1.0,
                       generator: torch.Generator | None = None, region: torch.Tensor | None = None) -> ViewParams:
    """Draw the parameters of ``n`` views of an image of ``height`` x ``width``.

    ``region`` (crops only): [height, width] non-negative weights, e.g. a mask; each crop is then
    placed around a pixel drawn with these weights (the crop's size is drawn as without a region),
    so the crops cover the region. ``None``: crops anywhere (the original's draws, unchanged).
    """
    def rand(*shape):
        return torch.rand(*shape, generator=generator, dtype=torch.float64)

    boxes = _sample_crop_boxes(n, height, width, patch_min, patch_max, rand, region, generator) if crop else None
    h, w = (CROP_SIZE, CROP_SIZE) if crop else (height, width)
    angle = (rand(n) * 2 - 1) * MAX_DEGREES
    shift_y = (rand(n) * 2 - 1) * MAX_TRANSLATE * h
    affine = affine_matrices(angle, torch.zeros(n, dtype=torch.float64), shift_y, h, w)
    affine_applied = rand(n) < aug_prob
    start = corners(h, w).expand(n, 4, 2)
    inward = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]], dtype=torch.float64)
    factor = torch.tensor([DISTORTION * w / 2, DISTORTION * h / 2], dtype=torch.float64)
    end = start + factor * rand(n, 4, 2) * inward
    perspective = homographies(start, end)
    perspective_applied = rand(n) < aug_prob
    return ViewParams(boxes, affine, affine_applied, perspective, perspective_applied)


def _sample_crop_boxes(n, height, width, patch_min, patch_max, rand, region=None, generator=None, tries=10):
    area = (patch_min + (patch_max - patch_min) * rand(n, tries)) * (height * width)
    log_lo, log_hi = math.log(3 / 4), math.log(4 / 3)
    ratio = torch.exp(log_lo + (log_hi - log_lo) * rand(n, tries))
    cw = torch.sqrt(area * ratio).round()
    ch = torch.sqrt(area / ratio).round()
    ok = (cw > 0) & (cw <= width) & (ch > 0) & (ch <= height)
    first = ok.to(torch.int64).argmax(dim=1, keepdim=True)
    any_ok = ok.any(dim=1)
    cw = torch.where(any_ok, cw.gather(1, first)[:, 0], torch.full((n,), float(width), dtype=torch.float64))
    ch = torch.where(any_ok, ch.gather(1, first)[:, 0], torch.full((n,), float(height), dtype=torch.float64))
    if region is None:
        x0 = (rand(n) * (width - cw + 1)).floor()
        y0 = (rand(n) * (height - ch + 1)).floor()
    else:
        x0, y0 = _boxes_around_region(region, n, height, width, cw, ch, generator)
    return torch.stack([x0, y0, x0 + cw - 1, y0 + ch - 1], dim=1).to(torch.int64)


def _boxes_around_region(region, n, height, width, cw, ch, generator):
    """Top-left corners of ``cw`` x ``ch`` boxes centred on pixels drawn with weights ``region``, kept in the image."""
    weights = region.detach().to("cpu", torch.float64).reshape(-1)
    if weights.numel() != height * width:
        raise ValueError(f"the crop region is {tuple(region.shape)}, the image {height}x{width}")
    if not bool((weights >= 0).all()) or not bool((weights > 0).any()):
        raise ValueError("the crop region needs non-negative weights, not all zero")
    centre = torch.multinomial(weights, n, replacement=True, generator=generator)
    cy, cx = (centre // width).to(torch.float64), (centre % width).to(torch.float64)
    x0 = torch.minimum((cx - torch.div(cw - 1, 2, rounding_mode="floor")).clamp(min=0), width - cw)
    y0 = torch.minimum((cy - torch.div(ch - 1, 2, rounding_mode="floor")).clamp(min=0), height - ch)
    return x0, y0


def corners(h: int, w: int) -> torch.Tensor:
    """Image corners (x, y): top-left, top-right, bottom-right, bottom-left."""
    return torch.tensor([[0.0, 0.0], [w - 1.0, 0.0], [w - 1.0, h - 1.0], [0.0, h - 1.0]], dtype=torch.float64)


def affine_matrices(angle_deg, shift_x, shift_y, h, w) -> torch.Tensor:
    """M = T(c + t) R(a) T(-c) with c the image centre (kornia ``get_affine_matrix2d``)."""
    a = torch.deg2rad(angle_deg)
    cos, sin = torch.cos(a), torch.sin(a)
    cx, cy = (w - 1) / 2, (h - 1) / 2
    m = torch.zeros(angle_deg.shape[0], 3, 3, dtype=torch.float64)
    m[:, 0, 0], m[:, 0, 1] = cos, -sin
    m[:, 1, 0], m[:, 1, 1] = sin, cos
    m[:, 0, 2] = cx + shift_x - cos * cx + sin * cy
    m[:, 1, 2] = cy + shift_y - sin * cx - cos * cy
    m[:, 2, 2] = 1
    return m


def homographies(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """3x3 maps taking the 4 points ``src`` [n,4,2] to ``dst`` [n,4,2] (h33 = 1)."""
    n = src.shape[0]
    x, y = src[..., 0], src[..., 1]
    u, v = dst[..., 0], dst[..., 1]
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    rows_u = torch.stack([x, y, one, zero, zero, zero, -u * x, -u * y], dim=-1)
    rows_v = torch.stack([zero, zero, zero, x, y, one, -v * x, -v * y], dim=-1)
    a = torch.cat([rows_u, rows_v], dim=1)
    b = torch.cat([u, v], dim=1)
    h = torch.linalg.solve(a, b)
    return torch.cat([h, torch.ones(n, 1, dtype=h.dtype)], dim=1).reshape(n, 3, 3)


def render_views(images: torch.Tensor, params: ViewParams, item: torch.Tensor) -> torch.Tensor:
    """Views [n, C, h, w] of ``images`` [B, C, H, W]; view k is taken from image ``item[k]``."""
    if params.crop_boxes is not None:
        views = crop_resize(images, params.crop_boxes, item)
    else:
        views = images.index_select(0, item.to(images.device))
    views = _warp_where(views, params.affine, params.affine_applied, "border")
    return _warp_where(views, params.perspective, params.perspective_applied, "zeros")


def crop_resize(images: torch.Tensor, boxes: torch.Tensor, item: torch.Tensor, size: int = CROP_SIZE) -> torch.Tensor:
    """Crops resized to ``size`` with bilinear ``align_corners=True`` interpolation.

    The same arithmetic as ``F.interpolate(img[..., y0:y1+1, x0:x1+1], size, mode='bilinear',
    align_corners=True)`` for every box, done as four gathers for all boxes (``gather``
    rather than advanced indexing, whose backward is not deterministic on the CPU).
    """
    dev = images.device
    boxes = boxes.to(dev)
    n, c, w = boxes.shape[0], images.shape[1], images.shape[-1]
    y0, y1, ly = _interp_taps(boxes[:, 1], boxes[:, 3], size)
    x0, x1, lx = _interp_taps(boxes[:, 0], boxes[:, 2], size)
    flat = images.index_select(0, item.to(dev)).flatten(2)

    def tap(ys, xs):  # [n, C, size, size]
        idx = (ys[:, :, None] * w + xs[:, None, :]).reshape(n, 1, size * size).expand(n, c, size * size)
        return flat.gather(2, idx).view(n, c, size, size)

    lx = lx.to(images.dtype)[:, None, None, :]
    ly = ly.to(images.dtype)[:, None, :, None]
    top = (1 - lx) * tap(y0, x0) + lx * tap(y0, x1)
    bottom = (1 - lx) * tap(y1, x0) + lx * tap(y1, x1)
    return (1 - ly) * top + ly * bottom


def _interp_taps(lo: torch.Tensor, hi: torch.Tensor, size: int):
    """Source taps of align_corners=True interpolation from [lo, hi] (inclusive) onto ``size`` samples."""
    span = (hi - lo).to(torch.float32)
    scale = span / (size - 1) if size > 1 else torch.zeros_like(span)
    src = scale[:, None] * torch.arange(size, device=lo.device, dtype=torch.float32)
    i0 = src.to(torch.int64)
    frac = src - i0
    i1 = i0 + (i0 < (hi - lo)[:, None]).to(torch.int64)
    return lo[:, None] + i0, lo[:, None] + i1, frac


def source_coords(m: torch.Tensor, h: int, w: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Input pixel coordinates (x, y) [n, h, w] that output pixel (u, v) reads under maps ``m`` [n,3,3] (float64)."""
    minv = torch.linalg.inv(m.to(device=device, dtype=torch.float64))
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float64, device=device),
                          torch.arange(w, dtype=torch.float64, device=device), indexing="ij")
    p = minv @ torch.stack([u, v, torch.ones_like(u)]).reshape(3, -1)
    return (p[:, 0] / p[:, 2]).reshape(-1, h, w), (p[:, 1] / p[:, 2]).reshape(-1, h, w)


def sample_bilinear(images: torch.Tensor, x: torch.Tensor, y: torch.Tensor, padding: str) -> torch.Tensor:
    """Bilinear samples of ``images`` [n, C, H, W] at pixel coordinates ``x``, ``y`` [n, h, w].

    The map of ``F.grid_sample(..., mode='bilinear', align_corners=False)`` with padding
    ``zeros`` (taps outside read 0) or ``border`` (coordinates clamped to the image), written
    as four gathers: its backward is deterministic on the GPU too (grid_sample's is not).
    """
    n, c, hh, ww = images.shape
    if padding == "border":
        x, y = x.clamp(0, ww - 1), y.clamp(0, hh - 1)
    x0, y0 = x.floor(), y.floor()
    fx, fy = (x - x0).to(images.dtype), (y - y0).to(images.dtype)
    x0, y0 = x0.long(), y0.long()
    xs = torch.stack([x0, x0 + 1, x0, x0 + 1], dim=1)          # taps: top-left, top-right, bottom-left, bottom-right
    ys = torch.stack([y0, y0, y0 + 1, y0 + 1], dim=1)
    weights = torch.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], dim=1)
    weights = weights * ((xs >= 0) & (xs < ww) & (ys >= 0) & (ys < hh)).to(images.dtype)
    idx = (ys.clamp(0, hh - 1) * ww + xs.clamp(0, ww - 1)).flatten(1)[:, None, :].expand(n, c, -1)
    taps = images.flatten(2).gather(2, idx).view(n, c, 4, *x.shape[1:])
    return (taps * weights[:, None]).sum(dim=2)


def _warp_where(views: torch.Tensor, m: torch.Tensor, applied: torch.Tensor, padding: str) -> torch.Tensor:
    applied = applied.to(views.device)
    if not bool(applied.any()):
        return views
    x, y = source_coords(m, *views.shape[-2:], views.device)
    warped = sample_bilinear(views, x, y, padding)
    if bool(applied.all()):
        return warped
    return torch.where(applied[:, None, None, None], warped, views)
