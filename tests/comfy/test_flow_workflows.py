"""The shipped flow-model workflows zecon_flux_latent / zecon_zimage_latent in a REAL ComfyUI server.

Their API twins (tests/workflows_api, exported from the real frontend by zecon_workflows.py) wire the
recipe of the SD latent workflows for Flux.1 dev and Z-Image Turbo; they run through POST /prompt on the
tiny flow models of tests/comfy/tiny_flow.py (zecon_testing.tiny_flow: ZeconTestTinyFlow for the
diffusion model and the conditionings, the tiny taef1 TAESD as the VAE and the guider's decoder), 64x64
pictures, 2 steps: as shipped (shortcut mode), in full mode (a backward through the whole tiny DiT, Flux's
out-of-place blocks) and at strength 0, which is plain sampling.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

import zecon_testing as zt

pytestmark = pytest.mark.comfy

FLUX, ZIMAGE = "zecon_flux_latent", "zecon_zimage_latent"
_SEEDS = itertools.count(3000)


def _prompt(name, prefix, **guider) -> dict:
    p = zt.tiny(zt.load_api(name))
    p[zt.node_of(p, "ZeconGuider")]["inputs"].update(guider)
    p[zt.node_of(p, "SaveImage")]["inputs"]["filename_prefix"] = prefix
    return p


def test_shipped_flow_workflows_are_the_recipe():
    """Inversion's latent and sigmas into SamplerCustomAdvanced with DisableNoise and the ZeCon Guider; the
    guider's source and the inversion's latent are the VAE Encode; cfg 1 as these distilled models run
    (Flux.1 dev's prompt strength through FluxGuidance 3.5 on the positive; Z-Image Turbo's shift 3 through
    ModelSamplingAuraFlow on the model both the inversion and the guider use); CLIP losses bypassed."""
    for name, unet in ((FLUX, "flux1-dev.safetensors"), (ZIMAGE, "z_image_turbo_bf16.safetensors")):
        p = zt.load_api(name)
        [loader] = zt.nodes_of(p, "UNETLoader")
        assert p[loader]["inputs"]["unet_name"] == unet and zt.TINY_FLOW_FAMILIES[unet]
        inv, guider = zt.node_of(p, "ZeconLatentInversion"), zt.node_of(p, "ZeconGuider")
        sampler, encode = zt.node_of(p, "SamplerCustomAdvanced"), zt.node_of(p, "VAEEncode")
        [vae] = zt.nodes_of(p, "VAELoader")
        s = p[sampler]["inputs"]
        assert p[s["noise"][0]]["class_type"] == "DisableNoise"
        assert s["guider"] == [guider, 0] and s["sigmas"] == [inv, 1] and s["latent_image"] == [inv, 0]
        i, g = p[inv]["inputs"], p[guider]["inputs"]
        assert i["cfg"] == 1 and 0 < i["denoise"] < 1 and i["latent"] == [encode, 0]
        assert i["model"] == g["model"] and p[encode]["inputs"]["vae"] == [vae, 0] and g["vae"] == [vae, 0]
        assert g["source"] == [encode, 0] and g["cfg"] == 1 and g["mode"] == "shortcut" and g["decoder"] == "taesd"
        assert p[g["negative"][0]]["inputs"]["text"] == ""
        assert "clip" not in g and "style" not in g
        positive = p[g["positive"][0]]
        model = p[g["model"][0]]
        if name == FLUX:
            assert positive["class_type"] == "FluxGuidance" and positive["inputs"]["guidance"] == 3.5
            assert p[positive["inputs"]["conditioning"][0]]["inputs"]["text"] == "a watercolor painting"
            assert g["model"] == [loader, 0] and p[loader]["inputs"]["weight_dtype"] == "fp8_e4m3fn"
            assert zt.nodes_of(p, "DualCLIPLoader")
        else:
            assert positive["inputs"]["text"] == "a watercolor painting"
            assert model["class_type"] == "ModelSamplingAuraFlow" and model["inputs"]["shift"] == 3
            assert model["inputs"]["model"] == [loader, 0] and zt.nodes_of(p, "CLIPLoader")


def test_tiny_flow_keeps_the_graph_and_swaps_only_models():
    """zt.tiny_flow: the loaders become ZeconTestTinyFlow / the tiny taef1, the prompts its conditionings
    (positive where the workflow's positive prompt was), everything else as shipped."""
    shipped = zt.load_api(FLUX)
    p = zt.tiny(shipped)
    [tiny] = zt.nodes_of(p, "ZeconTestTinyFlow")
    assert p[tiny]["inputs"]["family"] == "flux_dev"
    assert not zt.nodes_of(p, "CLIPTextEncode") and not zt.nodes_of(p, "DualCLIPLoader")
    g = p[zt.node_of(p, "ZeconGuider")]["inputs"]
    assert p[g["positive"][0]]["inputs"]["conditioning"] == [tiny, 1] and g["negative"] == [tiny, 2]
    assert p[zt.node_of(p, "ZeconLatentInversion")]["inputs"]["conditioning"] == [tiny, 2]
    assert p[zt.node_of(p, "VAELoader")]["inputs"]["vae_name"] == zt.TINY_FLOW_VAE
    kept = set(shipped) - set(zt.nodes_of(shipped, "CLIPTextEncode")) - set(zt.nodes_of(shipped, "DualCLIPLoader"))
    assert set(p) == kept


@pytest.mark.parametrize("name", [FLUX, ZIMAGE])
def test_flow_workflow_full_mode_and_strength_zero(client, name):
    """Full mode runs (a backward through the whole DiT) and gives another picture than strength 0 (plain
    sampling from the inversion), which in turn differs from the shortcut run: the guidance acts."""
    seed = next(_SEEDS)
    images = {}
    for label, changes in (("plain", {"strength": 0.0}), ("shortcut", {}), ("full", {"mode": "full"})):
        prompt = _prompt(name, f"zecon_test/{name}_{label}", seed=seed, **changes)
        images[label] = zt.saved_latent_image(client, client.run(prompt, timeout=300), prompt)
    assert images["shortcut"].std() > 0.01
    for a, b in (("plain", "shortcut"), ("plain", "full")):
        assert np.abs(images[a] - images[b]).max() > 1 / 255, (a, b)
