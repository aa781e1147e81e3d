"""ZeCon Guider: a GUIDER for SamplerCustomAdvanced that steers the user's SD or flow model with the ZeCon losses.

Only ``CFGGuider.predict_noise`` is overridden (it returns ComfyUI's denoised prediction):
outside the guidance window, or with every weight at 0, it is CFGGuider's own; inside, the
prediction goes through ``zecon_core.latent.LatentGuidance``. The per-run state (copies of
the encoder blocks and the decoder, the decoded source, the seeded draws) lives in the
sampler's per-run ``model_options`` and is built at the first guided call, after ComfyUI
has loaded the model with its patches. Flow models (``plan.family`` not ``"sd"``) take the flow
shift, DiT features and decoders of ``nodes/flow/guidance.py``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from dataclasses import dataclass

import comfy.samplers
import torch

from ...zecon_core.guidance.clip_model import ClipModel
from ...zecon_core.guidance.draws import Draws
from ...zecon_core.guidance.core import GuidanceConfig, GuidanceInputs, ZeconGuidance
from ...zecon_core.flow import FLOW_SHIFT
from ...zecon_core.latent import EPS_SHIFT, LatentGuidance, LatentSource, needs_decoder, source_for_batch
from ...zecon_core.guidance.mask import prepare_mask
from ...zecon_core.guidance.style import StylePrompt, check_style, style_embeddings
from ..device import plain
from ..flow import guidance as FG
from ..progress import tell
from . import backbone as B

RUN_KEY = "zecon_latent_run"
WARNED_KEY = "zecon_latent_warned"
# A shift this many times the prediction's largest value swamps the picture (strength 100 x weight 1e7
# gave values around 1e10): said once per run.
SHIFT_WARNING = 100.0
# CLIP views with gradients per pass on a GPU: 64 views of ViT-B/16 in one fp32 pass keep ~7 GB of
# activations; in passes of 16 (each differentiated and freed before the next, same gradient) ~1 GB.
GPU_CLIP_BATCH = 16


@dataclass(eq=False)
class GuiderPlan:
    """Everything the guider needs besides ComfyUI's model and conditioning."""

    config: GuidanceConfig           # zecon_layers already resolved for this UNet
    source: torch.Tensor             # the source LATENT's samples (VAE space) [B or 1, C, h, w]
    decoder: str                     # "taesd" | "vae"
    mode: str                        # "shortcut" | "full"
    start: float                     # guidance window, fractions of the steps
    end: float
    seed: int
    strength: float = 1.0
    taesd_path: str | None = None
    vae: object = None
    clip: ClipModel | None = None
    style: StylePrompt | None = None
    vgg: torch.nn.Module | None = None
    checkpointing: bool = False        # full mode: recompute the UNet's blocks in the backward
    mask: torch.Tensor | None = None   # ComfyUI MASK: restyle only there
    feather: float = 0.0               # pixels of the decoded image
    family: str = "sd"                 # "sd" or the flow family (nodes/flow/guidance.guided_family)
    node_id: str | None = None         # the guider node (its progress text)

    @property
    def active(self) -> bool:
        return self.config.active and self.strength > 0 and self.end > self.start

    def guided_at(self, fraction: float) -> bool:
        return self.active and self.start <= fraction < self.end


def step_position(sample_sigmas: torch.Tensor | None, sigma: torch.Tensor) -> tuple[int, float]:
    """(step index, fraction of the steps done) of a model call at noise level ``sigma``."""
    if sample_sigmas is None or sample_sigmas.numel() < 2:
        return 0, 0.0
    s = float(sigma.flatten()[0])
    k = int((sample_sigmas[:-1].float() > s * (1 + 1e-4)).sum())
    return k, k / (sample_sigmas.numel() - 1)


def source_cached(features, source_latent: torch.Tensor):
    """``features`` that computes the fixed source's features once per run."""
    cache: dict = {}

    def cached(z, layers):
        if z is not source_latent:
            return features(z, layers)
        key = tuple(sorted(set(layers)))
        if key not in cache:
            with torch.no_grad():
                cache[key] = features(z, layers)
        return cache[key]

    return cached


class ZeconCFGGuider(comfy.samplers.CFGGuider):
    """CFGGuider whose denoised prediction is shifted by the ZeCon guidance (``plan``)."""

    def __init__(self, model_patcher, plan: GuiderPlan):
        super().__init__(model_patcher)
        self.plan = plan

    def predict_noise(self, x, timestep, model_options={}, seed=None):
        sigmas = model_options.get("transformer_options", {}).get("sample_sigmas")
        step, fraction = step_position(sigmas, timestep)
        if not self.plan.guided_at(fraction):
            return super().predict_noise(x, timestep, model_options, seed)
        with torch.inference_mode(False):
            guidance = model_options.get(RUN_KEY)
            if guidance is None:
                guidance = model_options[RUN_KEY] = self._start_run(x)
            sigma = timestep.clone()   # a normal tensor: the sampler made it under inference mode
            full = self.plan.mode == "full"
            frame = FG.SingleFrame(x.ndim == 5)
            guided_options = model_options
            if full:   # a backward through the UNet: its attention must be differentiable (not SageAttention),
                guided_options = dict(model_options)   # and its patches must not write into saved tensors (FreeU)
                guided_options["transformer_options"] = B.with_differentiable_patches(B.with_differentiable_attention(
                    model_options.get("transformer_options", {})))

            def denoise(xx):
                return comfy.samplers.sampling_function(
                    self.inner_model, xx, sigma, self.conds.get("negative"), self.conds.get("positive"),
                    self.cfg, model_options=guided_options, seed=seed)

            recompute = full and self.plan.checkpointing and self.plan.family == FG.SD
            dm = self.inner_model.diffusion_model
            with contextlib.ExitStack() as stack:
                if recompute:
                    stack.enter_context(B.checkpointed_blocks(dm))
                if full and self.plan.family != FG.SD:
                    FG.normal_parameters(dm)
                    stack.enter_context(FG.out_of_place_blocks(dm, self.plan.family))
                out, _ = guidance(frame.denoise(denoise), frame.down(x), sigma, step, self.plan.mode)
        if guidance.shift_ratio > SHIFT_WARNING and not model_options.get(WARNED_KEY):
            model_options[WARNED_KEY] = True
            tell(f"ZeCon Guider: the guidance shift is {guidance.shift_ratio:.3g} times the prediction's largest "
                 f"value (step {step}): the result will be the shift, not a picture. Lower the strength "
                 f"({self.plan.strength:g}) or the loss weights.", self.plan.node_id)
        return frame.up(out)

    def _start_run(self, x: torch.Tensor) -> LatentGuidance:
        if self.plan.family != FG.SD:
            frame = FG.SingleFrame(x.ndim == 5)
            features = None
            if self.plan.config.zecon > 0:
                features = frame.features(FG.flow_features(self.model_patcher, self.conds, self.plan.config.zecon_layers,
                                                           x.device))
            return start_run(self.plan, self.inner_model, None, None, frame.down(x), features, FLOW_SHIFT)
        context, y = B.uncond_inputs(self.conds)
        return start_run(self.plan, self.inner_model, context, y, x)


