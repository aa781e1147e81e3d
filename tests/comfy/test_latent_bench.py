"""Smoke test of the latent benchmark (``bench/latent_bench.py``) at its tiny config on the CPU.

One subprocess (in-process ComfyUI there, as the script runs it): both modes, a meta-device FLOP
count and one timed guided step each. No timing asserts: the values only have to be there,
finite and positive, and the full mode (a backward through the UNet) must cost more FLOPs.
"""
from __future__ import annotations

import pytest

import bench_testing

pytestmark = pytest.mark.comfy


def run_bench(tmp_path, *args):
    return bench_testing.run_bench("latent_bench.py", tmp_path, *args, size=128, timeout=120)


def test_latent_bench_reports_both_modes(tmp_path):
    rows, stdout = run_bench(tmp_path, "--arch", "sd15", "--mode", "both")
    by_mode = {r["mode"]: r for r in rows}
    assert set(by_mode) == {"shortcut", "full"}
    for mode, r in by_mode.items():
        assert "flops_error" not in r and "time_error" not in r, r
        for key in ("flops", "step_s", "first_step_s", "peak_rss_gb", "gflops_per_s"):
            assert bench_testing.positive(r[key]), (mode, key, r.get(key))
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
