"""The tiny rectified-flow models (tests/comfy/tiny_flow.py) in ComfyUI 0.3.75's own classes, in-process."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import comfy_inprocess
import tiny_flow

pytestmark = pytest.mark.comfy

# family -> (comfy.model_base class, diffusion model class) the tiny model must be
CLASSES = {"flux_dev": ("Flux", "Flux"), "flux_schnell": ("Flux", "Flux"), "flux2": ("Flux2", "Flux"),
           "chroma": ("Chroma", "Chroma"), "sd3": ("SD3", "OpenAISignatureMMDITWrapper"),
           "sd35": ("SD3", "OpenAISignatureMMDITWrapper"), "qwen_image": ("QwenImage", "QwenImageTransformer2DModel"),
           "lumina2": ("Lumina2", "NextDiT"), "zimage": ("Lumina2", "NextDiT"),
           "hidream": ("HiDream", "HiDreamImageTransformer2DModel")}


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    yield from comfy_inprocess.single_threaded(tmp_path_factory)


def model_inputs(model, family, seed=0):
    """The diffusion model's keyword inputs for the tiny conditioning, as ComfyUI's sampler builds them."""
    import comfy.sampler_helpers
    import comfy.samplers
    x = tiny_flow.latent(family, seed)
    entries = comfy.sampler_helpers.convert_cond(tiny_flow.conditioning(family, seed))
    conds = comfy.samplers.encode_model_conds(model.model.extra_conds, entries, x, torch.device("cpu"), "positive")
    return x, {k: c.process_cond(batch_size=1, area=None).concat([]) for k, c in conds[0]["model_conds"].items()}


@pytest.mark.parametrize("family", tiny_flow.FAMILIES)
def test_each_family_is_its_comfyui_class_with_flow_sampling(pack, family):
    import comfy.model_sampling
    model = tiny_flow.tiny_model(family)
    assert (type(model.model).__name__, type(model.model.diffusion_model).__name__) == CLASSES[family]
    assert isinstance(model.get_model_object("model_sampling"), comfy.model_sampling.CONST)
    assert type(model.model.model_config).__name__ == tiny_flow.CONFIGS[family][0]
    x, inputs = model_inputs(model, family)
    with torch.no_grad():
        out = model.model.apply_model(x, torch.tensor([0.6]), **inputs)
    assert out.shape == x.shape and torch.isfinite(out).all() and out.std() > 0.1


@pytest.mark.parametrize("family", ["flux_dev", "sd3", "zimage"])
def test_tiny_models_are_seeded_bit_for_bit(pack, family):
    a, b, c = (tiny_flow.tiny_model(family, s).model.diffusion_model.state_dict() for s in (3, 3, 4))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert torch.equal(tiny_flow.latent(family, 3), tiny_flow.latent(family, 3))
    assert torch.equal(tiny_flow.conditioning(family, 3)[0][0], tiny_flow.conditioning(family, 3)[0][0])


def test_sd35_file_loads_through_comfyuis_loader_detected_as_sd3(pack, tmp_path):
    path = tiny_flow.write_sd35_unet(tmp_path / tiny_flow.SD35_FILE, seed=2)
    model = tiny_flow.load_file_model(path)
    assert type(model.model.model_config).__name__ == "SD3"
    dm = model.model.diffusion_model
    assert dm.joint_blocks[0].x_block.x_block_self_attn and not dm.joint_blocks[1].x_block.x_block_self_attn
    expected = tiny_flow.unet_state_dict("sd35", seed=2)
    loaded = dm.state_dict()
    assert set(expected) <= set(loaded)
    assert all(torch.equal(loaded[k].float(), v.float()) for k, v in expected.items())


@pytest.mark.parametrize("family", ["flux_dev", "flux2", "qwen_image"])
def test_each_vae_makes_and_takes_its_familys_latents(pack, family):
    vae = tiny_flow.tiny_vae(family, seed=1)
    assert vae.latent_channels == tiny_flow.LATENT_CHANNELS[family]
    image = torch.rand(1, 48, 64, 3, generator=torch.Generator().manual_seed(2))
    z = vae.encode(image)
    scale = 16 if family == "flux2" else 8
    assert z.shape == tiny_flow.latent(family, height=48 // scale, width=64 // scale).shape
    decoded = vae.decode(z)
    assert decoded.shape[-3:] == (48, 64, 3) and torch.isfinite(decoded).all()


def test_taef1_files_load_into_comfyuis_taesd(pack, tmp_path):
    import comfy.latent_formats
    from comfy.taesd.taesd import TAESD
    files = tiny_flow.write_taef1(tmp_path)
    name = comfy.latent_formats.Flux().taesd_decoder_name
    assert f"{name}.safetensors" in files
    taesd = TAESD(str(files["taef1_encoder.safetensors"]), str(files[f"{name}.safetensors"]), latent_channels=16)
    with torch.no_grad():
        image = taesd.decode(tiny_flow.latent("flux_dev", height=6, width=8))
    assert image.shape == (1, 3, 48, 64) and torch.isfinite(image).all()


# ------------------------------------------------------------------ real server
TINY_FLOW_PACK = Path(__file__).resolve().parent / "tiny_flow_pack"
SERVER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _prompt() -> dict:
    """Every family from the test node (and SD3.5 from its file through UNETLoader), CFGGuider +
    SamplerCustomAdvanced, 2 steps of the model's own schedule, each result saved by SaveLatent and
    decoded by the family's tiny VAE."""
    nodes = {"1": ("RandomNoise", {"noise_seed": 1}), "2": ("KSamplerSelect", {"sampler_name": "euler"}),
             "3": ("UNETLoader", {"unet_name": tiny_flow.SD35_FILE, "weight_dtype": "fp8_e4m3fn"})}
    for i, family in enumerate(tiny_flow.FAMILIES):
        n = str(10 * (i + 1))
        model = ["3", 0] if family == "sd35" else [n, 0]
        nodes.update({
            n: ("ZeconTestTinyFlow", {"family": family, "seed": 0, "width": 64, "height": 48}),
            n + "1": ("CFGGuider", {"model": model, "positive": [n, 1], "negative": [n, 2], "cfg": 2.0}),
            n + "2": ("BasicScheduler", {"model": model, "scheduler": "simple", "steps": 2, "denoise": 0.5}),
            n + "3": ("SamplerCustomAdvanced", {"noise": ["1", 0], "guider": [n + "1", 0], "sampler": ["2", 0],
                                                "sigmas": [n + "2", 0], "latent_image": [n, 3]}),
            n + "4": ("SaveLatent", {"samples": [n + "3", 0], "filename_prefix": f"tiny_flow_{family}"}),
            n + "5": ("ZeconTestTinyFlowVAE", {"family": family, "seed": 0}),
            n + "6": ("VAEDecode", {"samples": [n + "3", 0], "vae": [n + "5", 0]}),
            n + "7": ("PreviewImage", {"images": [n + "6", 0]}),
        })
    return {k: {"class_type": ct, "inputs": inputs} for k, (ct, inputs) in nodes.items()}


