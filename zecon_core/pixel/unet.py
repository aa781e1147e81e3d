"""The ADM UNet of Dhariwal & Nichol (2021), as in openai/guided-diffusion.

Module tree and attribute names follow guided-diffusion's ``unet.py`` so that
the released checkpoints (``256x256_diffusion_uncond.pt``, the FFHQ models of
ILVR / P2-weighting) load with ``strict=True``. Differences from the original
code, none of which change the math:

* attention goes through ``F.scaled_dot_product_attention`` instead of the
  legacy einsum (same heads split, same softmax);
* attention is not always gradient-checkpointed; checkpointing of whole
  blocks is optional (``UNetModel.gradient_checkpointing``) for large images;
* ``encode`` returns chosen ``input_blocks`` outputs and stops after the
  deepest one (ZeCon's feature extractor, ``forward_enc`` in the ZeCon code);
* convolutions with frozen weights keep nothing for the backward pass
  (``Conv1d`` / ``Conv2d`` below): autograd would save each conv's input for a
  weight gradient that is never asked for. The input gradient is computed by
  the same kernel, so the values are identical; the UNet keeps about a third
  fewer activations for the guidance backward.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


class _FrozenWeightConv(torch.autograd.Function):
    """conv(x, w, b) for a weight without gradient: saves only shapes, recomputes nothing.

    Backward is ``aten.convolution_backward`` asked for the input gradient alone, with a
    zero-stride stand-in for x (only its shape is read), as ``torch.nn.grad.conv2d_input``.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, conv, stride, padding, dilation, groups):
        ctx.weight, ctx.x_shape, ctx.x_dtype = weight, x.shape, x.dtype
        ctx.settings = stride, padding, dilation, groups
        return conv(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad):
        stride, padding, dilation, groups = ctx.settings
        x_shape = grad.new_empty(1).expand(ctx.x_shape)
        gx = torch.ops.aten.convolution_backward(
            grad, x_shape, ctx.weight.to(grad.dtype), None, stride, padding, dilation, False,
            [0] * len(stride), groups, (True, False, False))[0]
        return gx.to(ctx.x_dtype), None, None, None, None, None, None, None


class _SavesNothingWhenFrozen:
    """Mixin for torch's conv modules: when only x needs a gradient, run through ``_FrozenWeightConv``."""

    functional = None   # F.conv1d / F.conv2d

    def _conv_forward(self, x, weight, bias):
        if (weight.requires_grad or not (torch.is_grad_enabled() and x.requires_grad) or torch.compiler.is_compiling()
                or self.padding_mode != "zeros" or isinstance(self.padding, str)):
            return super()._conv_forward(x, weight, bias)
        return _FrozenWeightConv.apply(x, weight, bias, self.functional, self.stride, self.padding, self.dilation,
                                       self.groups)


class Conv1d(_SavesNothingWhenFrozen, nn.Conv1d):
    """``nn.Conv1d`` (same parameters and keys) that saves nothing when its weight is frozen."""

    functional = staticmethod(F.conv1d)


class Conv2d(_SavesNothingWhenFrozen, nn.Conv2d):
    """``nn.Conv2d`` (same parameters and keys) that saves nothing when its weight is frozen."""

    functional = staticmethod(F.conv2d)


