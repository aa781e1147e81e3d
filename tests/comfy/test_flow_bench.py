"""Smoke test of the flow benchmark (``bench/flow_bench.py``) on the tiny flow models on the CPU.

One subprocess per family (in-process ComfyUI there, as the script runs it): both modes, the meta
count of a plain and a guided step and one timed call of each. No timing asserts: the values must be
there, finite and positive; the guided step must cost more than the plain step, the full mode more
than the shortcut (a backward through the whole model), the plain step the same in both; SD3.5 runs
CFG as a batch of two, the cfg-1 families one pass.
"""
from __future__ import annotations

import pytest

import bench_testing

pytestmark = pytest.mark.comfy


def run_bench(tmp_path, *args):
    return bench_testing.run_bench("flow_bench.py", tmp_path, *args, size=64, timeout=300)


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
            assert bench_testing.positive(r[key]), (mode, key, r.get(key))
        assert r["ratio"] == pytest.approx(r["flops"] / r["plain_flops"]) and r["ratio"] > 1
        comp = r["flops_by_component"]
        assert sum(comp.values()) == r["flops"]
        assert comp["model"] == r["plain_flops"]     # the guided step's model call is the plain step
        for part in ("features", "decoder", "clip", "vgg", "backward"):
            assert comp[part] > 0, (mode, part)
        t = r["time"]
        assert t["finite"] and all(bench_testing.positive(t[k]["s"]) and bench_testing.positive(t[k]["peak_rss_gb"]) for k in ("plain", "guided"))
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
