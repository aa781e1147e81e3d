"""The ZeCon Guider and Latent Inversion on rectified-flow models: what differs from the SD backbone.

The guider (``nodes/latent/guider.py``) and the inversion node dispatch on :func:`guided_family`:
``"sd"`` for the UNet models of ``nodes/latent/backbone.py``, else the flow family of
``features.family_of`` (Flux.1, Flux.2, Chroma, SD3 / SD3.5, Qwen-Image, Lumina 2 / Z-Image). For a
flow model the guidance is ``zecon_core.latent.LatentGuidance`` with ``zecon_core.flow.FLOW_SHIFT``,
its ZeCon features the DiT tokens of :mod:`.features`, its decoders TAESD (``taef1`` for the Flux
latent format, ``taesd3`` for SD3's) or a copy of the VAE's own ``decode``.

Qwen-Image samples 5-D latents [B, C, 1, h, w] (its VAE is Wan 2.1's video VAE): the guidance runs
on the single frame [B, C, h, w] (:class:`SingleFrame`), the model, features and VAE on the 5-D tensor.

Full mode differentiates through the whole DiT: Flux-type blocks (Flux.1, Flux.2, Chroma) update
tensors saved for the backward in place, so during a differentiated pass their forwards are the
out-of-place ones of :mod:`.flux_blocks` (:func:`out_of_place_blocks`), equal to the originals.
"""

from __future__ import annotations

import contextlib
import copy

import comfy.model_sampling
import torch

from ..latent import backbone as B
from . import features as F

SD = "sd"
#: ComfyUI's TAESD names that are video decoders (``latent_preview.VIDEO_TAES``): not a 2-D TAESD.
VIDEO_TAES = ("taehv", "lighttaew2_2", "lighttaew2_1", "lighttaehy1_5")
FLUX_TYPE = ("flux", "flux2", "chroma")


def guided_family(model) -> str:
    """``"sd"`` or the flow family of a MODEL; ``ValueError`` naming the type for anything ZeCon cannot guide."""
    if isinstance(model.get_model_object("model_sampling"), comfy.model_sampling.CONST):
        return F.family_of(model)
    B.check_model(model)
    return SD


def default_layers(model, family: str) -> tuple[int, ...]:
    n = F.block_count(model)
    return tuple(i for i in F.default_layers(family) if i < n) or (0,)


def check_layers(model, family: str, layers) -> None:
    n = F.block_count(model)
    bad = [i for i in layers if i >= n]
    if bad:
        raise ValueError(f"zecon_layers: block {bad[0]} does not exist; this {family} model has {n} transformer "
                         f"blocks (0..{n - 1})")


def latent_shape_text(fmt) -> str:
    return f"{fmt.latent_channels}-channel {fmt.latent_dimensions + 2}-D"


def check_source(samples: torch.Tensor, model, name: str) -> None:
    """Raise ``ValueError`` naming ``name`` when a LATENT is not of the model's latent format (channels, dims)."""
    fmt = model.model.latent_format
    if samples.shape[1] != fmt.latent_channels or samples.ndim != fmt.latent_dimensions + 2:
        raise ValueError(
            f"{name}: a {samples.shape[1]}-channel {samples.ndim}-D latent, but {type(model.model).__name__} works on "
            f"{latent_shape_text(fmt)} latents: encode the picture with this model's VAE (a latent of another "
            f"model family cannot be guided or inverted by this one).")


def _spatial_ratio(vae) -> int:
    ratio = vae.downscale_ratio
    return int(ratio[-1] if isinstance(ratio, tuple) else ratio)


def check_vae(vae, model) -> None:
    """Raise ``ValueError`` naming ``vae`` when its latents are not the flow model's (channels, scale, dims)."""
    fmt = model.model.latent_format
    want_ratio = 16 if fmt.latent_channels == 128 else 8       # Flux.2 packs 2x2 patches of its VAE's 32 channels
    got = (vae.latent_channels, _spatial_ratio(vae), getattr(vae, "latent_dim", 2))
    if got != (fmt.latent_channels, want_ratio, fmt.latent_dimensions):
        raise ValueError(
            f"vae: it makes {got[0]}-channel {got[2] + 2}-D latents at 1/{got[1]} of the image size, but the model "
            f"({type(model.model).__name__}) works on {latent_shape_text(fmt)} latents at 1/{want_ratio}: load "
            f"the VAE that belongs to this model.")


