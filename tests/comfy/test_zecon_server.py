"""The ZeCon node pack inside a REAL ComfyUI 0.3.75 server (CPU, loopback, no downloads).

Tiny random-weight models (real architectures, real loaders) are written into a
temporary models/zecon; every shipped API-format workflow (tests/workflows_api)
runs through POST /prompt with the model names swapped to the tiny files and
small sizes/steps (zecon_testing.tiny), and the saved images are checked.
"""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
from PIL import Image

import zecon_testing as zt
from harness import PromptFailed, PromptRejected

pytestmark = pytest.mark.comfy

KNOWN_UNET_LABELS = ("256x256_diffusion_uncond.pt (download on first use)", "ffhq_10m.pt (download on first use)")


def _source(server, size=zt.TINY_RUN["size"]) -> np.ndarray:
    """The input as the inversion sees it under the 'resize' policy (LANCZOS, as zecon_core)."""
    with Image.open(server.input_dir / zt.SAMPLE_NAME) as im:
        return np.asarray(im.convert("RGB").resize((size, size), Image.LANCZOS), dtype=np.float32) / 255.0


def _saved(client, entry, node_id) -> np.ndarray:
    paths = client.output_paths(entry, node_id)
    assert len(paths) == 1, entry.get("outputs")
    return zt.read_image(paths[0])


def _executed(events, prompt_id) -> set[str]:
    return {e["node"] for e in events.of_type("executing") if e.get("prompt_id") == prompt_id and e.get("node")}


def _cached(events, prompt_id) -> set[str]:
    return {n for e in events.of_type("execution_cached") if e.get("prompt_id") == prompt_id for n in e["nodes"]}


def _run_listening(client, prompt, timeout=300):
    with client.listen() as events:
        prompt_id = client.queue_prompt(prompt)
        entry = client.wait_for(prompt_id, timeout=timeout)
        deadline = time.monotonic() + 5
        while not any(e.get("prompt_id") == prompt_id and e.get("node") is None
                      for e in events.of_type("executing")) and time.monotonic() < deadline:
            time.sleep(0.05)  # the final "executing: None" marks the end of the run
    return prompt_id, entry, events


# ------------------------------------------------------------------ registration
def test_nodes_registered_with_tooltips_everywhere(client):
    info = client.object_info()
    for node_id in zt.NODE_IDS:
        d = info[node_id]
        assert d["category"] == "ZeCon", node_id
        assert d["display_name"].startswith("ZeCon "), node_id
        assert d["python_module"] == f"custom_nodes.{zt.PACK_NAME}"
        assert d["description"]
        for group in ("required", "optional"):
            for name, spec in d["input"].get(group, {}).items():
                assert spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
        assert len(d["output_tooltips"]) == len(d["output"]) and all(d["output_tooltips"]), node_id
    assert info["ZeconSampler"]["output"] == ["IMAGE"]
    assert info["ZeconInversion"]["output"] == ["ZECON_LATENT", "IMAGE"]
    assert info["ZeconGuidance"]["output"] == ["ZECON_GUIDANCE"]
    # every GuidanceConfig field is an input, with the original README's defaults
    from zecon_core.guidance.core import GuidanceConfig
    import dataclasses
    g = {**info["ZeconGuidance"]["input"]["required"], **info["ZeconGuidance"]["input"].get("optional", {})}
    for f in dataclasses.fields(GuidanceConfig):
        if f.name == "normalise_resolution":   # an engine option of the pixel benchmark, not a node input
            continue
        default = g[f.name][1]["default"]
        expected = getattr(GuidanceConfig(), f.name)
        if f.name == "zecon_layers":
            expected = ",".join(map(str, expected))
        assert default == expected, f.name
    seed = info["ZeconSampler"]["input"]["required"]["seed"][1]
    assert seed["control_after_generate"] is True


def test_model_folder_lists_local_files_and_known_models(client, server):
    options = client.object_info("ZeconDiffusionLoader")["input"]["required"]["model_name"][1]["options"]
    for name in (zt.TINY_UNET, zt.TINY_CLIP, zt.TINY_VGG, *KNOWN_UNET_LABELS):
        assert name in options
    # nothing was downloaded at import
    models = zt._ENV["models"]
    assert not list(models.glob("*.pt")) and not list(models.glob("*.part"))
    clip_opts = client.object_info("ZeconClipLoader")["input"]["required"]["local_file"][1]["options"]
    assert clip_opts[0] == "none" and zt.TINY_CLIP in clip_opts


def test_pack_put_the_sample_image_into_the_input_folder(server):
    # at import, before any test wrote to the input folder
    assert (server.input_dir / zt.SAMPLE_NAME).read_bytes() == zt.SAMPLE_ASSET.read_bytes()


