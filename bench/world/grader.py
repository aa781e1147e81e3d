"""The grader: a small CNN that names a picture's shape, texture and colour. It never guides.

Pictures of any size in [-1, 1] are average-pooled to 32 px (``GRADER_SIZE``). Trained by
``python -m bench.world.train_grader``; loaded with ``load_grader()`` from the committed weights.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from bench.world import manifest
from bench.world.world import COLOURS, SHAPES, TEXTURES

GRADER_SIZE = 32
HEADS = {"shape": SHAPES, "texture": TEXTURES, "colour": COLOURS}


class Grader(nn.Module):
    """Four conv stages (32 -> 4 px) and one linear head per attribute."""

    def __init__(self, width: int = 32):
        super().__init__()
        chans = [3, width, width * 2, width * 2, width * 2]
        layers = []
        for k in range(4):
            layers += [nn.Conv2d(chans[k], chans[k + 1], 3, padding=1), nn.GroupNorm(8, chans[k + 1]), nn.SiLU()]
            if k < 3:
                layers.append(nn.AvgPool2d(2))
        self.features = nn.Sequential(*layers)
        self.heads = nn.ModuleDict({name: nn.Linear(chans[-1] * 2, len(values)) for name, values in HEADS.items()})

    def forward(self, pictures: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per attribute for pictures [B, 3, H, W] in [-1, 1]."""
        if pictures.shape[-1] != GRADER_SIZE or pictures.shape[-2] != GRADER_SIZE:
            pictures = F.adaptive_avg_pool2d(pictures, GRADER_SIZE)
        h = self.features(pictures)
        h = torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)
        return {name: head(h) for name, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, pictures: torch.Tensor) -> dict[str, list[str]]:
        """The most likely attribute names per picture."""
        logits = self(pictures.float())
        return {name: [HEADS[name][k] for k in logits[name].argmax(1).tolist()] for name in HEADS}


def load_grader(path: str | Path = manifest.GRADER) -> Grader:
    model = Grader()
    model.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    return model.eval().requires_grad_(False)
