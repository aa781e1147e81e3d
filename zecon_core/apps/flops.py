"""FLOP counting for the benchmark: ``torch.utils.flop_counter`` plus the CPU attention kernels it misses.

``FlopCounterMode`` knows matmuls, convolutions and the CUDA attention
kernels, but not the CPU flash-attention kernel that ``scaled_dot_product_attention``
dispatches to on the CPU, nor ``nn.MultiheadAttention``'s no-grad fast path
(``_native_multi_head_attention``). Without them a CPU count would miss the
attention products of the UNet and of CLIP (and the original's einsum attention
would be counted, ours not). The formulas below are torch's own SDPA formulas
(2 matmuls forward, 4 backward) and the projections of the fused MHA op.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch.utils import flop_counter as fc
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten


def _sdpa_cpu(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return fc.sdpa_flop_count(query_shape, key_shape, value_shape)


def _sdpa_cpu_backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return fc.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def _native_mha(query_shape, key_shape, value_shape, embed_dim, num_head, *args, out_shape=None, **kwargs) -> int:
    # query [B, L, E] (batch first); in-projection 3E x E, attention, out-projection E x E
    b, lq, e = query_shape
    lk = key_shape[1]
    proj = 2 * b * lq * e * 3 * e + 2 * b * lq * e * e
    attn = 2 * b * lq * lk * e * 2
    return proj + attn


CUSTOM_FLOPS = {
    aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_cpu_backward,
    aten._native_multi_head_attention: _native_mha,
}


class FlopCount(TorchDispatchMode):
    """Counts FLOPs (a multiply-add counts 2) of every op that runs inside it.

    torch's formulas without ``FlopCounterMode``'s module tracking, whose hooks
    do not support ``torch.autograd.grad`` (what a guided step calls).
    """

    def __init__(self):
        super().__init__()
        self.total = 0
        self.by_op: dict[str, int] = {}
        self.formulas = dict(fc.flop_registry)
        self.formulas.update({k: fc.shape_wrapper(v) for k, v in CUSTOM_FLOPS.items()})

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = self.formulas.get(func._overloadpacket)
        if formula is not None:
            n = int(formula(*args, **kwargs, out_val=out))
            self.total += n
            name = str(func._overloadpacket).split(".")[-1]
            self.by_op[name] = self.by_op.get(name, 0) + n
        return out


@contextmanager
def count_flops():
    """``with count_flops() as c: ...`` then ``c.total`` (and ``c.by_op``)."""
    mode = FlopCount()
    with mode:
        yield mode
