#!/usr/bin/env python3
"""Draw the bundled sample image ``assets/sample.png`` (and the pack icon ``assets/icon.png``).

Also ``assets/sample_masked.png``, the same scene with a transparent hole over the
house and its hill (ComfyUI's Load Image gives it as the MASK: the region to
restyle), and ``assets/style_sample.png``, a code-drawn "mosaic" style reference.

A simple, photograph-free landscape made only of code: sky gradient, sun, two
rows of hills, a house with a roof, door and windows, a tree, a path. Clear
shapes and flat colours give style transfer something to work on (edges for
the content losses, areas for the style). Deterministic: the same bytes on
every run (Pillow only, no fonts, no randomness). Released under CC0 1.0.

    python scripts/make_sample_image.py            # writes assets/sample.png and assets/icon.png
    python scripts/make_sample_image.py --check    # exit 1 if the committed files differ
"""

from __future__ import annotations

import argparse
import io
import math
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageOps

ROOT = Path(__file__).resolve().parent.parent
SIZE = 256
SS = 4  # supersampling factor (drawn at 1024 px, reduced with LANCZOS: smooth edges)


def _lerp(a, b, t):
    return tuple(round(x + (y - x) * t) for x, y in zip(a, b))


def draw_scene(size: int = SIZE) -> Image.Image:
    W = H = size * SS
    s = SS * size / 256  # coordinates below are in a 256 px frame

    def P(*xy):
        return [v * s for v in xy]

    im = Image.new("RGB", (W, H))
    d = ImageDraw.Draw(im)

    # sky: vertical gradient, deep blue to a warm horizon
    top, mid, horizon = (38, 92, 170), (110, 168, 222), (250, 214, 160)
    for y in range(H):
        t = y / (H * 0.62)
        c = _lerp(top, mid, min(t / 0.6, 1.0)) if t < 0.6 else _lerp(mid, horizon, min((t - 0.6) / 0.4, 1.0))
        d.line([(0, y), (W, y)], fill=c)

    # sun with a soft glow
    glow = Image.new("L", (W, H), 0)
    gd = ImageDraw.Draw(glow)
    cx, cy, r = 190 * s, 62 * s, 22 * s
    gd.ellipse([cx - r * 2.2, cy - r * 2.2, cx + r * 2.2, cy + r * 2.2], fill=110)
    glow = glow.filter(ImageFilter.GaussianBlur(14 * s))
    im.paste(Image.new("RGB", (W, H), (255, 236, 170)), (0, 0), glow)
    d = ImageDraw.Draw(im)
    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(255, 222, 89))

    # a few clouds
    for (x, y, k) in ((48, 44, 1.0), (96, 30, 0.7), (130, 70, 0.8)):
        for dx, dy, rr in ((0, 0, 10), (11, -4, 12), (24, 0, 10), (12, 4, 10)):
            rx, ry, rad = (x + dx * k) * s, (y + dy * k) * s, rr * k * s
            d.ellipse([rx - rad, ry - rad * 0.75, rx + rad, ry + rad * 0.75], fill=(246, 248, 252))

    # far hills (sine silhouettes), then near hills
    def hill(base, amp, freq, phase, color):
        pts = [(0, H)]
        for xi in range(0, 257, 2):
            y = base + amp * math.sin(xi / 256 * 2 * math.pi * freq + phase) + amp * 0.4 * math.sin(
                xi / 256 * 2 * math.pi * freq * 2.3 + phase * 1.7)
            pts.append((xi * s, y * s))
        pts.append((W, H))
        d.polygon(pts, fill=color)

    hill(150, 12, 1.3, 0.5, (104, 138, 120))
    hill(172, 10, 0.9, 2.2, (86, 150, 72))
    hill(196, 7, 0.6, 4.0, (110, 176, 78))

    # path to the house
    d.polygon(P(112, 256, 150, 256, 126, 200, 118, 200), fill=(214, 190, 140))

    # house: walls, roof, chimney, door, windows
    d.rectangle(P(84, 150, 160, 204), fill=(236, 226, 206))
    d.polygon(P(76, 152, 122, 112, 168, 152), fill=(178, 58, 48))
    d.rectangle(P(138, 118, 148, 140), fill=(120, 70, 60))
    d.rectangle(P(114, 172, 130, 204), fill=(104, 66, 42))
    d.ellipse(P(125, 187, 128, 190), fill=(230, 200, 90))
    for x0 in (92, 138):
        d.rectangle(P(x0, 162, x0 + 16, 178), fill=(120, 184, 224))
        d.line(P(x0 + 8, 162, x0 + 8, 178), fill=(250, 250, 250), width=max(1, round(2 * s)))
        d.line(P(x0, 170, x0 + 16, 170), fill=(250, 250, 250), width=max(1, round(2 * s)))
    d.line(P(84, 204, 160, 204), fill=(90, 90, 90), width=max(1, round(s)))

    # tree: trunk and a round crown
    d.rectangle(P(198, 168, 206, 210), fill=(110, 74, 46))
    for (x, y, rr, c) in ((202, 156, 20, (46, 118, 56)), (192, 164, 14, (58, 134, 62)),
                          (212, 164, 14, (40, 108, 52))):
        d.ellipse(P(x - rr, y - rr, x + rr, y + rr), fill=c)

    # flowers in the foreground
    for i, x in enumerate(range(20, 100, 13)):
        y = 226 + 9 * math.sin(i * 1.9)
        c = ((240, 90, 110), (250, 210, 70), (250, 250, 250))[i % 3]
        d.ellipse(P(x - 3, y - 3, x + 3, y + 3), fill=c)

    return im.resize((size, size), Image.LANCZOS)


