"""The latent (Stable Diffusion) backbone inside a REAL ComfyUI 0.3.75 server (CPU, loopback, no downloads).

The shipped workflows zecon_sd15_latent / zecon_sdxl_latent (API twins in tests/workflows_api, exported
from the real frontend by zecon_workflows.py) run through POST /prompt on the tiny SD models of
tests/comfy/tiny_sd.py (zecon_testing.tiny_latent: SD 1.5 from the stock UNETLoader / VAELoader files +
ZeconTestTinyCLIP, SDXL from ZeconTestTinySD), 64x64 pictures (8x8 latents), 2 steps, the tiny TAESD
decoders in models/vae_approx and the pack's tiny CLIP for the optional CLIP losses. Then the guider with
several stock samplers, both modes, a mask, and bad inputs: each a clear error naming the input, after
which the server runs the next prompt.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from PIL import Image

import zecon_testing as zt
from harness import PromptRejected

pytestmark = pytest.mark.comfy

SD15, SDXL = "zecon_sd15_latent", "zecon_sdxl_latent"
SIZE = zt.TINY_LATENT_RUN["size"]
_SEEDS = itertools.count(1000)   # a fresh guider seed per "good" run: the guider and the sampler really run


def _prompt(name=SD15, prefix=None, **guider) -> dict:
    """The shipped workflow on the tiny models; ``guider``: changes to the ZeCon Guider's inputs.

    decoder "vae" needs a KL autoencoder (the tiny SD 1.5 VAE file is TAESD-format, which the guider
    refuses with a clear message, see test_decoder_vae_with_a_taesd_vae_is_a_clear_error): there every VAE
    input takes the tiny KL VAE of ZeconTestTinySD(sd15_file)."""
    p = zt.tiny(zt.load_api(name))
    p[zt.node_of(p, "ZeconGuider")]["inputs"].update(guider)
    if name == SD15 and guider.get("decoder") == "vae":
        [vae] = zt.nodes_of(p, "VAELoader")
        p["820"] = {"class_type": "ZeconTestTinySD", "inputs": {"arch": "sd15_file", "seed": 0}}
        zt._relink(p, (vae, 0), ("820", 2))
    if prefix:
        p[zt.node_of(p, "SaveImage")]["inputs"]["filename_prefix"] = prefix
    return p


def _next_prompt_runs(client, name=SD15) -> None:
    """Nothing was lost: the server answers and a good prompt (new seed: nothing cached) runs to an image."""
    assert client.get_json("/system_stats")["system"]
    prompt = _prompt(name, seed=next(_SEEDS), prefix="zecon_test/latent_after_error")
    zt.saved_latent_image(client, client.run(prompt, timeout=300), prompt)


# ------------------------------------------------------------------ the shipped workflows
def test_shipped_latent_workflows_are_the_recipe():
    """The API twins wire the recipe: inversion's latent and sigmas into SamplerCustomAdvanced with
    DisableNoise and the ZeCon Guider; the guider's source and the inversion's latent are the VAE Encode;
    the CLIP losses ship bypassed (the SD prompt carries the style)."""
    for name, ckpt in ((SD15, "v1-5-pruned-emaonly.safetensors"), (SDXL, "sd_xl_base_1.0.safetensors")):
        p = zt.load_api(name)
        [loader] = zt.nodes_of(p, "CheckpointLoaderSimple")
        assert p[loader]["inputs"]["ckpt_name"] == ckpt
        inv, guider, sampler = zt.node_of(p, "ZeconLatentInversion"), zt.node_of(p, "ZeconGuider"), zt.node_of(p, "SamplerCustomAdvanced")
        encode = zt.node_of(p, "VAEEncode")
        s = p[sampler]["inputs"]
        assert p[s["noise"][0]]["class_type"] == "DisableNoise"
        assert s["guider"] == [guider, 0] and s["sigmas"] == [inv, 1] and s["latent_image"] == [inv, 0]
        assert p[s["sampler"][0]]["inputs"]["sampler_name"] == "euler"
        i = p[inv]["inputs"]
        assert (i["cfg"], i["steps"], i["denoise"]) == (1, 25, 0.5) and i["latent"] == [encode, 0]
        g = p[guider]["inputs"]
        assert g["source"] == [encode, 0] and g["vae"] == [loader, 2] and g["model"] == [loader, 0]
        assert g["cfg"] == 5 and g["mode"] == "shortcut" and g["decoder"] == "taesd"
        assert p[g["positive"][0]]["inputs"]["text"] == "a watercolor painting"
        assert p[g["negative"][0]]["inputs"]["text"] == ""
        assert "clip" not in g and "style" not in g      # bypassed in the UI workflow
        assert not zt.nodes_of(p, "ZeconClipLoader") and not zt.nodes_of(p, "ZeconStylePrompt")


@pytest.mark.parametrize("name", [SD15, SDXL])
def test_shipped_latent_workflow_runs_to_a_saved_image(client, name):
    prompt = _prompt(name, prefix=f"zecon_test/{name}")
    img = zt.saved_latent_image(client, client.run(prompt, timeout=300), prompt)
    assert img.std() > 0.01


def _with_clip_losses(prompt: dict) -> dict:
    """What un-bypassing the workflow's ZeCon CLIP Loader + Style Prompt does, on the pack's tiny CLIP."""
    guider = zt.node_of(prompt, "ZeconGuider")
    prompt["801"] = {"class_type": "ZeconClipLoader",
                     "inputs": {"clip_name": "ViT-B-16", "pretrained": "openai", "local_file": zt.TINY_CLIP}}
    prompt["802"] = {"class_type": "ZeconStylePrompt",
                     "inputs": {"clip": ["801", 0], "target_prompt": "a watercolor painting",
                                "source_prompt": "Photo"}}
    prompt[guider]["inputs"].update(clip=["801", 0], style=["802", 0])
    return prompt


def test_clip_losses_change_the_result(client):
    """The optional CLIP losses (tiny CLIP, TAESD decoder) run and steer: another image than without them."""
    seed = next(_SEEDS)
    plain = _prompt(SD15, seed=seed, prefix="zecon_test/latent_noclip")
    base = zt.saved_latent_image(client, client.run(plain, timeout=300), plain)
    styled = _with_clip_losses(_prompt(SD15, seed=seed, prefix="zecon_test/latent_clip"))
    img = zt.saved_latent_image(client, client.run(styled, timeout=300), styled)
    assert np.abs(img - base).mean() > 1e-3


def test_strength_zero_is_plain_cfg_and_guidance_changes_the_image(client):
    """strength 0 = CFGGuider: the same pixels as the stock CFGGuider in the guider's place."""
    seed = next(_SEEDS)
    zero = _prompt(SD15, seed=seed, strength=0.0, prefix="zecon_test/latent_strength0")
    img0 = zt.saved_latent_image(client, client.run(zero, timeout=300), zero)
    stock = _prompt(SD15, prefix="zecon_test/latent_cfgguider")
    g = stock[zt.node_of(stock, "ZeconGuider")]["inputs"]
    stock["803"] = {"class_type": "CFGGuider", "inputs": {k: g[k] for k in ("model", "positive", "negative", "cfg")}}
    stock[zt.node_of(stock, "SamplerCustomAdvanced")]["inputs"]["guider"] = ["803", 0]
    assert np.array_equal(img0, zt.saved_latent_image(client, client.run(stock, timeout=300), stock))
    guided = _prompt(SD15, seed=seed, strength=1.0, prefix="zecon_test/latent_strength1")
    assert np.abs(zt.saved_latent_image(client, client.run(guided, timeout=300), guided) - img0).mean() > 1e-3


