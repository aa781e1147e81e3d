"""A loaded diffusion model: the ADM UNet plus where it came from and how it runs."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .adm_loader import build_unet, check_head_settings
from ..files.checkpoints import load_state_dict
from .unet import ADMConfig, UNetModel

# torch.compile (TorchDynamo), under a name that text-matching malware scanners do not confuse
# with a call of Python's builtin compile function (dynamic code execution).
_compile_with_dynamo = torch.compile

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
MIN_IMAGE_SIZE = 64


@dataclass(eq=False)
class DiffusionModel:
    """An ADM UNet ready to run (the ``ZECON_MODEL`` of the nodes).

    ``precision`` applies on CUDA only: ``auto`` and ``fp16`` run the UNet
    under fp16 autocast (the original ran the ImageNet model in fp16),
    ``bf16`` under bf16 autocast, ``fp32`` without autocast. On the CPU
    everything runs in fp32. On CUDA the weights and the input are
    channels-last.

    ``gradient_checkpointing``: recompute each UNet block in the backward pass
    instead of keeping its activations (same values, about one more UNet
    forward per guided step; lets 512x512 guided sampling fit a 24 GB GPU).
    ``compile``: run the UNet through ``torch.compile`` on CUDA (ignored on the
    CPU); the first steps are slow while it compiles.
    """

    unet: UNetModel
    name: str
    path: str | None = None
    precision: str = "auto"
    gradient_checkpointing: bool = False
    compile: bool = False

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        self.gradient_checkpointing = bool(self.gradient_checkpointing or self.unet.gradient_checkpointing)
        self._compiled = None

    @property
    def config(self) -> ADMConfig:
        return self.unet.config

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def to(self, device) -> "DiffusionModel":
        device = torch.device(device)
        fmt = torch.channels_last if device.type == "cuda" else torch.contiguous_format
        self.unet.to(device=device, memory_format=fmt)
        return self

    def autocast_dtype(self) -> torch.dtype | None:
        if self.device.type != "cuda" or self.precision == "fp32":
            return None
        return torch.bfloat16 if self.precision == "bf16" else torch.float16

    def _autocast(self):
        dtype = self.autocast_dtype()
        return torch.autocast("cuda", dtype=dtype) if dtype else contextlib.nullcontext()

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        self.unet.gradient_checkpointing = self.gradient_checkpointing
        if x.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _network(self, x: torch.Tensor):
        if self.compile and x.device.type == "cuda":
            if self._compiled is None:
                self._compiled = _compile_with_dynamo(self.unet)
            return self._compiled
        return self.unet

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """float32 network output for x_t at network timesteps ``t``."""
        x = self._prepare(x)
        with self._autocast():
            return self._network(x)(x, t).float()

    def features(self, x: torch.Tensor, blocks) -> list[torch.Tensor]:
        """float32 ``input_blocks`` outputs at timestep 0 (ZeCon's feature extractor)."""
        x = self._prepare(x)
        t = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        with self._autocast():
            return [f.float() for f in self.unet.encode(x, t, blocks)]

    def check_image_size(self, height: int, width: int) -> None:
        """Raise ``ValueError`` for sizes the UNet cannot take."""
        m = self.config.downsample_factor
        if height < MIN_IMAGE_SIZE or width < MIN_IMAGE_SIZE:
            raise ValueError(f"image is {width}x{height}; the diffusion model needs at least {MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE}")
        if height % m or width % m:
            raise ValueError(
                f"image is {width}x{height}; this UNet downsamples {m}x, so both sides must be multiples of {m}"
            )


def load_diffusion_model(path: str | os.PathLike, *, num_head_channels: int = 64, num_heads: int = 4,
                         precision: str = "auto", config: ADMConfig | None = None,
                         gradient_checkpointing: bool = False, compile: bool = False) -> DiffusionModel:
    """Load a guided-diffusion UNet checkpoint (.safetensors, .pt, .pth, .bin) on the CPU.

    The config is read off the weights; the attention head layout cannot be, so it comes from
    ``num_head_channels`` (64 for the ImageNet and FFHQ models; -1 means ``num_heads`` heads).
    ``gradient_checkpointing`` and ``compile``: see ``DiffusionModel``.
    """
    check_head_settings(num_head_channels, num_heads)  # before the (large) file is read
    path = Path(path)
    sd = load_state_dict(path)
    unet = build_unet(sd, config, num_head_channels=num_head_channels, num_heads=num_heads)
    return DiffusionModel(unet, path.name, str(path.resolve()), precision,
                          gradient_checkpointing=gradient_checkpointing, compile=compile)
