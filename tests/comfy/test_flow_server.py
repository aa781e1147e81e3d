"""The ZeCon Guider and Latent Inversion on rectified-flow models in a REAL ComfyUI 0.3.75 server (CPU, no downloads).

The tiny flow models of tests/comfy/tiny_flow.py (ZeconTestTinyFlow; SD3.5 from its file through the stock
UNETLoader in fp8) through ZeCon Latent Inversion -> ZeCon Guider -> SamplerCustomAdvanced (DisableNoise)
with several stock samplers (incl. ancestral and SDE ones), both modes, a mask, the CLIP losses on the
pack's tiny CLIP with the tiny taef1 / taesd3 / KL-VAE decoders. One prompt holds many branches (few
server round trips on a shared CPU). Then bad inputs (video and audio models among them, refused naming their
type), each a clear error naming the input, after which the server runs the next prompt.
"""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

import tiny_flow
import tiny_sd
import zecon_testing as zt

pytestmark = pytest.mark.comfy

TINY_FLOW_PACK = Path(__file__).resolve().parent / "tiny_flow_pack"
_SEEDS = itertools.count(3000)
# (family, sampler, mode, decoder, clip losses, mask)
RUNS = [("flux_dev", "euler", "shortcut", "taesd", True, True),
        ("flux_dev", "euler_ancestral", "full", "vae", True, False),
        ("flux_dev", "dpmpp_2m", "shortcut", "vae", True, True),
        ("flux_schnell", "dpmpp_sde", "shortcut", "taesd", True, False),
        ("sd3", "euler", "full", "taesd", True, True),
        ("sd3", "dpmpp_2m_sde", "shortcut", "vae", True, False),
        ("sd3", "dpmpp_2m", "shortcut", "taesd", True, False),
        ("sd35", "euler", "shortcut", "taesd", True, False),
        ("sd35", "euler_ancestral", "full", "taesd", False, False),
        ("chroma", "euler", "shortcut", "taesd", True, True),
        ("chroma", "dpmpp_sde", "full", "taesd", False, False),
        ("chroma", "dpmpp_2m", "shortcut", "vae", True, False),
        ("zimage", "euler", "shortcut", "taesd", True, True),
        ("zimage", "euler_ancestral", "full", "taesd", False, False),
        ("zimage", "dpmpp_2m", "shortcut", "vae", True, False),
        ("lumina2", "euler", "full", "taesd", True, False),
        ("hidream", "euler", "shortcut", "taesd", True, True),
        ("hidream", "dpmpp_sde", "full", "vae", True, False),
        ("flux2", "euler", "shortcut", "vae", True, True),
        ("flux2", "euler_ancestral", "full", "vae", False, False),
        ("flux2", "dpmpp_2m", "shortcut", "vae", True, False),
        ("qwen_image", "euler", "shortcut", "vae", True, True),
        ("qwen_image", "dpmpp_sde", "full", "vae", False, False),
        ("qwen_image", "dpmpp_2m", "shortcut", "vae", True, False)]


@pytest.fixture(scope="module")
def server(comfy_server_factory, tmp_path_factory):
    tiny_sd.setup_comfy(cpu=True)     # the tiny model files are written with ComfyUI's own classes
    config = zt.server_config(tmp_path_factory)
    folders = dict(config["model_folders"])
    root = tmp_path_factory.mktemp("tiny_flow_models")
    tiny_flow.write_sd35_unet(root / "diffusion_models" / tiny_flow.SD35_FILE)
    for i, name in enumerate(("taef1", "taesd3")):
        tiny_sd._save(tiny_sd.taesd_half("decoder", 16, 40 + i), root / "vae_approx" / f"{name}_decoder.safetensors")
    folders.update(diffusion_models=root / "diffusion_models", vae_approx=root / "vae_approx")
    server = comfy_server_factory(packs={**config["packs"], "zecon_tiny_flow": TINY_FLOW_PACK},
                                  model_folders=folders, env=config["env"])
    zt.ensure_sample(server)
    return server


@pytest.fixture(scope="module")
def client(server):
    return server.client


