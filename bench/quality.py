"""Quality benchmark in the miniature world: restyles scored against the ground truth.

    python -m bench.quality [--sources 24] [--seeds 3] [--respacing 50 --skip 25]
                            [--settings all|"NAME;NAME"] [--parts DIR] [--merge DIR] [--write]

For the pixel backbone (the pack's ``encode_style`` -> ``invert`` -> ``sample_guided`` on the
committed miniature UNet and CLIP, 32 px, respacing 50, skip 25): every setting restyles the
same ``--sources`` edits (``metrics.make_edits``: alternately a texture and a colour change)
with each of ``--seeds`` seeds, and ``metrics.score`` grades the outputs with the grader (which
never guides) against the ground truth. ``--write`` writes the raw results
(``bench/results/quality/pixel.json``), the table in ``bench/RESULTS.md`` (section "Quality
(miniature world)"), the trade-off plot and the before/after grid under ``docs/images/``.

``--parts DIR`` saves each setting's result (with its pictures) as ``DIR/<setting>.pt`` so that
settings can run in separate processes; ``--merge DIR`` reads them back (in the settings' order)
for the table and ``--write``.

Backbone-agnostic hook: ``run_setting(name, restyle, edits, seeds, grader)`` runs any
``restyle(edits, seed) -> pictures [B, 3, H, W] in [-1, 1]`` (square, any size) and returns a
``SettingResult``; the latent benchmark adds its rows with it.

Loss weights: the paper's (``GuidanceConfig()``) except VGG = 0 (no trained VGG exists in the
world), as the engine applies them: not normalised for resolution (the original's convention).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

import zecon_core as zc
from bench.world import manifest
from bench.world.grader import load_grader
from bench.world.metrics import GATE_IOU, METRICS, Edit, finite_mean, make_edits, paired_interval, score
from bench.world.world import render

ROOT = Path(__file__).resolve().parents[1]
RESULTS_JSON = ROOT / "bench" / "results" / "quality" / "pixel.json"
RESULTS_MD = ROOT / "bench" / "RESULTS.md"
PLOT = ROOT / "docs" / "images" / "quality_tradeoff.png"
GRID = ROOT / "docs" / "images" / "quality_grid.png"
SECTION = "## Quality (miniature world)"
GATE_IOU_TEXT = f"{GATE_IOU}"
BASELINE = "CLIP, ZeCon 0"
DEFAULTS = "defaults (ZeCon 500)"
GRID_COLUMNS = ("no guidance", BASELINE, DEFAULTS, "ZeCon 2000", "CLIP, ZeCon 0, DDIM sampler", "defaults, DDIM sampler")


@dataclass
class SettingResult:
    """Metrics [seeds, sources] of one setting, the time per picture, the first seed's pictures."""
    name: str
    metrics: dict[str, torch.Tensor]
    seconds_per_image: float
    pictures: torch.Tensor | None = field(default=None, repr=False)

    def mean(self, metric: str) -> float:
        return finite_mean(self.metrics[metric])

    def minus(self, other: "SettingResult", metric: str) -> float:
        """The paired mean difference of ``metric`` to ``other`` (same sources and seeds)."""
        return paired_interval(self.metrics[metric], other.metrics[metric])[0]

    def to_json(self) -> dict:
        return {"name": self.name, "seconds_per_image": self.seconds_per_image,
                "metrics": {k: v.tolist() for k, v in self.metrics.items()}}

    @classmethod
    def from_json(cls, d: dict) -> "SettingResult":
        return cls(d["name"], {k: torch.tensor(v) for k, v in d["metrics"].items()}, d["seconds_per_image"])


def run_setting(name: str, restyle: Callable[[list[Edit], int], torch.Tensor], edits: list[Edit],
                seeds: list[int], grader, keep_pictures: bool = True) -> SettingResult:
    """Run ``restyle`` on all ``edits`` once per seed and score every picture."""
    per_seed, seconds, first = [], 0.0, None
    for seed in seeds:
        start = time.perf_counter()
        pictures = restyle(edits, seed).detach().float().cpu()
        seconds += time.perf_counter() - start
        per_seed.append(score(pictures, edits, grader))
        if first is None and keep_pictures:
            first = pictures
    metrics = {m: torch.stack([s[m] for s in per_seed]) for m in METRICS}
    return SettingResult(name, metrics, seconds / (len(seeds) * len(edits)), first)


# ---- the pixel backbone -------------------------------------------------------------------------

@dataclass(frozen=True)
class PixelSetting:
    name: str
    guidance: zc.GuidanceConfig
    start: str = "renoise"
    sampler: str = "ddpm"


