"""Figures of the quality benchmark, drawn with Pillow: the trade-off plot and a before/after grid."""
from __future__ import annotations

import re
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from bench.world.world import render

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f"]


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:   # Pillow < 10.1
        return ImageFont.load_default()


def _zecon_weight(name: str) -> float | None:
    """The ZeCon weight of a sweep setting's name ('ZeCon 1000', 'CLIP, ZeCon 0', 'defaults (ZeCon 500)')."""
    if "DDIM" in name or "normalised" in name:
        return None
    m = re.search(r"ZeCon (\d+)", name)
    return float(m.group(1)) if m else None


def tradeoff_plot(results, path: Path, x_metric: str = "iou", y_metric: str = "target",
                  title: str = "Style reached vs content kept (pixel backbone, miniature world)",
                  sweep_line: bool = True) -> None:
    """One point per setting (mean over sources x seeds); the ZeCon-weight sweep joined as a curve."""
    w, h, left, right, top, bottom = 860, 560, 70, 330, 50, 60
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    pw, ph = w - left - right, h - top - bottom

    def xy(x, y):
        return left + x * pw, top + (1 - y) * ph

    d.rectangle([left, top, left + pw, top + ph], outline="black")
    for k in range(11):
        v = k / 10
        x, _ = xy(v, 0)
        _, y = xy(0, v)
        d.line([x, top + ph, x, top + ph + 5], fill="black")
        d.line([left - 5, y, left, y], fill="black")
        if k % 2 == 0:
            d.text((x - 8, top + ph + 8), f"{v:.1f}", fill="black", font=_font(12))
            d.text((left - 35, y - 7), f"{v:.1f}", fill="black", font=_font(12))
        d.line([x, top, x, top + ph], fill="#eeeeee")
        d.line([left, y, left + pw, y], fill="#eeeeee")
    d.rectangle([left, top, left + pw, top + ph], outline="black")
    d.text((left, 15), title, fill="black", font=_font(15))
    d.text((left + pw / 2 - 150, h - 28), "content kept: object IoU with the ground truth", fill="black",
           font=_font(13))
    label = Image.new("RGB", (ph, 20), "white")
    ImageDraw.Draw(label).text((ph / 2 - 150, 2), "style reached: target attribute (grader)", fill="black",
                               font=_font(13))
    img.paste(label.rotate(90, expand=True), (8, top))
    sweep = sorted(((_zecon_weight(r.name), r) for r in results if _zecon_weight(r.name) is not None),
                   key=lambda p: p[0])
    if sweep_line and len(sweep) > 1:
        d.line([xy(r.mean(x_metric), r.mean(y_metric)) for _, r in sweep], fill="#888888", width=2)
    for k, r in enumerate(results):     # numbered: the colours repeat after len(COLOURS) settings
        colour = COLOURS[k % len(COLOURS)]
        x, y = xy(r.mean(x_metric), r.mean(y_metric))
        d.ellipse([x - 5, y - 5, x + 5, y + 5], fill=colour, outline="black")
        d.text((x + 6, y - 14), str(k + 1), fill=colour, font=_font(11))
        ly = top + 10 + 22 * k
        d.ellipse([left + pw + 15, ly, left + pw + 25, ly + 10], fill=colour, outline="black")
        d.text((left + pw + 32, ly - 2), f"{k + 1}. {r.name}", fill="black", font=_font(12))
    if sweep_line:
        d.text((left + pw + 15, top + 12 + 22 * len(results)), "grey line: ZeCon weight sweep", fill="#555555",
               font=_font(11))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def to_pil(picture: torch.Tensor, scale: int) -> Image.Image:
    arr = ((picture.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    img = Image.fromarray(arr)
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST)


def grid(edits, results, path: Path, rows: int = 6, columns=("no guidance", "CLIP, ZeCon 0",
                                                             "defaults (ZeCon 500)", "ZeCon 2000"),
         cell: int = 128) -> None:
    """Rows of edits: source | ground truth | the first seed's output of each setting in ``columns``."""
    by_name = {r.name: r for r in results if r.pictures is not None}
    columns = [c for c in columns if c in by_name]
    size = next(iter(by_name.values())).pictures.shape[-1] if by_name else 32
    heads = ["source", "ground truth", *columns]
    pad, head_h, text_w = 6, 34, 230
    img = Image.new("RGB", (text_w + len(heads) * (cell + pad) + pad, head_h + rows * (cell + pad) + pad), "white")
    d = ImageDraw.Draw(img)
    for c, name in enumerate(heads):
        d.text((text_w + pad + c * (cell + pad), 8), name, fill="black", font=_font(11))
    for row, edit in enumerate(edits[:rows]):
        y = head_h + row * (cell + pad)
        d.text((6, y + cell / 2 - 16), f"{edit.source_caption}\n-> {edit.target_caption}", fill="black",
               font=_font(12))
        pics = [render([edit.source], size)[0], render([edit.target], size)[0],
                *[by_name[c].pictures[row] for c in columns]]
        for c, pic in enumerate(pics):
            img.paste(to_pil(pic, cell // size), (text_w + pad + c * (cell + pad), y))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