def _branch(p: dict, n: str, family: str, sampler: str, mode: str, decoder: str, clip: bool, mask: bool,
            seed: int) -> str:
    """One family's inversion -> guider -> sampler -> SaveLatent; returns the SaveLatent node id."""
    model = [n, 0]
    p[n] = {"class_type": "ZeconTestTinyFlow", "inputs": {"family": family, "seed": 0, "width": 64, "height": 64}}
    if family == "sd35":
        p[n + "0"] = {"class_type": "UNETLoader", "inputs": {"unet_name": tiny_flow.SD35_FILE,
                                                              "weight_dtype": "fp8_e4m3fn"}}
        model = [n + "0", 0]
    p[n + "1"] = {"class_type": "ZeconLatentInversion",
                  "inputs": {"model": model, "latent": [n, 3], "conditioning": [n, 2], "cfg": 1.0, "steps": 3,
                             "denoise": 0.6, "scheduler": "simple"}}
    guider = {"model": model, "positive": [n, 1], "negative": [n, 2], "cfg": 2.0, "source": [n, 3], "mode": mode,
              "decoder": decoder, "start_percent": 0.0, "end_percent": 1.0, "strength": 1.0, "seed": seed,
              "zecon_layers": "auto", "gradient_checkpointing": False, "feather": 8}
    if decoder == "vae":
        p[n + "2"] = {"class_type": "ZeconTestTinyFlowVAE", "inputs": {"family": family, "seed": 0}}
        guider["vae"] = [n + "2", 0]
    if clip:
        guider.update(clip=["99001", 0], style=["99002", 0])
    if mask:
        p[n + "3"] = {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 64, "height": 32}}
        guider["mask"] = [n + "3", 0]
    p[n + "4"] = {"class_type": "ZeconGuider", "inputs": guider}
    p[n + "5"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": sampler}}
    p[n + "6"] = {"class_type": "SamplerCustomAdvanced",
                  "inputs": {"noise": ["99000", 0], "guider": [n + "4", 0], "sampler": [n + "5", 0],
                             "sigmas": [n + "1", 1], "latent_image": [n + "1", 0]}}
    p[n + "7"] = {"class_type": "SaveLatent", "inputs": {"samples": [n + "6", 0],
                                                         "filename_prefix": f"zecon_test/flow_{n}"}}
    return n + "7"


def _prompt(runs, seed: int) -> tuple[dict, list[str]]:
    p = {"99000": {"class_type": "DisableNoise", "inputs": {}},
         "99001": {"class_type": "ZeconClipLoader",
                 "inputs": {"clip_name": "ViT-B-16", "pretrained": "openai", "local_file": zt.TINY_CLIP}},
         "99002": {"class_type": "ZeconStylePrompt",
                 "inputs": {"clip": ["99001", 0], "target_prompt": "a watercolor painting", "source_prompt": "Photo"}}}
    saves = [_branch(p, str(10 * (i + 1)), *run, seed=seed) for i, run in enumerate(runs)]
    return p, saves


def _latents(client, entry, saves) -> list[torch.Tensor]:
    from safetensors.torch import load_file
    out = []
    for save in saves:
        [saved] = entry["outputs"][save]["latents"]
        path = client.output_dir / saved.get("subfolder", "") / saved["filename"]
        out.append(load_file(str(path))["latent_tensor"])
    return out


def test_every_family_is_guided_in_a_real_server_and_seeded_runs_repeat(client):
    seed = next(_SEEDS)
    prompt, saves = _prompt(RUNS, seed)
    latents = _latents(client, client.run(prompt, timeout=1200), saves)
    for (family, *_), latent in zip(RUNS, latents):
        assert latent.shape == tiny_flow.latent(family).shape and torch.isfinite(latent).all(), family
    # the same prompt again with only the SaveLatent prefixes changed: the guider and sampler are cached;
    # a new guider seed reruns them: the guided result depends on the seed, and the first runs repeat
    again, saves2 = _prompt(RUNS[:2], seed)
    for s in saves2:
        again[s]["inputs"]["filename_prefix"] += "_again"
    repeated = _latents(client, client.run(again, timeout=600), saves2)
    assert all(torch.equal(a, b) for a, b in zip(repeated, latents[:2]))


def _error(client, prompt, node: str, starts: str, *words: str) -> None:
    err = zt.execution_error(client, prompt)
    assert err["node_id"] == node, err
    msg = err["exception_message"]
    assert msg.startswith(starts) and all(w in msg for w in words), msg


def test_bad_inputs_are_clear_errors_and_the_server_runs_on(client):
    """A VAE / source latent of another latent format, inversion schedules reaching σ = 1, TAESD where the
    family has none (video and audio models: the next test)."""
    good, good_saves = _prompt(RUNS[:1], next(_SEEDS))
    p, _ = _prompt(RUNS[:1], next(_SEEDS))
    p["900"] = {"class_type": "ZeconTestTinySD", "inputs": {"arch": "sd15", "seed": 0}}
    p["104"]["inputs"]["vae"] = ["900", 2]
    _error(client, p, "104", "vae:", "4-channel", "16-channel", "Flux")
    p, _ = _prompt(RUNS[:1], next(_SEEDS))
    p["901"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    p["104"]["inputs"]["source"] = ["901", 0]
    _error(client, p, "104", "source:", "4-channel", "Flux")
    p, _ = _prompt(RUNS[:1], next(_SEEDS))
    p["101"]["inputs"]["denoise"] = 1.0
    _error(client, p, "101", "denoise:", "sigmas:", "σ = 1")
    p, _ = _prompt(RUNS[:1], next(_SEEDS))
    p["902"] = {"class_type": "BasicScheduler", "inputs": {"model": ["10", 0], "scheduler": "simple", "steps": 3,
                                                           "denoise": 1.0}}
    p["101"]["inputs"]["sigmas"] = ["902", 0]
    _error(client, p, "101", "sigmas:", "σ = 1")
    p, _ = _prompt([("qwen_image", "euler", "shortcut", "taesd", True, False)], next(_SEEDS))
    _error(client, p, "104", "decoder:", "lighttaew2_1", "video decoder")
    p, _ = _prompt([("flux2", "euler", "shortcut", "taesd", True, False)], next(_SEEDS))
    _error(client, p, "104", "decoder:", "no TAESD decoder", "'vae'")
    p, _ = _prompt(RUNS[:1], next(_SEEDS))
    p["903"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    p["101"]["inputs"]["latent"] = ["903", 0]
    _error(client, p, "101", "latent:", "4-channel", "16-channel")
    assert client.get_json("/system_stats")["system"]
    entry = client.run(good, timeout=600)
    [latent] = _latents(client, entry, good_saves)
    assert torch.isfinite(latent).all()


# what the refusal of each video / audio model names: its model class, diffusion-model class, prediction type
NOT_FLOW = "not a rectified-flow image model"
REFUSED = {"wan21": ("WAN21 (WanModel, prediction type FLOW)", NOT_FLOW),
           "ace_step": ("ACEStep (ACEStepTransformer2DModel, prediction type FLOW)", NOT_FLOW),
           "stable_audio": ("StableAudio1 (prediction type V_PREDICTION_CONTINUOUS)", "not supported")}


def test_video_and_audio_models_are_refused_naming_their_type_and_the_server_runs_on(client):
    """ZeCon Guider and ZeCon Latent Inversion on a Wan 2.1 video model, an ACE-Step (flow) and a Stable Audio
    (v-prediction) audio model, each built by ComfyUI's own config class; then a good prompt runs."""
    good, good_saves = _prompt(RUNS[:1], next(_SEEDS))
    for kind, (names, why) in REFUSED.items():
        for node in ("104", "101"):          # the guider, then the inversion (which runs first when it gets it)
            p, _ = _prompt(RUNS[:1], next(_SEEDS))
            p["904"] = {"class_type": "ZeconTestTinyRefusedModel", "inputs": {"kind": kind, "seed": 0}}
            p[node]["inputs"]["model"] = ["904", 0]
            _error(client, p, node, f"model: {names} is {why}", "Flux")
    assert client.get_json("/system_stats")["system"]
    entry = client.run(good, timeout=600)
    [latent] = _latents(client, entry, good_saves)
    assert torch.isfinite(latent).all()