def test_templates_endpoint_lists_shipped_workflows(client):
    names = client.get_json("/workflow_templates")[zt.PACK_NAME]
    shipped = sorted(p.stem for p in zt.WORKFLOWS_DIR.glob("*.json"))
    assert sorted(names) == shipped
    assert set(zt.api_names()) <= set(names)
    for name in names:
        status, body, _ = client.request("GET", f"/api/workflow_templates/{zt.PACK_NAME}/{name}.jpg")
        assert status == 200 and body[:3] == b"\xff\xd8\xff", name   # the thumbnail is a JPEG


# ------------------------------------------------------------------ shipped workflows
@pytest.mark.parametrize("name", zt.api_names())
def test_shipped_workflow_runs_to_saved_images(client, server, name):
    prompt = zt.tiny(zt.load_api(name))
    entry = client.run(prompt, timeout=300)
    source = _source(server)
    images = []
    for node_id in zt.nodes_of(prompt, "SaveImage"):
        img = _saved(client, entry, node_id)
        assert img.shape == (64, 64, 3)
        assert np.isfinite(img).all() and img.std() > 0.01
        assert np.abs(img - source).mean() > 0.02, "output equals the input"
        images.append(img)
    assert images
    if len(images) == 2:  # the modular graph: two styles from one inversion
        assert np.abs(images[0] - images[1]).mean() > 1e-3


def test_same_seed_same_image_other_seed_other_image(client):
    prompt = zt.tiny(zt.load_api("zecon_style_transfer_imagenet"))
    [save] = zt.nodes_of(prompt, "SaveImage")
    [node] = zt.nodes_of(prompt, "ZeconStyleTransfer")
    prompt[save]["inputs"]["filename_prefix"] = "zecon_test/seed_a"
    first = _saved(client, client.run(prompt, timeout=300), save)
    client.free()  # drop ComfyUI's output cache: everything really runs again
    prompt[save]["inputs"]["filename_prefix"] = "zecon_test/seed_b"
    prompt_id, entry, events = _run_listening(client, prompt)
    assert node in _executed(events, prompt_id)
    assert np.array_equal(first, _saved(client, entry, save))
    prompt[node]["inputs"]["seed"] = 1
    prompt[save]["inputs"]["filename_prefix"] = "zecon_test/seed_c"
    other = _saved(client, client.run(prompt, timeout=300), save)
    assert not np.array_equal(first, other)


def test_progress_and_previews_arrive_during_sampling(client):
    prompt = zt.tiny(zt.load_api("zecon_style_transfer_imagenet"))
    [node] = zt.nodes_of(prompt, "ZeconStyleTransfer")
    prompt[node]["inputs"]["seed"] = 7
    prompt_id, entry, events = _run_listening(client, prompt)
    steps = int(zt.TINY_RUN["respacing"]) - zt.TINY_RUN["skip"]
    progress = [p for p in events.of_type("progress") if p["node"] == node and p["prompt_id"] == prompt_id]
    assert [p["value"] for p in progress] == list(range(1, 2 * steps + 1))      # inversion + sampling
    assert all(p["max"] == 2 * steps for p in progress)
    previews = [(mime, data, meta) for mime, data, meta in events.previews if meta.get("node_id") == node]
    assert len(previews) >= 2 * steps
    mime, data, meta = previews[-1]
    assert mime == "image/jpeg" and data[:2] == b"\xff\xd8"


# ------------------------------------------------------------------ caching
def test_prompt_or_weight_changes_do_not_rerun_the_inversion(client):
    base = zt.tiny(zt.load_api("zecon_modular_imagenet"))
    [inversion] = zt.nodes_of(base, "ZeconInversion")
    [guidance] = zt.nodes_of(base, "ZeconGuidance")
    style_a, style_b = zt.nodes_of(base, "ZeconStylePrompt")
    sampler_a, sampler_b = zt.nodes_of(base, "ZeconSampler")
    assert base[sampler_a]["inputs"]["style"][0] == style_a
    client.run(base, timeout=300)

    changed = zt.tiny(zt.load_api("zecon_modular_imagenet"))
    changed[style_a]["inputs"]["target_prompt"] = "an oil painting"
    prompt_id, _, events = _run_listening(client, changed)
    ran = _executed(events, prompt_id)
    assert inversion in _cached(events, prompt_id) and inversion not in ran
    assert {style_a, sampler_a} <= ran and sampler_b not in ran and style_b not in ran
    # the sampler's progress shows only the sampling steps
    progress = [p for p in events.of_type("progress") if p["node"] == sampler_a]
    assert progress and progress[-1]["value"] == progress[-1]["max"] == zt.TINY_RUN["skip"]

    changed[guidance]["inputs"]["zecon"] = 250.0
    prompt_id, _, events = _run_listening(client, changed)
    ran = _executed(events, prompt_id)
    assert inversion in _cached(events, prompt_id) and inversion not in ran
    assert {guidance, sampler_a, sampler_b} <= ran and style_a not in ran


