"""The tiny random-weight SD fixtures (tests/comfy/tiny_sd.py, tests/comfy/tiny_sd_pack).

In-process: each family runs through ComfyUI's own sampling machinery (CFGGuider +
euler + a 3-step schedule, under inference_mode as the executor runs nodes); the
written files load through the stock loaders' code paths. In a real ComfyUI server:
one prompt with a tiny SD15 from UNETLoader/VAELoader files, a tiny SDXL and a tiny flow
model from the test node, each through SamplerCustomAdvanced into SaveImage/PreviewImage.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import harness
import tiny_sd as T

TINY_SD_PACK = Path(__file__).resolve().parent / "tiny_sd_pack"
PACK_NAME = "zecon_tiny_sd"
SERVER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def comfy_inproc():
    """ComfyUI's modules importable in this process (tiny_sd.setup_comfy), torch on one thread."""
    if not harness.comfyui_available():
        reason = f"ComfyUI not found at {harness.default_comfyui_dir()}; run scripts/setup_env.sh"
        if os.environ.get("ZECON_REQUIRE_COMFY") or os.environ.get("CI"):  # as conftest's fixtures
            pytest.fail(reason + " (required: CI / ZECON_REQUIRE_COMFY is set)", pytrace=False)
        pytest.skip(reason)
    T.setup_comfy(harness.default_comfyui_dir())
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_files(comfy_inproc, tmp_path_factory):
    """{model folder name: dir} with every loader file written by tiny_sd."""
    return T.write_model_folders(tmp_path_factory.mktemp("tiny_sd_models"))


def _sample(model, positive, negative, latent, cfg=2.0, steps=3, seed=0):
    import torch
    import comfy.sample
    import comfy.samplers
    with torch.inference_mode():
        guider = comfy.samplers.CFGGuider(model)
        guider.set_conds(positive, negative)
        guider.set_cfg(cfg)
        sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", steps)
        noise = comfy.sample.prepare_noise(latent, seed)
        return guider.sample(noise, latent, comfy.samplers.sampler_object("euler"), sigmas,
                             seed=seed, disable_pbar=True)


# ------------------------------------------------------------------ in-process
@pytest.mark.parametrize("arch", T.ARCHS)
def test_every_family_samples_through_comfy(comfy_inproc, arch):
    import torch
    import comfy.model_base as mb
    import comfy.supported_models as sm
    model, clip, vae = T.tiny_sd(arch, seed=3)
    cfg_cls = {"sd15": sm.SD15, "sd15_file": sm.SD15, "sd2v": sm.SD20, "sdxl": sm.SDXL, "flow": sm.SD3}[arch]
    assert type(model.model.model_config) is cfg_cls
    expected_type = {"sd2v": mb.ModelType.V_PREDICTION, "flow": mb.ModelType.FLOW}.get(arch, mb.ModelType.EPS)
    assert model.model.model_type == expected_type
    ctx, pooled = T.COND_SHAPES[arch]
    adm = {"sdxl": T.SDXL_POOLED + 6 * 256, "flow": T.FLOW_POOLED}.get(arch, 0)
    assert model.model.adm_channels == adm

    positive, negative = T.encode(clip, "a crayon sketch of a cat"), T.encode(clip, "")
    cond, extras = positive[0]
    assert cond.shape == (1, T.TOKENS, ctx)
    if pooled is not None:
        assert extras["pooled_output"].shape == (1, pooled)
    ch = T.LATENT_CHANNELS[arch]
    assert model.model.latent_format.latent_channels == ch
    latent = torch.zeros(1, ch, 16, 16)
    out = _sample(model, positive, negative, latent)
    assert out.shape == (1, ch, 16, 16) and torch.isfinite(out).all()

    # the same through conditioning made without a text encoder
    out2 = _sample(model, T.conditioning(arch, 1), T.conditioning(arch, 2), latent)
    assert out2.shape == out.shape and torch.isfinite(out2).all()

    with torch.inference_mode():
        image = vae.decode(out)
        assert image.shape == (1, 128, 128, 3) and torch.isfinite(image).all()
        assert vae.encode(image).shape == (1, ch, 16, 16)


def test_same_seed_same_weights_other_seed_other_weights(comfy_inproc):
    import torch
    a = T.tiny_model("sdxl", 5).model.diffusion_model.state_dict()
    b = T.tiny_model("sdxl", 5).model.diffusion_model.state_dict()
    c = T.tiny_model("sdxl", 6).model.diffusion_model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["input_blocks.0.0.weight"], c["input_blocks.0.0.weight"])
    e1 = T.encode(T.tiny_clip("sd15", 1), "a cat")[0][0]
    e2 = T.encode(T.tiny_clip("sd15", 1), "a cat")[0][0]
    assert torch.equal(e1, e2)


