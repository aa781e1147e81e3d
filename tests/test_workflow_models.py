"""Every shipped UI workflow carries ComfyUI's model metadata for the files a user must fetch.

ComfyUI's templates put it on each loader node as ``properties.models``: ``[{name, url, directory}]``;
the frontend offers the download of an entry whose ``name`` is one of the node's widget values and
is not in ``models/<directory>``. Checked here against the registry itself (URLs, folders, names):
the ADM models on ZeCon Diffusion Loader, the TAESD decoder on the ZeCon Guider, the SD checkpoint
on Load Checkpoint.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from zecon_core.files.registry import (KNOWN_MODELS, WORKFLOW_CHECKPOINTS, comfy_models_subdir, get_known,
                                       parse_display_name)

#: stock loaders -> how many of their first widgets name files (registry.WORKFLOW_CHECKPOINTS)
LOADER_FILES = {"CheckpointLoaderSimple": 1, "UNETLoader": 1, "DualCLIPLoader": 2, "CLIPLoader": 1, "VAELoader": 1}
WORKFLOWS = sorted((Path(__file__).resolve().parents[1] / "workflows").glob("*.json"))
#: the frontend's download rule (MissingModelsWarning): these sources and suffixes get a Download button
FRONTEND_SOURCES, FRONTEND_SUFFIXES = ("https://huggingface.co/", "https://civitai.com/"), (".safetensors", ".sft")


def nodes(name: str) -> list[dict]:
    return json.loads((Path(__file__).resolve().parents[1] / "workflows" / name).read_text())["nodes"]


def registry_entry(model: dict) -> tuple[str, str]:
    """(url, directory) the registry gives for a metadata entry's file name."""
    if model["name"] in WORKFLOW_CHECKPOINTS:
        c = WORKFLOW_CHECKPOINTS[model["name"]]
        return c.url, c.directory
    entry = get_known(model["name"])
    assert entry is not None and entry.filename == model["name"], f"{model['name']} is not a registry file name"
    return entry.urls[0], comfy_models_subdir(entry.kind)


def test_there_are_workflows_to_check():
    assert {p.name for p in WORKFLOWS} >= {"zecon_style_transfer_imagenet.json", "zecon_sd15_latent.json",
                                           "zecon_sdxl_latent.json", "zecon_faces_ffhq.json"}


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_model_metadata_matches_the_registry(path):
    for node in nodes(path.name):
        for model in node.get("properties", {}).get("models", []):
            assert set(model) == {"name", "url", "directory"}, (node["type"], model)
            assert (model["url"], model["directory"]) == registry_entry(model), (path.stem, node["type"], model)


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.stem for p in WORKFLOWS])
def test_every_file_to_fetch_has_its_metadata(path):
    ws = nodes(path.name)
    names = lambda node: [m["name"] for m in node.get("properties", {}).get("models", [])]  # noqa: E731
    loaders = [n for n in ws if n["type"] in LOADER_FILES]
    for node in loaders:
        files = node["widgets_values"][:LOADER_FILES[node["type"]]]
        for ckpt in files:
            assert ckpt in WORKFLOW_CHECKPOINTS, f"{path.stem}: {ckpt} has no URL in registry.WORKFLOW_CHECKPOINTS"
            url = WORKFLOW_CHECKPOINTS[ckpt].url
            assert url.startswith(FRONTEND_SOURCES) and ckpt.endswith(FRONTEND_SUFFIXES)
        assert names(node) == files              # the widget values: the frontend offers these
    checkpoints = [n for n in loaders if n["type"] in ("CheckpointLoaderSimple", "UNETLoader")]
    for node in (n for n in ws if n["type"] == "ZeconDiffusionLoader"):
        label = node["widgets_values"][0]
        entry = parse_display_name(label) or get_known(label)
        assert entry is not None and entry.kind == "unet", label
        assert names(node) == [entry.filename]
    for node in (n for n in ws if n["type"] == "ZeconGuider"):
        assert node["widgets_values"][2] == "taesd"         # the decoder choice the workflows ship with
        [ckpt_node] = checkpoints
        taesd = KNOWN_MODELS[WORKFLOW_CHECKPOINTS[ckpt_node["widgets_values"][0]].taesd]
        assert taesd.kind == "taesd" and names(node) == [taesd.filename]
    carriers = {n["type"] for n in ws if n.get("properties", {}).get("models")}
    assert carriers <= {*LOADER_FILES, "ZeconDiffusionLoader", "ZeconGuider"}
    needed = {*LOADER_FILES, "ZeconDiffusionLoader", "ZeconGuider"} & {n["type"] for n in ws}
    assert carriers == needed, path.stem