# ------------------------------------------------------------------ interrupt
def test_interrupt_mid_sampling_then_next_prompt_runs(client):
    prompt = zt.tiny(zt.load_api("zecon_modular_imagenet"), respacing="16", skip=0)
    guidance = zt.node_of(prompt, "ZeconGuidance")
    for k in ("clip_global_patch", "clip_dir_patch", "zecon", "mse", "vgg", "range"):
        prompt[guidance]["inputs"][k] = 1.0   # random tiny weights diverge over 16 steps at full strength
    samplers = set(zt.nodes_of(prompt, "ZeconSampler"))
    with client.listen() as events:
        prompt_id = client.queue_prompt(prompt)
        deadline = time.monotonic() + 240

        def sampling():
            return [p for p in events.of_type("progress") if p["node"] in samplers and p["value"] >= 2]

        while not sampling():
            assert time.monotonic() < deadline, "the sampler never reported progress"
            assert client.history(prompt_id) is None, client.history(prompt_id)["status"]
            time.sleep(0.05)
        running = sampling()[0]["node"]
        client.interrupt(prompt_id)
        with pytest.raises(PromptFailed) as ei:
            client.wait_for(prompt_id, timeout=120)
    interrupted = ei.value.message("execution_interrupted")
    assert interrupted is not None and interrupted["node_id"] == running
    assert ei.value.message("execution_error") is None
    done = [p["value"] for p in events.of_type("progress") if p["node"] == running]
    assert max(done) < 16
    # the server is usable afterwards
    nxt = zt.tiny(zt.load_api("zecon_style_transfer_imagenet"))
    [node] = zt.nodes_of(nxt, "ZeconStyleTransfer")
    nxt[node]["inputs"]["seed"] = 11
    entry = client.run(nxt, timeout=300)
    assert client.output_paths(entry)


# ------------------------------------------------------------------ invalid inputs
# ComfyUI 0.3.75 copies a validate_inputs *result* onto every input the function names; the
# pack's checks raise instead, which ComfyUI reports once, on the node (nodes/validation.py).
NODE_LEVEL = "exception_during_inner_validation"


def _modular():
    return zt.tiny(zt.load_api("zecon_modular_imagenet"))


INVALID = [
    # (class_type, changes, input named, error type); the pack's nodes check their numbers themselves
    # (nodes/validation.py schema_errors: ComfyUI's own min/max check lets NaN through)
    ("ZeconGuidance", {"zecon": -1.0}, "zecon", NODE_LEVEL),
    ("ZeconGuidance", {"clip_dir_patch": 1e12}, "clip_dir_patch", NODE_LEVEL),
    ("ZeconGuidance", {"mse": float("nan")}, "mse", NODE_LEVEL),
    ("ZeconGuidance", {"nce_temperature": float("inf")}, "nce_temperature", NODE_LEVEL),
    ("ZeconGuidance", {"aug_prob": 1.5}, "aug_prob", NODE_LEVEL),
    ("ZeconGuidance", {"n_patch": 0}, "n_patch", NODE_LEVEL),
    ("ZeconGuidance", {"patch_min": 0.5, "patch_max": 0.2}, "patch_max", NODE_LEVEL),
    ("ZeconGuidance", {"zecon_layers": "0,two"}, "zecon_layers", NODE_LEVEL),
    ("ZeconGuidance", {"vgg_file": "missing_vgg.pth"}, "vgg_file", NODE_LEVEL),
    ("ZeconGuidance", {"mse": "lots"}, "mse", "invalid_input_type"),
    ("ZeconInversion", {"skip": 6}, "skip", NODE_LEVEL),
    ("ZeconInversion", {"respacing": "fifty"}, "respacing", NODE_LEVEL),
    ("ZeconInversion", {"respacing": ""}, "respacing", NODE_LEVEL),
    ("ZeconInversion", {"respacing": "   "}, "respacing", NODE_LEVEL),
    ("ZeconInversion", {"size_policy": "stretch"}, "size_policy", NODE_LEVEL),
    ("ZeconInversion", {"size": 16}, "size", NODE_LEVEL),
    ("ZeconSampler", {"sampler": "euler"}, "sampler", NODE_LEVEL),
    ("ZeconSampler", {"start": "noise"}, "start", NODE_LEVEL),
    ("ZeconSampler", {"eta": -0.5}, "eta", NODE_LEVEL),
    ("ZeconSampler", {"eta": float("nan")}, "eta", NODE_LEVEL),
    ("ZeconSampler", {"start": None}, "start", NODE_LEVEL),
    ("ZeconSampler", {"seed": -1}, "seed", NODE_LEVEL),
    ("ZeconDiffusionLoader", {"model_name": "missing_model.safetensors"}, "model_name", NODE_LEVEL),
    ("ZeconDiffusionLoader", {"model_name": "ffhq_baseline.pt (not found: place it by hand)"}, "model_name",
     NODE_LEVEL),
    ("ZeconDiffusionLoader", {"precision": "fp8"}, "precision", NODE_LEVEL),
    ("ZeconDiffusionLoader", {"num_head_channels": 0}, "num_head_channels", NODE_LEVEL),
    ("ZeconDiffusionLoader", {"num_head_channels": -2}, "num_head_channels", NODE_LEVEL),
    ("ZeconDiffusionLoader", {"model_name": "../tiny_adm.safetensors"}, "model_name", NODE_LEVEL),
    ("ZeconDiffusionLoader", {"model_name": "/etc/passwd"}, "model_name", NODE_LEVEL),
    ("ZeconClipLoader", {"local_file": "missing_clip.safetensors"}, "local_file", NODE_LEVEL),
]


