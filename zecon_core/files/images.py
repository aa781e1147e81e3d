"""Image conversion and the size policies.

Tensors in the core are [B, 3, H, W] float32 in [-1, 1]. Resizing goes
through Pillow's LANCZOS filter on 8-bit images, as the original does.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import torch
from PIL import Image

SIZE_POLICIES = ("resize", "fit_short_side", "as_is")
SIZE_MULTIPLE = 32


#: Pillow modes of 16-bit (and 32-bit integer) greyscale images, scaled by 1/65535:
#: PNG and TIFF store 16-bit grey as 0..65535, which ``convert("RGB")`` would clip at 255.
_WIDE_GREY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """An image file as [1, 3, H, W] in [-1, 1] (RGB; alpha dropped, palettes, 1-bit, CMYK and
    16-bit images converted to the working range)."""
    with Image.open(path) as im:
        return pil_to_tensor(im)


def pil_to_tensor(im: Image.Image) -> torch.Tensor:
    """A Pillow image of any common mode -> [1, 3, H, W] float32 in [-1, 1].

    8-bit modes go through ``convert("RGB")`` (alpha is dropped; a palette with transparency
    through RGBA). 16-bit greyscale (``I;16*``, and ``I`` as Pillow opens 16-bit PNGs and TIFFs)
    is scaled from 0..65535, not clipped. 16-bit RGB PNGs are opened by Pillow as 8-bit RGB
    (the high byte), which is already the right range. Float images (``F``) are refused: their
    range is not defined.
    """
    if im.width == 0 or im.height == 0:
        raise ValueError(f"the image is empty ({im.width}x{im.height})")
    if im.mode in _WIDE_GREY_MODES:
        grey = np.asarray(im).astype(np.float32)
        arr = np.repeat((np.clip(grey, 0, 65535) / 65535.0)[..., None], 3, axis=-1)
    elif im.mode == "F":
        raise ValueError("32-bit float images are not supported (their value range is not defined); "
                         "save the image as 8- or 16-bit PNG")
    else:
        if im.mode == "P" and "transparency" in im.info:
            im = im.convert("RGBA")
        arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)[None].mul(2).sub(1).contiguous()


def from_bhwc(images: torch.Tensor) -> torch.Tensor:
    """Channels-last [B, H, W, C] images in [0, 1] (ComfyUI's IMAGE) -> [B, 3, H, W] in [-1, 1].

    1 channel is grey, 2 channels grey + alpha, 4 channels RGBA; alpha is dropped. Any other
    shape is refused with what was received: a 3-D tensor could be one unbatched [H, W, C]
    image or a batch of [B, H, W] masks, and is not guessed at.
    """
    shape = tuple(images.shape)
    if images.ndim != 4:
        hint = (" (an unbatched image or a mask? connect an IMAGE batch, e.g. through a node that "
                "outputs IMAGE; a MASK must go through 'Convert Mask to Image')" if images.ndim == 3 else "")
        raise ValueError(f"image: expected an IMAGE batch of shape [B, H, W, C], got shape {shape}{hint}")
    if images.shape[0] == 0:
        raise ValueError(f"image: the image batch is empty (shape {shape}, expected [B, H, W, C] with B >= 1)")
    if images.shape[1] == 0 or images.shape[2] == 0:
        raise ValueError(f"image: the images have no pixels (shape {shape}, [B, H, W, C] with H = {shape[1]}, "
                         f"W = {shape[2]})")
    c = images.shape[-1]
    if c in (1, 2):
        images = images[..., :1].expand(*images.shape[:-1], 3)
    elif c == 4:
        images = images[..., :3]
    elif c != 3:
        raise ValueError(f"images must have 1, 2, 3 or 4 channels, got {c}")
    return images.permute(0, 3, 1, 2).float().mul(2).sub(1).contiguous()


def to_bhwc(x: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] in [-1, 1] -> channels-last [B, H, W, 3] in [0, 1] (clamped), float32 on the CPU."""
    return x.detach().float().add(1).div(2).clamp(0, 1).permute(0, 2, 3, 1).cpu().contiguous()


def tensor_to_pil(x: torch.Tensor) -> list[Image.Image]:
    """[B, 3, H, W] in [-1, 1] -> 8-bit RGB images (values clamped)."""
    arr = x.detach().float().add(1).div(2).clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]


def resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """LANCZOS resize of [-1, 1] images through 8-bit Pillow images."""
    if x.shape[-2:] == (height, width):
        return x
    out = [pil_to_tensor(im.resize((width, height), Image.LANCZOS)) for im in tensor_to_pil(x)]
    return torch.cat(out).to(x.device)


def target_size(height: int, width: int, policy: str, size: int = 256) -> tuple[int, int]:
    """(H, W) an image is brought to under ``policy``.

    ``resize``: size x size, the original's square resize (squashes non-square images);
    ``fit_short_side``: the short side becomes ``size``, the long side keeps the
    aspect ratio, both rounded to multiples of 32; ``as_is``: unchanged, and
    both sides must already be multiples of 32.
    """
    if policy == "resize":
        return size, size
    if policy == "fit_short_side":
        short = min(height, width)
        scale = size / short

        def snap(v):
            return max(SIZE_MULTIPLE, int(round(v * scale / SIZE_MULTIPLE)) * SIZE_MULTIPLE)

        return snap(height), snap(width)
    if policy == "as_is":
        if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE:
            raise ValueError(
                f"image is {width}x{height}; with the 'as is' size policy both sides must be multiples of "
                f"{SIZE_MULTIPLE} (use 'fit short side' or 'resize' instead)"
            )
        return height, width
    raise ValueError(f"size policy must be one of {SIZE_POLICIES}, got {policy!r}")


def prepare_source(x: torch.Tensor, policy: str = "resize", size: int = 256) -> torch.Tensor:
    """Check a [B, 3, H, W] batch in [-1, 1] and bring it to the policy's size."""
    if x.ndim != 4 or x.shape[0] == 0:
        raise ValueError(f"expected a non-empty image batch [B, 3, H, W], got shape {tuple(x.shape)}")
    if x.shape[1] != 3:
        raise ValueError(f"expected 3 colour channels, got {x.shape[1]}")
    if x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"the images have no pixels ({x.shape[3]}x{x.shape[2]})")
    if not torch.isfinite(x).all():
        raise ValueError("the image contains NaN or infinite values")
    if x.min() < -1 or x.max() > 1:
        warnings.warn("image values outside the valid range were clamped", stacklevel=2)
        x = x.clamp(-1, 1)
    h, w = target_size(x.shape[-2], x.shape[-1], policy, size)
    return resize(x, h, w)
