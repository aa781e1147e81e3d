"""Every random draw of a ZeCon run, from explicit seeds.

``Draws`` owns one CPU ``torch.Generator`` per image of the batch, so an
image's result depends only on its own seed (not on the batch it is in, nor
on the device). Each method names what the draw is for; the parity tests
subclass ``Draws`` to feed the original implementation's recorded values in.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .augment import ViewParams, sample_view_params


class Draws:
    """Seeded draws. ``seeds``: one int per batch item (or one int for a batch of one)."""

    def __init__(self, seeds: int | Sequence[int]):
        self.seeds = [int(seeds)] if isinstance(seeds, int) else [int(s) for s in seeds]
        if not self.seeds:
            raise ValueError("at least one seed is needed")
        self.generators = [torch.Generator("cpu").manual_seed(s) for s in self.seeds]

    def _per_item(self, batch: int):
        if batch != len(self.generators):
            raise ValueError(f"{len(self.generators)} seed(s) given for a batch of {batch}")
        return self.generators

    def normal(self, like: torch.Tensor) -> torch.Tensor:
        """Standard normal noise shaped like ``like`` [B, ...], item b from generator b."""
        gens = self._per_item(like.shape[0])
        noise = torch.cat([torch.randn((1, *like.shape[1:]), generator=g) for g in gens])
        return noise.to(device=like.device, dtype=like.dtype)

    def step_noise(self, i: int, like: torch.Tensor) -> torch.Tensor:
        """Noise of the reverse step at respaced index ``i``."""
        return self.normal(like)

    def source_noise(self, i: int, loss: str, like: torch.Tensor) -> torch.Tensor:
        """Noise that re-noises the source for loss ``loss`` at index ``i`` (one draw per loss, as the original)."""
        return self.normal(like)

    def patch_ids(self, i: int, layer: int, num_positions: int, count: int, batch: int) -> torch.Tensor:
        """[batch, min(count, num_positions)] distinct positions per item for ZeCon layer ``layer``."""
        k = min(count, num_positions)
        return torch.stack([torch.randperm(num_positions, generator=g)[:k] for g in self._per_item(batch)])

    def views(self, i: int, key: str, n: int, batch: int, height: int, width: int, *, crop: bool,
              patch_min: float, patch_max: float, aug_prob: float,
              region: torch.Tensor | None = None) -> ViewParams:
        """Parameters of ``n`` augmented views per item (item-major: views of item 0 first).

        ``region``: [batch, 1, height, width] weights (a prepared mask) or None; crops of item b
        are placed in ``region[b]`` (see ``sample_view_params``). Views without crops ignore it.
        """
        regions = [None] * batch if region is None or not crop else [r[0] for r in region]
        params = [
            sample_view_params(n, height, width, crop=crop, patch_min=patch_min, patch_max=patch_max,
                               aug_prob=aug_prob, generator=g, region=r)
            for g, r in zip(self._per_item(batch), regions)
        ]
        return concat_view_params(params)


def concat_view_params(params: Sequence[ViewParams]) -> ViewParams:
    if len(params) == 1:
        return params[0]
    boxes = None if params[0].crop_boxes is None else torch.cat([p.crop_boxes for p in params])
    return ViewParams(
        boxes,
        torch.cat([p.affine for p in params]),
        torch.cat([p.affine_applied for p in params]),
        torch.cat([p.perspective for p in params]),
        torch.cat([p.perspective_applied for p in params]),
    )
