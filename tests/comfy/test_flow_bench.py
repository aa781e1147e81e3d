"""Smoke test of the flow benchmark (``bench/flow_bench.py``) on the tiny flow models on the CPU.

One subprocess per family (in-process ComfyUI there, as the script runs it): both modes, the meta
count of a plain and a guided step and one timed call of each. No timing asserts: the values must be
there, finite and positive; the guided step must cost more than the plain step, the full mode more
than the shortcut (a backward through the whole model), the plain step the same in both; SD3.5 runs
CFG as a batch of two, the cfg-1 families one pass.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

import harness

pytestmark = pytest.mark.comfy

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "flow_bench.py"


def run_bench(tmp_path, *args):
    if not harness.comfyui_available():
        reason = f"ComfyUI not found at {harness.default_comfyui_dir()}; run scripts/setup_env.sh"
        if os.environ.get("ZECON_REQUIRE_COMFY") or os.environ.get("CI"):
            pytest.fail(reason + " (required: CI / ZECON_REQUIRE_COMFY is set)")
        pytest.skip(reason)
    out = tmp_path / "flow.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ZECON_COMFYUI_DIR": str(harness.default_comfyui_dir())}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--size", "64", "--n-patch", "2", "--zecon-patches", "16",
         "--steps", "1", "--threads", "1", "--json", str(out), *args],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return [json.loads(line) for line in out.read_text().splitlines()], proc.stdout


def positive(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


_RUNS: dict = {}


def both_modes(tmp_path, arch):
    """The bench's rows of ``arch`` in both modes (one subprocess per arch and session)."""
    if arch not in _RUNS:
        _RUNS[arch] = run_bench(tmp_path, "--arch", arch, "--mode", "both")
    return _RUNS[arch]


@pytest.mark.parametrize("arch, passes", [("flux_dev", 1), ("sd35_medium", 2), ("zimage", 1)])
def test_flow_bench_reports_both_modes(tmp_path, arch, passes):
    rows, stdout = both_modes(tmp_path, arch)
    by_mode = {r["mode"]: r for r in rows}
    assert set(by_mode) == {"shortcut", "full"}
    for mode, r in by_mode.items():
        assert "flops_error" not in r and "time_error" not in r, r
        assert r["passes_per_step"] == passes and r["config"] == "tiny"
        for key in ("flops", "plain_flops", "ratio", "model_parameters"):
            assert positive(r[key]), (mode, key, r.get(key))
        assert r["ratio"] == pytest.approx(r["flops"] / r["plain_flops"]) and r["ratio"] > 1
        comp = r["flops_by_component"]
        assert sum(comp.values()) == r["flops"]
        assert comp["model"] == r["plain_flops"]     # the guided step's model call is the plain step
        for part in ("features", "decoder", "clip", "vgg", "backward"):
            assert comp[part] > 0, (mode, part)
        t = r["time"]
        assert t["finite"] and all(positive(t[k]["s"]) and positive(t[k]["peak_rss_gb"]) for k in ("plain", "guided"))
    short, full = by_mode["shortcut"], by_mode["full"]
    assert full["plain_flops"] == short["plain_flops"]
    assert full["flops_by_component"]["backward"] > short["flops_by_component"]["backward"]
    assert "model" in full["saved_for_backward_gb"] and "model" not in short["saved_for_backward_gb"]
    assert "guided step" in stdout and "plain step" in stdout


def test_plain_step_counts_cfg_passes(tmp_path):
    """SD3.5's plain step is a CFG batch of two: its model FLOPs are twice one pass (--cfg 1's)."""
    rows, _ = both_modes(tmp_path, "sd35_medium")
    [two] = [r for r in rows if r["mode"] == "shortcut"]
    rows, _ = run_bench(tmp_path, "--arch", "sd35_medium", "--mode", "shortcut", "--no-time", "--cfg", "1")
    [one] = rows
    assert one["passes_per_step"] == 1 and two["passes_per_step"] == 2
    assert two["plain_flops"] == pytest.approx(2 * one["plain_flops"], rel=1e-3)