@pytest.mark.parametrize("class_type, changes, input_name, err_type", INVALID,
                         ids=[f"{c}-{'-'.join(ch)}" for c, ch, _, _ in INVALID])
def test_invalid_input_is_http_400_naming_the_input(client, class_type, changes, input_name, err_type):
    prompt = _modular()
    # ComfyUI queues a prompt while any output stays valid: break every node of the class
    # (the modular graph has two samplers)
    for nid in zt.nodes_of(prompt, class_type):
        prompt[nid]["inputs"].update(changes)
    node = zt.node_of(prompt, class_type)
    with pytest.raises(PromptRejected) as ei:
        client.queue_prompt(prompt)
    rej = ei.value
    assert rej.status == 400 and rej.error["type"] == "prompt_outputs_failed_validation"
    assert node in rej.node_errors, rej.node_errors
    errors = rej.node_errors[node]["errors"]
    if err_type == NODE_LEVEL:   # one error on the node; its text names the input and the problem
        assert len(errors) == 1 and errors[0]["type"] == NODE_LEVEL, errors
        details = errors[0]["details"]
        assert details.startswith(f"{input_name}:") or f"/{input_name}:" in details, details
        assert errors[0]["extra_info"]["exception_type"].endswith("InvalidInputs"), errors[0]["extra_info"]
    else:
        mine = [e for e in errors if e["extra_info"].get("input_name") == input_name]
        assert mine and mine[0]["type"] == err_type, errors


@pytest.mark.parametrize("class_type, changes, problems", [
    ("ZeconInversion", {"respacing": "fifty"}, ["respacing:"]),
    ("ZeconInversion", {"respacing": "fifty", "size_policy": "stretch"}, ["respacing:", "size_policy:"]),
    ("ZeconInversion", {"respacing": "6", "skip": 9, "size_policy": "stretch"}, ["skip:", "size_policy:"]),
    ("ZeconSampler", {"sampler": "euler", "start": "noise"}, ["sampler:", "start:"]),
    ("ZeconGuidance", {"patch_min": 0.5, "patch_max": 0.2, "zecon_layers": "x"}, ["patch_min/patch_max:",
                                                                                  "zecon_layers:"]),
])
def test_each_problem_is_reported_once(client, class_type, changes, problems):
    """A bad respacing used to come back three times (as errors of respacing, skip and size_policy):
    ComfyUI attaches a validate_inputs result to every input it names. Now: one error per node,
    each problem in it once, and no custom error attached to an input it is not about."""
    prompt = _modular()
    for nid in zt.nodes_of(prompt, class_type):
        prompt[nid]["inputs"].update(changes)
    with pytest.raises(PromptRejected) as ei:
        client.queue_prompt(prompt)
    for nid in zt.nodes_of(prompt, class_type):
        errors = ei.value.node_errors[nid]["errors"]
        assert len(errors) == 1, errors
        details = errors[0]["details"]
        for problem in problems:
            assert details.count(problem) == 1, details
        assert not [e for e in errors if e["type"] == "custom_validation_failed"]


def test_missing_model_message_says_where_to_put_it(client, server):
    prompt = _modular()
    node = zt.node_of(prompt, "ZeconDiffusionLoader")
    prompt[node]["inputs"]["model_name"] = "missing_model.safetensors"
    with pytest.raises(PromptRejected) as ei:
        client.queue_prompt(prompt)
    details = ei.value.node_errors[node]["errors"][0]["details"]
    assert "missing_model.safetensors" in details and str(zt._ENV["models"]) in details
    prompt[node]["inputs"]["model_name"] = "ffhq_baseline.pt (not found: place it by hand)"
    with pytest.raises(PromptRejected) as ei:
        client.queue_prompt(prompt)
    assert "github.com/jychoi118/P2-weighting" in ei.value.node_errors[node]["errors"][0]["details"]


