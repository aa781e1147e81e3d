"""Test environment of the ZeCon node pack: tiny models, the sample image, one shared server.

Used by tests/comfy/test_zecon_*.py and tests/comfy/zecon_workflows.py.
Everything is offline: the tiny random-weight models of zecon_core.tiny are
real weight files in the real architectures, written into a temporary
models/zecon folder.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path


REPO = Path(__file__).resolve().parents[2]
PACK_DIR = REPO
PACK_NAME = "zecon_comfyui"           # folder name under custom_nodes/
WORKFLOWS_DIR = REPO / "workflows"
API_DIR = REPO / "tests" / "workflows_api"
SAMPLE_ASSET = REPO / "assets" / "sample.png"
SAMPLE_NAME = "sample.png"
MASKED_SAMPLE_NAME = "sample_masked.png"     # the scene with a transparent region: Load Image's MASK
STYLE_SAMPLE_NAME = "style_sample.png"       # a style reference image
ARTIFACTS = Path(os.environ.get("ZECON_ARTIFACTS") or REPO / "test-artifacts")

TINY_UNET = "tiny_adm.safetensors"
TINY_CLIP = "tiny_clip.safetensors"
TINY_CLIP_B = "tiny_clip_b.safetensors"         # a second CLIP file (style/CLIP mismatch)
TINY_VGG = "tiny_vgg.safetensors"
VGG_LAYERS_FILE = "vgg19_zecon_layers.safetensors"   # found by the guidance nodes' "auto" VGG

NODE_IDS = ("ZeconDiffusionLoader", "ZeconClipLoader", "ZeconStylePrompt", "ZeconInversion",
            "ZeconGuidance", "ZeconSampler", "ZeconStyleTransfer", "ZeconStyleImage", "ZeconStyleBlend",
            "ZeconLatentInversion", "ZeconGuider")

# One CPU thread per torch op: on a shared 2-core machine two spinning OpenMP
# threads per process made a tiny run 8x slower.
# ZECON_DOWNLOAD_URL_OVERRIDE: every model download goes to a closed loopback port, so a
# test can never fetch from the internet and the "download on first use" path fails fast.
SERVER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "ZECON_DOWNLOAD_URL_OVERRIDE": "http://127.0.0.1:9/zecon-models"}

# Small settings for CPU runs of the shipped workflows (the UNet needs sides >= 64).
TINY_RUN = {"respacing": "6", "skip": 3, "size": 64, "n_patch": 2, "zecon_patches": 16}


def write_models(folder: Path) -> Path:
    """Tiny ADM / CLIP / VGG files, plus the VGG layers under the name 'auto' looks for."""
    from zecon_core.tiny import write_tiny_models

    paths = write_tiny_models(folder)
    shutil.copyfile(paths["vgg"], Path(folder) / VGG_LAYERS_FILE)
    shutil.copyfile(paths["clip"], Path(folder) / TINY_CLIP_B)
    return Path(folder)


_ENV: dict = {}


def zecon_env(tmp_path_factory) -> dict:
    """Session-wide: {"models": dir}; the same dir for every module, so they share one server."""
    if "models" not in _ENV:
        _ENV["models"] = write_models(tmp_path_factory.mktemp("zecon_models"))
    return _ENV


def start_server(comfy_server_factory, tmp_path_factory):
    """The (shared) ComfyUI server with the pack and the tiny models; sample.png in its input folder."""
    env = zecon_env(tmp_path_factory)
    server = comfy_server_factory(packs={PACK_NAME: PACK_DIR}, model_folders={"zecon": env["models"]},
                                  env=SERVER_ENV)
    ensure_sample(server)
    return server


def ensure_sample(server) -> Path:
    """The sample image the shipped workflows load: the pack copies assets/sample.png into the input folder."""
    target = Path(server.input_dir) / SAMPLE_NAME
    assert target.is_file(), f"the pack did not put {SAMPLE_NAME} into {server.input_dir}"
    return target


# ------------------------------------------------------------- API prompts
def load_api(name: str) -> dict:
    return json.loads((API_DIR / f"{name}.json").read_text())


def api_names() -> list[str]:
    return sorted(p.stem for p in API_DIR.glob("*.json"))


def tiny(prompt: dict, **overrides) -> dict:
    """A shipped API prompt made runnable offline on the CPU: the tiny model files and TINY_RUN settings."""
    p = copy.deepcopy(prompt)
    settings = {**TINY_RUN, **overrides}
    for node in p.values():
        ct, inputs = node["class_type"], node["inputs"]
        if ct == "ZeconDiffusionLoader":
            inputs["model_name"] = TINY_UNET
        elif ct == "ZeconClipLoader":
            inputs["local_file"] = TINY_CLIP
        if ct in ("ZeconInversion", "ZeconStyleTransfer"):
            for k in ("respacing", "skip", "size"):
                inputs[k] = settings[k]
        if ct in ("ZeconGuidance", "ZeconStyleTransfer"):
            inputs["n_patch"] = settings["n_patch"]
        if ct == "ZeconGuidance":
            inputs["zecon_patches"] = settings["zecon_patches"]
    return p


def nodes_of(prompt: dict, class_type: str) -> list[str]:
    return sorted((k for k, v in prompt.items() if v["class_type"] == class_type), key=int)