@dataclass(frozen=True)
class ADMConfig:
    """Hyper-parameters of an ADM UNet.

    ``attention_ds`` holds downsample factors (guided-diffusion converts its
    ``attention_resolutions`` string with ``image_size // r``), so the config
    does not depend on the image size the network is run at.
    """

    model_channels: int = 256
    num_res_blocks: int = 2
    channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4, 4)
    attention_ds: tuple[int, ...] = (8, 16, 32)
    num_head_channels: int = 64
    num_heads: int = 4
    num_heads_upsample: int = -1
    in_channels: int = 3
    out_channels: int = 6
    use_scale_shift_norm: bool = True
    resblock_updown: bool = True
    conv_resample: bool = True
    num_classes: int | None = None
    use_new_attention_order: bool = False
    dropout: float = 0.0

    @property
    def learn_sigma(self) -> bool:
        return self.out_channels == 2 * self.in_channels

    @property
    def downsample_factor(self) -> int:
        """The image side must be a multiple of this."""
        return 2 ** (len(self.channel_mult) - 1)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [cos(t f), sin(t f)] (cos first, as in ADM)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 for half-precision inputs (as ADM does), in float64 for float64 ones."""

    def forward(self, x):
        return super().forward(x if x.dtype == torch.float64 else x.float()).type(x.dtype)


def normalization(channels: int) -> nn.Module:
    return GroupNorm32(32, channels)


class TimestepBlock(nn.Module):
    """A module whose forward takes the timestep embedding as a second input."""


class TimestepEmbedSequential(nn.Sequential, TimestepBlock):
    def forward(self, x, emb):
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class Upsample(nn.Module):
    def __init__(self, channels, use_conv, out_channels=None):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_conv = use_conv
        if use_conv:
            self.conv = Conv2d(channels, self.out_channels, 3, padding=1)

    def forward(self, x):
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    def __init__(self, channels, use_conv, out_channels=None):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_conv = use_conv
        if use_conv:
            self.op = Conv2d(channels, self.out_channels, 3, stride=2, padding=1)
        else:
            self.op = nn.AvgPool2d(kernel_size=2, stride=2)

    def forward(self, x):
        return self.op(x)


class ResBlock(TimestepBlock):
    """Residual block with FiLM-like timestep conditioning (scale, shift)."""

    def __init__(self, channels, emb_channels, dropout, out_channels=None,
                 use_scale_shift_norm=False, up=False, down=False):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(
            normalization(channels), nn.SiLU(), Conv2d(channels, self.out_channels, 3, padding=1)
        )
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(channels, False), Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(
            nn.SiLU(),
            nn.Linear(emb_channels, 2 * self.out_channels if use_scale_shift_norm else self.out_channels),
        )
        self.out_layers = nn.Sequential(
            normalization(self.out_channels),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            Conv2d(self.out_channels, self.out_channels, 3, padding=1),
        )
        if self.out_channels == channels:
            self.skip_connection = nn.Identity()
        else:
            self.skip_connection = Conv2d(channels, self.out_channels, 1)

    def forward(self, x, emb):
        if self.updown:
            h = self.in_layers[:-1](x)
            h = self.in_layers[-1](self.h_upd(h))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).type(h.dtype)[..., None, None]
        if self.use_scale_shift_norm:
            scale, shift = torch.chunk(emb_out, 2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over spatial positions.

    ``use_new_attention_order=False`` is guided-diffusion's QKVAttentionLegacy:
    the qkv channels are split into heads first, then into q, k, v.
    """

    def __init__(self, channels, num_heads=1, num_head_channels=-1, use_new_attention_order=False):
        super().__init__()
        self.channels = channels
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            if channels % num_head_channels:
                raise ValueError(
                    f"attention channels {channels} are not divisible by num_head_channels {num_head_channels}"
                )
            self.num_heads = channels // num_head_channels
        self.use_new_attention_order = use_new_attention_order
        self.norm = normalization(channels)
        self.qkv = Conv1d(channels, channels * 3, 1)
        self.proj_out = Conv1d(channels, channels, 1)

    def forward(self, x):
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))
        heads, length = self.num_heads, x.shape[-1]
        ch = c // heads
        if self.use_new_attention_order:
            q, k, v = (t.reshape(b, heads, ch, length) for t in qkv.chunk(3, dim=1))
        else:
            q, k, v = qkv.reshape(b, heads, 3 * ch, length).split(ch, dim=2)
        a = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        h = self.proj_out(a.transpose(-1, -2).reshape(b, c, length))
        return (x + h).reshape(b, c, *spatial)


