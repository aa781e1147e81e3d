"""The ZeCon pipeline: encode the style prompt, invert the source, sample with guidance.

These are the objects the ComfyUI nodes pass between them and the calls the
CLI and the Python API use. Images are [B, 3, H, W] float32 in [-1, 1].
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from . import diffusion as D
from .adm_loader import native_size
from ..guidance.clip_model import ClipModel
from .determinism import reproducible
from ..guidance.draws import Draws
from ..guidance.core import GuidanceConfig, GuidanceInputs
from .guidance import PixelGuidance
from ..guidance.mask import prepare_mask
from .memory import check_fits, run_guarded
from .model import DiffusionModel
from .sampler import SAMPLERS, Callback, ddim_invert, sample
from .schedule import Schedule
from ..guidance.style import StylePrompt, check_style, encode_style, style_embeddings
from ..guidance.vgg import VGGFeatures

START_MODES = ("renoise", "latent")


@dataclass(eq=False)
class Inversion:
    """A DDIM-inverted source batch (``ZECON_LATENT``): the latent, the source it came from, the schedule."""

    latent: torch.Tensor          # [B, 3, H, W]
    source: torch.Tensor          # [B, 3, H, W] in [-1, 1]
    schedule: Schedule
    skip: int
    model_name: str

    @property
    def start(self) -> int:
        """Respaced index the reverse process starts at."""
        return self.schedule.num_steps - self.skip - 1

    def __len__(self):
        return self.latent.shape[0]


def check_source(model: DiffusionModel, images: torch.Tensor) -> None:
    """Raise ``ValueError`` for a batch the model cannot take: shape, values, size."""
    if images.ndim != 4 or images.shape[0] == 0 or images.shape[1] != 3:
        raise ValueError(f"expected a non-empty batch of RGB images [B, 3, H, W], got shape {tuple(images.shape)}")
    if not torch.isfinite(images).all():
        raise ValueError("the source image contains NaN or infinite values")
    h, w = images.shape[-2:]
    model.check_image_size(h, w)
    native = native_size(model.config)
    if native and min(h, w) < native // 2:
        raise ValueError(
            f"{model.name} was trained on {native}x{native} images; at {w}x{h} it cannot give a meaningful "
            f"result. Use at least {native // 2} px (the original resizes to {native}x{native})."
        )


def invert(model: DiffusionModel, images: torch.Tensor, *, respacing: str = "50", skip: int = 25,
           callback: Callback | None = None, deterministic: bool = True) -> Inversion:
    """DDIM-invert [-1, 1] images over the first N - skip respaced steps, on the model's device.

    ``deterministic``: on CUDA, use deterministic kernels (see ``determinism.reproducible``).
    """
    s = Schedule.create(respacing)
    s.check_skip(skip)
    check_source(model, images)
    b, _, h, w = images.shape
    check_fits(model, h, w, b)
    x0 = images.to(model.device, torch.float32)
    with reproducible(model.device, deterministic):
        latent = run_guarded(lambda: ddim_invert(_denoiser(model, s), x0, s, s.num_steps - skip, callback),
                             "DDIM inversion", h, w, b)
    return Inversion(latent, x0, s, skip, model.name)


def sample_guided(model: DiffusionModel, inversion: Inversion, style: StylePrompt | None,
                  clip: ClipModel | None, guidance: GuidanceConfig, *, vgg_model: VGGFeatures | None = None,
                  sampler: str = "ddpm", eta: float = 0.0, seed: int | Sequence[int] = 0,
                  start: str = "renoise", exact_guidance_index: bool = False, draws: Draws | None = None,
                  callback: Callback | None = None, deterministic: bool = True,
                  on_losses: Callable[[dict[str, float]], None] | None = None,
                  mask: torch.Tensor | None = None, feather: float = 0.0) -> torch.Tensor:
    """Guided reverse sampling from an inversion; returns [B, 3, H, W] in [-1, 1] on the model's device.

    ``start``: ``renoise`` (the original's DDPM start, q_sample(x0, t_start, noise=latent)) or
    ``latent`` (start from the inverted latent itself; the DDIM sampler always does).
    ``seed``: one int (item b gets seed + b) or one per item.
    ``deterministic``: on CUDA, deterministic kernels, so one seed gives one image (slower attention
    backward); False allows the faster fused kernels, whose results vary in the last bits.
    ``on_losses``: called after every step with that step's weighted loss values (empty when
    no guidance runs), before ``callback``.
    ``mask``: restyle only this region (``mask.prepare_mask``: [H, W], [B, H, W] or [B, 1, H, W] in
    [0, 1], any size, resized to the latent's; ``feather`` px soften its edge). Outside it the result
    is the unguided reconstruction, and the patch crops are drawn where the mask is. A full mask is
    no mask.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if start not in START_MODES:
        raise ValueError(f"start must be one of {START_MODES}, got {start!r}")
    if not (isinstance(eta, (int, float)) and math.isfinite(eta) and eta >= 0):
        raise ValueError(f"eta must be a finite number >= 0, got {eta!r}")
    if inversion.model_name != model.name:
        warnings.warn(f"the latent was inverted with {inversion.model_name} but is sampled with {model.name}",
                      stacklevel=2)
    dev = model.device
    batch, _, h, w = inversion.latent.shape
    region = None if mask is None else prepare_mask(mask, batch, h, w, feather)
    if draws is None:
        seeds = [seed + b for b in range(batch)] if isinstance(seed, int) else list(seed)
        if len(seeds) != batch:
            raise ValueError(f"{len(seeds)} seeds given for a batch of {batch} images")
        draws = Draws(seeds)
    s = inversion.schedule
    x0 = inversion.source.to(dev)
    latent = inversion.latent.to(dev)
    if sampler == "ddpm" and start == "renoise":
        x = D.q_sample(s, x0, inversion.start, latent)
    else:
        x = latent
    if region is not None:
        region = region.to(dev)
    zecon_guidance = _make_guidance(model, s, x0, style, clip, guidance, vgg_model, draws, batch, region)
    if zecon_guidance is not None:
        check_fits(model, h, w, batch, guidance, clip)

    def step_done(step, total, x_t, pred_x0):
        if on_losses is not None:
            on_losses(dict(zecon_guidance.last_losses) if zecon_guidance is not None else {})
        if callback is not None:
            callback(step, total, x_t, pred_x0)

    def run():
        return sample(_denoiser(model, s), x, s, inversion.start, method=sampler, eta=eta, guidance=zecon_guidance,
                      draws=draws, callback=step_done, exact_guidance_index=exact_guidance_index,
                      mask=region if zecon_guidance is not None else None)[0]

    with reproducible(dev, deterministic):
        return run_guarded(run, "guided sampling", h, w, batch)


def _make_guidance(model, s, x0, style, clip, cfg: GuidanceConfig, vgg, draws, batch, region=None):
    if not cfg.active:
        warnings.warn("all guidance weights are 0: the result is a plain reconstruction of the source", stacklevel=3)
        return None
    dev = x0.device
    tgt = src = torch.zeros(1, 1, device=dev)
    if cfg.uses_clip:
        check_style(style, clip, batch)
        clip = clip.to(dev)
        tgt, src = style_embeddings(style, clip, x0)
    inputs = GuidanceInputs(x0, tgt, src, region)
    clip_dtype = model.autocast_dtype() if cfg.uses_clip else None
    clip = clip if cfg.uses_clip else None
    vgg = vgg.to(dev) if cfg.vgg > 0 and vgg is not None else None
    return PixelGuidance(cfg, s, inputs, draws, features=model.features, clip=clip, vgg=vgg, clip_autocast=clip_dtype)


def _denoiser(model: DiffusionModel, s: Schedule):
    def denoise(x, i):
        return model(x, s.model_timesteps(i, x.shape[0], x.device))
    return denoise


def stylize(image: torch.Tensor, target_prompt: str | Sequence[str], source_prompt: str = "Photo", *,
            model: DiffusionModel, clip: ClipModel | None, vgg_model: VGGFeatures | None = None,
            respacing: str = "50", skip: int = 25, sampler: str = "ddpm", eta: float = 0.0,
            seed: int | Sequence[int] = 0, guidance: GuidanceConfig | None = None,
            callback: Callback | None = None, inversion_callback: Callback | None = None,
            mask: torch.Tensor | None = None, feather: float = 0.0, **guidance_settings) -> torch.Tensor:
    """Restyle [-1, 1] images after a text prompt; defaults are the original README's.

    ``mask`` / ``feather``: restyle only a region (see ``sample_guided``).
    ``guidance_settings`` override single fields of ``GuidanceConfig``
    (e.g. ``zecon=1000``). Returns [B, 3, H, W] in [-1, 1] on the CPU.
    """
    cfg = (guidance or GuidanceConfig()).replace(**guidance_settings)
    check_source(model, image)
    if cfg.active:
        check_fits(model, image.shape[-2], image.shape[-1], image.shape[0], cfg, clip)
    style = encode_style(clip, target_prompt, source_prompt) if cfg.uses_clip else None
    inv = invert(model, image, respacing=respacing, skip=skip, callback=inversion_callback)
    out = sample_guided(model, inv, style, clip, cfg, vgg_model=vgg_model, sampler=sampler, eta=eta, seed=seed,
                        callback=callback, mask=mask, feather=feather)
    return out.cpu()
