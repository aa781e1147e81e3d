"""CLIP through open_clip: named models with pretrained tags, or local OpenAI-format weights.

The paper and the original code use OpenAI's ViT-B/16 (``ViT-B-16`` /
``openai`` in open_clip). Images enter in [-1, 1] at any size and are pooled
to CLIP's input size with adaptive average pooling (as the original does),
mapped to [0, 1] and normalised with CLIP's mean and std.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ..files.checkpoints import CheckpointError, load_state_dict

DEFAULT_CLIP = ("ViT-B-16", "openai")
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


class PromptTooLongWarning(UserWarning):
    """A prompt longer than CLIP's context was cut."""


@dataclass(eq=False)
class ClipModel:
    """An open_clip CLIP model in eval mode with frozen weights, plus its tokenizer.

    ``name`` identifies the weights (model name and tag, or file path) so that
    text embeddings can be checked against the model that encodes images.
    """

    model: torch.nn.Module
    tokenizer: object
    name: str
    image_size: int = 224
    mean: tuple = OPENAI_MEAN
    std: tuple = OPENAI_STD

    def __post_init__(self):
        sequence_first(self.model)

    @property
    def context_length(self) -> int:
        return int(getattr(self.model, "context_length", 77))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device) -> "ClipModel":
        self.model.to(device)
        return self

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` including the start and end tokens."""
        return len(self.tokenizer.encode(text)) + 2

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """float32 text embeddings [n, E]; prompts over the context are cut with a warning."""
        for p in prompts:
            n = self.count_tokens(p)
            if n > self.context_length:
                warnings.warn(
                    f"prompt has {n} tokens, more than CLIP's {self.context_length}; it was cut: {p[:60]!r}...",
                    PromptTooLongWarning, stacklevel=2,
                )
        tokens = self.tokenizer(prompts).to(self.device)
        with torch.no_grad():
            return self.model.encode_text(tokens).float()

    def pool(self, images: torch.Tensor) -> torch.Tensor:
        """Images of any size pooled to CLIP's input size: ``AdaptiveAvgPool2d`` (upsamples small images).

        Written as two small matrix products (``pool_matrix``), whose backward is deterministic
        on the GPU too (adaptive_avg_pool2d's is not); equal to it up to float rounding.
        """
        ph = pool_matrix(images.shape[-2], self.image_size, images.device, images.dtype)
        pw = pool_matrix(images.shape[-1], self.image_size, images.device, images.dtype)
        return torch.einsum("ih,nchw,jw->ncij", ph, images, pw)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images of any size -> normalised CLIP input [n, 3, S, S]."""
        x = self.pool(images).add(1).div(2)
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype)[:, None, None]
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype)[:, None, None]
        return (x - mean) / std

    def embed(self, pixels: torch.Tensor, autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
        """float32 embeddings [n, E] of preprocessed CLIP input (differentiable)."""
        if autocast_dtype is None or pixels.device.type != "cuda":
            return image_features(self.model, pixels).float()
        with torch.autocast("cuda", dtype=autocast_dtype):
            return image_features(self.model, pixels).float()

    def encode_image(self, images: torch.Tensor, autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
        """float32 image embeddings [n, E] of [-1, 1] images (differentiable)."""
        return self.embed(self.preprocess(images), autocast_dtype)


def image_features(model: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """``model.encode_image(pixels)``, with the last transformer block run for the class token only.

    A ViT's image embedding is the class token after the last block (``ln_post``, ``proj``);
    the other 196 tokens of the last block feed nothing. Here the last block still projects
    keys and values of every token but computes the query, the attention output, the
    out-projection and the MLP for the class token alone: the same values (the class
    token's row of each product), about 7% fewer CLIP FLOPs forward and backward.
    Models of another shape go through ``encode_image`` unchanged.
    """
    v = getattr(model, "visual", None)
    if not _cls_only_ok(v):
        return model.encode_image(pixels)
    t = v.transformer
    x = v._embeds(pixels)                            # [N, L, D]
    seq_first = not t.batch_first
    if seq_first:
        x = x.transpose(0, 1).contiguous()           # [L, N, D]
    for block in t.resblocks[:-1]:
        x = block(x)
    last = t.resblocks[-1]
    kv = last.ln_1(x)
    cls, q = (x[:1], kv[:1]) if seq_first else (x[:, :1], kv[:, :1])
    h = cls + last.ls_1(last.attn(q, kv, kv, need_weights=False)[0])
    h = h + last.ls_2(last.mlp(last.ln_2(h)))
    pooled = v.ln_post(h[0] if seq_first else h[:, 0])   # per-token LayerNorm: pooling first changes nothing
    return pooled @ v.proj if v.proj is not None else pooled


def _cls_only_ok(v) -> bool:
    try:
        from open_clip.transformer import ResidualAttentionBlock, VisionTransformer
    except ImportError:
        return False
    if not isinstance(v, VisionTransformer) or getattr(v, "attn_pool", None) is not None:
        return False
    if getattr(v, "pool_type", None) != "tok" or getattr(v, "output_tokens", False):
        return False
    t = getattr(v, "transformer", None)
    blocks = list(getattr(t, "resblocks", ()))
    return bool(blocks) and not getattr(t, "grad_checkpointing", False) and all(
        type(b) is ResidualAttentionBlock and not hasattr(b, "ln_1_kv") for b in blocks)


def sequence_first(model: torch.nn.Module) -> torch.nn.Module:
    """Run open_clip's transformers sequence-first ([L, N, D]), as OpenAI's CLIP code does.

    open_clip's default batch-first layout hands ``nn.MultiheadAttention`` a transposed
    (non-contiguous) input, whose in-projection then runs as one small matrix product per
    token position (``bmm``) instead of one large one: CLIP forward+backward took twice
    as long on the CPU. Same operations, same weights; only the memory layout changes.
    """
    for tower in (getattr(model, "visual", None), model):
        transformer = getattr(tower, "transformer", None)
        if transformer is None or not getattr(transformer, "batch_first", False):
            continue
        attns = [getattr(block, "attn", None) for block in getattr(transformer, "resblocks", ())]
        if not attns or not all(isinstance(a, torch.nn.MultiheadAttention) for a in attns):
            continue   # custom attention blocks: leave the layout alone
        transformer.batch_first = False
        for attn in attns:
            attn.batch_first = False
    return model


def pool_matrix(n_in: int, n_out: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """[n_out, n_in] averaging weights of ``adaptive_avg_pool`` (bin i covers floor(i n/m) .. ceil((i+1) n/m))."""
    i = torch.arange(n_out)
    start = (i * n_in) // n_out
    end = -((-(i + 1) * n_in) // n_out)
    j = torch.arange(n_in)
    inside = (j[None] >= start[:, None]) & (j[None] < end[:, None])
    return (inside / (end - start)[:, None]).to(device=device, dtype=dtype)


def load_clip(name: str = DEFAULT_CLIP[0], pretrained: str | None = DEFAULT_CLIP[1], *,
              path: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
              device: str | torch.device = "cpu") -> ClipModel:
    """Load CLIP by open_clip name and pretrained tag, or from a local OpenAI-format state dict ``path``.

    Named weights are fetched by open_clip itself (Hugging Face hub) into ``cache_dir``.
    """
    import open_clip

    if path is not None:
        model = _from_openai_state_dict(Path(path))
        ident = str(Path(path).resolve())
        tokenizer = open_clip.get_tokenizer("ViT-B-16")
    else:
        try:
            model = open_clip.create_model(name, pretrained=pretrained or None,
                                           cache_dir=str(cache_dir) if cache_dir else None,
                                           **({"force_quick_gelu": True} if pretrained == "openai" else {}))
        except RuntimeError as e:
            raise CheckpointError(
                f"could not load CLIP {name}/{pretrained}: {e}. Without network access, put an OpenAI-format "
                "CLIP state dict (.safetensors or .pt) in the model folder and load it as a local file."
            ) from e
        ident = f"{name}/{pretrained}"
        tokenizer = open_clip.get_tokenizer(name)
    model = model.float().train(False).requires_grad_(False).to(device)
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else int(size)
    mean = getattr(model.visual, "image_mean", None) or OPENAI_MEAN
    std = getattr(model.visual, "image_std", None) or OPENAI_STD
    return ClipModel(model, tokenizer, ident, size, tuple(mean), tuple(std))


def _from_openai_state_dict(path: Path) -> torch.nn.Module:
    from open_clip.model import build_model_from_openai_state_dict

    sd = load_state_dict(path)
    if "text_projection" not in sd or "visual.proj" not in sd:
        raise CheckpointError(
            f"{path.name} is not an OpenAI-format CLIP ViT state dict (needs 'visual.proj' and 'text_projection')"
        )
    for key in ("input_resolution", "context_length", "vocab_size"):
        sd.pop(key, None)
    # The builder casts to fp16 while loading; rebuild in fp32 and reload so the weights are exact.
    model = build_model_from_openai_state_dict(dict(sd), quick_gelu=True, cast_dtype=None).float()
    model.load_state_dict(sd)
    return model
