"""Memory: estimate what a guided step needs before starting, and turn out-of-memory into a clear error.

The estimate runs the networks on the ``meta`` device (shapes only, nothing
allocated) and adds up the tensors autograd saves for the backward pass, plus
the weights: it is exact for the activations of the UNet, the ZeCon encoder
and CLIP at the requested size, and takes well under a second.
"""

from __future__ import annotations

import gc
import os

import torch
from torch.func import functional_call

GiB = 2**30
SUGGESTION = ("use a smaller size (size policy 'fit short side' or 'resize' with a smaller size), "
              "a smaller batch or fewer CLIP views (n_patch)")


class OutOfMemory(MemoryError):
    """Not enough memory for a step, with the size that failed and what to lower."""


def _saved_bytes(module: torch.nn.Module, *args) -> int:
    """Bytes autograd saves for backward when ``module(*args)`` runs with meta tensors."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        # keep nothing: returning the tensor would tie it to its own graph, a cycle gc cannot free

    params = {k: torch.empty_like(v, device="meta") for k, v in module.named_parameters()}
    params.update({k: torch.empty_like(v, device="meta") for k, v in module.named_buffers()})
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda _: None):
        functional_call(module, params, args)
    return total


def _weight_bytes(module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters()) if module is not None else 0


@torch.inference_mode(False)  # ComfyUI runs nodes in inference mode, where autograd would save nothing
def estimate_guided_step_bytes(model, height: int, width: int, batch: int, guidance=None, clip=None) -> int:
    """Peak bytes of one guided step at ``height`` x ``width`` for ``batch`` images.

    Without ``guidance`` the estimate covers the UNet forward and backward only (the least any
    guided step needs). Half-precision autocast on CUDA roughly halves the activations.
    """
    x = torch.empty(batch, 3, height, width, device="meta", requires_grad=True)
    t = torch.zeros(batch, device="meta")
    unet = model.unet
    act = _saved_bytes(unet, x, t)
    if guidance is not None and guidance.zecon > 0:
        act += _saved_bytes(_Encoder(unet, guidance.zecon_layers), x, t)
    if guidance is not None and guidance.uses_clip and clip is not None:
        losses = sum(getattr(guidance, k) > 0 for k in ("clip_global", "clip_global_patch", "clip_dir", "clip_dir_patch"))
        if guidance.shared_views:
            losses = (guidance.clip_global > 0 or guidance.clip_dir > 0) + \
                     (guidance.clip_global_patch > 0 or guidance.clip_dir_patch > 0)
        views = torch.empty(losses * guidance.n_patch * batch, 3, clip.image_size, clip.image_size, device="meta")
        act += _saved_bytes(_ImageTower(clip.model), views)
    if model.autocast_dtype() is not None:
        act //= 2
    weights = _weight_bytes(unet) + (_weight_bytes(clip.model) if clip is not None else 0)
    images = 8 * batch * 3 * height * width * 4     # x_t, x̂0, blends, noises, gradient
    return act + weights + images


class _Encoder(torch.nn.Module):
    def __init__(self, unet, blocks):
        super().__init__()
        self.unet, self.blocks = unet, blocks

    def forward(self, x, t):
        return self.unet.encode(x, t, self.blocks)


class _ImageTower(torch.nn.Module):
    def __init__(self, clip):
        super().__init__()
        self.clip = clip

    def forward(self, pixels):
        return self.clip.encode_image(pixels)


def available_bytes(device: torch.device) -> int | None:
    """Free memory on ``device`` (None when unknown)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if device.type == "cpu" and os.path.exists("/proc/meminfo"):
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    return None


def check_fits(model, height: int, width: int, batch: int, guidance=None, clip=None) -> None:
    """Raise ``OutOfMemory`` before starting when the estimate exceeds the free memory."""
    free = available_bytes(model.device)
    if free is None:
        return
    need = estimate_guided_step_bytes(model, height, width, batch, guidance, clip)
    if need > free:
        raise OutOfMemory(
            f"a guided step at {width}x{height} (batch {batch}) needs about {need / GiB:.1f} GiB, "
            f"but only {free / GiB:.1f} GiB is free on {model.device}; {SUGGESTION}"
        )


def run_guarded(fn, what: str, height: int, width: int, batch: int):
    """``fn()``, with ``torch.OutOfMemoryError`` turned into ``OutOfMemory`` once the failed step's tensors are freed."""
    failed = False
    try:
        return fn()
    except torch.OutOfMemoryError:
        failed = True          # raise outside the except block: the traceback and its tensors are dropped
    if failed:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise OutOfMemory(f"out of memory during {what} at {width}x{height} (batch {batch}); {SUGGESTION}")