@pytest.mark.parametrize("target, source_output", [
    ("latent", ("ZeconStylePrompt", 0)),    # ZECON_STYLE into ZECON_LATENT
    ("model", ("ZeconClipLoader", 0)),      # ZECON_CLIP into ZECON_MODEL
    ("guidance", ("ZeconInversion", 1)),    # IMAGE into ZECON_GUIDANCE
])
def test_wrong_link_type_is_http_400(client, target, source_output):
    prompt = _modular()
    for sampler in zt.nodes_of(prompt, "ZeconSampler"):
        prompt[sampler]["inputs"][target] = [zt.node_of(prompt, source_output[0]), source_output[1]]
    with pytest.raises(PromptRejected) as ei:
        client.queue_prompt(prompt)
    errors = ei.value.node_errors[sampler]["errors"]   # the pack checks link types itself (nodes/validation.py)
    assert any(e["type"] == NODE_LEVEL and e["details"].startswith(f"{target}: a ") and "cannot feed" in e["details"]
               for e in errors), errors


def test_missing_link_is_http_400(client):
    prompt = _modular()
    for sampler in zt.nodes_of(prompt, "ZeconSampler"):
        del prompt[sampler]["inputs"]["style"]
    with pytest.raises(PromptRejected) as ei:
        client.queue_prompt(prompt)
    assert "style" in ei.value.error_inputs()


# ------------------------------------------------------------------ clear execution errors
def test_nan_weight_is_a_clear_error(client):
    prompt = _modular()
    g = zt.node_of(prompt, "ZeconGuidance")
    prompt[g]["inputs"]["zecon"] = math.nan  # JSON NaN passes ComfyUI's min/max check: the pack refuses it
    with pytest.raises(PromptRejected) as ei:
        client.queue_prompt(prompt)
    details = [e["details"] for errors in ei.value.node_errors.values() for e in errors["errors"]]
    assert "zecon: must be a finite number, got nan" in details, details


def test_style_batch_mismatch_is_a_clear_error(client):
    prompt = _modular()
    style = zt.node_of(prompt, "ZeconStylePrompt")
    prompt[style]["inputs"].update(target_prompt="an oil painting\na pencil sketch", per_line=True)
    err = zt.execution_error(client, prompt)
    assert err["node_id"] == zt.node_of(prompt, "ZeconSampler")
    assert "2 style prompts for a batch of 1" in err["exception_message"]


def test_style_from_another_clip_is_a_clear_error(client):
    prompt = _modular()
    loader = zt.node_of(prompt, "ZeconClipLoader")
    prompt["90"] = {"class_type": "ZeconClipLoader",
                    "inputs": {"clip_name": "ViT-B-16", "pretrained": "openai", "local_file": zt.TINY_CLIP_B}}
    sampler = zt.node_of(prompt, "ZeconSampler")
    assert prompt[sampler]["inputs"]["clip"] == [loader, 0]
    prompt[sampler]["inputs"]["clip"] = ["90", 0]
    err = zt.execution_error(client, prompt)
    assert err["node_id"] == sampler
    assert "encoded with CLIP" in err["exception_message"] and zt.TINY_CLIP_B in err["exception_message"]


def test_size_the_unet_cannot_take_is_a_clear_error(client):
    prompt = _modular()
    inv = zt.node_of(prompt, "ZeconInversion")
    prompt[inv]["inputs"].update(size_policy="resize", size=80)
    err = zt.execution_error(client, prompt)
    assert err["node_id"] == inv
    assert "80x80" in err["exception_message"] and "multiples of 32" in err["exception_message"]


def test_zecon_layer_outside_the_unet_is_a_clear_error(client):
    prompt = _modular()
    g = zt.node_of(prompt, "ZeconGuidance")
    prompt[g]["inputs"]["zecon_layers"] = "0,2,40"
    err = zt.execution_error(client, prompt)
    assert "zecon_layers" in err["exception_message"] and "40" in err["exception_message"]


def test_known_model_is_fetched_only_when_the_node_runs(client):
    """Validation accepts a known model's label; the download starts in execute(). Downloads go to a
    closed loopback port here (SERVER_ENV), so the run fails with the downloader's clear message."""
    prompt = _modular()
    loader = zt.node_of(prompt, "ZeconDiffusionLoader")
    prompt[loader]["inputs"]["model_name"] = "256x256_diffusion_uncond.pt (download on first use)"
    err = zt.execution_error(client, prompt)
    assert err["node_id"] == loader
    msg = err["exception_message"]
    assert "256x256_diffusion_uncond.pt" in msg and str(zt._ENV["models"]) in msg and "by hand" in msg
    assert not list(zt._ENV["models"].glob("256x256_diffusion_uncond.pt"))