class UNetModel(nn.Module):
    """The full ADM UNet: eps (and variance values) from (x_t, t)."""

    def __init__(self, config: ADMConfig):
        super().__init__()
        cfg = self.config = config
        mc, dropout = cfg.model_channels, cfg.dropout
        heads_up = cfg.num_heads if cfg.num_heads_upsample == -1 else cfg.num_heads_upsample
        self.gradient_checkpointing = False
        self.num_classes = cfg.num_classes
        self.model_channels = mc
        emb_dim = mc * 4

        def res(ch_in, ch_out=None, **kw):
            return ResBlock(ch_in, emb_dim, dropout, ch_out, use_scale_shift_norm=cfg.use_scale_shift_norm, **kw)

        def attn(ch, heads):
            return AttentionBlock(ch, heads, cfg.num_head_channels, cfg.use_new_attention_order)

        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        if cfg.num_classes is not None:
            self.label_emb = nn.Embedding(cfg.num_classes, emb_dim)

        ch = input_ch = int(cfg.channel_mult[0] * mc)
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(Conv2d(cfg.in_channels, ch, 3, padding=1))])
        skip_chans, ds = [ch], 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers = [res(ch, int(mult * mc))]
                ch = int(mult * mc)
                if ds in cfg.attention_ds:
                    layers.append(attn(ch, cfg.num_heads))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_chans.append(ch)
            if level != len(cfg.channel_mult) - 1:
                down = res(ch, ch, down=True) if cfg.resblock_updown else Downsample(ch, cfg.conv_resample, ch)
                self.input_blocks.append(TimestepEmbedSequential(down))
                skip_chans.append(ch)
                ds *= 2

        self.middle_block = TimestepEmbedSequential(res(ch), attn(ch, cfg.num_heads), res(ch))

        self.output_blocks = nn.ModuleList()
        for level, mult in list(enumerate(cfg.channel_mult))[::-1]:
            for i in range(cfg.num_res_blocks + 1):
                layers = [res(ch + skip_chans.pop(), int(mc * mult))]
                ch = int(mc * mult)
                if ds in cfg.attention_ds:
                    layers.append(attn(ch, heads_up))
                if level and i == cfg.num_res_blocks:
                    layers.append(res(ch, ch, up=True) if cfg.resblock_updown else Upsample(ch, cfg.conv_resample, ch))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(normalization(ch), nn.SiLU(), Conv2d(input_ch, cfg.out_channels, 3, padding=1))

    def _embed(self, timesteps, y):
        t_emb = timestep_embedding(timesteps, self.model_channels)
        emb = self.time_embed(t_emb.to(self.time_embed[0].weight.dtype))  # float64 weights run in float64
        if self.num_classes is not None:
            if y is None:
                raise ValueError("this UNet is class-conditional: pass class labels y")
            emb = emb + self.label_emb(y)
        return emb

    def _run(self, block, h, emb):
        if self.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, h, emb, use_reentrant=False)
        return block(h, emb)

    def forward(self, x, timesteps, y=None):
        """Model output [B, out_channels, H, W] for x_t and (float) timesteps."""
        emb = self._embed(timesteps, y)
        hs, h = [], x
        for block in self.input_blocks:
            h = self._run(block, h, emb)
            hs.append(h)
        h = self._run(self.middle_block, h, emb)
        for block in self.output_blocks:
            h = self._run(block, torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h.type(x.dtype))

    def encode(self, x, timesteps, blocks, y=None) -> list[torch.Tensor]:
        """Outputs of ``input_blocks[i]`` for i in ``blocks`` (sorted), stopping after the deepest."""
        wanted = sorted(set(blocks))
        if not wanted or wanted[0] < 0 or wanted[-1] >= len(self.input_blocks):
            raise ValueError(f"encoder blocks must lie in 0..{len(self.input_blocks) - 1}, got {list(blocks)}")
        emb = self._embed(timesteps, y)
        feats, h = [], x
        for i, block in enumerate(self.input_blocks[: wanted[-1] + 1]):
            h = self._run(block, h, emb)
            if i in wanted:
                feats.append(h)
        return feats