# ------------------------------------------------------------------ samplers and modes
SAMPLER_CASES = [
    (SD15, "euler", "shortcut", "taesd"),
    (SD15, "dpmpp_2m", "full", "taesd"),
    (SD15, "ddpm", "shortcut", "vae"),
    (SD15, "heun", "full", "vae"),
    (SDXL, "euler", "full", "taesd"),
    (SDXL, "dpmpp_2m", "shortcut", "taesd"),
    (SDXL, "ddpm", "full", "vae"),
]


@pytest.mark.parametrize("name, sampler, mode, decoder", SAMPLER_CASES,
                         ids=["-".join(c) for c in SAMPLER_CASES])
def test_guider_with_stock_samplers_and_modes(client, name, sampler, mode, decoder):
    prompt = _prompt(name, seed=next(_SEEDS), mode=mode, decoder=decoder,
                     prefix=f"zecon_test/latent_{sampler}_{mode}")
    prompt[zt.node_of(prompt, "KSamplerSelect")]["inputs"]["sampler_name"] = sampler
    img = zt.saved_latent_image(client, client.run(prompt, timeout=300), prompt)
    assert img.std() > 0.01


def test_full_mode_with_gradient_checkpointing_runs(client):
    prompt = _prompt(SD15, seed=next(_SEEDS), mode="full", gradient_checkpointing=True,
                     prefix="zecon_test/latent_full_ckpt")
    zt.saved_latent_image(client, client.run(prompt, timeout=300), prompt)


