"""Test environment of the ZeCon node pack: tiny models, the sample image, one shared server.

Used by tests/comfy/test_zecon_*.py and tests/comfy/zecon_workflows.py.
Everything is offline: the tiny random-weight models of zecon_core.apps.tiny are
real weight files in the real architectures, written into a temporary
models/zecon folder.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
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

TINY_SD_PACK = REPO / "tests" / "comfy" / "tiny_sd_pack"   # ZeconTestTinySD / ZeconTestTinyCLIP
TINY_SD_PACK_NAME = "zecon_tiny_sd"
#: tiny_sd.write_model_folders' folders the shared server gets. No "checkpoints": the latent workflows name
#: checkpoints the user replaces, and an empty CheckpointLoaderSimple list keeps that name valid in the frontend.
TINY_SD_FOLDERS = ("diffusion_models", "vae", "vae_approx")
TINY_SD15_UNET = "tiny_sd15_unet.safetensors"     # = tiny_sd.SD15_UNET_FILE (UNETLoader, detected as SD15)
TINY_SD_VAE = "tiny_taesd_vae.safetensors"        # = tiny_sd.VAE_FILE (VAELoader)

TINY_FLOW_PACK = REPO / "tests" / "comfy" / "tiny_flow_pack"   # ZeconTestTinyFlow
TINY_FLOW_PACK_NAME = "zecon_tiny_flow"
#: the flow workflows' diffusion-model files -> the tiny_flow family that stands in for them in the tests
TINY_FLOW_FAMILIES = {"flux1-dev.safetensors": "flux_dev", "z_image_turbo_bf16.safetensors": "zimage"}
TINY_FLOW_VAE = "taef1"     # VAELoader's TAESD of the Flux latent format (Flux.1, Z-Image): tiny_sd.write_taesd

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
# ... and of the latent (SD) workflows: 64x64 pictures (8x8 latents), 2 inversion/sampling steps.
TINY_LATENT_RUN = {"size": 64, "latent_steps": 2}


def write_models(folder: Path) -> Path:
    """Tiny ADM / CLIP / VGG files, plus the VGG layers under the name 'auto' looks for."""
    from zecon_core.apps.tiny import write_tiny_models

    paths = write_tiny_models(folder)
    shutil.copyfile(paths["vgg"], Path(folder) / VGG_LAYERS_FILE)
    shutil.copyfile(paths["clip"], Path(folder) / TINY_CLIP_B)
    return Path(folder)


def write_tiny_sd_folders(root: Path) -> dict:
    """tiny_sd.write_model_folders(root) in a child process (it needs ComfyUI's modules, which this
    process does not import): {folder name: dir} for TINY_SD_FOLDERS."""
    here = Path(__file__).resolve().parent
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import tiny_sd; tiny_sd.setup_comfy(); "
            "tiny_sd.write_model_folders(sys.argv[2])")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    python = os.environ.get("ZECON_COMFYUI_PYTHON") or str(
        Path(os.environ.get("ZECON_VENV") or Path.home() / ".cache" / "zecon" / "venv") / "bin" / "python")
    subprocess.run([python if Path(python).is_file() else sys.executable, "-c", code, str(here), str(root)],
                   check=True, env=env, cwd=str(here))
    return {name: Path(root) / name for name in TINY_SD_FOLDERS}


_ENV: dict = {}


def zecon_env(tmp_path_factory) -> dict:
    """Session-wide: {"models": dir, "tiny_sd": {folder: dir}}; the same dirs for every module, so they
    share one server."""
    if "models" not in _ENV:
        _ENV["models"] = write_models(tmp_path_factory.mktemp("zecon_models"))
    if "tiny_sd" not in _ENV:
        _ENV["tiny_sd"] = write_tiny_sd_folders(tmp_path_factory.mktemp("tiny_sd_models"))
    return _ENV


def server_config(tmp_path_factory, without: tuple[str, ...] = ()) -> dict:
    """comfy_server_factory's arguments for the pack + the tiny-SD test pack, the tiny ZeCon models and the
    tiny SD files (``without``: model folders left out, e.g. "vae_approx")."""
    env = zecon_env(tmp_path_factory)
    folders = {"zecon": env["models"], **{k: v for k, v in env["tiny_sd"].items() if k not in without}}
    return {"packs": {PACK_NAME: PACK_DIR, TINY_SD_PACK_NAME: TINY_SD_PACK, TINY_FLOW_PACK_NAME: TINY_FLOW_PACK},
            "model_folders": folders,
            "env": SERVER_ENV}


def start_server(comfy_server_factory, tmp_path_factory):
    """The (shared) ComfyUI server with the pack and the tiny models; sample.png in its input folder."""
    server = comfy_server_factory(**server_config(tmp_path_factory))
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
    """A shipped API prompt made runnable offline on the CPU: the tiny model files and TINY_RUN settings
    (the latent workflows: see tiny_latent)."""
    p = copy.deepcopy(prompt)
    settings = {**TINY_RUN, **TINY_LATENT_RUN, **overrides}
    if any(node["class_type"] == "CheckpointLoaderSimple" for node in p.values()):
        p = tiny_latent(p, size=settings["size"], steps=settings["latent_steps"])
    if any(node["inputs"].get("unet_name") in TINY_FLOW_FAMILIES for node in p.values()):
        p = tiny_flow(p, size=settings["size"], steps=settings["latent_steps"])
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


def node_of(prompt: dict, class_type: str, index: int = 0) -> str:
    return nodes_of(prompt, class_type)[index]


def read_image(path):
    """A saved image as float32 [H, W, 3] in [0, 1]."""
    import numpy as np
    from PIL import Image
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


def saved_latent_image(client, entry, prompt):
    """The one image a latent-size prompt saved: float32 [H, W, 3] in [0, 1], finite, at TINY_LATENT_RUN's size."""
    import numpy as np
    paths = client.output_paths(entry, node_of(prompt, "SaveImage"))
    assert len(paths) == 1, entry.get("outputs")
    img = read_image(paths[0])
    size = TINY_LATENT_RUN["size"]
    assert img.shape == (size, size, 3) and np.isfinite(img).all()
    return img