def start_run(plan: GuiderPlan, base, context: torch.Tensor | None, y: torch.Tensor | None, x: torch.Tensor,
              features=None, rule=EPS_SHIFT) -> LatentGuidance:
    """The guidance of one sampling run of ``base`` (a loaded ComfyUI BaseModel) on latents like ``x``.

    ``context`` / ``y``: the unconditional cross-attention context (and SDXL's ``y``) for the UNet's ZeCon
    features; ``features``: instead of those, the model's own ``features(z, layers)`` (flow DiTs);
    ``rule``: the shift rule of the model's noise form. A 5-D (one-frame) source is taken as 4-D.
    """
    dev, batch, cfg = x.device, x.shape[0], plan.config
    z_src = base.process_latent_in(plain(plan.source).to(dev, torch.float32))
    if z_src.ndim == x.ndim + 1:
        z_src = FG.SingleFrame(True).down(z_src)
    check_source_latent(z_src, x)
    decode = None
    if needs_decoder(cfg.weights_on()):
        if plan.decoder == "vae":
            vae_decoder = B.vae_decoder if plan.family == FG.SD else FG.stage_decoder
            decode = vae_decoder(plan.vae, base, dev)
        else:
            decode = B.taesd_decoder(plan.taesd_path, base.latent_format.latent_channels, dev)
    source = LatentSource.decoded(source_for_batch(z_src, batch), decode)
    latent_mask, region = run_masks(plan, batch, x.shape[-2:], None if source.image is None else source.image.shape[-2:])
    if cfg.zecon > 0:
        if features is None:
            features = B.EncoderFeatures(base, cfg.zecon_layers, plain(context), None if y is None else plain(y), dev)
        features = source_cached(features, source.latent)
    tgt = src = torch.zeros(1, 1, device=dev)
    clip = None
    if cfg.uses_clip:
        check_style(plan.style, plan.clip, batch)
        clip = on_device(plan.clip, dev)
        tgt, src = style_embeddings(plan.style, clip, source.image)
    vgg = None if plan.vgg is None or cfg.vgg <= 0 else copy.deepcopy(plan.vgg).to(dev)
    draws = Draws([(plan.seed + b) % 2 ** 64 for b in range(batch)])
    cuda = dev.type == "cuda"
    losses = ZeconGuidance(cfg, GuidanceInputs(source.image, tgt, src, region), draws,
                           features=features, clip=clip, vgg=vgg,
                           clip_autocast=torch.bfloat16 if cuda else None,
                           clip_batch=GPU_CLIP_BATCH if cuda else "auto")
    return LatentGuidance(losses, decode, source, mask=latent_mask, strength=plan.strength, rule=rule)


def run_masks(plan: GuiderPlan, batch: int, latent_hw, image_hw):
    """The region mask at the latent's size (blending, gradient) and at the decoded image's (CLIP crops).

    ``feather`` is in image pixels; at the latent's size it is divided by the decoder's scale.
    """
    if plan.mask is None:
        return None, None
    h, w = latent_hw
    try:
        if image_hw is None:
            return prepare_mask(plan.mask.float(), batch, h, w, plan.feather / 8), None
        scale = image_hw[0] / h
        latent_mask = prepare_mask(plan.mask.float(), batch, h, w, plan.feather / scale)
        region = prepare_mask(plan.mask.float(), batch, *image_hw, plan.feather)
    except ValueError as e:
        raise ValueError(f"mask: {e}") from None
    return latent_mask, region


def check_source_latent(z_src: torch.Tensor, x: torch.Tensor) -> None:
    if z_src.shape[1:] != x.shape[1:]:
        raise ValueError(f"source: the source latent is {tuple(z_src.shape[1:])} (channels, height, width) but the "
                         f"sampled latent is {tuple(x.shape[1:])}: encode the same picture at the same size")
    if z_src.shape[0] not in (1, x.shape[0]):
        raise ValueError(f"source: {z_src.shape[0]} source latents for a batch of {x.shape[0]}")


def on_device(clip: ClipModel, device) -> ClipModel:
    """The CLIP model on ``device``: itself if it is there, else a copy (the original stays where it is)."""
    if clip.device == torch.device(device):
        return clip
    with torch.inference_mode(False):
        return dataclasses.replace(clip, model=copy.deepcopy(clip.model).to(device))
