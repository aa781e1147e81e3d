"""The miniature world's latent model (bench/world/weights/latent_*) through ComfyUI's own loaders, in-process.

The committed files match bench/world/manifest.json; the UNet is ComfyUI's SD15 model (config class,
latent format, ε prediction) and knows its world; the KL VAE and the TAESD-format VAE (stock VAELoader)
share one latent space; the frozen text encoder tells every caption of the world apart. The flow model
(bench/world/flow_model.py: ComfyUI's SD3 config class, an MMDiT, rectified flow, its 16-channel KL VAE)
denoises world latents far better than a content-blind guess, reads its caption, and the ZeCon Guider runs
on it.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import comfy_inprocess

pytestmark = pytest.mark.comfy

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.world import flow_model as fm                      # noqa: E402
from bench.world import latent_model as lm                    # noqa: E402
from bench.world import manifest                              # noqa: E402
from bench.world import world as W                            # noqa: E402

HELD_OUT_SEED = 99_001          # world pictures none of the training stages drew
FLOW_VAE_PSNR_FLOOR = 17.0      # measured 20.4 dB on these 16 pictures (20.0 on 256 held out at training)
FLOW_DENOISE_FRACTION = 0.5     # x0 error / the content-blind guess's; measured 0.20-0.30 (t 0.3-0.7)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(4 / (a.clamp(-1, 1) - b).pow(2).mean()))


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    return comfy_inprocess.load(tmp_path_factory.mktemp("comfy_input"))


@pytest.fixture(scope="module")
def pictures():
    return W.render(W.sample_scenes(16, HELD_OUT_SEED), lm.IMAGE_SIZE)


def to_image(pictures):
    """[-1, 1] [B, 3, H, W] -> ComfyUI IMAGE [B, H, W, 3] in [0, 1]."""
    return ((pictures + 1) / 2).permute(0, 2, 3, 1)


def from_image(image):
    return image.permute(0, 3, 1, 2).float() * 2 - 1


@pytest.mark.parametrize("files, command, max_mib", [(lm.FILES, "python -m bench.world.train_latent ", 12),
                                                     (fm.FILES, "python -m bench.world.train_latent flow", 6)],
                         ids=["latent", "flow"])
def test_weights_match_the_manifest(files, command, max_mib):
    entries = manifest.read()
    for name in files.values():
        assert name in entries, f"{name} has no manifest entry"
        path = manifest.WEIGHTS_DIR / name
        assert path.stat().st_size == entries[name]["bytes"]
        assert manifest.sha256(path) == entries[name]["sha256"]
        assert entries[name]["command"].startswith(command)
        assert path.stat().st_size < max_mib * 2 ** 20


def test_unet_is_comfyuis_sd15_model(pack):
    import comfy.latent_formats
    import comfy.model_sampling
    import comfy.supported_models
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    from zecon_pack.nodes.latent import backbone as B
    model = lm.load_model()
    assert isinstance(model.model.model_config, comfy.supported_models.SD15)
    assert isinstance(model.model.latent_format, comfy.latent_formats.SD15)
    assert isinstance(model.get_model_object("model_sampling"), comfy.model_sampling.EPS)
    assert isinstance(model.model.diffusion_model, UNetModel)
    B.check_model(model)                                   # the guider accepts it
    assert B.default_layers(model.model.diffusion_model) == (0, 1)
    n = sum(p.numel() for p in model.model.diffusion_model.parameters())
    assert 5e5 < n < 8e6          # 1.08 M parameters at model_channels 32


def test_kl_vae_round_trip_and_unit_variance_latents(pack, pictures):
    vae = lm.load_vae()
    assert type(vae.first_stage_model).__name__ == "AutoencoderKL"
    latent = vae.encode(to_image(pictures))
    assert latent.shape == (16, 4, lm.LATENT_SIZE, lm.LATENT_SIZE)
    model_space = latent * lm.SCALE_FACTOR
    assert 0.7 < float(model_space.std()) < 1.4          # rescaled at training for SD1.5's 0.18215
    assert psnr(from_image(vae.decode(latent)), pictures) > 16.0     # 17.7 dB on held-out pictures at training


def test_stock_vae_loader_reads_the_taesd_vae_in_the_same_latent_space(pack, pictures, tmp_path):
    import folder_paths
    from tiny_sd import comfy_nodes
    (tmp_path / lm.FILES["taesd_vae"]).symlink_to(lm.weights_path("taesd_vae"))
    folder_paths.add_model_folder_path("vae", str(tmp_path))
    (vae,) = comfy_nodes().VAELoader().load_vae(lm.FILES["taesd_vae"])
    assert type(vae.first_stage_model).__name__ == "TAESD"
    kl = lm.load_vae()
    z_taesd, z_kl = vae.encode(to_image(pictures)), kl.encode(to_image(pictures))
    rel = float((z_taesd - z_kl).pow(2).mean() / z_kl.pow(2).mean())
    assert rel < 0.35, f"TAESD encoder latents differ from the KL VAE's by {rel:.2f} of their power"
    assert psnr(from_image(vae.decode(z_kl)), pictures) > 15.0     # 16.4 dB held out at training (KL: 17.7)


def test_text_encoder_tells_every_caption_apart(pack):
    clip = lm.load_clip()
    texts = [f"a {t} {c} {s}" for t in W.TEXTURES for c in W.COLOURS for s in W.SHAPES]
    conds = lm.encode_captions(clip, texts)
    assert conds.shape == (len(texts), 77, 64)
    flat = conds.flatten(1)
    d = torch.cdist(flat, flat) / flat.norm(dim=1).mean()
    d.fill_diagonal_(float("inf"))
    assert float(d.min()) > 0.02


# ------------------------------------------------------------------ the flow model (bench/world/flow_model.py)
FLOW_TIMES = (0.3, 0.5, 0.7)


def test_flow_model_is_comfyuis_sd3_mmdit(pack):
    import comfy.latent_formats
    import comfy.model_sampling
    import comfy.supported_models
    from comfy.ldm.modules.diffusionmodules.mmdit import MMDiT
    from zecon_pack.nodes.flow import features as F
    from zecon_pack.nodes.flow import guidance as FG
    model = fm.load_model()
    assert isinstance(model.model.model_config, comfy.supported_models.SD3)
    assert isinstance(model.model.latent_format, comfy.latent_formats.SD3)
    assert isinstance(model.get_model_object("model_sampling"), comfy.model_sampling.CONST)
    assert isinstance(model.model.diffusion_model, MMDiT)
    assert F.family_of(model) == "sd3"                     # the guider accepts it as a flow model
    assert FG.default_layers(model, "sd3") == (0,)         # 2 joint blocks: of the auto layers 0, 2, 4 only 0
    n = sum(p.numel() for p in model.model.diffusion_model.parameters())
    assert 5e5 < n < 4e6          # 1.11 M parameters at depth 2, hidden 128


def test_flow_vae_round_trip_and_unit_variance_latents(pack, pictures):
    import comfy.latent_formats
    vae = fm.load_vae()
    latent = vae.encode(to_image(pictures))
    assert latent.shape == (16, fm.LATENT_CHANNELS, lm.LATENT_SIZE, lm.LATENT_SIZE)
    model_space = comfy.latent_formats.SD3().process_in(latent).detach()
    assert abs(float(model_space.mean())) < 0.3
    assert 0.7 < float(model_space.std()) < 1.4          # rescaled at training for SD3's scale and shift
    assert psnr(from_image(vae.decode(latent)), pictures) > FLOW_VAE_PSNR_FLOOR


def flow_denoising_error(model, vae, clip, pictures, captions) -> dict:
    """{t: mean squared error of ComfyUI's denoised latent (model space) from x_t = (1 - t) x0 + t noise}."""
    z0 = model.model.latent_format.process_in(vae.encode(to_image(pictures)))
    cond = fm.conditioning(clip, captions)[0]
    g = torch.Generator().manual_seed(5)
    out = {}
    with torch.inference_mode():
        for t in FLOW_TIMES:
            noise = torch.randn(z0.shape, generator=g)
            sigma = torch.full((z0.shape[0],), t)
            xt = model.model.model_sampling.noise_scaling(sigma, noise, z0)
            den = model.model.apply_model(xt, sigma, c_crossattn=cond[0], y=cond[1]["pooled_output"])
            out[t] = float((den - z0).pow(2).mean() / z0.pow(2).mean())
    return out


def chance_error(t: float) -> float:
    """Relative error of the best guess that ignores the picture's content: the linear shrink of x_t towards 0
    for unit-variance x0 ((1 - t) x_t / ((1 - t)^2 + t^2)), t^2 / ((1 - t)^2 + t^2)."""
    return t * t / ((1 - t) ** 2 + t * t)


@pytest.fixture(scope="module")
def flow_parts(pack):
    return fm.load_model(), fm.load_vae(), fm.load_clip()


def test_flow_model_denoises_world_latents_better_than_chance(flow_parts, pictures):
    model, vae, clip = flow_parts
    scenes = W.sample_scenes(16, HELD_OUT_SEED)
    err = flow_denoising_error(model, vae, clip, pictures, [W.caption(s) for s in scenes])
    print({t: (round(e, 3), round(chance_error(t), 3)) for t, e in err.items()})
    for t, e in err.items():
        assert e < FLOW_DENOISE_FRACTION * chance_error(t), f"t={t}: relative error {e:.3f}"


def test_flow_model_reads_the_caption(flow_parts, pictures):
    """The right caption denoises better than another picture's caption (the text conditioning is used)."""
    model, vae, clip = flow_parts
    scenes = W.sample_scenes(16, HELD_OUT_SEED)
    right = flow_denoising_error(model, vae, clip, pictures, [W.caption(s) for s in scenes])
    wrong = flow_denoising_error(model, vae, clip, pictures, [W.caption(s) for s in scenes[1:] + scenes[:1]])
    print(right, wrong)
    assert sum(right.values()) < 0.75 * sum(wrong.values())      # measured 0.40 vs 0.69 (0.58)


def test_zecon_guider_restyles_on_the_flow_model(pack):
    """One short restyle through ZeconLatentInversion + ZeconGuider + euler on the flow world (in-process)."""
    from bench import quality_latent as q
    from bench.world.metrics import make_edits
    torch.set_num_threads(1)
    world = q.World(flow=True)
    edits = make_edits(2, q.EDIT_SEED)
    run = q.Run(steps=4, batch=2)
    out = q.restyle_batch(world, edits, q.SETTINGS[q.DEFAULTS], run, seed=0)
    plain = q.restyle_batch(world, edits, q.SETTINGS["no guidance"], run, seed=0)
    assert out.shape == (2, 3, lm.IMAGE_SIZE, lm.IMAGE_SIZE)
    assert torch.isfinite(out).all()
    assert float((out - plain).abs().mean()) > 1e-3          # the guidance changed the pictures


def test_test_pack_node_loads_the_flow_world(pack):
    """tests/comfy/tiny_sd_pack's ZeconTestWorldFlow (as a server loads the pack) returns MODEL, CLIP, VAE."""
    import importlib.util
    import comfy.supported_models
    spec = importlib.util.spec_from_file_location("zecon_tests_tiny_sd_pack_check",
                                                  REPO / "tests" / "comfy" / "tiny_sd_pack" / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    node = module.NODE_CLASS_MAPPINGS["ZeconTestWorldFlow"]
    assert node.RETURN_TYPES == ("MODEL", "CLIP", "VAE")
    model, clip, vae = getattr(node(), node.FUNCTION)()
    assert isinstance(model.model.model_config, comfy.supported_models.SD3)
    assert vae.latent_channels == fm.LATENT_CHANNELS
    assert clip.tokenize("a dots red circle")


def test_stock_unet_loader_detects_the_flow_dit_as_sd3(flow_parts):
    """ComfyUI's own diffusion-model loader (UNETLoader's code path) detects the MMDiT file's config from its
    weights: SD3, and the same outputs as the model built from the file's metadata."""
    import comfy.sd
    import comfy.supported_models
    detected = comfy.sd.load_diffusion_model(str(fm.weights_path("flow_dit")))
    assert type(detected.model.model_config) is comfy.supported_models.SD3
    model = flow_parts[0]
    g = torch.Generator().manual_seed(3)
    x, cond, pooled = (torch.randn(2, 16, 8, 8, generator=g), torch.randn(2, 77, 64, generator=g),
                       torch.randn(2, 64, generator=g))
    sigma = torch.tensor([0.5, 0.8])
    with torch.inference_mode():
        a = detected.model.apply_model(x, sigma, c_crossattn=cond, y=pooled).float()
        b = model.model.apply_model(x, sigma, c_crossattn=cond, y=pooled).float()
    assert torch.allclose(a, b, atol=1e-4)
