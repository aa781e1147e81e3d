"""Recognising an ADM UNet state dict, reading its config, building the model.

Everything but the attention head layout can be read off the keys and shapes.
The head count changes no key, so it comes from ``num_head_channels``
(64 for both the ImageNet-256 and the FFHQ-256 models), which callers can
override.
"""

from __future__ import annotations

import re

import torch

from ..files.checkpoints import CheckpointError
from .unet import ADMConfig, UNetModel

_REQUIRED = ("time_embed.0.weight", "input_blocks.0.0.weight", "out.2.weight", "middle_block.0.in_layers.0.weight")

# (predicate over the key set, description) for state dicts people load by mistake
_LOOKALIKES = (
    (lambda ks: any(k.startswith("model.diffusion_model.") for k in ks),
     "a Stable Diffusion / latent-diffusion checkpoint (UNet + VAE + text encoder)"),
    (lambda ks: any(".transformer_blocks." in k for k in ks),
     "a latent-diffusion (Stable Diffusion) UNet with cross-attention"),
    (lambda ks: "conv_in.weight" in ks and any(k.startswith("down_blocks.") for k in ks),
     "a diffusers-format UNet"),
    (lambda ks: any(k.startswith("encoder.down.") for k in ks) and any(k.startswith("decoder.up.") for k in ks),
     "a VAE (autoencoder)"),
    (lambda ks: "text_projection" in ks or any(k.startswith("visual.") for k in ks),
     "a CLIP model"),
    (lambda ks: any(k.startswith("features.") for k in ks) and not any(k.startswith("input_blocks.") for k in ks),
     "a VGG-style image classifier (torchvision layout)"),
    (lambda ks: any(k.startswith("input_blocks.") for k in ks) and not any(k.startswith("output_blocks.") for k in ks),
     "a guided-diffusion noisy-image classifier (encoder half only), not the diffusion UNet"),
)


def describe_state_dict(sd: dict) -> str | None:
    """What a non-ADM state dict looks like, or None when it has the ADM keys."""
    keys = set(sd)
    if all(k in keys for k in _REQUIRED):
        return None
    for test, what in _LOOKALIKES:
        if test(keys):
            return what
    return "an unknown model"


def _blocks(sd, prefix):
    pattern = re.escape(prefix) + r"\.(\d+)\."
    return sorted({int(m.group(1)) for k in sd if (m := re.match(pattern, k))})


def _has(sd, prefix):
    return any(k.startswith(prefix) for k in sd)


