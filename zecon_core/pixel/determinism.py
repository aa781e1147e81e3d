"""One seed, one image on the GPU too.

CPU kernels here are deterministic; several CUDA kernels are not (atomic adds in
backward passes, cuDNN algorithm search, fused attention backward). For the
duration of a run on CUDA this turns on PyTorch's deterministic algorithms,
cuDNN's deterministic mode, and attention's math kernel (the fused kernels'
backward passes are not deterministic); the engine's own ops (gather-based
warps, matrix pooling) are deterministic already. Settings are restored
afterwards, also on errors.
"""

from __future__ import annotations

import contextlib

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel


@contextlib.contextmanager
def reproducible(device: torch.device | str, enabled: bool = True):
    """Deterministic CUDA kernels inside the block (a no-op on other devices, or when not ``enabled``)."""
    if not enabled or torch.device(device).type != "cuda":
        yield
        return
    cudnn = torch.backends.cudnn
    saved = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             cudnn.deterministic, cudnn.benchmark)
    torch.use_deterministic_algorithms(True, warn_only=True)
    cudnn.deterministic, cudnn.benchmark = True, False
    try:
        with sdpa_kernel([SDPBackend.MATH]):
            yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        cudnn.deterministic, cudnn.benchmark = saved[2], saved[3]
