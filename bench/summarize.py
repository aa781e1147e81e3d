"""Summarise interleaved benchmark runs (ours vs the original) into one JSON and Markdown tables.

    python bench/summarize.py --name medium --out bench/results/medium_cpu.json \
        ours=results/medium_ours_r*.json orig=results/medium_orig_r*.json shared=results/medium_shared_r*.json \
        [--flops ours=...flops.json orig=... shared=...]

Each group is a set of JSON files written by ``python -m zecon_core.apps.bench`` (or a reference harness with
the same keys), one per round; rounds are matched by order for the per-round ratios (runs were
interleaved A B C A B C ..., so a ratio compares runs that saw about the same machine load).
Reports medians with min..max over all timed steps, and ratios ``orig / X`` of the per-round means.
"""

from __future__ import annotations

import argparse
import glob
import json
import statistics
import sys

KEYS = ("unet_fwd_s", "unet_fwd_bwd_s", "inversion_step_s", "guided_step_s")
FLOP_KEYS = ("unet_fwd_flops", "unet_fwd_bwd_flops", "guided_step_flops")
README_STEPS = 25


def load_group(spec: str) -> tuple[str, list[dict]]:
    label, pattern = spec.split("=", 1)
    files = sorted(glob.glob(pattern), key=lambda p: (len(p), p))
    return label, [json.load(open(p)) for p in files]


def stats(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def summarize(groups: dict[str, list[dict]], flops: dict[str, dict]) -> dict:
    out = {"groups": {}, "ratios": {}}
    for label, runs in groups.items():
        g = {"runs": len(runs)}
        for key in KEYS:
            samples = [x for r in runs for x in (r.get(key[:-2] + "_all_s") or [])]
            g[key] = stats(samples)
        g["peak_rss_gb"] = stats([r.get("peak_rss_gb") for r in runs])
        phases = {}
        for r in runs:
            for k, v in (r.get("guided_phases_s") or {}).items():
                phases.setdefault(k, []).append(v)
        g["guided_phases_s"] = {k: statistics.median(v) for k, v in phases.items()}
        g["loadavg"] = [r.get("loadavg_before") for r in runs]
        g["threads"] = sorted({r["machine"]["threads"] for r in runs if "machine" in r})
        f = flops.get(label, {})
        for key in FLOP_KEYS:
            if f.get(key):
                g[key] = f[key]
        gs = (g.get("guided_step_s") or {}).get("median")
        fb = (g.get("unet_fwd_bwd_s") or {}).get("median")
        inv = (g.get("inversion_step_s") or {}).get("median")
        if gs and g.get("guided_step_flops"):
            g["guided_step_gflops_per_s"] = g["guided_step_flops"] / gs / 1e9
        if fb and g.get("unet_fwd_bwd_flops"):
            g["unet_fwd_bwd_gflops_per_s"] = g["unet_fwd_bwd_flops"] / fb / 1e9
        if gs and fb:
            g["guided_step_x_unet_fwd_bwd"] = gs / fb
        if gs and inv:
            g["per_image_estimate_s"] = README_STEPS * (gs + inv)
        out["groups"][label] = g
    # FLOP floor of every group against ours' UNet fwd+bwd rate (same network, same machine)
    base = out["groups"].get("ours", {})
    rate = base.get("unet_fwd_bwd_gflops_per_s")
    for label, g in out["groups"].items():
        gs = (g.get("guided_step_s") or {}).get("median")
        if rate and gs and g.get("guided_step_flops"):
            floor = g["guided_step_flops"] / (rate * 1e9)
            g["guided_step_floor_s"] = floor
            g["guided_step_x_floor"] = gs / floor
    if "orig" in groups:
        for label, runs in groups.items():
            if label == "orig":
                continue
            for key in ("guided_step_s", "inversion_step_s", "unet_fwd_bwd_s", "peak_rss_gb"):
                pairs = [(o.get(key), r.get(key)) for o, r in zip(groups["orig"], runs)]
                ratios = [o / r for o, r in pairs if o and r]
                if ratios:
                    out["ratios"][f"orig/{label}:{key}"] = stats(ratios)
    return out


def markdown(name: str, s: dict) -> str:
    def m(g, key, fmt="{:.2f}"):
        v = g.get(key)
        if isinstance(v, dict):
            return f"{fmt.format(v['median'])} ({fmt.format(v['min'])}–{fmt.format(v['max'])})"
        return "-" if v is None else fmt.format(v)

    lines = [f"| {name} | " + " | ".join(s["groups"]) + " |", "|---|" + "---|" * len(s["groups"])]
    rows = [("guided step, s", "guided_step_s"), ("inversion step, s", "inversion_step_s"),
            ("UNet forward, s", "unet_fwd_s"), ("UNet fwd+bwd, s", "unet_fwd_bwd_s"),
            ("peak RSS, GB", "peak_rss_gb"), ("guided step / UNet fwd+bwd", "guided_step_x_unet_fwd_bwd"),
            ("guided step TFLOP", "guided_step_flops"), ("guided step GFLOP/s", "guided_step_gflops_per_s"),
            ("UNet fwd+bwd GFLOP/s", "unet_fwd_bwd_gflops_per_s"), ("guided step / FLOP floor", "guided_step_x_floor"),
            ("per image (25+25 steps), s", "per_image_estimate_s")]
    for title, key in rows:
        cells = []
        for g in s["groups"].values():
            if key == "guided_step_flops":
                cells.append("-" if not g.get(key) else f"{g[key] / 1e12:.3f}")
            else:
                cells.append(m(g, key, "{:.1f}" if key in ("guided_step_gflops_per_s", "unet_fwd_bwd_gflops_per_s",
                                                           "per_image_estimate_s") else "{:.2f}"))
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    phases = sorted({k for g in s["groups"].values() for k in g.get("guided_phases_s", {})},
                    key=lambda k: ("unet_fwd", "clip", "zecon_enc", "vgg", "augment", "backward", "other").index(k)
                    if k in ("unet_fwd", "clip", "zecon_enc", "vgg", "augment", "backward", "other") else 99)
    for ph in phases:
        lines.append(f"| &nbsp;&nbsp;{ph}, s | " + " | ".join(
            f"{g['guided_phases_s'][ph]:.2f}" if ph in g.get("guided_phases_s", {}) else "-"
            for g in s["groups"].values()) + " |")
    if s["ratios"]:
        lines.append("")
        lines.append("| ratio (per interleaved round) | median | min–max | rounds |")
        lines.append("|---|---|---|---|")
        for k, v in s["ratios"].items():
            lines.append(f"| {k} | {v['median']:.2f}x | {v['min']:.2f}–{v['max']:.2f} | {v['n']} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--name", default="bench")
    p.add_argument("--out", default=None)
    p.add_argument("--flops", nargs="*", default=[])
    p.add_argument("groups", nargs="+")
    a = p.parse_args(argv)
    groups = dict(load_group(g) for g in a.groups)
    flops = {}
    for spec in a.flops:
        label, path = spec.split("=", 1)
        flops[label] = json.load(open(path))
    s = summarize(groups, flops)
    s["name"] = a.name
    md = markdown(a.name, s)
    s["markdown"] = md
    if a.out:
        with open(a.out, "w") as f:
            json.dump(s, f, indent=2)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
