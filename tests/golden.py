"""Access to a golden-vector set.

The default is the compact set vendored in ``tests/golden`` (the original implementation's
vectors with a smaller UNet, see ``tests/golden/README.md``), so any clone runs its parity tests.
``ZECON_GOLDEN_DIR`` selects another set of the same format, e.g. the full ``../shared/golden``.
"""

from __future__ import annotations

import json
import os
import re
from functools import cached_property
from pathlib import Path

import torch
from safetensors.torch import load_file

from zecon_core.guidance.augment import ViewParams
from zecon_core.guidance.draws import Draws

REPO = Path(__file__).resolve().parents[1]
VENDORED_DIR = REPO / "tests" / "golden"
GOLDEN_DIR = Path(os.environ.get("ZECON_GOLDEN_DIR") or VENDORED_DIR).resolve()

# golden setting keys -> GuidanceConfig fields
WEIGHT_KEYS = {
    "l_clip_global": "clip_global", "l_clip_global_patch": "clip_global_patch", "l_clip_dir": "clip_dir",
    "l_clip_dir_patch": "clip_dir_patch", "l_zecon": "zecon", "l_mse": "mse", "l_vgg": "vgg",
    "range_lambda": "range",
}
# metric names the original logs -> our loss names
METRICS = {
    "clip_loss": "clip_global", "clip_patch_loss": "clip_global_patch", "clip_dir_loss": "clip_dir",
    "clip_dir_patch_loss": "clip_dir_patch", "zecon_loss": "zecon", "mse_loss": "mse", "vgg_loss": "vgg",
    "range_loss": "range",
}


class Golden:
    def __init__(self, root: Path = GOLDEN_DIR):
        self.root = root
        self.manifest = json.loads((root / "manifest.json").read_text())
        self._files = {}

    def __getitem__(self, file: str) -> dict[str, torch.Tensor]:
        if file not in self._files:
            self._files[file] = load_file(str(self.root / file))
        return self._files[file]

    @property
    def info(self) -> dict:
        return self.manifest["info"]

    def spec(self, file: str) -> dict:
        return self.manifest["files"][file]

    def outputs(self):
        """(file, tensor name, entry) of every output tensor in the manifest."""
        for file, spec in self.manifest["files"].items():
            for name, entry in spec["tensors"].items():
                if entry.get("kind") == "output":
                    yield file, name, entry

    @cached_property
    def unet_config(self) -> dict:
        return self.info["unet"]["config"]

    def preprocess_size(self) -> tuple[int, int]:
        """(H, W) of ``preprocess.safetensors:init_image``: the original's loader resizes the source to
        S x S with S = the UNet's ``image_size``, whatever the source's shape (``image_hw`` may differ)."""
        size = int(self.unet_config["image_size"])
        return size, size

    def source_image(self, file: str) -> torch.Tensor:
        """The source image a stage's vectors were computed from, taken from that stage's own file as
        the manifest describes it, never from another stage (in a set with a non-square source,
        preprocess:init_image is square while the DDIM, guidance and loop files hold the non-square one).

        ``init_image`` of the file if it has one (cond_fn, e2e, patch_losses, preprocess); ``x0[0:1]``
        for the files whose ``x0`` is the clean input with ``x0[0]`` the source (ddim, unet_forward);
        otherwise ``info.init_image_source`` ("file:tensor ...").
        """
        tensors = self.spec(file)["tensors"]
        if "init_image" in tensors:
            return self[file]["init_image"]
        if "x0" in tensors:
            return self[file]["x0"][0:1]
        where = self.info["init_image_source"].split()[0]
        src_file, _, name = where.partition(":")
        value = self[src_file][name]
        return value[0:1] if value.ndim == 4 else value

    def setting_weights(self, setting: dict) -> dict:
        return {ours: float(setting[k]) for k, ours in WEIGHT_KEYS.items() if k in setting}

    def aug_prob(self, file: str, setting: dict) -> float:
        if "aug_prob" in setting:
            return float(setting["aug_prob"])
        m = re.search(r"aug_prob=([0-9.]+)", self.spec(file)["description"])
        return float(m.group(1)) if m else 0.0


def mismatch(ours: torch.Tensor, golden: torch.Tensor, entry: dict) -> str | None:
    """None when ours matches the golden tensor under the manifest's tolerance, else a description."""
    ours = torch.as_tensor(ours).detach().cpu()
    if tuple(ours.shape) != tuple(golden.shape):
        return f"shape {tuple(ours.shape)} != {tuple(golden.shape)}"
    if entry.get("unstable"):
        return None if torch.isfinite(ours).all() else "not finite"
    if not golden.is_floating_point():
        return None if torch.equal(ours.to(golden.dtype), golden) else "integer values differ"
    ours, golden = ours.double(), golden.double()
    diff = (ours - golden).abs()
    tol = entry["atol"] + entry["rtol"] * golden.abs()
    if bool((diff <= tol).all()):
        return None
    worst = int((diff - tol).argmax())
    return (f"max |diff| {diff.max().item():.3g} (atol {entry['atol']:.3g}, rtol {entry['rtol']:.3g}); "
            f"worst at flat index {worst}: ours {ours.flatten()[worst].item():.6g}, "
            f"golden {golden.flatten()[worst].item():.6g}")


class RecordedDraws(Draws):
    """Draws that replay the original's recorded random values.

    step_noises: [K, B, ...] indexed by loop position (start - i); source_noises: {loss: tensor}
    (or one tensor for every loss); patch_ids: {layer: [P]}; views: {key: ViewParams}.
    Anything not recorded falls back to the seeded draws.
    """

    def __init__(self, *, start=None, step_noises=None, source_noises=None, patch_ids=None, views=None):
        super().__init__(0)
        self.start, self.step_noises = start, step_noises
        self.source_noises, self.recorded_ids, self.recorded_views = source_noises, patch_ids or {}, views or {}

    def step_noise(self, i, like):
        if self.step_noises is None:
            return super().step_noise(i, like)
        return self.step_noises[self.start - i].to(like)

    def source_noise(self, i, loss, like):
        noise = self.source_noises
        if isinstance(noise, dict):
            noise = noise.get(loss)
        return super().source_noise(i, loss, like) if noise is None else noise.to(like)

    def patch_ids(self, i, layer, num_positions, count, batch):
        ids = self.recorded_ids.get(layer)
        return super().patch_ids(i, layer, num_positions, count, batch) if ids is None else ids[None]

    def views(self, i, key, n, batch, height, width, **kw):
        if key in self.recorded_views:
            return self.recorded_views[key]
        return super().views(i, key, n, batch, height, width, **kw)


def view_params(g: dict, group: str, crop: bool) -> ViewParams:
    """ViewParams of a recorded augmentation group of patch_losses.safetensors."""
    boxes = None
    if crop:
        b = g[f"{group}_crop_src_box"]
        boxes = torch.stack([b[:, 0, 0], b[:, 0, 1], b[:, 1, 0], b[:, 3, 1]], dim=1).long()
    return ViewParams(boxes, g[f"{group}_affine_matrix"].double(), g[f"{group}_affine_applied"] > 0,
                      g[f"{group}_persp_matrix"].double(), g[f"{group}_persp_applied"] > 0)
