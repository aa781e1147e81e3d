"""Run zecon_core work on ComfyUI's device and give the memory back afterwards."""

from __future__ import annotations

import contextlib

import comfy.model_management as mm
import torch

from ..zecon_core.pixel.memory import estimate_guided_step_bytes


@contextlib.contextmanager
def on_device(model, *others, height: int, width: int, batch: int, guidance=None, clip=None):
    """Move zecon_core models (``.to(device)``) to ComfyUI's torch device for the block.

    Runs outside ComfyUI's inference mode (guidance needs autograd). On a GPU,
    ComfyUI first unloads its own models until the estimated need of a step
    (zecon_core.pixel.memory, weights included) is free. Afterwards the models go
    back to ComfyUI's offload device and the cache is emptied, also when the
    block raises (errors, interrupts).
    """
    objs = [o for o in (model, *others) if o is not None]
    device = mm.get_torch_device()
    offload = mm.unet_offload_device()
    with torch.inference_mode(False):
        try:
            if device.type != "cpu":
                mm.free_memory(estimate_guided_step_bytes(model, height, width, batch, guidance, clip), device)
            for obj in objs:
                obj.to(device)
            yield device
        finally:
            for obj in objs:
                obj.to(offload)
            mm.soft_empty_cache()


def plain(t: torch.Tensor) -> torch.Tensor:
    """A normal (non-inference) copy of a tensor ComfyUI made under inference mode."""
    with torch.inference_mode(False):
        return t.detach().clone()
