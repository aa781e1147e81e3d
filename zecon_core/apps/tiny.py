"""Tiny random-weight models in the real architectures, written as real weight files.

They exercise every code path (loaders, UNet, CLIP, VGG, guidance) offline in
seconds; their output is noise. Used by the tests, ``--tiny`` demo runs and
the ``tiny`` benchmark config.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..pixel.unet import ADMConfig, UNetModel
from ..guidance.vgg import VGGFeatures

TINY_FILES = {"unet": "tiny_adm.safetensors", "clip": "tiny_clip.safetensors", "vgg": "tiny_vgg.safetensors"}

# The ImageNet/FFHQ layout (6 levels, ZeCon blocks 0..11 exist) at the smallest widths GroupNorm allows;
# attention layers are 64 wide, so the default num_head_channels=64 fits.
TINY_UNET = ADMConfig(model_channels=32, num_res_blocks=1, channel_mult=(1, 1, 1, 2, 2, 2),
                      attention_ds=(8, 16), num_head_channels=64)


def _randomize(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Weights ~ N(0, 1/fan_in), biases ~ N(0, 0.05²), norms near 1: outputs are neither zero nor huge."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, p in module.state_dict().items():
        if p.ndim >= 2:
            fan_in = p[0].numel()
            v = torch.randn(p.shape, generator=g) / fan_in**0.5
        elif name.endswith("weight") and ("norm" in name or "ln" in name):
            v = 1 + 0.1 * torch.randn(p.shape, generator=g)
        elif p.is_floating_point():
            v = 0.05 * torch.randn(p.shape, generator=g)
        else:
            v = p.clone()
        sd[name] = v.to(p.dtype).contiguous()
    return sd


def tiny_unet_state_dict(config: ADMConfig = TINY_UNET, seed: int = 0) -> dict[str, torch.Tensor]:
    return _randomize(UNetModel(config), seed)


def tiny_clip_state_dict(seed: int = 0, patch_size: int = 32, width: int = 64, layers: int = 2,
                         embed_dim: int = 32) -> dict[str, torch.Tensor]:
    """An OpenAI-format CLIP ViT state dict (real tokenizer vocabulary, 224 px input)."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    model = CLIP(embed_dim, CLIPVisionCfg(layers=layers, width=width, patch_size=patch_size, image_size=224),
                 CLIPTextCfg(context_length=77, vocab_size=49408, width=width, heads=width // 64, layers=layers),
                 quick_gelu=True)
    sd = _randomize(model, seed)
    sd["logit_scale"] = torch.tensor(4.6052)
    return sd


def tiny_vgg_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    return _randomize(VGGFeatures(), seed)


def write_tiny_models(folder: str | os.PathLike, seed: int = 0) -> dict[str, Path]:
    """Write the three tiny models into ``folder``; returns {"unet"|"clip"|"vgg": path}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    makers = {"unet": tiny_unet_state_dict, "clip": tiny_clip_state_dict, "vgg": tiny_vgg_state_dict}
    paths = {}
    for kind, make in makers.items():
        path = folder / TINY_FILES[kind]
        save_file(make(seed=seed), str(path), metadata={"format": "pt", "note": "tiny random weights: output is noise"})
        paths[kind] = path
    return paths
