"""Scores of restyled world pictures against the ground truth, and paired bootstrap intervals.

Per output picture (an ``Edit``: a source scene and its ground-truth target, one attribute changed):

* ``iou``: the object found in the output (``world.segment``: pixels off the known background
  grey) against the true mask (the same for source and target);
* ``target``: the grader names the target value of the edited attribute, and the geometry held
  (IoU >= ``GATE_IOU``; the grader still "sees" attributes on wrecked pictures);
* ``kept``: shape and the other attribute as in the source (same gate); ``shape_kept`` alone;
* ``psnr`` / ``ssim``: against the ground-truth render of the target;
* ``success``: target reached, everything else kept, IoU >= ``SUCCESS_IOU``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from bench.world.world import COLOURS, TEXTURES, Scene, caption, object_mask, render, restyle, sample_scenes
from bench.world.world import iou as mask_iou
from bench.world.world import segment

TASKS = ("texture", "colour")
GATE_IOU = 0.5
SUCCESS_IOU = 0.8
METRICS = ("target", "kept", "shape_kept", "iou", "psnr", "ssim", "success")


@dataclass(frozen=True)
class Edit:
    """One restyle with a known answer: ``target`` is ``source`` with ``task``'s attribute changed."""
    source: Scene
    target: Scene
    task: str

    @property
    def source_caption(self) -> str:
        return caption(self.source)

    @property
    def target_caption(self) -> str:
        return caption(self.target)


def make_edits(n: int, seed: int) -> list[Edit]:
    """``n`` sources, alternately a texture and a colour edit, each to another value drawn with ``seed``."""
    rng = np.random.default_rng(seed + 1)
    edits = []
    for k, scene in enumerate(sample_scenes(n, seed)):
        task = TASKS[k % 2]
        values = TEXTURES if task == "texture" else COLOURS
        choices = [v for v in values if v != getattr(scene, task)]
        edits.append(Edit(scene, restyle(scene, **{task: choices[rng.integers(len(choices))]}), task))
    return edits


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR [B] in dB of [-1, 1] pictures (peak-to-peak 2)."""
    mse = ((a - b) ** 2).flatten(1).mean(1).clamp(min=1e-10)
    return 10 * torch.log10(4.0 / mse)


def ssim(a: torch.Tensor, b: torch.Tensor, window: int = 7, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM [B] (Wang et al. 2004, Gaussian window, valid positions) of [-1, 1] pictures, on [0, 1]."""
    x, y = (a + 1) / 2, (b + 1) / 2
    g = torch.exp(-((torch.arange(window) - window // 2) ** 2) / (2 * sigma ** 2))
    g = (g / g.sum()).to(x)
    kernel = (g[:, None] * g[None]).expand(x.shape[1], 1, window, window)

    def blur(t):
        return F.conv2d(t, kernel, groups=x.shape[1])

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)


def score(outputs: torch.Tensor, edits: list[Edit], grader) -> dict[str, torch.Tensor]:
    """All metrics [B] (float) of outputs [B, 3, H, W] in [-1, 1] for ``edits`` (one each)."""
    outputs = outputs.detach().float().cpu()
    size = outputs.shape[-1]
    if outputs.shape[-2] != size or len(edits) != outputs.shape[0]:
        raise ValueError(f"score: expected {len(edits)} square pictures, got {tuple(outputs.shape)}")
    truth = object_mask([e.source for e in edits], size)
    iou = mask_iou(segment(outputs, [e.source.background for e in edits]), truth)
    gt = render([e.target for e in edits], size)
    pred = grader.predict(outputs)
    geometry = iou >= GATE_IOU
    target = torch.tensor([pred[e.task][k] == getattr(e.target, e.task) for k, e in enumerate(edits)])
    other = torch.tensor([pred["colour" if e.task == "texture" else "texture"][k]
                          == getattr(e.source, "colour" if e.task == "texture" else "texture")
                          for k, e in enumerate(edits)])
    shape = torch.tensor([pred["shape"][k] == e.source.shape for k, e in enumerate(edits)])
    target, shape_kept = target & geometry, shape & geometry
    kept = other & shape_kept
    success = target & kept & (iou >= SUCCESS_IOU)
    return {"target": target.float(), "kept": kept.float(), "shape_kept": shape_kept.float(), "iou": iou,
            "psnr": psnr(outputs, gt), "ssim": ssim(outputs, gt), "success": success.float()}


def paired_interval(a: torch.Tensor, b: torch.Tensor, n_boot: int = 4000, seed: int = 0, level: float = 0.95):
    """Mean of a - b with a bootstrap interval over sources; a, b [seeds, sources] paired.

    The seeds of one source are averaged first (they share the source), then the sources are
    resampled with replacement. Returns (mean, low, high)."""
    d = (a.double() - b.double()).mean(0).numpy()
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(d.mean()), float(lo), float(hi)


def finite_mean(values: torch.Tensor) -> float:
    v = values.double()
    v = v[torch.isfinite(v)]
    return float(v.mean()) if len(v) else math.nan
