"""Running a benchmark script of bench/ at a tiny size in a subprocess, for the benchmarks' smoke tests."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

import harness

REPO = Path(__file__).resolve().parents[2]


def run_bench(script: str, tmp_path, *args, size: int, timeout: int):
    """``bench/<script>`` --tiny at ``size`` px with 2 CLIP views, one step, one thread: (result rows, stdout).
    Without ComfyUI the test skips, or fails where CI / ZECON_REQUIRE_COMFY is set."""
    if not harness.comfyui_available():
        reason = f"ComfyUI not found at {harness.default_comfyui_dir()}; run scripts/setup_env.sh"
        if os.environ.get("ZECON_REQUIRE_COMFY") or os.environ.get("CI"):
            pytest.fail(reason + " (required: CI / ZECON_REQUIRE_COMFY is set)")
        pytest.skip(reason)
    out = tmp_path / f"{Path(script).stem}.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ZECON_COMFYUI_DIR": str(harness.default_comfyui_dir())}
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), "--tiny", "--size", str(size), "--n-patch", "2",
         "--zecon-patches", "16", "--steps", "1", "--threads", "1", "--json", str(out), *args],
        cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return [json.loads(line) for line in out.read_text().splitlines()], proc.stdout


def positive(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0