def test_named_clip_offline_is_a_clear_error(client):
    prompt = _modular()
    loader = zt.node_of(prompt, "ZeconClipLoader")
    prompt[loader]["inputs"]["local_file"] = "none"
    err = zt.execution_error(client, prompt)
    assert err["node_id"] == loader
    assert "ViT-B-16" in err["exception_message"] and "local" in err["exception_message"]


def test_replaced_model_file_is_loaded_again(client):
    """The loader is keyed by path + mtime + size: a file replaced under the same name reloads."""
    from safetensors.torch import save_file
    from zecon_core.apps.tiny import tiny_unet_state_dict

    path = zt._ENV["models"] / "swap_adm.safetensors"
    save_file(tiny_unet_state_dict(seed=1), str(path))
    prompt = zt.tiny(zt.load_api("zecon_style_transfer_imagenet"))
    loader = zt.node_of(prompt, "ZeconDiffusionLoader")
    node = zt.node_of(prompt, "ZeconStyleTransfer")
    save = zt.node_of(prompt, "SaveImage")
    prompt[loader]["inputs"]["model_name"] = "swap_adm.safetensors"
    prompt[node]["inputs"]["vgg"] = 0.0
    first = _saved(client, client.run(prompt, timeout=300), save)
    prompt_id, _, events = _run_listening(client, prompt)      # unchanged: all cached
    assert loader not in _executed(events, prompt_id)
    time.sleep(0.01)
    save_file(tiny_unet_state_dict(seed=2), str(path))
    prompt_id, entry, events = _run_listening(client, prompt)
    assert {loader, node} <= _executed(events, prompt_id)
    assert not np.array_equal(first, _saved(client, entry, save))


def test_gradient_checkpointing_loads_another_model_with_the_same_result(client):
    """The loader's gradient_checkpointing input is part of the model cache key (the model is loaded
    again) and changes no pixel of the result."""
    prompt = zt.tiny(zt.load_api("zecon_style_transfer_imagenet"))
    loader = zt.node_of(prompt, "ZeconDiffusionLoader")
    save = zt.node_of(prompt, "SaveImage")
    inputs = prompt[zt.node_of(prompt, "ZeconStyleTransfer")]["inputs"]
    inputs["vgg"] = 0.0
    inputs["seed"] = 77
    images = {}
    for ckpt in (False, True):
        prompt[loader]["inputs"]["gradient_checkpointing"] = ckpt
        prompt_id, entry, events = _run_listening(client, prompt)
        assert loader in _executed(events, prompt_id)
        images[ckpt] = _saved(client, entry, save)
    assert np.array_equal(images[False], images[True])


def test_known_model_label_stays_valid_after_the_file_is_there(client):
    """Shared workflows name known models by their label; once the file is in models/zecon the label stays
    listed and loads the local file (no download: the test server's download address is a closed port)."""
    import torch
    from zecon_core.apps.tiny import tiny_unet_state_dict

    path = zt._ENV["models"] / "ffhq_10m.pt"
    torch.save(tiny_unet_state_dict(seed=3), path)
    try:
        options = client.object_info("ZeconDiffusionLoader")["input"]["required"]["model_name"][1]["options"]
        assert "ffhq_10m.pt" in options and "ffhq_10m.pt (download on first use)" in options
        prompt = zt.tiny(zt.load_api("zecon_style_transfer_imagenet"))
        loader = zt.node_of(prompt, "ZeconDiffusionLoader")
        prompt[loader]["inputs"]["model_name"] = "ffhq_10m.pt (download on first use)"
        entry = client.run(prompt, timeout=300)
        assert client.output_paths(entry, zt.node_of(prompt, "SaveImage"))
    finally:
        path.unlink()


# ------------------------------------------------------------------ masks, style images, blends
MASKED = "zecon_masked_style_image"


def _loaded_mask(server, name=zt.MASKED_SAMPLE_NAME):
    """The MASK ComfyUI's LoadImage gives for an RGBA file: 1 - alpha."""
    import torch
    with Image.open(server.input_dir / name) as im:
        alpha = np.asarray(im.getchannel("A"), dtype=np.float32) / 255.0
    return 1.0 - torch.from_numpy(alpha)


