"""Smoke test of the benchmark (``python -m zecon_core.bench``) at the tiny config on the CPU.

No timing asserts: the values only have to be there and positive.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from zecon_core import bench
from zecon_core.flops import count_flops

REPO = Path(__file__).resolve().parents[1]
REQUIRED = ("unet_fwd_s", "unet_fwd_bwd_s", "inversion_step_s", "guided_step_s", "peak_rss_gb")


def test_bench_cli_tiny(tmp_path):
    out = tmp_path / "tiny.json"
    proc = subprocess.run(
        [sys.executable, "-m", "zecon_core.bench", "--config", "tiny", "--steps", "1", "--threads", "1",
         "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    for key in REQUIRED:
        assert res[key] > 0, key
    for key in ("guided_step_flops", "unet_fwd_bwd_flops", "guided_step_gflops_per_s", "unet_fwd_bwd_gflops_per_s",
                "guided_step_x_unet_fwd_bwd", "guided_step_x_floor", "per_image_estimate_s"):
        assert res[key] > 0, key
    assert set(bench.PHASES) <= set(res["guided_phases_s"])
    assert all(v >= 0 for k, v in res["guided_phases_s"].items() if k != "other")
    assert res["config"] == "tiny" and res["device"] == "cpu" and res["dtype"] == "fp32"
    assert set(res["losses"]) == {"clip_global_patch", "clip_dir_patch", "zecon", "mse", "vgg", "range"}
    assert "guided step" in proc.stdout and "per image" in proc.stdout


def test_flop_count_sees_cpu_attention():
    """The CPU attention kernels count (torch's own counter skips them)."""
    import torch
    import torch.nn.functional as F

    q = torch.randn(2, 4, 16, 8, requires_grad=True)
    with count_flops() as c:
        out = F.scaled_dot_product_attention(q, q, q)
    assert c.total >= 2 * (2 * 2 * 4 * 16 * 16 * 8)
    with count_flops() as c:
        torch.autograd.grad(out.sum(), q)
    assert c.total > 0
