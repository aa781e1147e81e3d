"""Tiny random-weight models for the core tests, written once per test process and loaded through the real loaders."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

import torch

from zecon_core.guidance.clip_model import load_clip
from zecon_core.pixel.model import load_diffusion_model
from zecon_core.apps.tiny import write_tiny_models
from zecon_core.guidance.vgg import load_vgg


@lru_cache(maxsize=None)
def tiny_paths() -> dict[str, Path]:
    folder = Path(tempfile.mkdtemp(prefix="zecon-tiny-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return write_tiny_models(folder)


@lru_cache(maxsize=None)
def tiny_models():
    """(DiffusionModel, ClipModel, VGGFeatures) loaded from the tiny files."""
    p = tiny_paths()
    return load_diffusion_model(p["unet"]), load_clip(path=p["clip"]), load_vgg(p["vgg"])


def source_image(size: int = 64, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """A smooth, structured [-1, 1] test image (gradients plus a disc)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    imgs = []
    for _ in range(batch):
        c = torch.rand(3, generator=g) * 2 - 1
        disc = ((xx - c[0] * 0.5) ** 2 + (yy - c[1] * 0.5) ** 2 < 0.2).float()
        imgs.append(torch.stack([xx * 0.8, yy * 0.8, disc * 1.6 - 0.8]))
    return torch.stack(imgs)


FAST = dict(respacing="10", skip=5, n_patch=2)