def test_masked_region_is_restyled_and_the_rest_is_the_unguided_reconstruction(client, server):
    """The shipped masked workflow, with the DDIM sampler (deterministic): beyond the feather, the saved
    pixels equal those of the same graph with every guidance weight 0 (the plain reconstruction)."""
    from zecon_core.guidance.mask import prepare_mask

    prompt = zt.tiny(zt.load_api(MASKED))
    [node] = zt.nodes_of(prompt, "ZeconStyleTransfer")
    [save] = zt.nodes_of(prompt, "SaveImage")
    prompt[node]["inputs"].update(sampler="ddim", seed=5)
    prompt[save]["inputs"]["filename_prefix"] = "zecon_test/masked"
    styled = _saved(client, client.run(prompt, timeout=300), save)

    plain = zt.tiny(zt.load_api(MASKED))
    plain[node]["inputs"].update(sampler="ddim", seed=5)
    plain["91"] = {"class_type": "ZeconGuidance", "inputs": _zero_guidance(client)}
    plain[node]["inputs"]["guidance"] = ["91", 0]
    del plain[node]["inputs"]["mask"]
    plain[save]["inputs"]["filename_prefix"] = "zecon_test/masked_plain"
    reconstruction = _saved(client, client.run(plain, timeout=300), save)

    size = zt.TINY_RUN["size"]
    feather = prompt[node]["inputs"]["feather"]
    m = prepare_mask(_loaded_mask(server), 1, size, size, feather)[0, 0].numpy()
    outside, core = m == 0, m > 0.999
    assert outside.sum() > 500 and core.sum() > 100
    assert np.abs(styled[outside] - reconstruction[outside]).max() <= 1.5 / 255   # 8-bit rounding only
    assert np.abs(styled[core] - reconstruction[core]).mean() > 0.02


def _zero_guidance(client) -> dict:
    """Inputs of a ZeconGuidance node: its defaults, every loss weight 0."""
    from zecon_core.guidance.core import LOSS_NAMES
    spec = client.object_info("ZeconGuidance")["input"]
    inputs = {name: s[1]["default"] for group in ("required", "optional") for name, s in spec.get(group, {}).items()
              if "default" in s[1]}
    inputs.update({k: 0.0 for k in LOSS_NAMES})
    return inputs


def test_new_nodes_take_comfy_types(client):
    info = client.object_info()
    st = info["ZeconStyleTransfer"]["input"]["optional"]
    assert st["mask"][0] == "MASK" and st["style"][0] == "ZECON_STYLE" and st["feather"][1]["default"] == 8
    assert info["ZeconSampler"]["input"]["optional"]["mask"][0] == "MASK"
    assert info["ZeconStyleImage"]["input"]["required"]["images"][0] == "IMAGE"
    assert info["ZeconStyleImage"]["output"] == ["ZECON_STYLE"] == info["ZeconStyleBlend"]["output"]


def test_empty_mask_is_a_clear_error(client):
    """sample.png has no alpha channel: LoadImage's MASK is all 0, and the run says the mask is empty."""
    prompt = zt.tiny(zt.load_api(MASKED))
    [photo] = [n for n in zt.nodes_of(prompt, "LoadImage") if prompt[n]["inputs"]["image"] == zt.MASKED_SAMPLE_NAME]
    prompt[photo]["inputs"]["image"] = zt.SAMPLE_NAME
    err = zt.execution_error(client, prompt)
    assert err["node_id"] == zt.node_of(prompt, "ZeconStyleTransfer")
    assert "the mask is empty" in err["exception_message"]


def test_modular_sampler_takes_a_mask_a_style_image_and_a_batch_of_styles(client, server):
    """The modular graph with a per-image image style blended into a batch of two per-line prompts and a mask."""
    prompt = _modular()
    clip = zt.node_of(prompt, "ZeconClipLoader")
    style = zt.node_of(prompt, "ZeconStylePrompt")
    inv = zt.node_of(prompt, "ZeconInversion")
    prompt["80"] = {"class_type": "LoadImage", "inputs": {"image": zt.MASKED_SAMPLE_NAME}}
    prompt["81"] = {"class_type": "RepeatImageBatch", "inputs": {"image": ["80", 0], "amount": 2}}
    prompt["82"] = {"class_type": "LoadImage", "inputs": {"image": zt.STYLE_SAMPLE_NAME}}
    prompt["83"] = {"class_type": "ZeconStyleImage", "inputs": {"clip": [clip, 0], "images": ["82", 0], "crops": 2}}
    prompt["84"] = {"class_type": "ZeconStyleBlend", "inputs": {"style_a": [style, 0], "style_b": ["83", 0],
                                                                "weight": 0.5}}
    prompt[style]["inputs"].update(target_prompt="(an oil painting:2) (ink:1)\na pencil sketch", per_line=True)
    prompt[inv]["inputs"]["image"] = ["81", 0]
    for s in zt.nodes_of(prompt, "ZeconSampler"):
        prompt[s]["inputs"].update(style=["84", 0], mask=["80", 1], feather=4)
    entry = client.run(prompt, timeout=300)
    paths = client.output_paths(entry, zt.nodes_of(prompt, "SaveImage")[0])
    assert len(paths) == 2
    a, b = (zt.read_image(p) for p in paths)
    assert np.isfinite(a).all() and np.isfinite(b).all() and np.abs(a - b).mean() > 1e-3


