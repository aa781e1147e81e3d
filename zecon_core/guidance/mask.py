"""Region masks: restyle inside, keep the source outside (Blended Diffusion's blending).

A mask is 1 where the picture is restyled and 0 where it keeps the source
(ComfyUI's MASK convention: [B, H, W] or [H, W] in [0, 1], any size). The
functions here know nothing about the backbone: ``prepare_mask`` brings a mask
to any working size (the pixel UNet's image, or a latent grid), and the
sampler of a backbone calls ``keep_outside`` after every reverse step and
``inside`` on the guidance gradient.

A full mask (1 everywhere) is the same as no mask: ``prepare_mask`` returns
``None`` for it, so every caller takes the unmasked code path, bit for bit.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

#: The pixel sampler node's and the CLI's default feather (px at the working size).
DEFAULT_FEATHER = 8


def prepare_mask(mask: torch.Tensor, batch: int, height: int, width: int,
                 feather: float = 0.0) -> torch.Tensor | None:
    """A mask as float32 [batch, 1, height, width] in [0, 1], or ``None`` for a full mask.

    ``mask``: [H, W], [B, H, W] or [B, 1, H, W] (bool or float in [0, 1], any size); one mask
    broadcasts over the batch, B masks pair with B images. It is resized bilinearly (antialiased
    when shrinking), so it follows the source through the size policies, which only resize.
    ``feather``: seam width in pixels of the working size: the mask is blurred with a Gaussian
    (sigma = feather / 3) cut off at ``feather`` pixels, so pixels farther than ``feather`` from
    the mask (along rows and columns) stay exactly 0.
    Raises ``ValueError`` for a malformed, non-finite, out-of-range, empty or mis-batched mask.
    """
    m = _as_b1hw(mask)
    if m.shape[0] not in (1, batch):
        raise ValueError(f"{m.shape[0]} masks for a batch of {batch} images (give one mask, or one per image)")
    if not torch.isfinite(m).all():
        raise ValueError("the mask contains NaN or infinite values")
    lo, hi = float(m.min()), float(m.max())
    if lo < 0 or hi > 1:
        raise ValueError(f"mask values must lie in [0, 1], got {lo:g} .. {hi:g}")
    if not (isinstance(feather, (int, float)) and math.isfinite(feather) and feather >= 0):
        raise ValueError(f"feather must be a finite number of pixels >= 0, got {feather!r}")
    if bool((m >= 1).all()):
        return None
    _check_not_empty(m, "")
    if m.shape[-2:] != (height, width):
        m = F.interpolate(m, size=(height, width), mode="bilinear", align_corners=False,
                          antialias=m.shape[-2] > height or m.shape[-1] > width).clamp(0, 1)
        _check_not_empty(m, f" at the working size {width}x{height} (it is too small to survive the resize)")
    m = _feather(m, feather)
    return m.expand(batch, 1, height, width).contiguous()


def keep_outside(x: torch.Tensor, x_source: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``mask · x + (1 - mask) · x_source``: ``x`` inside the mask, ``x_source`` outside.

    ``x_source`` is the source carried to the same noise level as ``x``; ``mask``
    [B, 1, H, W] broadcasts over the channels. Where the mask is exactly 0 the result
    is exactly ``x_source``; ``None`` (no mask, or a full one) returns ``x`` itself.
    """
    if mask is None:
        return x
    mask = mask.to(device=x.device, dtype=x.dtype)
    return x * mask + x_source * (1 - mask)


def inside(grad: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The guidance gradient restricted to the mask (exactly 0 where the mask is 0)."""
    if mask is None:
        return grad
    return grad * mask.to(device=grad.device, dtype=grad.dtype)


def _as_b1hw(mask) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"the mask must be a tensor [H, W] or [B, H, W], got {type(mask).__name__}")
    if mask.ndim == 2:
        mask = mask[None, None]
    elif mask.ndim == 3:
        mask = mask[:, None]
    elif not (mask.ndim == 4 and mask.shape[1] == 1):
        raise ValueError(f"the mask must be [H, W], [B, H, W] or [B, 1, H, W], got shape {tuple(mask.shape)}")
    if 0 in mask.shape:
        raise ValueError(f"the mask is empty (shape {tuple(mask.shape)})")
    if mask.is_complex():
        raise ValueError("the mask must hold real values in [0, 1]")
    return mask.detach().to(torch.float32)


def _check_not_empty(m: torch.Tensor, where: str) -> None:
    empty = [b for b in range(m.shape[0]) if not bool((m[b] > 0).any())]
    if not empty:
        return
    if m.shape[0] == 1:
        raise ValueError(f"the mask is empty (0 everywhere){where}: nothing would be restyled. "
                         "Paint the region to restyle, or leave the mask input unconnected for the whole picture")
    which = ", ".join(str(b + 1) for b in empty)
    raise ValueError(f"mask {which} of {m.shape[0]} is empty (0 everywhere){where}: nothing would be restyled there")


def _feather(m: torch.Tensor, feather: float) -> torch.Tensor:
    """Separable Gaussian blur (sigma = feather / 3) truncated at ``feather`` pixels, edges replicated."""
    r = int(round(feather))
    if r == 0:
        return m
    k = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (k / (feather / 3)) ** 2)
    k = (k / k.sum()).to(m)
    padded = F.pad(m, (r, r, 0, 0), mode="replicate")
    m = F.conv2d(padded, k.view(1, 1, 1, -1))
    padded = F.pad(m, (0, 0, r, r), mode="replicate")
    return F.conv2d(padded, k.view(1, 1, -1, 1)).clamp(0, 1)
