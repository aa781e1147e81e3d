"""Convert pickled PyTorch checkpoints (``.pt``/``.pth``/``.bin``) to ``.safetensors``.

The source is read only with ``torch.load(..., map_location="cpu",
weights_only=True)``: a pickle that would build anything but tensors and plain
containers (for example one whose ``__reduce__`` calls ``os.system``) is refused
*before* any of its code runs.

The output has exactly the same keys and tensor values (same dtypes, shapes and
bytes). Tensors that share storage (tied weights, views) are copied apart because
safetensors refuses shared tensors; non-contiguous tensors are made contiguous.
The file is written to a temporary name, reloaded and compared, then moved into
place with :func:`os.replace`.

Command line::

    python -m zecon_core.files.convert 256x256_diffusion_uncond.pt [out.safetensors] [--force]
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

__all__ = ["ConvertError", "load_tensor_dict", "convert_to_safetensors", "main"]

_WRAPPER_KEYS = ("state_dict", "model")


class ConvertError(RuntimeError):
    """A checkpoint that cannot be converted, with the reason."""


def _first_line(msg: str, limit: int = 400) -> str:
    from .checkpoints import plain_text

    lines = [ln.strip() for ln in plain_text(msg).splitlines() if ln.strip()]
    # torch's weights-only error is long; the useful part names the refused global.
    for ln in lines:
        if "Unsupported global" in ln or "Unsupported operand" in ln:
            return ln[:limit]
    return (lines[0] if lines else str(msg))[:limit]


def _is_tensor_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(v, torch.Tensor) for v in obj.values())
    )


def load_tensor_dict(src: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a pickled checkpoint safely and return its flat ``{key: tensor}`` dict.

    A top-level ``{"state_dict": {...}}`` / ``{"model": {...}}`` wrapper is unwrapped
    only when the top level is not itself a dict of tensors. Raises
    :class:`ConvertError` for code-carrying pickles, unreadable files and
    non-tensor values."""
    src = Path(src)
    if not src.is_file():
        raise ConvertError(f"{src}: file not found")
    if src.suffix.lower() == ".safetensors":
        raise ConvertError(f"{src.name} is already a .safetensors file")
    try:
        obj = torch.load(str(src), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ConvertError(
            f"Refused to load {src.name}: the file contains pickled Python objects other than tensors "
            f"({_first_line(e)}). Nothing from it was executed. Such a file can run arbitrary code; "
            f"use a checkpoint from a trusted source that holds only tensors."
        ) from e
    except Exception as e:  # zipfile/EOF/RuntimeError for truncated or foreign files
        raise ConvertError(
            f"Could not read {src.name} as a PyTorch checkpoint (truncated, corrupted or not a "
            f"checkpoint?): {type(e).__name__}: {_first_line(e)}"
        ) from e

    sd = obj
    if not _is_tensor_dict(obj) and isinstance(obj, Mapping):
        for k in _WRAPPER_KEYS:
            if k in obj and isinstance(obj[k], Mapping):
                sd = obj[k]
                break
    if not isinstance(sd, Mapping):
        raise ConvertError(
            f"{src.name}: expected a dict of tensors (a state dict), got {type(sd).__name__}"
        )
    if len(sd) == 0:
        raise ConvertError(f"{src.name}: the state dict is empty")
    bad_keys = [k for k in sd if not isinstance(k, str)]
    if bad_keys:
        raise ConvertError(f"{src.name}: every key must be a string; found {bad_keys[:5]!r}")
    bad = [(k, type(v).__name__) for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        shown = ", ".join(f"{k!r} ({t})" for k, t in bad[:8])
        more = f" and {len(bad) - 8} more" if len(bad) > 8 else ""
        raise ConvertError(
            f"{src.name}: every value must be a tensor to convert to .safetensors; found non-tensor "
            f"values for {shown}{more}"
        )
    for k, v in sd.items():
        if v.layout != torch.strided or v.is_quantized:
            raise ConvertError(f"{src.name}: tensor {k!r} is sparse or quantized; not supported")
    return dict(sd)


def _storage_key(t: torch.Tensor) -> tuple[str, int] | None:
    st = t.untyped_storage()
    if st.nbytes() == 0:
        return None
    return (str(t.device), st.data_ptr())


def _prepare(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous tensors that own their whole storage (no sharing)."""
    counts = Counter(k for k in (_storage_key(t) for t in sd.values()) if k is not None)
    out: dict[str, torch.Tensor] = {}
    for name, t in sd.items():
        t = t.detach()
        key = _storage_key(t)
        owns_all = (
            t.storage_offset() == 0
            and t.untyped_storage().nbytes() == t.numel() * t.element_size()
        )
        if (key is not None and counts[key] > 1) or not t.is_contiguous() or not owns_all:
            t = t.clone(memory_format=torch.contiguous_format)
        out[name] = t
    return out


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    # Byte comparison: exact, and NaN-safe (torch.equal says NaN != NaN).
    return torch.equal(
        a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8)
    )


def convert_to_safetensors(
    src: str | os.PathLike,
    dst: str | os.PathLike | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Convert ``src`` to ``dst`` (default: ``src`` with suffix ``.safetensors``) and
    return ``dst``. Same keys and values; metadata ``{"format": "pt",
    "converted_from": <basename of src>}``. Refuses to replace an existing ``dst``
    unless ``overwrite``."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    src = Path(src)
    dst = Path(dst) if dst is not None else src.with_suffix(".safetensors")
    if dst.resolve() == src.resolve():
        raise ConvertError(f"destination {dst} is the source file")
    if dst.exists() and not overwrite:
        raise ConvertError(f"{dst} already exists (use overwrite=True / --force to replace it)")

    sd = load_tensor_dict(src)
    tensors = _prepare(sd)
    metadata = {"format": "pt", "converted_from": src.name}

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex}.tmp")
    try:
        try:
            save_file(tensors, str(tmp), metadata=metadata)
        except Exception as e:
            raise ConvertError(f"Could not write {dst.name}: {type(e).__name__}: {_first_line(e)}") from e
        with safe_open(str(tmp), framework="pt", device="cpu") as f:
            keys = set(f.keys())
            if keys != set(sd):
                missing = sorted(set(sd) - keys)[:5]
                extra = sorted(keys - set(sd))[:5]
                raise ConvertError(f"verification failed: keys differ (missing {missing}, extra {extra})")
            if (f.metadata() or {}) != metadata:
                raise ConvertError("verification failed: metadata differs")
            for k in sd:
                if not _same(sd[k], f.get_tensor(k)):
                    raise ConvertError(f"verification failed: tensor {k!r} differs after reloading")
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return dst


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m zecon_core.files.convert",
        description="Convert a .pt/.pth/.bin checkpoint to .safetensors (same keys, verified).",
    )
    parser.add_argument("src", help="checkpoint to convert (.pt/.pth/.bin)")
    parser.add_argument("dst", nargs="?", default=None, help="output file (default: SRC with .safetensors)")
    parser.add_argument("--force", action="store_true", help="replace an existing output file")
    args = parser.parse_args(argv)
    try:
        out = convert_to_safetensors(args.src, args.dst, overwrite=args.force)
    except ConvertError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
