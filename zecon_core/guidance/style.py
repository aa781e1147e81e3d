"""Styles (``ZECON_STYLE``): from text, from images, and blends of them.

A style is a pair of CLIP embeddings per entry: the *target* (where the CLIP
losses pull) and the *source* (where the directional losses start from). A
text style has the target prompt's and the source prompt's text embeddings. An
image style has the mean CLIP image embedding of the style image(s) as target;
its source is the CLIP image embedding of the picture being restyled, known only
when sampling, so the style records the share of the source that comes from that
picture (``source_image_weight``). ``style_embeddings`` resolves both for the
losses; every backbone calls it.

Blends are linear: the weights are normalised to sum 1 and the embeddings are
combined as CLIP gives them (not unit-normalised first); the losses normalise
what they compare, so the spherical losses see the direction of the weighted
sum, and the directional losses the weighted sum of each style's direction
target - source.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from .augment import render_views, sample_view_params
from .clip_model import ClipModel
from .draws import concat_view_params
from .prompt_weights import parse_weighted

SOURCE_PICTURE = "(the source picture)"
MIN_STYLE_IMAGE_SIDE = 32


@dataclass(eq=False)
class StylePrompt:
    """Target and source of n styles with their CLIP embeddings (``ZECON_STYLE``).

    n is 1 (one style for every image) or the batch size (style b for image b).
    ``target`` / ``source``: labels (the prompts, or what the embeddings came from).
    ``source_image_weight``: [n] share of the source embedding taken from the CLIP image
    embedding of the source picture (1 for an image style, 0 or None for text); the
    rest is ``source_embeds``.
    """

    target: tuple[str, ...]
    source: tuple[str, ...]
    target_embeds: torch.Tensor   # [n, E] float32
    source_embeds: torch.Tensor   # [n, E]
    clip_name: str
    source_image_weight: torch.Tensor | None = None   # [n] float32

    def __len__(self):
        return len(self.target)


def encode_style(clip: ClipModel, target: str | Sequence[str], source: str | Sequence[str] = "Photo") -> StylePrompt:
    """Encode target and source prompts once (one pair, or one per batch item).

    A target may be weighted, ``(a watercolor painting:1.2) (a pencil sketch:0.8)``
    (see ``prompt_weights``): its groups are blended as ``blend_styles`` does.
    """
    targets = (target,) if isinstance(target, str) else tuple(target)
    sources = (source,) if isinstance(source, str) else tuple(source)
    if len(sources) == 1 and len(targets) > 1:
        sources = sources * len(targets)
    if len(sources) != len(targets):
        raise ValueError(f"{len(targets)} target prompts but {len(sources)} source prompts")
    if not targets:
        raise ValueError("no target prompt given")
    parsed = [parse_weighted(t) for t in targets]
    source_embeds = clip.encode_text(list(sources))
    if all(p is None for p in parsed):
        return StylePrompt(targets, sources, clip.encode_text(list(targets)), source_embeds, clip.name)
    groups = [p or [(t, 1.0)] for p, t in zip(parsed, targets)]
    texts = [text for g in groups for text, _ in g]
    embeds = clip.encode_text(texts).split([len(g) for g in groups])
    target_embeds = torch.cat([_mix(list(e[:, None]), _normalised([w for _, w in g]))
                               for e, g in zip(embeds, groups)])
    return StylePrompt(targets, sources, target_embeds, source_embeds, clip.name)


def encode_style_images(clip: ClipModel, images: torch.Tensor, *, crops: int = 0, seed: int = 0,
                        per_image: bool = False) -> StylePrompt:
    """A style from reference images [N, 3, H, W] in [-1, 1]: their mean CLIP image embedding.

    ``crops``: also average over this many random augmented crops per image (the crops and
    augmentations the patch losses use, drawn from ``seed`` + image index); 0: the whole images only.
    ``per_image``: one style per image (style b for source image b) instead of one mean style.
    The source direction of an image style is the CLIP image embedding of the picture being
    restyled (``source_image_weight`` 1), resolved by ``style_embeddings``.
    """
    check_style_images(images)
    if not (isinstance(crops, int) and crops >= 0):
        raise ValueError(f"crops must be an integer >= 0, got {crops!r}")
    n, _, h, w = images.shape
    images = images.to(clip.device, torch.float32)
    views = [images]
    if crops:
        item = torch.arange(n).repeat_interleave(crops)
        params = [sample_view_params(crops, h, w, crop=True, generator=torch.Generator("cpu").manual_seed(seed + k))
                  for k in range(n)]
        views.append(render_views(images, concat_view_params(params), item))
    with torch.no_grad():
        embeds = [clip.encode_image(v) for v in views]
    whole = embeds[0]                                       # [N, E]
    per_item = whole[:, None] if not crops else torch.cat([whole[:, None], embeds[1].view(n, crops, -1)], dim=1)
    if per_image:
        target = per_item.mean(dim=1)
        labels = tuple(f"style image {k + 1} of {n}" for k in range(n))
    else:
        target = per_item.reshape(-1, per_item.shape[-1]).mean(dim=0, keepdim=True)
        labels = ("style image" if n == 1 else f"{n} style images",)
    count = len(labels)
    return StylePrompt(labels, (SOURCE_PICTURE,) * count, target.float(), torch.zeros_like(target),
                       clip.name, torch.ones(count, dtype=torch.float32, device=target.device))


def check_style_images(images: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``images`` is a non-empty [N, 3, H, W] batch in [-1, 1], sides >= 32."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] == 0:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"style images must be a non-empty batch [N, 3, H, W], got {shape}")
    if images.shape[1] != 3:
        raise ValueError(f"style images must be RGB (3 channels), got {images.shape[1]}; grey and RGBA images are "
                         "converted by images.from_bhwc (ComfyUI's IMAGE) or load_image")
    h, w = images.shape[-2:]
    if min(h, w) < MIN_STYLE_IMAGE_SIDE:
        raise ValueError(f"the style image is {w}x{h}: too small to carry a style; "
                         f"use at least {MIN_STYLE_IMAGE_SIDE} px per side (any larger size is fine)")
    if not torch.isfinite(images).all():
        raise ValueError("the style image contains NaN or infinite values")
    if images.min() < -1 or images.max() > 1:
        raise ValueError("style image values must lie in [-1, 1] (ComfyUI images: [0, 1])")


def blend_styles(parts: Sequence[tuple[StylePrompt, float]]) -> StylePrompt:
    """The weighted blend of styles: Σ ŵ_k · style_k with ŵ = w / Σ w.

    Target embeddings, source embeddings and source-picture shares are each combined
    linearly, so text and image styles mix. Every style needs the same CLIP; styles of
    one entry broadcast over styles of n entries. Weights: finite, >= 0, not all 0.
    """
    if not parts:
        raise ValueError("nothing to blend: give at least one (style, weight)")
    styles = [s for s, _ in parts]
    for k, s in enumerate(styles):
        if any(not t.strip() for t in s.target):
            raise ValueError(f"style {k + 1} of the blend has an empty target prompt")
    names = {s.clip_name for s in styles}
    if len(names) > 1:
        raise ValueError(f"the styles were encoded with different CLIP models: {sorted(names)}")
    sizes = {len(s) for s in styles} - {1}
    if len(sizes) > 1:
        raise ValueError(f"cannot blend styles with {sorted(sizes)} entries (one entry broadcasts)")
    n = sizes.pop() if sizes else 1
    weights = _normalised([w for _, w in parts])
    dev = styles[0].target_embeds.device
    target = _mix([_rows(s.target_embeds.to(dev), n) for s in styles], weights)
    source = _mix([_rows(s.source_embeds.to(dev), n) for s in styles], weights)
    shares = _mix([_rows(_share(s).to(dev), n) for s in styles], weights)
    labels = [" + ".join(f"{w:.3g}*({_label(s.target, b)})" for s, w in zip(styles, weights)) for b in range(n)]
    sources = [" + ".join(f"{w:.3g}*({_label(s.source, b)})" for s, w in zip(styles, weights)) for b in range(n)]
    return StylePrompt(tuple(labels), tuple(sources), target, source, names.pop(),
                       shares if bool((shares != 0).any()) else None)


def check_style(style: StylePrompt | None, clip: ClipModel | None, batch: int) -> None:
    """Raise ``ValueError`` unless ``style`` and ``clip`` can drive the CLIP losses of a batch (either backbone)."""
    if style is None or clip is None:
        raise ValueError("the CLIP losses are on: a style prompt and a CLIP model are needed")
    if any(not t.strip() for t in style.target):
        raise ValueError("the target prompt is empty; write a style, or set every CLIP weight to 0 "
                         "to guide by content only")
    if style.clip_name != clip.name:
        raise ValueError(f"the style prompt was encoded with CLIP {style.clip_name}, "
                         f"but the sampler got CLIP {clip.name}")
    if len(style) not in (1, batch):
        raise ValueError(f"{len(style)} style prompts for a batch of {batch} images")


def style_embeddings(style: StylePrompt, clip: ClipModel, source_images: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(target [n, E], source [n or B, E]) on the device of ``source_images``: what the CLIP losses compare.

    The source embedding is ``source_embeds + source_image_weight · E_I(source picture)``, with
    the CLIP image embedding of each source image [B, 3, H, W] in [-1, 1] (``clip`` must be on
    that device). A text style returns its embeddings unchanged.
    """
    dev = source_images.device
    target, source = style.target_embeds.to(dev), style.source_embeds.to(dev)
    if style.source_image_weight is None:
        return target, source
    with torch.no_grad():
        picture = clip.encode_image(source_images.float())
    return target, source + style.source_image_weight.to(dev)[:, None] * picture


def _normalised(weights: Sequence[float]) -> list[float]:
    for w in weights:
        if not (isinstance(w, (int, float)) and math.isfinite(w) and w >= 0):
            raise ValueError(f"blend weights must be finite numbers >= 0, got {w!r}")
    total = float(sum(weights))
    if total <= 0:
        raise ValueError("the blend weights are all 0")
    return [float(w) / total for w in weights]


def _mix(tensors: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """Σ w_k t_k of equally shaped tensors with weights that already sum to 1 (a single weight 1: the tensor)."""
    if len(tensors) == 1 and weights[0] == 1.0:
        return tensors[0]
    out = tensors[0] * weights[0]
    for t, w in zip(tensors[1:], weights[1:]):
        out = out + t * w
    return out


def _rows(t: torch.Tensor, n: int) -> torch.Tensor:
    return t.expand(n, *t.shape[1:]) if t.shape[0] == 1 else t


def _share(style: StylePrompt) -> torch.Tensor:
    w = style.source_image_weight
    return torch.zeros(len(style), device=style.source_embeds.device) if w is None else w.to(style.source_embeds.device)


def _label(labels: tuple[str, ...], b: int) -> str:
    return labels[0] if len(labels) == 1 else labels[b]
