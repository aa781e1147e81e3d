"""The quality benchmark's bookkeeping: paired intervals, the table, and merging runs split over
processes and seeds (bench/quality.py, bench/quality_latent.py). Synthetic metrics, no models."""
from __future__ import annotations

import json

import pytest
import torch

from bench.quality import SettingResult, table
from bench.world.metrics import METRICS, paired_interval


def _result(name, seeds, base):
    metrics = {m: torch.full((len(seeds), 4), base) + torch.tensor(seeds, dtype=torch.float)[:, None] / 100
               for m in METRICS}
    return SettingResult(name, metrics, 1.0)


def _run(path, seeds, results, edits="e"):
    path.write_text(json.dumps({"command": f"run {seeds}", "machine": "m", "run": {"steps": 10}, "seeds": seeds,
                                "edits": edits, "settings": {}, "results": [r.to_json() for r in results]}))
    return path


def test_paired_interval_is_the_mean_difference_with_a_bracketing_interval():
    a = torch.tensor([[1.0, 0.0, 1.0, 1.0], [1.0, 0.0, 1.0, 0.0]])
    b = torch.zeros(2, 4)
    mean, lo, hi = paired_interval(a, b)
    assert mean == pytest.approx(0.625) and lo <= mean <= hi and lo >= 0.0 and hi <= 1.0
    assert paired_interval(b, b) == (0.0, 0.0, 0.0)


def test_table_reports_differences_to_the_baseline():
    base, other = _result("CLIP, ZeCon 0", [0], 0.5), _result("defaults (ZeCon 500)", [0], 0.75)
    md = table([base, other], baseline="CLIP, ZeCon 0")
    rows = md.strip().splitlines()
    assert rows[2].startswith("| CLIP, ZeCon 0 | 0.50 |") and "| – |" in rows[2]
    assert rows[3].startswith("| defaults (ZeCon 500) | 0.75 |") and "+0.25 [+0.25, +0.25]" in rows[3]
    assert other.minus(base, "iou") == pytest.approx(0.25) and base.minus(other, "success") == pytest.approx(-0.25)


def test_latent_merge_stacks_the_seeds_of_a_setting(tmp_path):
    from bench import quality_latent as q

    a = _run(tmp_path / "a.json", [0, 1], [_result("strength 4", [0, 1], 0.5), _result("no guidance", [0], 0.2)])
    b = _run(tmp_path / "b.json", [2], [_result("strength 4", [2], 0.5)])
    q.merge([a, b], tmp_path / "out")
    merged = json.loads((tmp_path / "out" / "latent.json").read_text())
    assert merged["seeds"] == [0, 1, 2] and merged["command"] == ["run [0, 1]", "run [2]"]
    got = {r["name"]: r["metrics"]["iou"] for r in merged["results"]}
    assert [row[0] for row in got["strength 4"]] == pytest.approx([0.50, 0.51, 0.52])
    assert [row[0] for row in got["no guidance"]] == pytest.approx([0.20, 0.20, 0.20])   # deterministic: repeated


def test_latent_merge_refuses_a_guided_setting_missing_a_seed_and_other_edits(tmp_path):
    from bench import quality_latent as q

    a = _run(tmp_path / "a.json", [0, 1], [_result("strength 4", [0, 1], 0.5)])
    b = _run(tmp_path / "b.json", [2], [_result("strength 10", [2], 0.5)])
    with pytest.raises(SystemExit, match="'strength 4' has seeds \\[0, 1\\]"):
        q.merge([a, b], tmp_path / "out")
    c = _run(tmp_path / "c.json", [2], [_result("strength 4", [2], 0.5)], edits="other")
    with pytest.raises(SystemExit, match="differ in edits"):
        q.merge([a, c], tmp_path / "out")


def test_flow_world_merge_writes_flow_json_and_leaves_latent_json_alone(tmp_path):
    from bench import quality_latent as q

    a = _run(tmp_path / "a.json", [0], [_result("defaults (ZeCon 500)", [0], 0.5)])
    q.merge([a], tmp_path / "out", world="flow")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["flow.json", "flow_table.md"]
    assert json.loads((tmp_path / "out" / "flow.json").read_text())["seeds"] == [0]
