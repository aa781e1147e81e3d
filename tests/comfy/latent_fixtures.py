"""Inputs for the latent-backbone tests: a tiny model of one family (tiny_sd.py), its conditioning,
a source latent and a short sigma schedule from the middle of the noise levels; running a node and
sampling as ComfyUI does (shared by the SD and flow guider tests)."""
from __future__ import annotations

from types import SimpleNamespace

import torch

import tiny_sd


def bundle(arch: str = "sd15", seed: int = 0, size: int = 16, batch: int = 1):
    import comfy.samplers
    model = tiny_sd.tiny_model(arch, seed)
    g = torch.Generator().manual_seed(seed + 100)
    channels = tiny_sd.LATENT_CHANNELS[arch]
    with torch.inference_mode():
        source = torch.randn(batch, channels, size, size, generator=g)
        sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", 6)[3:]
    return SimpleNamespace(arch=arch, model=model, positive=tiny_sd.conditioning(arch, seed + 1, batch),
                           negative=tiny_sd.conditioning(arch, seed + 2, batch), source=source, sigmas=sigmas)


def run_node(node_cls, **inputs):
    """Run a V3 node the way ComfyUI's executor does (class clone, hidden inputs, inference mode)."""
    clone = node_cls.PREPARE_CLASS_CLONE({"UNIQUE_ID": "1"})
    with torch.inference_mode():
        return clone.EXECUTE_NORMALIZED(**inputs).args


def sample(guider, latent, sigmas, sampler="euler", seed=0, noise=None, callback=None):
    """``guider.sample`` as SamplerCustomAdvanced calls it (zero noise unless given)."""
    import comfy.samplers
    with torch.inference_mode():
        noise = torch.zeros_like(latent) if noise is None else noise
        return guider.sample(noise, latent, comfy.samplers.sampler_object(sampler), sigmas, callback=callback,
                             disable_pbar=True, seed=seed)


def cfg_reference(bundle, cfg=3.0):
    """ComfyUI's own CFGGuider on a bundle's model and conditionings."""
    import comfy.samplers
    g = comfy.samplers.CFGGuider(bundle.model)
    g.set_conds(bundle.positive, bundle.negative)
    g.set_cfg(cfg)
    return g


def clip_and_style(folder):
    """The pack's tiny CLIP (real open_clip architecture, its file written to ``folder``) and a style
    encoded with it (call after ``comfy_inprocess.load``: the pack is ``zecon_pack``)."""
    from safetensors.torch import save_file
    from zecon_pack.zecon_core.apps.tiny import tiny_clip_state_dict
    from zecon_pack.zecon_core.guidance.clip_model import load_clip
    from zecon_pack.zecon_core.pixel.pipeline import encode_style
    path = folder / "tiny_clip.safetensors"
    save_file(tiny_clip_state_dict(), str(path))
    clip = load_clip(path=path)
    return clip, encode_style(clip, "a watercolor painting", "Photo")


def tiny_vgg():
    """The pack's tiny VGG feature net (real VGG-19 layout, seeded random weights), frozen, for the VGG loss."""
    from zecon_pack.zecon_core.apps.tiny import tiny_vgg_state_dict
    from zecon_pack.zecon_core.guidance.vgg import VGGFeatures
    vgg = VGGFeatures()
    vgg.load_state_dict(tiny_vgg_state_dict())
    return vgg.requires_grad_(False)
