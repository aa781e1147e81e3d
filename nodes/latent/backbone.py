"""ComfyUI's Stable Diffusion objects as the callables of ``zecon_core.latent``.

Everything here runs outside ComfyUI's inference mode on normal tensors: ComfyUI creates
its weights under ``torch.inference_mode()``, and a backward through inference tensors
fails, so the modules the guidance differentiates through are copies made after the model
is loaded (LoRA and other weight patches included): the UNet's time embedding and first
input blocks (ZeCon features), the TAESD or VAE decoder (CLIP / VGG / range losses).
"""

from __future__ import annotations

import contextlib
import copy
import functools
from dataclasses import dataclass

import comfy.model_sampling
import torch
import torch.utils.checkpoint
from comfy.ldm.modules.attention import SpatialTransformer, get_attention_function
from comfy.ldm.modules.diffusionmodules.openaimodel import (Downsample, ResBlock, UNetModel, forward_timestep_embed,
                                                            timestep_embedding)

DECODERS = ("taesd", "vae")


def differentiable_attention(func, *args, **kwargs):
    """``optimized_attention_override``: PyTorch's attention, which has a backward (SageAttention has none)."""
    return get_attention_function("pytorch")(*args, **kwargs)


def with_differentiable_attention(transformer_options: dict) -> dict:
    """A copy of ``transformer_options`` that routes every attention call through PyTorch's kernel."""
    return {**transformer_options, "optimized_attention_override": differentiable_attention}


def _own_copy(t: torch.Tensor) -> torch.Tensor:
    return t.clone()


def _as_saved(t: torch.Tensor) -> torch.Tensor:
    return t


def differentiable_patch(patch):
    """``patch`` (a model patch, e.g. FreeU's output-block patch) made safe for a backward pass through it.

    Patches may write into their tensors in place: FreeU_V2 computes a scale from ``h``, multiplies
    a slice of ``h`` by it (autograd keeps that slice for the backward) and writes the product back
    into ``h``, which breaks the backward ("modified by an inplace operation"). The wrapped patch gets
    copies of its tensor arguments (the caller's tensors stay as they were), and every tensor its
    operations keep for the backward is kept as a copy taken when it is saved (saved-tensor hooks), so
    a later in-place write cannot change what the backward reads: the gradient of the patch as if it
    were written out of place. Same values; memory: one copy of what the patch saves."""

    def run(*args, **kwargs):
        args = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
        with torch.autograd.graph.saved_tensors_hooks(_own_copy, _as_saved):
            return patch(*args, **kwargs)

    return run


def with_differentiable_patches(transformer_options: dict) -> dict:
    """A copy of ``transformer_options`` whose model patches (``patches``: FreeU's output-block patch, input-block
    and attention patches, ...) are wrapped by :func:`differentiable_patch`; the model's own options are untouched."""
    patches = transformer_options.get("patches")
    if not patches:
        return transformer_options
    wrapped = {kind: [differentiable_patch(p) for p in fns] if isinstance(fns, list) else fns
               for kind, fns in patches.items()}
    return {**transformer_options, "patches": wrapped}


@contextlib.contextmanager
def checkpointed_blocks(unet: torch.nn.Module):
    """Inside the block, every ResBlock and SpatialTransformer of ``unet`` is recomputed in the backward
    pass instead of keeping its activations (gradient checkpointing); afterwards the model is as it was."""
    layers = [m for m in unet.modules() if isinstance(m, (ResBlock, SpatialTransformer))]
    for layer in layers:
        layer.forward = functools.partial(torch.utils.checkpoint.checkpoint, type(layer).forward.__get__(layer),
                                          use_reentrant=False)
    try:
        yield
    finally:
        for layer in layers:
            del layer.forward


def check_model(model) -> None:
    """Raise ``ValueError`` (naming the model type) unless ``model`` is a UNet with ε or v prediction."""
    base = model.model
    sampling = model.get_model_object("model_sampling")
    unet = isinstance(getattr(base, "diffusion_model", None), UNetModel)
    eps_family = isinstance(sampling, comfy.model_sampling.EPS) and not isinstance(sampling, comfy.model_sampling.CONST)
    if not (unet and eps_family):
        kind = getattr(getattr(base, "model_type", None), "name", "?")
        raise ValueError(
            f"model: {type(base).__name__} (prediction type {kind}) is not supported. ZeCon's latent mode needs a "
            f"UNet diffusion model with ε or v prediction (SD1.5, SD2.x, SDXL) or a rectified-flow image model "
            f"(Flux.1, Flux.2, Chroma, SD3 / SD3.5, Qwen-Image, Lumina 2 / Z-Image, HiDream-I1).")


def check_vae(vae, model) -> None:
    """Raise ``ValueError`` when the VAE's latents are not the model's (channels, spatial scale)."""
    channels = model.model.latent_format.latent_channels
    ratio = getattr(vae, "downscale_ratio", 8)
    if vae.latent_channels != channels or ratio != 8:
        raise ValueError(
            f"vae: it makes {vae.latent_channels}-channel latents at 1/{ratio} of the image size, but the model "
            f"({type(model.model).__name__}) works on {channels}-channel latents at 1/8: load the VAE that belongs "
            f"to this model.")


def level_ends(unet: UNetModel) -> list[int]:
    """Index of the last input block of every resolution level of the UNet encoder."""
    ends = [i - 1 for i, block in enumerate(unet.input_blocks) if any(isinstance(m, Downsample) for m in block)]
    return ends + [len(unet.input_blocks) - 1]


