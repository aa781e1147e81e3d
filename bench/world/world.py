"""The miniature world: one textured, coloured object on a grey background, drawn by code.

Because the world is drawn by code, the ideal result of a style transfer is known: the same
geometry drawn in the target texture or colour (``restyle`` then ``render``). Pure numpy/PyTorch,
seeded, no ComfyUI.

Conventions:

* geometry (``cx``, ``cy``, ``size``) in image fractions [0, 1]: ``(cx, cy)`` is the object's
  centre (x right, y down), ``size`` its width = height (circle: diameter; square: side;
  triangle: base and height, apex up). Pixel ``(i, j)`` (row, column) of an ``s``-px picture is
  tested at its centre ``((j + 0.5) / s, (i + 0.5) / s)``: hard edges, so a mask is exact and the
  same geometry gives the same mask at every texture and colour.
* ``background`` is a grey level in [0, 1] (uniform over the picture).
* textures are anchored at the object's centre with a period of ``PERIOD`` of the picture
  (8 px at 32 px, 16 px at 64 px): ``stripes`` vertical bands, ``checker`` squares of half a
  period, ``dots`` discs of radius ``DOT_RADIUS`` on a period grid. A pattern alternates the
  colour with its dark shade (``SHADE`` times the colour); ``solid`` is the colour alone.
* ``render`` returns pictures in [-1, 1] (the diffusion models' range).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

SHAPES = ("circle", "square", "triangle")
TEXTURES = ("solid", "stripes", "dots", "checker")
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")

#: RGB in [0, 1] of each colour name.
RGB = {
    "red": (0.90, 0.12, 0.12),
    "green": (0.12, 0.75, 0.20),
    "blue": (0.15, 0.30, 0.95),
    "yellow": (0.95, 0.88, 0.10),
    "purple": (0.60, 0.15, 0.80),
    "orange": (1.00, 0.55, 0.00),
}
PERIOD = 0.25          # texture period, fraction of the picture
DOT_RADIUS = 0.075     # dot radius, fraction of the picture
SHADE = 0.3            # the pattern's second tone = SHADE * colour
SIZE_RANGE = (0.45, 0.75)
BACKGROUND_RANGE = (0.55, 0.85)
MARGIN = 0.03          # least distance from the object's box to the picture's border


@dataclass(frozen=True)
class Scene:
    """One picture of the world (see the module docstring for the conventions)."""
    shape: str
    texture: str
    colour: str
    cx: float
    cy: float
    size: float
    background: float

    def __post_init__(self):
        for name, value, allowed in (("shape", self.shape, SHAPES), ("texture", self.texture, TEXTURES),
                                     ("colour", self.colour, COLOURS)):
            if value not in allowed:
                raise ValueError(f"Scene.{name}={value!r}: expected one of {allowed}")
        for name in ("cx", "cy", "size", "background"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"Scene.{name}={value!r}: expected a float in [0, 1]")


def sample_scenes(n: int, seed: int) -> list[Scene]:
    """``n`` scenes drawn uniformly (attributes, size, position that keeps the object inside
    with ``MARGIN``, background grey) from ``numpy.random.default_rng(seed)``."""
    if n < 0:
        raise ValueError(f"sample_scenes: n={n} must be >= 0")
    rng = np.random.default_rng(seed)
    scenes = []
    for _ in range(n):
        shape = SHAPES[rng.integers(len(SHAPES))]
        texture = TEXTURES[rng.integers(len(TEXTURES))]
        colour = COLOURS[rng.integers(len(COLOURS))]
        size = float(rng.uniform(*SIZE_RANGE))
        lo, hi = size / 2 + MARGIN, 1.0 - size / 2 - MARGIN
        cx, cy = (float(v) for v in rng.uniform(lo, hi, size=2))
        background = float(rng.uniform(*BACKGROUND_RANGE))
        scenes.append(Scene(shape, texture, colour, cx, cy, size, background))
    return scenes


def caption(scene: Scene) -> str:
    """The scene's text: ``"a {texture} {colour} {shape}"``, e.g. ``"a dots blue square"``."""
    return f"a {scene.texture} {scene.colour} {scene.shape}"


def restyle(scene: Scene, texture: str | None = None, colour: str | None = None) -> Scene:
    """The ground-truth edit: the same geometry and background in another texture and/or colour."""
    changes = {}
    if texture is not None:
        changes["texture"] = texture
    if colour is not None:
        changes["colour"] = colour
    return replace(scene, **changes)


