"""The restyle workflow on the miniature world's latent model in a REAL ComfyUI server (CPU, loopback).

tests/workflows_world/zecon_world_latent.json (API format) restyles a picture of the world: the test
pack's ZeconTestWorldSD loads the committed SD1.5-config model (MODEL, CLIP, KL VAE), ZeCon Latent
Inversion inverts the VAE-encoded picture, the ZeCon Guider (defaults, shortcut mode, the TAESD decoder
found in models/vae_approx as ComfyUI finds it) guides SamplerCustomAdvanced towards the target caption.
The same graph with the stock VAELoader's TAESD-format VAE file runs too. So does the graph with the test pack's
ZeconTestWorldFlow (the world's SD3-config MMDiT, bench/world/flow_model.py) in place of the SD model. The UI twin,
bench/world/workflows/zecon_world_latent.json, is built with it by world_workflows.py and checked in the
frontend by test_world_workflow.py.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import world_workflows as ww
import zecon_testing as zt

pytestmark = pytest.mark.comfy

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.world import latent_model as lm          # noqa: E402
from bench.world import world as W                  # noqa: E402

# the API twin of bench/world/workflows/zecon_world_latent.json (both written by world_workflows.py)
WORKFLOW = ww.API_PATH
SOURCE, TARGET = ww.SOURCE, ww.TARGET
TAESD_DECODER_NAME = ww.TAESD_DECODER_NAME   # latent_format.taesd_decoder_name is "taesd_decoder"
FLOW_IOU_FLOOR = 0.6         # flow world restyle: measured IoU 0.710, colour distance to red 0.98 -> 0.36


@pytest.fixture(scope="module")
def server(comfy_server_factory, tmp_path_factory):
    root = tmp_path_factory.mktemp("world_models")
    (root / "vae").mkdir()
    (root / "vae_approx").mkdir()
    (root / "vae" / lm.FILES["taesd_vae"]).symlink_to(lm.weights_path("taesd_vae"))
    (root / "vae_approx" / TAESD_DECODER_NAME).symlink_to(lm.weights_path("taesd_decoder"))
    server = comfy_server_factory(packs=ww.PACKS,
                                  model_folders={"vae": root / "vae", "vae_approx": root / "vae_approx"},
                                  env=zt.SERVER_ENV)
    ww.write_source_picture(server.input_dir)
    return server


def workflow(**guider) -> dict:
    p = json.loads(WORKFLOW.read_text())
    p[zt.node_of(p, "ZeconGuider")]["inputs"].update(guider)
    return p


def restyled(client, prompt) -> torch.Tensor:
    entry = client.run(prompt, timeout=600)
    [path] = client.output_paths(entry, zt.node_of(prompt, "SaveImage"))
    img = zt.read_image(path)
    assert img.shape == (lm.IMAGE_SIZE, lm.IMAGE_SIZE, 3) and np.isfinite(img).all()
    return torch.from_numpy(img).permute(2, 0, 1)[None] * 2 - 1


def object_iou(picture: torch.Tensor) -> float:
    return float(W.iou(W.segment(picture, [TARGET.background]), W.object_mask([TARGET], lm.IMAGE_SIZE))[0])


def psnr(a, b) -> float:
    return float(10 * torch.log10(4 / (a - b).pow(2).mean()))


def object_colour(picture: torch.Tensor) -> torch.Tensor:
    """Mean RGB in [0, 1] inside the true object mask."""
    mask = W.object_mask([TARGET], lm.IMAGE_SIZE)[0]
    return ((picture[0] + 1) / 2)[:, mask].mean(1)


def test_world_restyle_workflow_keeps_the_object_and_moves_its_colour(server):
    """'a dots blue square' restyled by the prompt 'a dots red square': the object stays (IoU with its
    mask), the grader still sees a square, and the object's mean colour moved towards the red one."""
    p = workflow()
    assert p[zt.node_of(p, "CLIPTextEncode", 1)]["inputs"]["text"] == W.caption(TARGET)
    out = restyled(server.client, p)
    iou = object_iou(out)
    assert iou > 0.75, f"IoU {iou:.3f}"
    from bench.world.grader import load_grader
    assert load_grader().predict(out)["shape"] == ["square"]
    red = torch.tensor(W.RGB["red"])
    source = W.render([SOURCE], lm.IMAGE_SIZE)
    before, after = (object_colour(source) - red).norm(), (object_colour(out) - red).norm()
    assert after < before, f"distance of the object's colour to red: {after:.3f} after, {before:.3f} before"


def test_world_workflow_with_the_stock_vae_loader(server):
    p = workflow(seed=1)
    p["30"] = {"class_type": "VAELoader", "inputs": {"vae_name": lm.FILES["taesd_vae"]}}
    for node in (zt.node_of(p, "VAEEncode"), zt.node_of(p, "VAEDecode"), zt.node_of(p, "ZeconGuider")):
        p[node]["inputs"]["vae"] = ["30", 0]
    out = restyled(server.client, p)
    iou = object_iou(out)
    assert iou > 0.6, f"IoU {iou:.3f} (0.70 measured)"


def test_world_workflow_on_the_flow_model(server):
    """The same graph with ZeconTestWorldFlow (the world's SD3-config MMDiT, rectified flow, 16-channel KL VAE) in
    place of ZeconTestWorldSD; the guider decodes with that VAE (no TAE decoder of these latents exists)."""
    p = workflow(decoder="vae")
    p[zt.node_of(p, "ZeconTestWorldSD")]["class_type"] = "ZeconTestWorldFlow"
    out = restyled(server.client, p)
    iou = object_iou(out)
    red = torch.tensor(W.RGB["red"])
    before = (object_colour(W.render([SOURCE], lm.IMAGE_SIZE)) - red).norm()
    after = (object_colour(out) - red).norm()
    print(f"flow world: IoU {iou:.3f}, distance to red {after:.3f} (source {before:.3f})")
    assert iou > FLOW_IOU_FLOOR, f"IoU {iou:.3f}"
    from bench.world.grader import load_grader
    assert load_grader().predict(out)["shape"] == ["square"]
    assert after < before, f"distance of the object's colour to red: {after:.3f} after, {before:.3f} before"
