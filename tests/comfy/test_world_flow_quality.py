"""Quality floor of the ZeCon Guider on the miniature flow world (bench/quality_latent.py --world flow, in-process).

The flow model is bench/world/flow_model.py (ComfyUI's SD3 config class, a 2-block MMDiT, rectified flow).
Deterministic: the first EDITS edits of bench.quality (``make_edits(EDITS, EDIT_SEED)``), guider seed 0, one CPU
thread, the committed weights. The ZeCon Guider with CLIP at the ZeCon weight 8000 against the same with the
ZeCon weight 0, paired per edit, both at the node's strength 1. On the benchmark (24 edits x 3 seeds,
bench/RESULTS.md) this pair gives Δshape kept +0.15 [+0.04, +0.29] and ΔIoU +0.02 [+0.01, +0.03] at the same
target rate (0.71); at the default weight 500 the effect is +0.03 shapes, too small for 8 edits. Measured here
(one thread, 2-core x86 VM): ΔIoU +0.028, Δshape kept +0.125, target 0.750 vs 0.750. The floors (ΔIoU >= +0.01,
Δshape kept >= 0) catch a ZeCon loss that is off (ΔIoU exactly 0) or has the wrong sign, not a timing.
About 20 s of CPU.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.comfy

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

EDITS = 8
ZECON, NO_ZECON = "ZeCon 8000", "CLIP, ZeCon 0"
IOU_FLOOR = 0.01            # measured +0.028
SHAPE_FLOOR = 0.0           # measured +0.125 (1 edit of 8): ZeCon never loses shapes here
TARGET_SLACK = 0.25         # 2 of 8 edits


@pytest.fixture(scope="module")
def results():
    from bench import quality_latent as q
    return q.run_pair((ZECON, NO_ZECON), EDITS, flow=True)


def test_zecon_keeps_the_geometry_on_the_flow_model(results):
    d, ref = results[ZECON], results[NO_ZECON]
    iou, shape = d.minus(ref, "iou"), d.minus(ref, "shape_kept")
    print(f"ΔIoU {iou:+.3f}, Δshape kept {shape:+.3f}, target {d.mean('target'):.3f} vs {ref.mean('target'):.3f}")
    assert iou >= IOU_FLOOR, f"ΔIoU ZeCon 8000 - ZeCon 0 = {iou:+.3f}"
    assert shape >= SHAPE_FLOOR, f"Δshape kept = {shape:+.3f}"


def test_zecon_reaches_the_target_about_as_often_on_the_flow_model(results):
    d, ref = results[ZECON], results[NO_ZECON]
    assert d.mean("target") >= ref.mean("target") - TARGET_SLACK