def check_decoder(decoder: str, model, vae) -> None:
    """Refuse, naming ``decoder``, a decoder the guidance cannot differentiate for this flow model."""
    fmt = model.model.latent_format
    if decoder == "taesd" and fmt.taesd_decoder_name in VIDEO_TAES:
        raise ValueError(f"decoder: this model's TAESD ({fmt.taesd_decoder_name}) is a video decoder; use decoder "
                         f"'vae' with the model's VAE")
    if decoder == "vae" and not hasattr(vae.first_stage_model, "decode"):
        raise ValueError(f"decoder: 'vae' cannot decode with {type(vae.first_stage_model).__name__}; use 'taesd'")


class _StageDecode(torch.nn.Module):
    """The VAE's own ``decode`` (post_quant_conv, Flux.2's latent batch-norm, decoder; Wan 2.1's video decoder
    on one frame) on a copy without encoder."""

    def __init__(self, stage, frames: bool):
        super().__init__()
        self.stage, self.frames = stage, frames

    def forward(self, z):
        return self.stage.decode(z)[:, :, 0] if self.frames else self.stage.decode(z)


def stage_decoder(vae, base_model, device) -> B.Decoder:
    """A differentiable copy of the VAE's decoding half (the encoder is not copied); float32 on the CPU,
    bfloat16 in place of fp16 elsewhere. It takes the guidance's 4-D latents (Qwen-Image's one frame too)."""
    stage = vae.first_stage_model
    dtype = torch.bfloat16 if vae.vae_dtype == torch.float16 else vae.vae_dtype
    if device.type == "cpu":
        dtype = torch.float32
    memo = {id(m): None for name, m in stage.named_children() if name in ("encoder", "quant_conv")}
    with torch.inference_mode(False):
        frames = base_model.latent_format.latent_dimensions == 3
        module = _StageDecode(copy.deepcopy(stage, memo), frames).to(device, dtype).requires_grad_(False)
        fmt = _plain_format(base_model.latent_format)
    if frames:
        return B.Decoder(module, lambda z: fmt.process_out(z.unsqueeze(2)), dtype)
    return B.Decoder(module, fmt.process_out, dtype)


def _plain_format(fmt):
    """A copy of a latent format whose tensors (Wan 2.1's latents_mean / latents_std, made under inference
    mode) are normal tensors: a backward through ``process_out`` saves them."""
    fmt = copy.copy(fmt)
    for name, value in vars(fmt).items():
        if torch.is_tensor(value):
            setattr(fmt, name, value.clone())
    return fmt


@contextlib.contextmanager
def out_of_place_blocks(diffusion_model, family: str):
    """Inside the block, Flux-type blocks run their out-of-place forwards (a backward through them works)."""
    blocks = []
    if family in FLUX_TYPE:
        for name, kind in F.BLOCK_LISTS[family]:
            for block in getattr(diffusion_model, name):
                block.forward = F.OUT_OF_PLACE[kind].__get__(block)
                blocks.append(block)
    try:
        yield
    finally:
        for block in blocks:
            del block.forward


def normal_parameters(diffusion_model: torch.nn.Module) -> None:
    """Replace the inference-tensor parameters of modules that are not ComfyUI casting ops (norm scales, pad
    tokens, position embeddings: used as they are, not through ``cast_bias_weight``) by equal normal tensors
    on the same device, so a backward through them works (full mode). The casting ops' weights are copied per
    forward by the weight wrapper of ``differentiable_clone``."""
    with torch.inference_mode(False):
        for module in diffusion_model.modules():
            if hasattr(module, "weight_function"):
                continue
            for name, p in module._parameters.items():
                if p is not None and p.is_inference():
                    module._parameters[name] = torch.nn.Parameter(p.clone(), requires_grad=False)


class SingleFrame:
    """Qwen-Image's 5-D latents [B, C, 1, h, w] as the 4-D ones the guidance works on, and back."""

    def __init__(self, five_d: bool):
        self.five_d = five_d

    def down(self, x: torch.Tensor) -> torch.Tensor:
        if not self.five_d:
            return x
        if x.shape[2] != 1:
            raise ValueError(f"latent: {x.shape[2]} frames; ZeCon guides single pictures (1 frame)")
        return x[:, :, 0]

    def up(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(2) if self.five_d else x

    def denoise(self, denoise):
        return denoise if not self.five_d else (lambda x: denoise(x.unsqueeze(2))[:, :, 0])

    def features(self, features):
        return features if not self.five_d else (lambda z, layers: features(z.unsqueeze(2), layers))


def flow_features(model_patcher, conds: dict, layers, device) -> F.FlowFeatures:
    """The DiT's ZeCon features with the negative conditioning's context (else the positive's), on copies
    made now (the sampler has loaded the model with its patches)."""
    entries = conds.get("negative") or conds.get("positive")
    return F.build_features(model_patcher, entries[0], layers, device=device, load=False)