def test_unet_forward_is_fast(comfy_inproc):
    """One forward at a 16x16 latent on one thread: measured 5-45 ms for the in-process tiny
    models (flow ~5, sd2v/sdxl ~20-30, sd15 ~35; sd15_file ~55) on a shared 2-core machine;
    the bound is a regression guard with room for a loaded machine."""
    import torch
    for arch in ("sd15", "sd2v", "sdxl", "flow"):
        dm = T.tiny_model(arch, 0).model.diffusion_model
        ctx, pooled = T.COND_SHAPES[arch]
        adm = {"sdxl": T.SDXL_POOLED + 6 * 256, "flow": T.FLOW_POOLED}.get(arch)
        kw = {"y": torch.zeros(1, adm)} if adm else {}
        x, c, t = torch.zeros(1, T.LATENT_CHANNELS[arch], 16, 16), torch.zeros(1, T.TOKENS, ctx), torch.tensor([500.0])
        with torch.inference_mode():
            dm(x, t, context=c, **kw)
            best = min(_timed(lambda: dm(x, t, context=c, **kw)) for _ in range(3))
        assert best < 0.25, (arch, best)


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def test_sd15_unet_file_loads_through_unetloader_as_sd15(comfy_inproc, model_files):
    import torch
    import comfy.supported_models as sm
    import folder_paths
    nodes = T.comfy_nodes()
    folder_paths.add_model_folder_path("diffusion_models", str(model_files["diffusion_models"]))
    assert T.SD15_UNET_FILE in folder_paths.get_filename_list("diffusion_models")
    (model,) = nodes.UNETLoader().load_unet(T.SD15_UNET_FILE, "default")
    assert type(model.model.model_config) is sm.SD15
    assert model.model.model_config.unet_config["context_dim"] == 768
    # the file holds exactly the weights of arch sd15_file with the same seed
    mem = T.sd15_file_model(None, T.DEFAULT_SEED).model.diffusion_model.state_dict()
    got = model.model.diffusion_model.state_dict()
    assert mem.keys() == got.keys() and all(torch.equal(mem[k], got[k]) for k in mem)
    out = _sample(model, T.conditioning("sd15_file", 1), T.conditioning("sd15_file", 2),
                  torch.zeros(1, 4, 16, 16))
    assert torch.isfinite(out).all()


def test_checkpoint_and_vae_files_load_through_their_loaders(comfy_inproc, model_files):
    import torch
    import comfy.supported_models as sm
    import comfy.taesd.taesd
    import folder_paths
    nodes = T.comfy_nodes()
    for name in ("checkpoints", "vae", "vae_approx"):
        folder_paths.add_model_folder_path(name, str(model_files[name]))
    model, clip, vae = nodes.CheckpointLoaderSimple().load_checkpoint(T.SD15_CKPT_FILE)[:3]
    assert type(model.model.model_config) is sm.SD15
    assert clip is None  # no text encoder in the small checkpoint (with_clip=False)
    assert isinstance(vae.first_stage_model, comfy.taesd.taesd.TAESD)

    (vae,) = nodes.VAELoader().load_vae(T.VAE_FILE)
    assert isinstance(vae.first_stage_model, comfy.taesd.taesd.TAESD)
    assert (vae.latent_channels, vae.downscale_ratio) == (4, 8)
    assert {"taesd", "taesdxl", "taesd3"} <= set(nodes.VAELoader.vae_list(nodes.VAELoader))
    (vae_xl,) = nodes.VAELoader().load_vae("taesdxl")
    with torch.inference_mode():
        for v in (vae, vae_xl):
            image = v.decode(torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)))
            assert image.shape == (1, 64, 64, 3) and torch.isfinite(image).all()


def test_taesd_decoders_load_into_comfy_taesd(comfy_inproc, tmp_path):
    import torch
    import comfy.latent_formats as lf
    import comfy.taesd.taesd
    files = T.write_taesd_decoders(tmp_path)
    assert set(files) == {f"{lf.SD15().taesd_decoder_name}.safetensors", f"{lf.SDXL().taesd_decoder_name}.safetensors"}
    for path in files.values():
        taesd = comfy.taesd.taesd.TAESD(None, str(path))
        with torch.inference_mode():
            out = taesd.decode(torch.randn(1, 4, 8, 8))
        assert out.shape == (1, 3, 64, 64) and torch.isfinite(out).all()