def pixel_settings() -> list[PixelSetting]:
    paper = zc.GuidanceConfig(vgg=0.0)
    off = paper.replace(**{k: 0.0 for k in zc.LOSS_NAMES})
    sweep = [PixelSetting(f"ZeCon {w}", paper.replace(zecon=float(w))) for w in (250, 1000, 2000, 4000)]
    normalised = paper.replace(normalise_resolution=True)
    return [PixelSetting("no guidance", off), PixelSetting(BASELINE, paper.replace(zecon=0.0)),
            PixelSetting(DEFAULTS, paper), *sweep,
            PixelSetting("no MSE", paper.replace(mse=0.0)),
            PixelSetting("defaults, DDIM start", paper, start="latent"),
            PixelSetting("CLIP, ZeCon 0, DDIM start", paper.replace(zecon=0.0), start="latent"),
            PixelSetting("no guidance, DDIM sampler", off, sampler="ddim"),
            PixelSetting("defaults, DDIM sampler", paper, sampler="ddim"),
            PixelSetting("CLIP, ZeCon 0, DDIM sampler", paper.replace(zecon=0.0), sampler="ddim"),
            PixelSetting("normalised for resolution", normalised),
            PixelSetting("normalised, ZeCon 0", normalised.replace(zecon=0.0)),
            PixelSetting("normalised, DDIM sampler", normalised, sampler="ddim"),
            PixelSetting("normalised, ZeCon 0, DDIM sampler", normalised.replace(zecon=0.0), sampler="ddim")]


class PixelWorld:
    """The committed miniature pixel models through the pack's loaders; inversions cached per edit list."""

    def __init__(self, respacing: str = "50", skip: int = 25):
        self.respacing, self.skip = respacing, skip
        self.model = zc.load_diffusion_model(manifest.UNET)
        self.clip = zc.load_clip(path=manifest.CLIP)
        self._inversions: dict[tuple, zc.Inversion] = {}

    def inversion(self, edits: list[Edit]) -> zc.Inversion:
        key = tuple(edits)
        if key not in self._inversions:
            sources = render([e.source for e in edits], 32)
            self._inversions[key] = zc.invert(self.model, sources, respacing=self.respacing, skip=self.skip)
        return self._inversions[key]

    def restyler(self, setting: PixelSetting) -> Callable[[list[Edit], int], torch.Tensor]:
        def restyle(edits: list[Edit], seed: int) -> torch.Tensor:
            inv = self.inversion(edits)
            style = None
            if setting.guidance.uses_clip:
                style = zc.encode_style(self.clip, [e.target_caption for e in edits],
                                        [e.source_caption for e in edits])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")   # "all guidance weights are 0" for the unguided row
                return zc.sample_guided(self.model, inv, style, self.clip, setting.guidance,
                                        seed=1000 * seed, start=setting.start,
                                        sampler=setting.sampler).cpu()
        return restyle


def run_pixel(n_sources: int, seeds: list[int], names: list[str] | None = None, edit_seed: int = 2024,
              respacing: str = "50", skip: int = 25) -> tuple[list[Edit], list[SettingResult]]:
    torch.set_num_threads(1)
    world, grader = PixelWorld(respacing, skip), load_grader()
    edits = make_edits(n_sources, edit_seed)
    results = []
    for setting in pixel_settings():
        if names and setting.name not in names:
            continue
        results.append(run_setting(setting.name, world.restyler(setting), edits, seeds, grader))
        r = results[-1]
        print(f"{r.name:24s} target {r.mean('target'):.2f} kept {r.mean('kept'):.2f} "
              f"shape {r.mean('shape_kept'):.2f} IoU {r.mean('iou'):.2f} PSNR {r.mean('psnr'):.1f} "
              f"SSIM {r.mean('ssim'):.2f} success {r.mean('success'):.2f} {r.seconds_per_image:.2f} s/img",
              flush=True)
    return edits, results


# ---- outputs ------------------------------------------------------------------------------------

def table(results: list[SettingResult], baseline: str = BASELINE) -> str:
    """Markdown table: means, and paired differences to ``baseline`` with 95 % bootstrap intervals."""
    base = next((r for r in results if r.name == baseline), None)
    head = ("| setting | target reached | kept (shape + other) | shape kept | IoU | ΔIoU vs ZeCon 0 [95 %] "
            "| Δshape kept [95 %] | PSNR dB | SSIM | success | s / picture |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|\n")
    rows = []
    for r in results:
        def diff(metric):
            if base is None or r is base:
                return "–"
            m, lo, hi = paired_interval(r.metrics[metric], base.metrics[metric])
            return f"{m:+.2f} [{lo:+.2f}, {hi:+.2f}]"
        rows.append(f"| {r.name} | {r.mean('target'):.2f} | {r.mean('kept'):.2f} | {r.mean('shape_kept'):.2f} "
                    f"| {r.mean('iou'):.2f} | {diff('iou')} | {diff('shape_kept')} | {r.mean('psnr'):.1f} "
                    f"| {r.mean('ssim'):.2f} | {r.mean('success'):.2f} | {r.seconds_per_image:.2f} |")
    return head + "\n".join(rows) + "\n"


def machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, 1 torch thread, "
            f"torch {torch.__version__}, load average {load:.1f} at the end")