def labels(scenes: list[Scene]) -> dict[str, torch.Tensor]:
    """Attribute indices (into SHAPES / TEXTURES / COLOURS) as int64 tensors [B]."""
    return {
        "shape": torch.tensor([SHAPES.index(s.shape) for s in scenes], dtype=torch.long),
        "texture": torch.tensor([TEXTURES.index(s.texture) for s in scenes], dtype=torch.long),
        "colour": torch.tensor([COLOURS.index(s.colour) for s in scenes], dtype=torch.long),
    }


def _column(scenes, field) -> torch.Tensor:
    return torch.tensor([getattr(s, field) for s in scenes], dtype=torch.float64).view(-1, 1, 1)


def _grid(n: int, size: int):
    """Pixel-centre coordinates x, y [1, size, size] in image fractions (float64)."""
    axis = (torch.arange(size, dtype=torch.float64) + 0.5) / size
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    return x.unsqueeze(0), y.unsqueeze(0)


def object_mask(scenes: list[Scene], size: int) -> torch.Tensor:
    """Where the object is: bool [B, size, size] (depends on shape and geometry only)."""
    if size < 1:
        raise ValueError(f"object_mask: size={size} must be >= 1")
    if not scenes:
        return torch.zeros(0, size, size, dtype=torch.bool)
    x, y = _grid(len(scenes), size)
    cx, cy, half = _column(scenes, "cx"), _column(scenes, "cy"), _column(scenes, "size") / 2
    dx, dy = x - cx, y - cy
    circle = dx * dx + dy * dy <= half * half
    square = (dx.abs() <= half) & (dy.abs() <= half)
    # apex (cx, cy - half), base y = cy + half from cx - half to cx + half:
    # |dx| <= half * (dy + half) / (2 * half)
    triangle = (dy <= half) & (dx.abs() * 2 <= dy + half)
    shape = torch.tensor([SHAPES.index(s.shape) for s in scenes]).view(-1, 1, 1)
    return torch.where(shape == 0, circle, torch.where(shape == 1, square, triangle))


def _pattern(scenes: list[Scene], size: int) -> torch.Tensor:
    """Where the pattern's dark tone is: bool [B, size, size] (False everywhere for solid)."""
    x, y = _grid(len(scenes), size)
    u, v = (x - _column(scenes, "cx")) / PERIOD, (y - _column(scenes, "cy")) / PERIOD
    stripes = torch.floor(2 * u).remainder(2) == 1
    checker = (torch.floor(2 * u) + torch.floor(2 * v)).remainder(2) == 1
    du, dv = u - torch.round(u), v - torch.round(v)
    dots = (du * du + dv * dv) * PERIOD * PERIOD <= DOT_RADIUS * DOT_RADIUS
    texture = torch.tensor([TEXTURES.index(s.texture) for s in scenes]).view(-1, 1, 1)
    solid = torch.zeros_like(stripes)
    return torch.where(texture == 0, solid, torch.where(texture == 1, stripes,
                       torch.where(texture == 2, dots, checker)))


def render(scenes: list[Scene], size: int) -> torch.Tensor:
    """The pictures: float32 [B, 3, size, size] in [-1, 1]."""
    if size < 1:
        raise ValueError(f"render: size={size} must be >= 1")
    if not scenes:
        return torch.zeros(0, 3, size, size)
    mask = object_mask(scenes, size).unsqueeze(1)
    dark = _pattern(scenes, size).unsqueeze(1)
    colour = torch.tensor([RGB[s.colour] for s in scenes], dtype=torch.float64).view(-1, 3, 1, 1)
    fill = torch.where(dark, colour * SHADE, colour)
    background = _column(scenes, "background").unsqueeze(1).expand(-1, 3, size, size)
    picture = torch.where(mask, fill, background)
    return (picture * 2 - 1).float()


def segment(pictures: torch.Tensor, background: torch.Tensor | list[float], threshold: float = 0.2) -> torch.Tensor:
    """The object in made pictures: bool [B, H, W] where some channel differs from the known
    background grey by more than ``threshold`` (in [0, 1] units). ``pictures`` in [-1, 1]."""
    background = torch.as_tensor(background, dtype=pictures.dtype, device=pictures.device)
    picture01 = (pictures + 1) / 2
    return (picture01 - background.view(-1, 1, 1, 1)).abs().amax(dim=1) > threshold


def iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Intersection over union of bool masks [B, H, W] -> float [B] (1 where both are empty)."""
    inter = (a & b).flatten(1).sum(1).float()
    union = (a | b).flatten(1).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