def detect_config(sd: dict, *, num_head_channels: int = 64, num_heads: int = 4,
                  use_new_attention_order: bool = False) -> ADMConfig:
    """Read an ``ADMConfig`` off a guided-diffusion ``UNetModel`` state dict."""
    check_head_settings(num_head_channels, num_heads)
    what = describe_state_dict(sd)
    if what is not None:
        missing = [k for k in _REQUIRED if k not in sd]
        raise CheckpointError(
            f"this file looks like {what}, not a guided-diffusion ADM UNet "
            f"(missing keys: {', '.join(missing)}). ZeCon needs a pixel-space ADM model such as "
            "256x256_diffusion_uncond.pt (ImageNet) or ffhq_10m.pt (FFHQ)."
        )
    mc = sd["time_embed.0.weight"].shape[1]
    in_channels = sd["input_blocks.0.0.weight"].shape[1]
    out_channels = sd["out.2.weight"].shape[0]
    out_ids = _blocks(sd, "output_blocks")
    in_ids = _blocks(sd, "input_blocks")
    n_out = len(out_ids)
    if out_ids != list(range(n_out)):
        raise CheckpointError(f"output_blocks are not numbered 0..{n_out - 1}: {out_ids}")

    def is_up(k):  # an output block that ends a level holds an up-sampling layer after its ResBlock
        return any(
            _has(sd, f"output_blocks.{k}.{j}.in_layers.") or f"output_blocks.{k}.{j}.conv.weight" in sd
            for j in (1, 2)
        )

    ups = [k for k in out_ids if is_up(k)]
    nrb = ups[0] if ups else n_out - 1
    if n_out % (nrb + 1):
        raise CheckpointError("cannot infer num_res_blocks from the output blocks")
    levels = n_out // (nrb + 1)
    if in_ids != list(range(levels * (nrb + 1))):
        raise CheckpointError(
            "input blocks do not match the output blocks (parameter-free downsampling is not supported)"
        )

    def out_width(prefix):
        return sd[f"{prefix}.out_layers.3.weight"].shape[0]

    channel_mult, attention_ds = [], []
    for level in range(levels):
        first_res = 1 + level * (nrb + 1)
        channel_mult.append(out_width(f"input_blocks.{first_res}.0") // mc)
        if f"input_blocks.{first_res}.1.qkv.weight" in sd:
            attention_ds.append(2 ** level)
    resblock_updown = levels > 1 and _has(sd, f"input_blocks.{nrb + 1}.0.in_layers.")
    width1 = out_width("input_blocks.1.0")
    cfg = ADMConfig(
        model_channels=mc,
        num_res_blocks=nrb,
        channel_mult=tuple(channel_mult),
        attention_ds=tuple(attention_ds),
        num_head_channels=num_head_channels,
        num_heads=num_heads,
        in_channels=in_channels,
        out_channels=out_channels,
        use_scale_shift_norm=sd["input_blocks.1.0.emb_layers.1.weight"].shape[0] == 2 * width1,
        resblock_updown=resblock_updown,
        conv_resample=resblock_updown or levels == 1 or f"input_blocks.{nrb + 1}.0.op.weight" in sd,
        num_classes=sd["label_emb.weight"].shape[0] if "label_emb.weight" in sd else None,
        use_new_attention_order=use_new_attention_order,
    )
    _check_heads(sd, cfg)
    return cfg


def check_head_settings(num_head_channels, num_heads=4) -> None:
    """``ValueError`` unless ``num_head_channels`` is -1 (then ``num_heads`` heads, >= 1) or >= 1.

    Whether a positive value divides every attention layer's width is checked against the
    weights (``_check_heads``)."""
    if isinstance(num_head_channels, bool) or not isinstance(num_head_channels, int):
        raise ValueError(f"num_head_channels must be an integer, got {num_head_channels!r}")
    if num_head_channels == -1:
        if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
            raise ValueError(f"num_heads must be an integer >= 1 when num_head_channels is -1, got {num_heads!r}")
        return
    if num_head_channels < 1:
        raise ValueError(f"num_head_channels must be -1 (4 heads per attention layer) or a positive divisor of "
                         f"the attention channels (64 for the ImageNet and FFHQ models), got {num_head_channels}")


def _check_heads(sd, cfg: ADMConfig):
    if cfg.num_head_channels == -1:
        return
    for k, v in sd.items():
        if k.endswith(".qkv.weight") and (v.shape[0] // 3) % cfg.num_head_channels:
            raise CheckpointError(
                f"attention width {v.shape[0] // 3} at {k} is not a multiple of num_head_channels="
                f"{cfg.num_head_channels}; set num_head_channels to the value the model was trained with"
            )


def build_unet(sd: dict, config: ADMConfig | None = None, **detect_kwargs) -> UNetModel:
    """Build a UNet for ``sd`` and load it with ``strict=True`` (no random init, no copy of fp32 weights)."""
    config = config or detect_config(sd, **detect_kwargs)
    with torch.device("meta"):
        model = UNetModel(config)
    sd = {k: (v if v.dtype == torch.float32 else v.float()) for k, v in sd.items()}
    try:
        model.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as e:
        raise CheckpointError(f"the weights do not fit the detected ADM config {config}: {e}") from e
    return model.requires_grad_(False).train(False)


# Configs of the released 256x256 models (ImageNet uncond, FFHQ of ILVR / P2-weighting).
_TRAINED_AT_256 = (
    dict(model_channels=256, num_res_blocks=2, channel_mult=(1, 1, 2, 2, 4, 4), attention_ds=(8, 16, 32)),
    dict(model_channels=128, num_res_blocks=1, channel_mult=(1, 1, 2, 2, 4, 4), attention_ds=(16,)),
)


def native_size(config: ADMConfig) -> int | None:
    """Training resolution of a released model with this config (256), or None when unknown."""
    for known in _TRAINED_AT_256:
        if all(getattr(config, k) == v for k, v in known.items()):
            return 256
    return None
