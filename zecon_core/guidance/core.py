"""ZeCon guidance, shared by both backbones: the gradient that steers each reverse step.

The loss terms (paper eq. 8: CLIP global / patch / directional, ZeCon PatchNCE,
MSE, VGG, range) are written once, here, against a :class:`LossView` - what
the losses see of one step's output and what they compare it with. The two
backbones differ only in how they build that view:

* pixel ADM (the original's ``cond_fn``, :meth:`ZeconGuidance.__call__`): at
  respaced index i with f = sqrt(1 - ᾱ_i), the output side is the blend
  x̂ = x̂0 f + x_i (1 - f) of the predicted clean image and the current sample;
  the source side of each loss is ŷ = x0 f + q_sample(x0, i, ε_loss) (1 - f)
  with a fresh ε per loss; everything is in pixel space.
* latent SD (``zecon_core.latent``): CLIP, VGG and range see the decoded
  prediction, ZeCon and MSE see the predicted clean latent itself; the source
  side is the source latent and its decoded image.

The total loss L = Σ λ_k L_k is differentiated with respect to whatever the
view was computed from (x_i through the UNet, or the prediction alone), and
-∇L is returned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Callable

import torch

from . import losses as L
from .augment import render_views
from .draws import Draws

# CPU default of ZeconGuidance.clip_batch: views per CLIP pass with gradients (memory; no cost in speed)
CPU_CLIP_BATCH = 4
_SURROGATE = "_clip_pixels_surrogate"

LOSS_NAMES = ("clip_global", "clip_global_patch", "clip_dir", "clip_dir_patch", "zecon", "mse", "vgg", "range")
CLIP_LOSSES = LOSS_NAMES[:4]


@dataclass(frozen=True)
class GuidanceConfig:
    """Loss weights and their settings (``ZECON_GUIDANCE``). Defaults are the original README's.

    ``shared_views``: the two patch CLIP losses (and the two non-patch ones)
    use the same random views of the output, so CLIP encodes them once. The
    losses stay unbiased but become correlated; off by default (the original
    draws separate views).
    ``mse_max_t`` / ``vgg_max_t``: MSE and VGG apply while the respaced index is
    below these (the original's ``t < 700`` / ``t < 800``).
    """

    clip_global: float = 0.0
    clip_global_patch: float = 10000.0
    clip_dir: float = 0.0
    clip_dir_patch: float = 20000.0
    zecon: float = 500.0
    mse: float = 5000.0
    vgg: float = 100.0
    range: float = 50.0
    n_patch: int = 32
    patch_min: float = 0.01
    patch_max: float = 0.3
    aug_prob: float = 1.0
    zecon_layers: tuple[int, ...] = (0, 2, 5, 8, 11)
    zecon_patches: int = 256
    nce_temperature: float = 0.07
    mse_max_t: int = 700
    vgg_max_t: int = 800
    shared_views: bool = False

    def __post_init__(self):
        for name in LOSS_NAMES:
            w = getattr(self, name)
            if not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
                raise ValueError(f"loss weight {name} must be a finite number >= 0, got {w!r}")
        if not (isinstance(self.n_patch, int) and self.n_patch >= 1):
            raise ValueError(f"n_patch must be an integer >= 1, got {self.n_patch!r}")
        if not (0 < self.patch_min <= self.patch_max <= 1):
            raise ValueError(f"need 0 < patch_min <= patch_max <= 1, got {self.patch_min}, {self.patch_max}")
        if not (0 <= self.aug_prob <= 1):
            raise ValueError(f"aug_prob must lie in [0, 1], got {self.aug_prob}")
        if not self.zecon_layers or any(int(i) != i or i < 0 for i in self.zecon_layers):
            raise ValueError(f"zecon_layers must be non-negative block indices, got {self.zecon_layers}")
        if self.zecon_patches < 1:
            raise ValueError(f"zecon_patches must be >= 1, got {self.zecon_patches}")
        if not (self.nce_temperature > 0 and math.isfinite(self.nce_temperature)):
            raise ValueError(f"nce_temperature must be > 0, got {self.nce_temperature}")

    @property
    def weights(self) -> dict[str, float]:
        return {k: float(getattr(self, k)) for k in LOSS_NAMES}

    @property
    def active(self) -> bool:
        return any(w > 0 for w in self.weights.values())

    def weights_on(self, only: str | None = None) -> dict[str, bool]:
        """Which losses have a weight > 0 (all, or only ``only``)."""
        return {k: v > 0 and (only is None or k == only) for k, v in self.weights.items()}

    @property
    def uses_clip(self) -> bool:
        return any(getattr(self, k) > 0 for k in CLIP_LOSSES)

    def replace(self, **changes) -> "GuidanceConfig":
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return GuidanceConfig(**values)


@dataclass(eq=False)
class GuidanceInputs:
    """What the guidance compares against: the source image and the style embeddings.

    ``region``: a prepared mask (``mask.prepare_mask``) whose region the patch crops are drawn in, or None.
    """

    source: torch.Tensor            # [B, 3, H, W] in [-1, 1]
    target_embeds: torch.Tensor     # [B or 1, E]
    source_embeds: torch.Tensor     # [B or 1, E]
    region: torch.Tensor | None = None   # [B, 1, H, W] in [0, 1]


@dataclass(eq=False)
class LossView:
    """What the losses see of one step's output, and what they compare it with.

    ``image``: [B, 3, H, W] in [-1, 1], seen by the CLIP and VGG losses;
    ``content``: seen by the ZeCon features and the MSE loss (the same tensor as
    ``image`` for the pixel backbone, the predicted clean latent for the latent one);
    ``range_input``: what the range loss keeps in [-1, 1];
    ``source(loss)``: the source counterpart for ``loss``, in the space that loss works in
    (called once per loss and step, in the order of the losses, so per-loss draws stay in order).
    """

    image: torch.Tensor
    content: torch.Tensor
    range_input: torch.Tensor
    source: Callable[[str], torch.Tensor]


CONTENT_LOSSES = ("zecon", "mse")   # the losses that see LossView.content; the others see the image


class NonFiniteError(FloatingPointError):
    """A loss, gradient or latent stopped being finite."""


class ZeconGuidance:
    """The loss terms of eq. 8 on a backbone's :class:`LossView` and their gradient (``gradient``).

    ``features(x, layers)`` computes the model's own encoder features at t = 0 for
    the ZeCon loss; ``clip`` and ``vgg`` are needed only when their losses are on.
    A backbone builds the view (``zecon_core.pixel.guidance.PixelGuidance``,
    ``zecon_core.latent.guidance.LatentGuidance``).

    ``clip_batch``: at most this many views with gradients go through CLIP at once;
    each batch is differentiated and freed before the next, so CLIP's activation
    memory is that of ``clip_batch`` views instead of all of them (the gradient is
    the same sum). ``None``: all views in one pass (best GPU utilisation).
    ``"auto"`` (default): 4 on the CPU, where batching gains nothing, None on a GPU.
    """

    def __init__(self, config: GuidanceConfig, inputs: GuidanceInputs, draws: Draws, *,
                 features=None, clip=None, vgg=None, clip_autocast: torch.dtype | None = None,
                 clip_batch: int | str | None = "auto"):
        if not (clip_batch is None or clip_batch == "auto" or (isinstance(clip_batch, int) and clip_batch >= 1)):
            raise ValueError(f"clip_batch must be None, 'auto' or an integer >= 1, got {clip_batch!r}")
        self.clip_batch = clip_batch
        self.cfg, self.inputs, self.draws = config, inputs, draws
        self.features, self.clip, self.vgg = features, clip, vgg
        self.clip_autocast = clip_autocast
        self.last_losses: dict[str, float] = {}
        w = config.weights
        if config.uses_clip and clip is None:
            raise ValueError("CLIP losses are on but no CLIP model was given")
        if w["vgg"] > 0 and vgg is None:
            raise ValueError("the VGG loss is on but no VGG model was given")
        if w["zecon"] > 0 and features is None:
            raise ValueError("the ZeCon loss is on but no UNet feature extractor was given")

    def gradient(self, view: LossView, wrt: torch.Tensor, on: dict[str, bool], i: int):
        """-∇_wrt L and the weighted loss values for the losses switched ``on``.

        The backward pass is staged (the chain rule, in pieces): every group of loss terms
        (the CLIP terms, ZeCon, MSE, VGG) is differentiated down to the tensor it sees
        (``view.image`` or ``view.content``) as soon as it is computed, which frees its graph;
        the summed gradients then go through the view (the blend and the UNet, or the decoder)
        once, together with the range term. Same gradient as one backward of the summed loss
        (up to the order of float additions at the view); the peak memory holds the graph of
        the view and one loss graph, not all of them at once. ``i`` keys the random draws.
        """
        image = view.image.detach().requires_grad_()
        content = image if view.content is view.image else view.content.detach().requires_grad_()
        leaf_of = {"image": (image, view.image), "content": (content, view.content)}
        staged, losses = {}, {}   # id(leaf) -> [view tensor, its gradient]
        for space, group in self._groups(image, content, view.source, i, on, self._clip_chunk(image)):
            leaf, seen = leaf_of[space]
            (g,) = self._grad(sum(group.values()), leaf)
            if id(leaf) in staged:
                staged[id(leaf)][1] = staged[id(leaf)][1] + g
            else:
                staged[id(leaf)] = [seen, g]
            losses.update({k: v.detach() for k, v in group.items() if k != _SURROGATE})
            del group, g
        outputs = [seen for seen, _ in staged.values()]
        grads = [g for _, g in staged.values()]
        if on["range"]:
            r = self.cfg.weights["range"] * L.range_loss(view.range_input).sum()
            losses["range"] = r.detach()
            outputs.append(r)
            grads.append(torch.ones_like(r))
        if not outputs:
            self.last_losses = {}
            return torch.zeros_like(wrt), self.last_losses
        grad = -self._grad(outputs, wrt, grads)[0]
        self.last_losses = {k: float(v) for k, v in losses.items()}
        return grad, self.last_losses

    @staticmethod
    def _grad(outputs, inputs, grad_outputs=None):
        return torch.autograd.grad(outputs, inputs, grad_outputs)

    def _clip_chunk(self, like: torch.Tensor) -> int | None:
        if self.clip_batch == "auto":
            return CPU_CLIP_BATCH if like.device.type == "cpu" else None
        return self.clip_batch

    def weights_on(self, only: str | None = None) -> dict[str, bool]:
        """Which losses have a weight > 0 (all, or only ``only``)."""
        return self.cfg.weights_on(only)

    def view_terms(self, view: LossView, on: dict[str, bool], i: int) -> dict[str, torch.Tensor]:
        """Weighted loss terms (each summed over the batch) of a view, without any backward."""
        out = {}
        for _, group in self._groups(view.image, view.content, view.source, i, on):
            out.update(group)
        if on["range"]:
            out["range"] = self.cfg.weights["range"] * L.range_loss(view.range_input).sum()
        return out

    def _groups(self, image: torch.Tensor, content: torch.Tensor, source, i: int, on: dict[str, bool],
                chunk: int | None = None):
        """The loss terms of a view (all but range) as (space, terms) pairs in draw order.

        ``space`` says which tensor the terms see: "image" (CLIP, VGG) or "content" (ZeCon, MSE).
        With ``chunk`` (staged backward only) the CLIP group may carry a gradient surrogate under
        ``_SURROGATE`` beside detached loss values.
        """
        w = self.cfg.weights
        if any(on[k] for k in CLIP_LOSSES):
            yield "image", self._clip_terms(image, i, on, source, image.shape[0], chunk)
        if on["zecon"]:
            y_in = source("zecon")
            yield "content", {"zecon": w["zecon"] * self._zecon(content, y_in, i).sum()}
        if on["mse"]:
            yield "content", {"mse": w["mse"] * L.mse(content, source("mse")).sum()}
        if on["vgg"]:
            y_in = source("vgg")
            with torch.no_grad():
                fy = self.vgg(y_in)
            yield "image", {"vgg": w["vgg"] * L.vgg_perceptual(self.vgg(image), fy).sum()}

    def _views(self, i, key, image, crop):
        cfg, batch = self.cfg, image.shape[0]
        params = self.draws.views(i, key, cfg.n_patch, batch, *image.shape[-2:], crop=crop,
                                  patch_min=cfg.patch_min, patch_max=cfg.patch_max, aug_prob=cfg.aug_prob,
                                  region=self.inputs.region)
        item = torch.arange(batch).repeat_interleave(cfg.n_patch)
        return render_views(image, params, item)

    def _clip_terms(self, x_in, i, on, source_for, batch, chunk=None):
        """All CLIP terms, with one CLIP pass for the views that need gradients and one for those that don't.

        ``chunk`` (staged backward only): encode the views with gradients ``chunk`` at a time, each
        chunk differentiated and freed before the next (see ``clip_batch``).
        """
        cfg, w, n = self.cfg, self.cfg.weights, self.cfg.n_patch
        grad_views, views_of = [], {}

        def add(key, make):
            if key not in views_of:
                views_of[key] = len(grad_views)
                grad_views.append(make())
            return views_of[key]

        share = cfg.shared_views
        slot = {}
        if on["clip_global"]:
            slot["clip_global"] = add("aug", lambda: self._views(i, "clip_global", x_in, crop=False))
        if on["clip_global_patch"]:
            slot["clip_global_patch"] = add("patch", lambda: self._views(i, "clip_global_patch", x_in, crop=True))
        nograd, src_slot = [], {}
        if on["clip_dir"]:
            slot["clip_dir"] = add("aug" if share else "aug_dir",
                                   lambda: self._views(i, "clip_dir", x_in, crop=False))
            y_in = source_for("clip_dir")
            src_slot["clip_dir"] = len(nograd)
            nograd.append(self._views(i, "clip_dir_source", y_in, crop=False))
        if on["clip_dir_patch"]:
            slot["clip_dir_patch"] = add("patch" if share else "patch_dir",
                                         lambda: self._views(i, "clip_dir_patch", x_in, crop=True))
            src_slot["clip_dir_patch"] = len(nograd)
            nograd.append(source_for("clip_dir_patch"))   # the whole source, once per item (not per view)

        with torch.no_grad():
            src_emb = self._encode(nograd)
        tgt = self._per_view(self.inputs.target_embeds, batch, n)
        txt_src = self._per_view(self.inputs.source_embeds, batch, n)

        def dist(loss, e, rows=slice(None)):
            """Per-view distances of loss ``loss`` for its view rows ``rows`` with embeddings ``e``."""
            if loss in ("clip_global", "clip_global_patch"):
                return L.spherical_dist(e, tgt[rows])
            es = src_emb[src_slot[loss]]
            if loss == "clip_dir_patch":
                es = es.repeat_interleave(n, dim=0)
            return L.directional_dist(e, es[rows], tgt[rows], txt_src[rows])

        sizes = [t.shape[0] for t in grad_views]
        if chunk is None or sum(sizes) <= chunk:
            emb = self._encode(grad_views)
            return {loss: w[loss] * dist(loss, emb[s]).view(batch, n).mean(dim=1).sum() for loss, s in slot.items()}

        # Chunked: each term is (w / n) x the sum of its views' distances, so every chunk of views is
        # encoded, differentiated down to its CLIP input pixels and freed before the next one. The
        # pixels' gradient then flows through the pooling, the warps and the crops as one surrogate
        # term whose gradient is exactly that (its value is not a loss).
        offs = [sum(sizes[:k]) for k in range(len(sizes))]
        pixels = torch.cat([self.clip.preprocess(t) for t in grad_views])
        values = {loss: torch.zeros((), device=pixels.device) for loss in slot}
        pixel_grads = []
        for a in range(0, pixels.shape[0], chunk):
            b = min(a + chunk, pixels.shape[0])
            part = pixels[a:b].detach().requires_grad_()
            e = self.clip.embed(part, self.clip_autocast)
            partial = []
            for loss, s in slot.items():
                lo, hi = max(a, offs[s]), min(b, offs[s] + sizes[s])
                if lo < hi:
                    term = dist(loss, e[lo - a:hi - a], slice(lo - offs[s], hi - offs[s])).sum() * (w[loss] / n)
                    partial.append(term)
                    values[loss] = values[loss] + term.detach()
            pixel_grads.append(self._grad(sum(partial), part)[0])
            del e, partial
        out = dict(values)
        out[_SURROGATE] = (pixels * torch.cat(pixel_grads)).sum()
        return out

    def _encode(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        """Embeddings of several view batches (possibly of different sizes) in one CLIP pass."""
        if not images:
            return []
        pixels = torch.cat([self.clip.preprocess(t) for t in images])
        return list(self.clip.embed(pixels, self.clip_autocast).split([t.shape[0] for t in images]))

    @staticmethod
    def _per_view(embeds, batch, n):
        if embeds.shape[0] == 1:
            return embeds.expand(batch * n, -1)
        return embeds.repeat_interleave(n, dim=0)

    def _zecon(self, x_in, y_in, i):
        cfg = self.cfg
        with torch.no_grad():
            feats_k = self.features(y_in, cfg.zecon_layers)
        ids = [
            self.draws.patch_ids(i, layer, f.shape[-2] * f.shape[-1], cfg.zecon_patches, f.shape[0]).to(f.device)
            for layer, f in zip(sorted(set(cfg.zecon_layers)), feats_k)
        ]
        feats_q = self.features(x_in, cfg.zecon_layers)
        return torch.stack([
            L.zecon_loss([f[b] for f in feats_q], [f[b] for f in feats_k], [p[b] for p in ids], cfg.nce_temperature)
            for b in range(x_in.shape[0])
        ])

    def diagnose_view(self, wrt: torch.Tensor, i: int, view_of, on_for) -> str:
        """Name the loss whose value or gradient is not finite: ``view_of(wrt) -> LossView``,
        ``on_for(loss) -> on`` (that loss alone)."""
        bad = []
        for loss in LOSS_NAMES:
            if self.cfg.weights[loss] <= 0:
                continue
            with torch.enable_grad():
                xx = wrt.detach().requires_grad_()
                term = self.view_terms(view_of(xx), on_for(loss), i).get(loss)
                if term is None:
                    continue
                if not torch.isfinite(term):
                    bad.append(f"{loss} (value {float(term.detach())})")
                    continue
                g = torch.autograd.grad(term, xx)[0]
                if not torch.isfinite(g).all():
                    bad.append(f"{loss} (gradient)")
        return ", ".join(bad) if bad else "no single loss (only their sum)"