def write_section(text: str, path: Path = RESULTS_MD) -> None:
    """Replace (or append) the section ``SECTION`` of RESULTS.md with ``text``."""
    doc = path.read_text()
    start = doc.find(SECTION)
    if start < 0:
        doc = doc.rstrip("\n") + "\n\n" + text
    else:
        nxt = doc.find("\n## ", start + len(SECTION))
        doc = doc[:start] + text + ("" if nxt < 0 else doc[nxt:])
    path.write_text(doc if doc.endswith("\n") else doc + "\n")


def section(results: list[SettingResult], n_sources: int, n_seeds: int, command: str, respacing: str = "50",
            skip: int = 25) -> str:
    """The RESULTS.md section: what ran, on which machine, the table, and the figures."""
    return f"""{SECTION}

Written by `{command}` (raw per-picture results: `bench/results/quality/pixel.json`).
Pixel backbone, the pack's own `encode_style` -> `invert` (respacing {respacing}, skip {skip}) -> `sample_guided`
on the committed miniature models (`bench/world/weights/`: the ADM UNet at 32 px, 2.7 M parameters, trained
by `python -m bench.world.train_unet --steps 1500 --batch 32 --t-max 520 --ema 0.995` in 31 min on one idle
core; the tiny open_clip CLIP), scored by the grader (a CNN that never guides) against the ground truth of
the world (`bench/world/world.py`). {n_sources} sources (alternately a texture and a colour change) x {n_seeds}
seeds. Loss weights: the paper's (`GuidanceConfig()`), VGG 0 (the world has no trained VGG), not
normalised for resolution (`normalise_resolution=False`, the original's convention; at 32 px they act 64x
more per pixel than at 256 px) except in the rows named "normalised" (`normalise_resolution=True`). Sampling as the original: DDPM
sampler, the source re-noised with the inverted latent as the noise ("renoise"), except where a row says
"DDIM start" (the inverted latent itself) or "DDIM sampler" (eta 0, from the inverted latent). Machine:
{machine()}; seconds per picture are wall time of runs that shared the two cores with 1–2 other
benchmark processes (load about 3), not a speed figure.

* **target reached**: the grader names the target texture / colour *and* the object's geometry
  held (IoU >= {GATE_IOU_TEXT}); **kept**: shape and the other attribute as in the source (same gate);
  **IoU**: the object segmented off the known background grey vs the true mask; PSNR / SSIM
  against the ground-truth render; **success**: target reached, all else kept, IoU >= 0.8.
* Δ columns: paired differences to "{BASELINE}" (same sources, same seeds), mean and 95 %
  bootstrap interval over sources (seeds averaged per source).

{table(results)}
![trade-off](../docs/images/quality_tradeoff.png)

![before/after](../docs/images/quality_grid.png)
"""


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sources", type=int, default=24)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--respacing", default="50")
    parser.add_argument("--skip", type=int, default=25)
    parser.add_argument("--settings", default="all", help="'all' or setting names separated by ';'")
    parser.add_argument("--parts", type=Path, help="save each setting's result in this folder")
    parser.add_argument("--merge", type=Path, help="read the settings' results from this folder instead of running")
    parser.add_argument("--write", action="store_true", help="write the JSON, RESULTS.md section, plot, grid")
    args = parser.parse_args(argv)
    names = None if args.settings == "all" else [s.strip() for s in args.settings.split(";")]
    edits = make_edits(args.sources, 2024)
    if args.merge:
        results = []
        for setting in pixel_settings():
            part = args.merge / f"{_slug(setting.name)}.pt"
            if part.exists() and (names is None or setting.name in names):
                d = torch.load(part)
                r = SettingResult.from_json(d["result"])
                r.pictures = d["pictures"]
                results.append(r)
    else:
        edits, results = run_pixel(args.sources, list(range(args.seeds)), names, respacing=args.respacing,
                                   skip=args.skip)
        if args.parts:
            args.parts.mkdir(parents=True, exist_ok=True)
            for r in results:
                torch.save({"result": r.to_json(), "pictures": r.pictures}, args.parts / f"{_slug(r.name)}.pt")
    print(table(results))
    if args.write:
        from bench.world import figures
        command = (f"python -m bench.quality --sources {args.sources} --seeds {args.seeds} "
                   f"--respacing {args.respacing} --skip {args.skip}")
        if args.merge:
            command += " (one process per setting with --settings NAME --parts DIR, then --merge DIR --write)"
        RESULTS_JSON.parent.mkdir(parents=True, exist_ok=True)
        RESULTS_JSON.write_text(json.dumps({
            "command": command, "respacing": args.respacing, "skip": args.skip,
            "machine": machine(), "sources": args.sources, "seeds": args.seeds,
            "edits": [{"source": e.source_caption, "target": e.target_caption, "task": e.task} for e in edits],
            "results": [r.to_json() for r in results]}, indent=1) + "\n")
        figures.tradeoff_plot(results, PLOT)
        figures.grid(edits, results, GRID, columns=GRID_COLUMNS)
        write_section(section(results, args.sources, args.seeds, command, args.respacing, args.skip))
        print(f"wrote {RESULTS_JSON}, {PLOT}, {GRID}, {RESULTS_MD}")


if __name__ == "__main__":
    main()
