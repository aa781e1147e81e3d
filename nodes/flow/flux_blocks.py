"""Out-of-place forwards of ComfyUI's Flux transformer blocks (Flux.1, Flux.2, Chroma share them).

``DoubleStreamBlock.forward`` and ``SingleStreamBlock.forward`` (``comfy/ldm/flux/layers.py``)
update the residual stream in place (``img += ...``, ``txt += ...``, ``x += ...``) after a
LayerNorm has saved it for the backward pass, so a backward through them fails ("modified by
an inplace operation"). These are the same computations, line for line, with ``x = x + ...``:
the block's own sub-modules (modulation, norms, q/k/v projections, QK-norm, MLPs) and Flux's own
``attention`` (RoPE + ComfyUI's attention dispatch, so ``transformer_options`` apply). The test
``test_flux_block_forwards_equal_comfyui`` runs them against the blocks' own forwards on every
family that uses these blocks, so a ComfyUI update that changes a block fails a test.
"""

from __future__ import annotations

import torch
from comfy.ldm.flux.layers import apply_mod
from comfy.ldm.flux.math import attention


def _qkv(attn_module, x: torch.Tensor, heads: int):
    """q, k, v [B, heads, L, head_dim] of one stream, q and k through the block's QK-norm."""
    qkv = attn_module.qkv(x)
    q, k, v = qkv.view(qkv.shape[0], qkv.shape[1], 3, heads, -1).permute(2, 0, 3, 1, 4)
    q, k = attn_module.norm(q, k, v)
    return q, k, v


def _finite_fp16(t: torch.Tensor) -> torch.Tensor:
    if t.dtype == torch.float16:
        return torch.nan_to_num(t, nan=0.0, posinf=65504, neginf=-65504)
    return t


def double_block_forward(block, img, txt, vec, pe, attn_mask=None, modulation_dims_img=None,
                         modulation_dims_txt=None, transformer_options={}):
    """``DoubleStreamBlock.forward`` without in-place updates; returns (img, txt)."""
    if block.modulation:
        img_mod1, img_mod2 = block.img_mod(vec)
        txt_mod1, txt_mod2 = block.txt_mod(vec)
    else:
        (img_mod1, img_mod2), (txt_mod1, txt_mod2) = vec

    img_q, img_k, img_v = _qkv(block.img_attn, apply_mod(block.img_norm1(img), 1 + img_mod1.scale, img_mod1.shift,
                                                         modulation_dims_img), block.num_heads)
    txt_q, txt_k, txt_v = _qkv(block.txt_attn, apply_mod(block.txt_norm1(txt), 1 + txt_mod1.scale, txt_mod1.shift,
                                                         modulation_dims_txt), block.num_heads)
    first, second = ((img_q, img_k, img_v), (txt_q, txt_k, txt_v)) if block.flipped_img_txt else \
        ((txt_q, txt_k, txt_v), (img_q, img_k, img_v))
    attn = attention(torch.cat((first[0], second[0]), dim=2), torch.cat((first[1], second[1]), dim=2),
                     torch.cat((first[2], second[2]), dim=2), pe=pe, mask=attn_mask,
                     transformer_options=transformer_options)
    if block.flipped_img_txt:
        img_attn, txt_attn = attn[:, :img.shape[1]], attn[:, img.shape[1]:]
    else:
        txt_attn, img_attn = attn[:, :txt.shape[1]], attn[:, txt.shape[1]:]

    img = img + apply_mod(block.img_attn.proj(img_attn), img_mod1.gate, None, modulation_dims_img)
    img = img + apply_mod(block.img_mlp(apply_mod(block.img_norm2(img), 1 + img_mod2.scale, img_mod2.shift,
                                                  modulation_dims_img)), img_mod2.gate, None, modulation_dims_img)
    txt = txt + apply_mod(block.txt_attn.proj(txt_attn), txt_mod1.gate, None, modulation_dims_txt)
    txt = txt + apply_mod(block.txt_mlp(apply_mod(block.txt_norm2(txt), 1 + txt_mod2.scale, txt_mod2.shift,
                                                  modulation_dims_txt)), txt_mod2.gate, None, modulation_dims_txt)
    return img, _finite_fp16(txt)


def single_block_forward(block, x, vec, pe, attn_mask=None, modulation_dims=None, transformer_options={}):
    """``SingleStreamBlock.forward`` without in-place updates; returns the joint [txt, img] stream."""
    mod = block.modulation(vec)[0] if block.modulation else vec
    qkv, mlp = torch.split(block.linear1(apply_mod(block.pre_norm(x), 1 + mod.scale, mod.shift, modulation_dims)),
                           [3 * block.hidden_size, block.mlp_hidden_dim_first], dim=-1)
    q, k, v = qkv.view(qkv.shape[0], qkv.shape[1], 3, block.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k = block.norm(q, k, v)
    attn = attention(q, k, v, pe=pe, mask=attn_mask, transformer_options=transformer_options)
    output = block.linear2(torch.cat((attn, block.mlp_act(mlp)), 2))
    return _finite_fp16(x + apply_mod(output, mod.gate, None, modulation_dims))
