"""Image files of every common mode load into the working range [-1, 1] (issue 13).

PIL's ``convert("RGB")`` clips 16-bit greyscale at 255, so a 16-bit PNG used to load almost
white. Each case writes a file whose expected values are known and compares.
"""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from zecon_core.files.images import load_image, pil_to_tensor


def _expected(rgb01: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb01.astype(np.float32)).permute(2, 0, 1)[None] * 2 - 1


def _png16_rgb(path, arr: np.ndarray) -> None:
    """A 16-bit RGB PNG written by hand (Pillow cannot write one)."""
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_16_bit_grey_png_is_scaled_not_clipped(tmp_path):
    grey = np.linspace(0, 65535, 48 * 40).reshape(40, 48).astype(np.uint16)
    p = tmp_path / "g16.png"
    Image.fromarray(grey).save(p)
    with Image.open(p) as im:
        assert im.mode in ("I;16", "I")
    x = load_image(p)
    want = _expected(np.repeat((grey / 65535.0)[..., None], 3, axis=-1))
    torch.testing.assert_close(x, want, atol=1e-6, rtol=0)
    assert abs(float(x.mean())) < 0.01          # mean grey, not 98% white


@pytest.mark.parametrize("mode", ["I;16B", "I"])
def test_other_wide_grey_modes(mode):
    grey = np.array([[0, 1000, 32768, 65535]], dtype=np.int32)
    if mode == "I":
        im = Image.fromarray(grey, "I")
    else:
        im = Image.frombytes(mode, (4, 1), grey.astype(">u2").tobytes())
    x = pil_to_tensor(im)
    torch.testing.assert_close(x[0, 0, 0], torch.tensor(grey[0] / 65535.0 * 2 - 1, dtype=torch.float32),
                               atol=1e-6, rtol=0)


def test_16_bit_rgb_png(tmp_path):
    arr = np.random.RandomState(0).randint(0, 65536, (12, 20, 3)).astype(np.uint16)
    p = tmp_path / "rgb16.png"
    _png16_rgb(p, arr)
    x = load_image(p)
    assert x.shape == (1, 3, 12, 20)
    # within 8-bit precision of the 16-bit values (Pillow keeps the high byte)
    assert float((x - _expected(arr / 65535.0)).abs().max()) <= 2 / 255 + 1e-6


def test_1_bit(tmp_path):
    bits = np.zeros((16, 16), dtype=bool)
    bits[:, 8:] = True
    p = tmp_path / "bw.png"
    Image.fromarray(bits).convert("1").save(p)
    with Image.open(p) as im:
        assert im.mode == "1"
    x = load_image(p)
    assert torch.all(x[..., :8] == -1) and torch.all(x[..., 8:] == 1)


def test_palette_with_and_without_transparency(tmp_path):
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    rgb[:4] = (200, 30, 10)
    rgb[4:] = (10, 100, 250)
    im = Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=4)
    p = tmp_path / "pal.png"
    im.save(p)
    torch.testing.assert_close(load_image(p), _expected(rgb / 255.0), atol=1e-6, rtol=0)
    im.info["transparency"] = 0
    q = tmp_path / "pal_t.png"
    im.save(q, transparency=0)
    x = load_image(q)
    assert x.shape == (1, 3, 8, 8) and float(x.min()) >= -1 and float(x.max()) <= 1


@pytest.mark.parametrize("mode", ["LA", "RGBA"])
def test_alpha_is_dropped(tmp_path, mode):
    rgb = np.random.RandomState(1).randint(0, 256, (10, 10, 3)).astype(np.uint8)
    alpha = np.full((10, 10, 1), 7, dtype=np.uint8)
    if mode == "LA":
        grey = rgb[..., :1]
        im = Image.fromarray(np.concatenate([grey, alpha], -1), "LA")
        want = np.repeat(grey, 3, -1)
    else:
        im = Image.fromarray(np.concatenate([rgb, alpha], -1), "RGBA")
        want = rgb
    p = tmp_path / f"{mode}.png"
    im.save(p)
    torch.testing.assert_close(load_image(p), _expected(want / 255.0), atol=1e-6, rtol=0)


def test_cmyk(tmp_path):
    im = Image.new("CMYK", (6, 4), (0, 255, 255, 0))     # pure red in CMYK
    p = tmp_path / "cmyk.jpg"
    im.save(p, quality=100)
    x = load_image(p)
    assert x.shape == (1, 3, 4, 6)
    r, g, b = (float(x[0, c].mean()) for c in range(3))
    assert r > 0.8 and g < -0.8 and b < -0.8


def test_float_images_are_refused():
    with pytest.raises(ValueError, match="float"):
        pil_to_tensor(Image.new("F", (4, 4), 0.5))
