"""Inputs for the latent-backbone tests: a tiny model of one family (tiny_sd.py), its conditioning,
a source latent and a short sigma schedule from the middle of the noise levels."""
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