def default_layers(unet: UNetModel) -> tuple[int, ...]:
    """ZeCon layers: block 0 and the end of every level but the deepest, as the original's (0, 2, 5, 8, 11) on ADM.

    SD1.5 / SD2.x: (0, 2, 5, 8) = 64², 64², 32², 16² latents at 512 px; SDXL: (0, 2, 5) = 128², 128², 64² at 1024 px.
    """
    ends = level_ends(unet)
    return tuple(sorted({0, *ends[:-1]})) if len(ends) > 1 else (0, ends[0])


def check_layers(unet: UNetModel, layers) -> None:
    n = len(unet.input_blocks)
    bad = [i for i in layers if i >= n]
    if bad:
        raise ValueError(f"zecon_layers: block {bad[0]} does not exist; this UNet has {n} input blocks (0..{n - 1})")


class EncoderFeatures:
    """ZeCon features of an SD UNet: its encoder's input-block outputs at t = 0 (as the original evaluates
    the ADM encoder at t = 0), with the unconditional context, on copies of the blocks it needs.

    ``features(z, layers)`` -> one [B, C, h, w] float32 map per distinct layer, in ascending order.
    """

    def __init__(self, base_model, layers, context: torch.Tensor, y: torch.Tensor | None, device):
        unet = base_model.diffusion_model
        check_layers(unet, layers)
        self.dtype = base_model.manual_cast_dtype or base_model.get_dtype()
        with torch.inference_mode(False):
            parts = torch.nn.ModuleDict({"time_embed": unet.time_embed,
                                         "blocks": unet.input_blocks[:max(layers) + 1]})
            if unet.num_classes is not None:
                parts["label_emb"] = unet.label_emb
            self.parts = copy.deepcopy(parts).to(device).requires_grad_(False)
        self.model_channels = unet.model_channels
        self.sampling = base_model.model_sampling
        self.context = context.to(device)
        self.y = None if y is None else y.to(device)

    def __call__(self, z: torch.Tensor, layers) -> list[torch.Tensor]:
        wanted = sorted(set(layers))
        b = z.shape[0]
        zero = torch.zeros(b, device=z.device)
        emb = self.parts["time_embed"](timestep_embedding(zero, self.model_channels).to(self.dtype))
        if "label_emb" in self.parts:
            emb = emb + self.parts["label_emb"](self._batch(self.y, b).to(self.dtype))
        h = self.sampling.calculate_input(zero, z).to(self.dtype)
        context = self._batch(self.context, b).to(self.dtype)
        options = with_differentiable_attention({})
        out = []
        for i, block in enumerate(self.parts["blocks"]):
            h = forward_timestep_embed(block, h, emb, context, options)
            if i in wanted:
                out.append(h.float())
            if i == wanted[-1]:
                break
        return out

    @staticmethod
    def _batch(t: torch.Tensor, b: int) -> torch.Tensor:
        return t if t.shape[0] == b else t[:1].expand(b, *t.shape[1:])


def uncond_inputs(conds: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Cross-attention context (and SDXL's ``y``) of the negative conditioning, else the positive one."""
    entries = conds.get("negative") or conds.get("positive")
    model_conds = entries[0]["model_conds"]
    context = model_conds["c_crossattn"].cond
    y = model_conds["y"].cond if "y" in model_conds else None
    return context, y


@dataclass
class Decoder:
    """model-space latent -> image in [-1, 1], differentiable (a copy, float32 or bfloat16 weights)."""

    module: torch.nn.Module
    latent_to_input: object    # model-space latent -> the module's input
    dtype: torch.dtype

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return self.module(self.latent_to_input(z).to(self.dtype)).float()


class _TaesdDecode(torch.nn.Module):
    def __init__(self, taesd):
        super().__init__()
        self.taesd = taesd

    def forward(self, z):
        return self.taesd.decode(z)


class _VaeDecode(torch.nn.Module):
    def __init__(self, post_quant_conv, decoder):
        super().__init__()
        self.post_quant_conv, self.decoder = post_quant_conv, decoder

    def forward(self, z):
        return self.decoder(self.post_quant_conv(z))


def taesd_decoder(path: str, latent_channels: int, device) -> Decoder:
    """ComfyUI's TAESD (``comfy/taesd``) with the decoder weights at ``path``; it takes model-space latents."""
    from comfy.taesd.taesd import TAESD

    if not path:
        raise ValueError("decoder: no TAESD decoder weights (ComfyUI would leave them uninitialised)")
    with torch.inference_mode(False):
        module = _TaesdDecode(TAESD(None, path, latent_channels=latent_channels)).to(device).requires_grad_(False)
    return Decoder(module, lambda z: z, torch.float32)


def check_kl_vae(vae) -> None:
    """Raise ``ValueError`` unless the VAE is a KL autoencoder, whose decoder ``vae_decoder`` copies."""
    stage = vae.first_stage_model
    if not (hasattr(stage, "decoder") and hasattr(stage, "post_quant_conv")):
        raise ValueError(f"decoder: 'vae' needs a KL autoencoder VAE; this one is {type(stage).__name__}. "
                         f"Use decoder 'taesd'.")


def vae_decoder(vae, base_model, device) -> Decoder:
    """A copy of the VAE's decoder; fp16 VAEs run in bfloat16 (the SDXL VAE overflows to NaN in fp16)."""
    check_kl_vae(vae)
    stage = vae.first_stage_model
    dtype = torch.bfloat16 if vae.vae_dtype == torch.float16 else vae.vae_dtype
    if device.type == "cpu":
        dtype = torch.float32
    with torch.inference_mode(False):
        module = copy.deepcopy(_VaeDecode(stage.post_quant_conv, stage.decoder)).to(device, dtype)
        module.requires_grad_(False)
    return Decoder(module, base_model.process_latent_out, dtype)
