"""The miniature world's latent model (bench/world/weights/latent_*) through ComfyUI's own loaders, in-process.

The committed files match bench/world/manifest.json; the UNet is ComfyUI's SD15 model (config class,
latent format, ε prediction) and knows its world; the KL VAE and the TAESD-format VAE (stock VAELoader)
share one latent space; the frozen text encoder tells every caption of the world apart.
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

from bench.world import latent_model as lm                    # noqa: E402
from bench.world import manifest                              # noqa: E402
from bench.world import world as W                            # noqa: E402

HELD_OUT_SEED = 99_001          # world pictures none of the training stages drew


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


def test_latent_weights_match_the_manifest():
    entries = manifest.read()
    for name in lm.FILES.values():
        assert name in entries, f"{name} has no manifest entry"
        path = manifest.WEIGHTS_DIR / name
        assert path.stat().st_size == entries[name]["bytes"]
        assert manifest.sha256(path) == entries[name]["sha256"]
        assert entries[name]["command"].startswith("python -m bench.world.train_latent ")
        assert path.stat().st_size < 12 * 2 ** 20


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