# ------------------------------------------------------------------ mask
def _masked(prompt: dict, image=zt.MASKED_SAMPLE_NAME) -> dict:
    """Load Image's MASK (sample_masked.png: 1 where transparent) into the guider."""
    prompt["804"] = {"class_type": "LoadImage", "inputs": {"image": image}}
    prompt[zt.node_of(prompt, "ZeconGuider")]["inputs"].update(mask=["804", 1], feather=0)
    return prompt


def _saved_latent(client, entry, node_id):
    """The tensor a SaveLatent node wrote (its history entry's ui 'latents')."""
    from safetensors.torch import load_file
    [item] = entry["outputs"][node_id]["latents"]
    return load_file(str(client.output_dir / item.get("subfolder", "") / item["filename"]))["latent_tensor"]


@pytest.mark.parametrize("name", [SD15, SDXL])
def test_mask_from_load_image_keeps_the_source_outside(client, server, name):
    """Outside the mask the guider's prediction is the source latent: the sampled latent there is the
    VAE-encoded source (compared in latent space: a VAE decoder's attention spreads any change inside the
    mask over every pixel); inside it is restyled."""
    import torch
    from zecon_core.guidance.mask import prepare_mask

    prompt = _masked(_prompt(name, seed=next(_SEEDS), prefix=f"zecon_test/latent_masked_{name}"))
    encode, sampler = zt.node_of(prompt, "VAEEncode"), zt.node_of(prompt, "SamplerCustomAdvanced")
    prompt["805"] = {"class_type": "SaveLatent", "inputs": {"samples": [encode, 0],
                                                            "filename_prefix": f"zecon_test/source_{name}"}}
    prompt["806"] = {"class_type": "SaveLatent", "inputs": {"samples": [sampler, 0],
                                                            "filename_prefix": f"zecon_test/sampled_{name}"}}
    entry = client.run(prompt, timeout=300)
    zt.saved_latent_image(client, entry, prompt)
    source, sampled = _saved_latent(client, entry, "805"), _saved_latent(client, entry, "806")
    assert source.shape == sampled.shape == (1, 4, SIZE // 8, SIZE // 8)

    with Image.open(server.input_dir / zt.MASKED_SAMPLE_NAME) as im:
        alpha = np.asarray(im.getchannel("A"), dtype=np.float32) / 255.0
    # the latent-size mask as the guider makes it from Load Image's MASK (1 - alpha), feather 0
    mask = prepare_mask(1.0 - torch.from_numpy(alpha), 1, SIZE // 8, SIZE // 8, 0.0)[0, 0]
    outside, inside = mask == 0, mask > 0.5
    assert outside.sum() >= 8 and inside.sum() >= 8, (outside.sum(), inside.sum())
    diff = (sampled - source).abs()[0].amax(0)
    assert diff[outside].max() < 1e-4, diff[outside].max()
    assert diff[inside].mean() > 1e-2, diff[inside].mean()


# ------------------------------------------------------------------ bad inputs: execution errors
def _flow(prompt: dict) -> str:
    prompt["810"] = {"class_type": "ZeconTestTinySD", "inputs": {"arch": "flow", "seed": 0}}
    return "810"


def test_flow_model_with_the_sd_vae_is_a_clear_error(client):
    """A flow model (SD3) is guided, but not with the SD 1.5 picture's VAE (4-channel latents)."""
    prompt = _prompt(SD15, seed=next(_SEEDS))
    guider = zt.node_of(prompt, "ZeconGuider")
    prompt[guider]["inputs"]["model"] = [_flow(prompt), 0]
    err = zt.execution_error(client, prompt)
    assert err["node_id"] == guider, err
    msg = err["exception_message"]
    assert msg.startswith("vae:") and "SD3" in msg and "4-channel" in msg and "16-channel" in msg, msg
    _next_prompt_runs(client)


def test_flow_model_inverting_an_sd_latent_is_a_clear_error(client):
    prompt = _prompt(SD15, seed=next(_SEEDS))
    inv = zt.node_of(prompt, "ZeconLatentInversion")
    prompt[inv]["inputs"]["model"] = [_flow(prompt), 0]
    err = zt.execution_error(client, prompt)
    assert err["node_id"] == inv, err
    msg = err["exception_message"]
    assert msg.startswith("latent:") and "SD3" in msg and "4-channel" in msg and "16-channel" in msg, msg
    _next_prompt_runs(client)


def test_vae_of_another_latent_format_is_a_clear_error(client):
    """The tiny flow VAE (16-channel latents) into the SD 1.5 guider's vae input."""
    prompt = _prompt(SD15, seed=next(_SEEDS))
    guider = zt.node_of(prompt, "ZeconGuider")
    prompt[guider]["inputs"]["vae"] = [_flow(prompt), 2]
    err = zt.execution_error(client, prompt)
    assert err["node_id"] == guider, err
    msg = err["exception_message"]
    assert msg.startswith("vae:") and "16-channel" in msg and "4-channel" in msg, msg
    _next_prompt_runs(client)


def _two_masks(prompt: dict) -> dict:
    """Two masks (a batch of 2, each the right half of the picture) into the guider, from core mask nodes."""
    prompt["811"] = {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": SIZE, "height": SIZE}}
    prompt["815"] = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": SIZE // 2, "height": SIZE}}
    prompt["816"] = {"class_type": "MaskComposite", "inputs": {"destination": ["811", 0], "source": ["815", 0],
                                                               "x": SIZE // 2, "y": 0, "operation": "add"}}
    prompt["819"] = {"class_type": "MaskToImage", "inputs": {"mask": ["816", 0]}}
    prompt["821"] = {"class_type": "RepeatImageBatch", "inputs": {"image": ["819", 0], "amount": 2}}
    prompt["812"] = {"class_type": "ImageToMask", "inputs": {"image": ["821", 0], "channel": "red"}}
    prompt[zt.node_of(prompt, "ZeconGuider")]["inputs"].update(mask=["812", 0], feather=0)
    return prompt


def test_a_shift_that_dwarfs_the_prediction_is_said_on_the_console_and_under_the_guider(client, server):
    """strength 100 x an MSE weight of 1e7 (the shift gives values around 1e10): a warning in the server's log
    and as the guider node's progress text (websocket), once."""
    prompt = _prompt(SD15, seed=next(_SEEDS), strength=100.0, prefix="zecon_test/latent_huge_shift")
    prompt["822"] = {"class_type": "ZeconGuidance", "inputs": {
        "clip_global": 0.0, "clip_global_patch": 0.0, "clip_dir": 0.0, "clip_dir_patch": 0.0, "zecon": 0.0,
        "mse": 1e7, "vgg": 0.0, "range": 0.0, "n_patch": 2, "patch_min": 0.01, "patch_max": 0.3, "aug_prob": 1.0,
        "zecon_layers": "0,2", "zecon_patches": 16, "nce_temperature": 0.07, "mse_max_t": 700, "vgg_max_t": 800,
        "shared_views": False}}
    guider = zt.node_of(prompt, "ZeconGuider")
    prompt[guider]["inputs"]["guidance"] = ["822", 0]
    with client.listen() as events:
        client.run(prompt, timeout=300)
    said = [text for node, text in events.texts if node == guider and "guidance shift" in text]
    assert len(said) == 1 and "strength" in said[0], events.texts
    assert server.log_text().count("guidance shift") == 1


def test_mask_batch_mismatch_is_a_clear_error(client):
    """Two masks for one source picture sampled as a batch of 1: refused when sampling starts (the sampled
    batch is not known before), naming the mask."""
    prompt = _two_masks(_prompt(SD15, seed=next(_SEEDS)))
    err = zt.execution_error(client, prompt)
    assert err["node_id"] == zt.node_of(prompt, "SamplerCustomAdvanced"), err
    msg = err["exception_message"]
    assert msg.startswith("mask:") and "2 masks for a batch of 1" in msg, msg
    _next_prompt_runs(client)


def test_one_source_picture_for_a_batch_with_every_loss_and_two_masks(client):
    """The issue's graph: VAE Encode of one picture -> inversion -> RepeatLatentBatch (2) -> the guider with
    source = the one-picture LATENT, CLIP + style connected, VGG on, two masks: a batch of two images, each
    keeping the source latent outside its mask."""
    prompt = _two_masks(_with_clip_losses(_prompt(SD15, seed=next(_SEEDS), prefix="zecon_test/latent_batch2")))
    inv, sampler = zt.node_of(prompt, "ZeconLatentInversion"), zt.node_of(prompt, "SamplerCustomAdvanced")
    prompt["817"] = {"class_type": "RepeatLatentBatch", "inputs": {"samples": [inv, 0], "amount": 2}}
    prompt[sampler]["inputs"]["latent_image"] = ["817", 0]
    prompt["818"] = {"class_type": "ZeconGuidance", "inputs": {
        "clip_global": 300.0, "clip_global_patch": 10000.0, "clip_dir": 300.0, "clip_dir_patch": 20000.0,
        "zecon": 500.0, "mse": 5000.0, "vgg": 100.0, "range": 50.0, "n_patch": 2, "patch_min": 0.01,
        "patch_max": 0.3, "aug_prob": 1.0, "zecon_layers": "0,2", "zecon_patches": 16, "nce_temperature": 0.07,
        "mse_max_t": 700, "vgg_max_t": 800, "shared_views": False}}
    prompt[zt.node_of(prompt, "ZeconGuider")]["inputs"]["guidance"] = ["818", 0]
    encode = zt.node_of(prompt, "VAEEncode")
    prompt["806"] = {"class_type": "SaveLatent", "inputs": {"samples": [sampler, 0],
                                                            "filename_prefix": "zecon_test/sampled_batch2"}}
    prompt["805"] = {"class_type": "SaveLatent", "inputs": {"samples": [encode, 0],
                                                            "filename_prefix": "zecon_test/source_batch2"}}
    entry = client.run(prompt, timeout=600)
    source, sampled = _saved_latent(client, entry, "805"), _saved_latent(client, entry, "806")
    assert source.shape[0] == 1 and sampled.shape[0] == 2 and np.isfinite(sampled.numpy()).all()
    left = SIZE // 16   # latent columns left of the masks' edge (mask = right half, feather 0)
    diff = (sampled - source).abs()
    assert diff[..., : left - 1].max() < 1e-4, diff[..., : left - 1].max()
    assert diff[..., left + 1:].mean() > 1e-3
    assert len(client.output_paths(entry, zt.node_of(prompt, "SaveImage"))) == 2


def test_empty_mask_is_a_clear_error(client):
    """sample.png has no alpha: Load Image's MASK is all 0."""
    prompt = _masked(_prompt(SD15, seed=next(_SEEDS)), image=zt.SAMPLE_NAME)
    err = zt.execution_error(client, prompt)
    assert err["node_id"] == zt.node_of(prompt, "ZeconGuider"), err
    assert err["exception_message"].startswith("mask:") and "empty" in err["exception_message"], err
    _next_prompt_runs(client)


def test_decoder_vae_with_a_taesd_vae_is_a_clear_error(client):
    """VAELoader's TAESD-format VAE (the tiny SD 1.5 file) cannot be the guider's 'vae' decoder."""
    prompt = _prompt(SD15, seed=next(_SEEDS))
    guider = zt.node_of(prompt, "ZeconGuider")
    prompt[guider]["inputs"]["decoder"] = "vae"
    err = zt.execution_error(client, prompt)
    assert err["node_id"] == guider, err    # refused when the guider is made, before any sampling
    msg = err["exception_message"]
    assert msg.startswith("decoder:") and "TAESD" in msg and "taesd" in msg, msg
    _next_prompt_runs(client)


def test_decoder_vae_without_a_vae_is_a_clear_error(client):
    prompt = _prompt(SD15, seed=next(_SEEDS), decoder="vae")
    guider = zt.node_of(prompt, "ZeconGuider")
    del prompt[guider]["inputs"]["vae"]
    err = zt.execution_error(client, prompt)
    assert err["node_id"] == guider and err["exception_message"].startswith("vae:"), err
    _next_prompt_runs(client)


def test_zecon_layer_outside_the_unet_is_a_clear_error(client):
    prompt = _prompt(SD15, seed=next(_SEEDS), zecon_layers="0,40")
    err = zt.execution_error(client, prompt)
    assert err["node_id"] == zt.node_of(prompt, "ZeconGuider")
    msg = err["exception_message"]
    assert msg.startswith("zecon_layers:") and "40" in msg, msg


def test_sdxl_source_for_a_picture_of_another_size_is_a_clear_error(client):
    """The guider's source encoded at another size than the sampled latent."""
    prompt = _prompt(SDXL, seed=next(_SEEDS))
    guider = zt.node_of(prompt, "ZeconGuider")
    vae = prompt[guider]["inputs"]["vae"]
    prompt["813"] = {"class_type": "EmptyImage", "inputs": {"width": 2 * SIZE, "height": 2 * SIZE,
                                                            "batch_size": 1, "color": 0x808080}}
    prompt["814"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["813", 0], "vae": vae}}
    prompt[guider]["inputs"]["source"] = ["814", 0]
    err = zt.execution_error(client, prompt)
    assert err["exception_message"].startswith("source:"), err
    _next_prompt_runs(client, SDXL)


# ------------------------------------------------------------------ bad inputs: HTTP 400
NODE_LEVEL = "exception_during_inner_validation"   # the pack's validate_inputs raise (nodes/validation.py)
NAN = float("nan")   # sent as JSON NaN, which the server's parser takes
INVALID = [
    # (class_type, changes, input named, error type)
    ("ZeconGuider", {"mode": "fast"}, "mode", NODE_LEVEL),
    ("ZeconGuider", {"decoder": "sdxl_vae"}, "decoder", NODE_LEVEL),
    ("ZeconGuider", {"start_percent": 0.8, "end_percent": 0.2}, "end_percent", NODE_LEVEL),
    ("ZeconGuider", {"zecon_layers": "0,two"}, "zecon_layers", NODE_LEVEL),
    ("ZeconGuider", {"cfg": -1.0}, "cfg", NODE_LEVEL),
    ("ZeconGuider", {"cfg": NAN}, "cfg", NODE_LEVEL),
    ("ZeconGuider", {"strength": NAN}, "strength", NODE_LEVEL),
    ("ZeconGuider", {"start_percent": 2.0, "end_percent": 3.0}, "start_percent", NODE_LEVEL),
    ("ZeconGuider", {"start_percent": -0.5}, "start_percent", NODE_LEVEL),
    ("ZeconGuider", {"end_percent": 1.5}, "end_percent", NODE_LEVEL),
    ("ZeconGuider", {"end_percent": NAN}, "end_percent", NODE_LEVEL),
    ("ZeconGuider", {"mode": None}, "mode", NODE_LEVEL),
    ("ZeconGuider", {"decoder": None}, "decoder", NODE_LEVEL),
    ("ZeconGuider", {"strength": "lots"}, "strength", "invalid_input_type"),
    ("ZeconLatentInversion", {"scheduler": "cosine"}, "scheduler", NODE_LEVEL),
    ("ZeconLatentInversion", {"scheduler": None}, "scheduler", NODE_LEVEL),
    ("ZeconLatentInversion", {"denoise": 0.0}, "denoise", NODE_LEVEL),
    ("ZeconLatentInversion", {"denoise": NAN}, "denoise", NODE_LEVEL),
    ("ZeconLatentInversion", {"steps": 0}, "steps", NODE_LEVEL),
]


@pytest.mark.parametrize("class_type, changes, input_name, err_type", INVALID,
                         ids=[f"{c}-{'-'.join(ch)}" for c, ch, _, _ in INVALID])
def test_invalid_input_is_http_400_naming_the_input(client, class_type, changes, input_name, err_type):
    prompt = _prompt(SD15)
    node = zt.node_of(prompt, class_type)
    prompt[node]["inputs"].update(changes)
    with pytest.raises(PromptRejected) as ei:
        client.queue_prompt(prompt)
    rej = ei.value
    assert rej.status == 400 and rej.error["type"] == "prompt_outputs_failed_validation"
    errors = rej.node_errors[node]["errors"]
    if err_type == NODE_LEVEL:   # validate_inputs raises: one error on the node, its text starts with the input
        assert len(errors) == 1 and errors[0]["type"] == NODE_LEVEL, errors
        assert errors[0]["details"].startswith(f"{input_name}:"), errors[0]
    else:
        mine = [e for e in errors if e["extra_info"].get("input_name") == input_name]
        assert mine and mine[0]["type"] == err_type, errors


# ------------------------------------------------------------------ no TAESD file, no network
@pytest.fixture(scope="module")
def server_without_taesd(comfy_server_factory, tmp_path_factory):
    """The same packs and models but no vae_approx folder of ours: ComfyUI's own models/vae_approx is empty,
    and downloads go to a closed loopback port (zecon_testing.SERVER_ENV)."""
    server = comfy_server_factory(**zt.server_config(tmp_path_factory, without=("vae_approx",)))
    zt.ensure_sample(server)
    return server


def test_taesd_decoder_missing_offline_is_a_clear_error(server_without_taesd):
    client = server_without_taesd.client
    vae_approx = server_without_taesd.base_dir / "models" / "vae_approx"
    before = sorted(p.name for p in vae_approx.glob("*")) if vae_approx.is_dir() else []
    assert not [n for n in before if n.startswith("taesd")]
    prompt = _prompt(SD15, seed=next(_SEEDS), decoder="taesd")
    err = zt.execution_error(client, prompt)
    assert err["node_id"] == zt.node_of(prompt, "ZeconGuider"), err
    msg = err["exception_message"]
    assert msg.startswith("decoder:") and "taesd_decoder" in msg and "could not be downloaded" in msg, msg
    assert str(vae_approx) in msg and "by hand" in msg, msg
    after = sorted(p.name for p in vae_approx.glob("*")) if vae_approx.is_dir() else []
    assert after == before            # no partial download left behind
    # the VAE decoder needs no TAESD file: the same server runs that prompt
    ok = _prompt(SD15, seed=next(_SEEDS), decoder="vae", prefix="zecon_test/latent_vae_decoder")
    zt.saved_latent_image(client, client.run(ok, timeout=300), ok)