def execution_error(client, prompt) -> dict:
    """The execution_error message of a prompt that must fail while running."""
    import pytest
    from harness import PromptFailed
    with pytest.raises(PromptFailed) as ei:
        client.run(prompt, timeout=300)
    err = ei.value.message("execution_error")
    assert err is not None, ei.value.messages
    return err


def tiny_latent(prompt: dict, arch: str | None = None, size: int = TINY_LATENT_RUN["size"],
                steps: int = TINY_LATENT_RUN["latent_steps"]) -> dict:
    """A latent (SD) API prompt on the tiny SD models, small pictures and few steps.

    Each CheckpointLoaderSimple becomes, for arch "sd15" (the default for SD 1.5 names), the stock loaders on
    the tiny files: UNETLoader (tiny_sd15_unet, detected as SD15) for MODEL, VAELoader (tiny TAESD-format VAE)
    for VAE and ZeconTestTinyCLIP(sd15_file) for CLIP; for "sdxl" (the default for names with "xl")
    ZeconTestTinySD(sdxl), whose outputs are the loader's (MODEL, CLIP, VAE). ImageScaleToTotalPixels becomes
    ImageScale to ``size`` x ``size``; ZeconLatentInversion runs ``steps`` steps.
    """
    p = copy.deepcopy(prompt)
    for nid, node in list(p.items()):
        ct, inputs = node["class_type"], node["inputs"]
        if ct == "CheckpointLoaderSimple":
            kind = arch or ("sdxl" if "xl" in inputs["ckpt_name"].lower() else "sd15")
            if kind == "sdxl":
                p[nid] = {"class_type": "ZeconTestTinySD", "inputs": {"arch": "sdxl", "seed": 0}}
            elif kind == "sd15":
                p[nid] = {"class_type": "UNETLoader", "inputs": {"unet_name": TINY_SD15_UNET,
                                                                 "weight_dtype": "default"}}
                clip_id, vae_id = f"{nid}001", f"{nid}002"
                p[clip_id] = {"class_type": "ZeconTestTinyCLIP", "inputs": {"arch": "sd15_file", "seed": 0}}
                p[vae_id] = {"class_type": "VAELoader", "inputs": {"vae_name": TINY_SD_VAE}}
                _relink(p, (nid, 1), (clip_id, 0))
                _relink(p, (nid, 2), (vae_id, 0))
            else:
                raise ValueError(f"tiny_latent: arch {kind!r} is not sd15 or sdxl")
    return _small_run(p, size, steps)


def _small_run(p: dict, size: int, steps: int) -> dict:
    """ImageScaleToTotalPixels becomes ImageScale to ``size`` x ``size``; ZeconLatentInversion runs ``steps`` steps."""
    for node in p.values():
        ct, inputs = node["class_type"], node["inputs"]
        if ct == "ImageScaleToTotalPixels":
            node["class_type"] = "ImageScale"
            node["inputs"] = {"image": inputs["image"], "upscale_method": "lanczos", "width": size,
                              "height": size, "crop": "center"}
        elif ct == "ZeconLatentInversion":
            inputs["steps"] = steps
    return p


def tiny_flow(prompt: dict, size: int = TINY_LATENT_RUN["size"], steps: int = TINY_LATENT_RUN["latent_steps"]) -> dict:
    """A flow-model API prompt on the tiny flow models, small pictures and few steps.

    Each UNETLoader of a file in TINY_FLOW_FAMILIES becomes ZeconTestTinyFlow of that family (its MODEL);
    the CLIPTextEncode nodes go (no tiny text encoder): what they fed takes ZeconTestTinyFlow's positive (the
    node titled "Positive ...") or negative conditioning, and the text-encoder loaders go with them; the
    VAELoader loads the tiny taef1 (Flux latent format). Sizes and steps as tiny_latent."""
    p = copy.deepcopy(prompt)
    [(tiny_id, family)] = [(nid, TINY_FLOW_FAMILIES[n["inputs"]["unet_name"]]) for nid, n in p.items()
                           if n["inputs"].get("unet_name") in TINY_FLOW_FAMILIES]
    p[tiny_id] = {"class_type": "ZeconTestTinyFlow",
                  "inputs": {"family": family, "seed": 0, "width": size, "height": size}}
    for nid, node in list(p.items()):
        ct = node["class_type"]
        if ct == "CLIPTextEncode":
            positive = node.get("_meta", {}).get("title", "").startswith("Positive")
            _relink(p, (nid, 0), (tiny_id, 1 if positive else 2))
            del p[nid]
        elif ct in ("CLIPLoader", "DualCLIPLoader"):
            del p[nid]
        elif ct == "VAELoader":
            node["inputs"]["vae_name"] = TINY_FLOW_VAE
    return _small_run(p, size, steps)


def _relink(prompt: dict, old: tuple[str, int], new: tuple[str, int]) -> None:
    """Every input linked to output ``old`` of a node now links to ``new``."""
    for node in prompt.values():
        for k, v in node["inputs"].items():
            if isinstance(v, list) and len(v) == 2 and (str(v[0]), v[1]) == old:
                node["inputs"][k] = [new[0], new[1]]