# ------------------------------------------------------------------ hostile inputs (review of issue 13)
def _second_unet(name="other_adm.safetensors"):
    from safetensors.torch import save_file
    from zecon_core.apps.tiny import tiny_unet_state_dict

    path = zt._ENV["models"] / name
    if not path.exists():
        save_file(tiny_unet_state_dict(seed=5), str(path))
    return name


def test_latent_from_another_model_is_refused_unless_allowed(client):
    """Inverted with one diffusion model, sampled with another: refused, naming both (it used to run
    with a log warning); allow_other_model opts in."""
    other = _second_unet()
    prompt = _modular()
    loader = zt.node_of(prompt, "ZeconDiffusionLoader")
    prompt["91"] = {"class_type": "ZeconDiffusionLoader",
                    "inputs": {"model_name": other, "precision": "auto"}}
    for sampler in zt.nodes_of(prompt, "ZeconSampler"):
        assert prompt[sampler]["inputs"]["model"] == [loader, 0]
        prompt[sampler]["inputs"]["model"] = ["91", 0]
    err = zt.execution_error(client, prompt)
    assert err["node_id"] in zt.nodes_of(prompt, "ZeconSampler")
    msg = err["exception_message"]
    assert zt.TINY_UNET in msg and other in msg and "allow_other_model" in msg
    for sampler in zt.nodes_of(prompt, "ZeconSampler"):
        prompt[sampler]["inputs"]["allow_other_model"] = True
    entry = client.run(prompt, timeout=300)
    assert client.output_paths(entry)


def test_allow_other_model_has_a_tooltip_and_defaults_off(client):
    spec = client.object_info("ZeconSampler")["input"]["optional"]["allow_other_model"]
    assert spec[0] == "BOOLEAN" and spec[1]["default"] is False and "other" in spec[1]["tooltip"]


def test_head_channels_that_do_not_divide_the_channels_are_a_clear_error(client):
    prompt = _modular()
    loader = zt.node_of(prompt, "ZeconDiffusionLoader")
    prompt[loader]["inputs"]["num_head_channels"] = 48     # the tiny UNet's attention is 64 wide
    err = zt.execution_error(client, prompt)
    assert err["node_id"] == loader and "num_head_channels" in err["exception_message"]
    assert "ZeroDivisionError" not in err["exception_type"]


def test_model_folder_symlinks(client, tmp_path):
    """A link a user placed in models/zecon is followed (as ComfyUI's loaders do), wherever it points,
    if it leads to a regular file; a link to a device is neither listed nor accepted; names from a
    workflow never leave the folder (the '..' and absolute cases are in INVALID)."""
    import os

    from safetensors.torch import save_file
    from zecon_core.apps.tiny import tiny_unet_state_dict

    models = zt._ENV["models"]
    outside = tmp_path / "elsewhere" / "big_disk_adm.safetensors"
    outside.parent.mkdir()
    save_file(tiny_unet_state_dict(seed=6), str(outside))
    good, dev, broken = (models / "linked_adm.safetensors", models / "zero_link.safetensors",
                         models / "broken_link.safetensors")
    good.symlink_to(outside)
    dev.symlink_to("/dev/zero")
    broken.symlink_to(tmp_path / "gone.safetensors")
    os.utime(models)   # ComfyUI's file-list cache is keyed by the folder's mtime
    try:
        options = client.object_info("ZeconDiffusionLoader")["input"]["required"]["model_name"][1]["options"]
        assert good.name in options
        assert dev.name not in options and broken.name not in options
        prompt = zt.tiny(zt.load_api("zecon_style_transfer_imagenet"))
        loader = zt.node_of(prompt, "ZeconDiffusionLoader")
        prompt[loader]["inputs"]["model_name"] = good.name
        prompt[zt.node_of(prompt, "ZeconStyleTransfer")]["inputs"]["vgg"] = 0.0
        assert client.output_paths(client.run(prompt, timeout=300))
        for name in (dev.name, broken.name):
            prompt[loader]["inputs"]["model_name"] = name
            with pytest.raises(PromptRejected) as ei:
                client.queue_prompt(prompt)
            [error] = ei.value.node_errors[loader]["errors"]
            assert error["details"].startswith("model_name:") and name in error["details"]
    finally:
        for link in (good, dev, broken):
            link.unlink()