# ------------------------------------------------------------------ real server
def _prompt() -> dict:
    sd15 = {
        "1": ("UNETLoader", {"unet_name": T.SD15_UNET_FILE, "weight_dtype": "default"}),
        "2": ("VAELoader", {"vae_name": T.VAE_FILE}),
        "3": ("ZeconTestTinyCLIP", {"arch": "sd15_file", "seed": 0}),
        "4": ("CLIPTextEncode", {"clip": ["3", 0], "text": "a crayon sketch"}),
        "5": ("CLIPTextEncode", {"clip": ["3", 0], "text": ""}),
        "6": ("CFGGuider", {"model": ["1", 0], "positive": ["4", 0], "negative": ["5", 0], "cfg": 2.0}),
        "7": ("EmptyImage", {"width": 128, "height": 128, "batch_size": 1, "color": 0x336699}),
        "8": ("VAEEncode", {"pixels": ["7", 0], "vae": ["2", 0]}),
        "9": ("BasicScheduler", {"model": ["1", 0], "scheduler": "normal", "steps": 3, "denoise": 0.6}),
        "10": ("KSamplerSelect", {"sampler_name": "euler"}),
        "11": ("RandomNoise", {"noise_seed": 1}),
        "12": ("SamplerCustomAdvanced", {"noise": ["11", 0], "guider": ["6", 0], "sampler": ["10", 0],
                                         "sigmas": ["9", 0], "latent_image": ["8", 0]}),
        "13": ("VAEDecode", {"samples": ["12", 0], "vae": ["2", 0]}),
        "14": ("SaveImage", {"images": ["13", 0], "filename_prefix": "tiny_sd15"}),
    }
    sdxl = {
        "21": ("ZeconTestTinySD", {"arch": "sdxl", "seed": 0}),
        "22": ("CLIPTextEncode", {"clip": ["21", 1], "text": "a crayon sketch"}),
        "23": ("BasicGuider", {"model": ["21", 0], "conditioning": ["22", 0]}),
        "24": ("EmptyLatentImage", {"width": 128, "height": 128, "batch_size": 1}),
        "25": ("BasicScheduler", {"model": ["21", 0], "scheduler": "normal", "steps": 3, "denoise": 1.0}),
        "26": ("SamplerCustomAdvanced", {"noise": ["11", 0], "guider": ["23", 0], "sampler": ["10", 0],
                                         "sigmas": ["25", 0], "latent_image": ["24", 0]}),
        "27": ("VAEDecode", {"samples": ["26", 0], "vae": ["21", 2]}),
        "28": ("SaveImage", {"images": ["27", 0], "filename_prefix": "tiny_sdxl"}),
    }
    flow = {  # SD3-style flow model; EmptyLatentImage's 4 zero channels become 16 in SamplerCustomAdvanced
        "31": ("ZeconTestTinySD", {"arch": "flow", "seed": 0}),
        "32": ("CLIPTextEncode", {"clip": ["31", 1], "text": "a crayon sketch"}),
        "33": ("BasicGuider", {"model": ["31", 0], "conditioning": ["32", 0]}),
        "34": ("BasicScheduler", {"model": ["31", 0], "scheduler": "simple", "steps": 3, "denoise": 1.0}),
        "35": ("SamplerCustomAdvanced", {"noise": ["11", 0], "guider": ["33", 0], "sampler": ["10", 0],
                                         "sigmas": ["34", 0], "latent_image": ["24", 0]}),
        "36": ("VAEDecode", {"samples": ["35", 0], "vae": ["31", 2]}),
        "37": ("PreviewImage", {"images": ["36", 0]}),
    }
    return {k: {"class_type": ct, "inputs": inputs} for k, (ct, inputs) in {**sd15, **sdxl, **flow}.items()}


@pytest.mark.comfy
def test_tiny_models_in_a_real_server(comfy_server_factory, model_files):
    folders = {k: model_files[k] for k in ("diffusion_models", "vae", "vae_approx")}
    server = comfy_server_factory(packs={PACK_NAME: TINY_SD_PACK}, model_folders=folders, env=SERVER_ENV)
    client = server.client
    info = client.object_info("ZeconTestTinySD")
    assert info["input"]["required"]["arch"][0] == list(T.ARCHS)
    assert info["output"] == ["MODEL", "CLIP", "VAE"]
    assert T.SD15_UNET_FILE in client.object_info("UNETLoader")["input"]["required"]["unet_name"][0]
    assert T.VAE_FILE in client.object_info("VAELoader")["input"]["required"]["vae_name"][0]

    entry = client.run(_prompt(), timeout=240)
    for node, prefix in (("14", "tiny_sd15"), ("28", "tiny_sdxl")):
        paths = client.output_paths(entry, node)
        assert len(paths) == 1 and paths[0].name.startswith(prefix), entry.get("outputs")
        with Image.open(paths[0]) as im:
            assert im.size == (128, 128)
            assert np.isfinite(np.asarray(im, dtype=np.float32)).all()
    previews = client.output_images(entry, "37")
    assert len(previews) == 1 and previews[0]["type"] == "temp", entry.get("outputs")