def draw_icon(scene: Image.Image, size: int = 400) -> Image.Image:
    """Pack icon: the scene, half photo-like, half posterised (before/after of a restyling)."""
    big = scene.resize((size, size), Image.LANCZOS)
    poster = ImageOps.posterize(big, 2)
    edges = big.convert("L").filter(ImageFilter.FIND_EDGES).point(lambda v: 255 if v > 24 else 0)
    edges = edges.filter(ImageFilter.MaxFilter(3))
    poster.paste((40, 30, 60), (0, 0), edges)
    out = big.copy()
    out.paste(poster.crop((size // 2, 0, size, size)), (size // 2, 0))
    d = ImageDraw.Draw(out)
    d.line([(size // 2, 0), (size // 2, size)], fill=(255, 255, 255), width=4)
    return out


def draw_masked(scene: Image.Image) -> Image.Image:
    """The scene as RGBA, alpha 0 over an ellipse around the house (Load Image's MASK = 1 - alpha)."""
    size = scene.width
    alpha = Image.new("L", (size * SS, size * SS), 255)
    s = SS * size / 256
    ImageDraw.Draw(alpha).ellipse([60 * s, 96 * s, 184 * s, 224 * s], fill=0)
    out = scene.convert("RGBA")
    out.putalpha(alpha.resize((size, size), Image.LANCZOS))
    return out


def draw_style(size: int = SIZE) -> Image.Image:
    """A style reference: bold mosaic tiles in warm and cold colours with dark grout (no randomness)."""
    im = Image.new("RGB", (size, size), (30, 24, 40))
    d = ImageDraw.Draw(im)
    palette = ((214, 80, 52), (238, 176, 60), (52, 110, 176), (240, 226, 190), (80, 150, 120), (150, 60, 110))
    tile = 16
    for j in range(size // tile + 1):
        for i in range(size // tile + 1):
            k = (i * 7 + j * 3 + (i * j) % 5) % len(palette)
            x, y = i * tile + (j % 2) * tile // 2, j * tile
            d.polygon([(x, y + 2), (x + tile - 3, y + 1), (x + tile - 2, y + tile - 3), (x + 1, y + tile - 2)],
                      fill=palette[k])
    for r in range(20, size, 36):
        d.arc([size // 2 - r, size // 2 - r, size // 2 + r, size // 2 + r], 0, 360, fill=(20, 16, 28), width=3)
    return im


def _png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default=str(ROOT / "assets"))
    ap.add_argument("--check", action="store_true", help="compare with the files on disk instead of writing")
    args = ap.parse_args(argv)
    scene = draw_scene()
    files = {"sample.png": _png_bytes(scene), "icon.png": _png_bytes(draw_icon(scene)),
             "sample_masked.png": _png_bytes(draw_masked(scene)), "style_sample.png": _png_bytes(draw_style())}
    out = Path(args.out_dir)
    if args.check:
        bad = [n for n, b in files.items() if not (out / n).is_file() or (out / n).read_bytes() != b]
        if bad:
            print(f"differs from the generator: {', '.join(bad)}", file=sys.stderr)
            return 1
        print("assets match the generator")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (out / name).write_bytes(data)
        print(out / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
