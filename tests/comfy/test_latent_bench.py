"""Smoke test of the latent benchmark (``bench/latent_bench.py``) at its tiny config on the CPU.

One subprocess (in-process ComfyUI there, as the script runs it): both modes, a meta-device FLOP
count and one timed guided step each. No timing asserts: the values only have to be there,
finite and positive, and the full mode (a backward through the UNet) must cost more FLOPs.
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
SCRIPT = REPO / "bench" / "latent_bench.py"


def run_bench(tmp_path, *args):
    if not harness.comfyui_available():
        reason = f"ComfyUI not found at {harness.default_comfyui_dir()}; run scripts/setup_env.sh"
        if os.environ.get("ZECON_REQUIRE_COMFY") or os.environ.get("CI"):
            pytest.fail(reason + " (required: CI / ZECON_REQUIRE_COMFY is set)")
        pytest.skip(reason)
    out = tmp_path / "latent.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ZECON_COMFYUI_DIR": str(harness.default_comfyui_dir())}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--tiny", "--size", "128", "--n-patch", "2", "--zecon-patches", "16",
         "--steps", "1", "--threads", "1", "--json", str(out), *args],
        cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return [json.loads(line) for line in out.read_text().splitlines()], proc.stdout


def positive(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


def test_latent_bench_reports_both_modes(tmp_path):
    rows, stdout = run_bench(tmp_path, "--arch", "sd15", "--mode", "both")
    by_mode = {r["mode"]: r for r in rows}
    assert set(by_mode) == {"shortcut", "full"}
    for mode, r in by_mode.items():
        assert "flops_error" not in r and "time_error" not in r, r
        for key in ("flops", "step_s", "first_step_s", "peak_rss_gb", "gflops_per_s"):
            assert positive(r[key]), (mode, key, r.get(key))
        assert r["finite"] and r["device"] == "cpu" and r["cfg_batch"] == 2
        comp = r["flops_by_component"]
        assert sum(comp.values()) == r["flops"]
        for part in ("unet", "zecon_encoder", "decoder", "clip", "vgg", "backward"):
            assert comp[part] > 0, (mode, part)
    short, full = by_mode["shortcut"], by_mode["full"]
    assert full["flops"] > short["flops"]
    assert full["flops_by_component"]["backward"] > short["flops_by_component"]["backward"]
    assert full["flops_by_component"]["unet"] == short["flops_by_component"]["unet"]
    assert "guided step" in stdout and "FLOPs per guided step" in stdout