def test_every_family_samples_in_a_real_server(comfy_server_factory, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_flow_models") / "diffusion_models"
    tiny_flow.write_sd35_unet(folder / tiny_flow.SD35_FILE)
    server = comfy_server_factory(packs={"zecon_tiny_flow": TINY_FLOW_PACK},
                                  model_folders={"diffusion_models": folder}, env=SERVER_ENV)
    client = server.client
    info = client.object_info("ZeconTestTinyFlow")
    assert info["input"]["required"]["family"][0] == list(tiny_flow.FAMILIES)
    assert info["output"] == ["MODEL", "CONDITIONING", "CONDITIONING", "LATENT"]
    entry = client.run(_prompt(), timeout=300)
    from safetensors.torch import load_file
    for i, family in enumerate(tiny_flow.FAMILIES):
        saved = entry["outputs"][f"{10 * (i + 1)}4"]["latents"]     # SaveLatent's ui: the .latent files
        assert len(saved) == 1 and saved[0]["filename"].startswith(f"tiny_flow_{family}"), entry.get("outputs")
        path = client.output_dir / saved[0].get("subfolder", "") / saved[0]["filename"]
        latent = load_file(str(path))["latent_tensor"]
        assert latent.shape == tiny_flow.latent(family, height=6, width=8).shape and torch.isfinite(latent).all()
        previews = client.output_images(entry, f"{10 * (i + 1)}7")
        assert len(previews) == 1 and previews[0]["type"] == "temp", (family, entry.get("outputs"))
