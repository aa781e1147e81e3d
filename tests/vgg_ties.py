"""Max-pool ties in the VGG loss: the one place where float32 rounding changes a gradient by more than rounding.

The VGG perceptual loss max-pools 2x2 windows of relu(conv1_2). Where a window's two largest values lie
within float32 rounding of each other, two valid float32 evaluations (the original's, ours) may pick
different winners, and the window's gradient then goes to another pixel: a jump of ~1 % of the whole
gradient (README, "Faithfulness"). ``tie_variants`` gives the gradient under each other choice of the
near-tied windows, so a parity check can accept the golden value when it equals one of them.
"""
from __future__ import annotations

import contextlib
from itertools import combinations

import torch

#: windows whose top two values differ by at most this times the layer's largest value count as tied
#: (float32 rounding of a 576-term conv sum is a few 1e-7 of its magnitude)
TIE_REL = 4e-6
MAX_TIES = 4   # every subset of at most this many tied windows is tried (2^4 gradients)


def _pool(vgg):
    return vgg.features[4]


def near_ties(vgg, image: torch.Tensor, rel: float = TIE_REL) -> list[tuple[int, int, int, int]]:
    """(b, c, y, x) of the runner-up of every 2x2 max-pool window of ``vgg(image)`` whose positive maximum
    exceeds the runner-up by at most ``rel`` times the layer's largest value."""
    seen = {}
    handle = _pool(vgg).register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0].detach()))
    try:
        with torch.no_grad():
            vgg(image)
    finally:
        handle.remove()
    x = seen["x"]
    b, c, h, w = x.shape
    win = x[..., : h // 2 * 2, : w // 2 * 2].reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 2, 4, 3, 5)
    top = win.reshape(b, c, h // 2, w // 2, 4).topk(2, dim=-1)
    gap = top.values[..., 0] - top.values[..., 1]
    near = (top.values[..., 0] > 0) & (gap <= rel * x.abs().max())
    out = []
    for bb, cc, r, q in near.nonzero().tolist():
        dy, dx = divmod(int(top.indices[bb, cc, r, q, 1]), 2)
        out.append((bb, cc, 2 * r + dy, 2 * q + dx))
    return out


@contextlib.contextmanager
def forced_winners(vgg, positions):
    """Within the context, the differentiated VGG pass makes each runner-up at ``positions`` the maximum of its
    window (raised one float step above the window's maximum); passes without gradient are left alone."""
    def raise_runner_up(module, args):
        x = args[0]
        if not x.requires_grad or not positions:
            return None
        x = x.clone()
        for b, c, y, xx in positions:
            y0, x0 = y // 2 * 2, xx // 2 * 2
            top = x[b, c, y0:y0 + 2, x0:x0 + 2].detach().max()
            x[b, c, y, xx] = x[b, c, y, xx] + (torch.nextafter(top, top + 1) - x[b, c, y, xx]).detach()
        return (x,)

    handle = _pool(vgg).register_forward_pre_hook(raise_runner_up)
    try:
        yield
    finally:
        handle.remove()


def tie_variants(vgg, image: torch.Tensor, gradient) -> list[torch.Tensor]:
    """``gradient()`` recomputed with every non-empty subset (up to ``MAX_TIES`` windows) of the near-tied
    max-pool windows of ``vgg(image)`` resolved the other way; [] when there is no near tie or too many."""
    ties = near_ties(vgg, image)
    if not ties or len(ties) > MAX_TIES:
        return []
    out = []
    for k in range(1, len(ties) + 1):
        for subset in combinations(ties, k):
            with forced_winners(vgg, list(subset)):
                out.append(gradient())
    return out
