"""The loss terms of ZeCon (Yang et al. 2023, Sec. 3) as pure functions of tensors."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def spherical_dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """CLIP global loss per row: 2 arcsin(|x̂ - ŷ| / 2)^2 with x̂, ŷ unit vectors."""
    x = F.normalize(x, dim=-1)
    y = F.normalize(y, dim=-1)
    return (x - y).norm(dim=-1).div(2).arcsin().pow(2).mul(2)


def directional_dist(img: torch.Tensor, img_src: torch.Tensor, txt: torch.Tensor, txt_src: torch.Tensor) -> torch.Tensor:
    """CLIP directional loss per row (eq. 4): 1 - cos(E_I(x) - E_I(x_src), E_T(t) - E_T(t_src)).

    Rows broadcast: one text pair for all image rows, or one per row.
    """
    d_img = F.normalize(img - img_src, dim=-1)
    d_txt = F.normalize(txt - txt_src, dim=-1)
    return 1 - (d_img * d_txt).sum(-1)


def range_loss(x: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared excess of x outside [-1, 1]."""
    return (x - x.clamp(-1, 1)).pow(2).mean(dim=(1, 2, 3))


def l2_normalize_rows(x: torch.Tensor) -> torch.Tensor:
    """x / (|x| + 1e-7) along the last dimension (the CUT ``Normalize`` layer)."""
    return x / (x.pow(2).sum(-1, keepdim=True).sqrt() + 1e-7)


def patch_nce(q: torch.Tensor, k: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """PatchNCE per query (ZeCon eq. 6, from CUT): cross-entropy of the positive against all other keys.

    ``q``, ``k``: [P, C] L2-normalised features at the same P positions; ``k`` is
    treated as constant. Self-similarities on the negatives' diagonal are set to
    -10 before dividing by the temperature, as in CUT.
    """
    k = k.detach()
    pos = (q * k).sum(-1, keepdim=True)
    neg = q @ k.t()
    neg = neg.masked_fill(torch.eye(q.shape[0], device=q.device, dtype=torch.bool), -10.0)
    logits = torch.cat([pos, neg], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device), reduction="none")


def zecon_loss(feats_q: list[torch.Tensor], feats_k: list[torch.Tensor], patch_ids: list[torch.Tensor],
               temperature: float = 0.07) -> torch.Tensor:
    """ZeCon content loss of one image: Σ_layers mean_patches PatchNCE (eq. 7).

    ``feats_*``: UNet encoder features [C, h, w] per layer, queries from the
    output, keys from the source; ``patch_ids``: sampled positions per layer.
    """
    total = 0.0
    for fq, fk, ids in zip(feats_q, feats_k, patch_ids):
        q = l2_normalize_rows(fq.flatten(1).t()[ids])
        k = l2_normalize_rows(fk.flatten(1).t()[ids])
        total = total + patch_nce(q, k, temperature).mean()
    return total


def mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared error."""
    return (x - y).pow(2).mean(dim=(1, 2, 3))


def vgg_perceptual(feats_x: tuple[torch.Tensor, ...], feats_y: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Per-image Σ_layers mean((φ(y) - φ(x))^2) over VGG feature maps."""
    return sum((fy - fx).pow(2).mean(dim=(1, 2, 3)) for fx, fy in zip(feats_x, feats_y))
