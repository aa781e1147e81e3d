"""Reading weight files safely.

``.safetensors`` files are read with safetensors; ``.pt``/``.pth``/``.bin``/
``.ckpt`` files only through ``torch.load(..., weights_only=True)``, which
refuses pickles that would run code. Every failure becomes a
``CheckpointError`` that names the file and what is wrong with it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

SAFETENSORS_EXTENSIONS = (".safetensors",)
PICKLE_EXTENSIONS = (".pt", ".pth", ".bin", ".ckpt")
WEIGHT_EXTENSIONS = SAFETENSORS_EXTENSIONS + PICKLE_EXTENSIONS
_WRAPPER_KEYS = ("state_dict", "model", "module", "ema", "model_ema")


class CheckpointError(ValueError):
    """A weight file that cannot be used, with the reason."""


def load_state_dict(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Return the tensors of a weight file as a flat ``{key: tensor}`` dict."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weight file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_EXTENSIONS:
        sd = _load_safetensors(path, device)
    elif suffix in PICKLE_EXTENSIONS:
        sd = _load_pickle(path, device)
    else:
        raise CheckpointError(
            f"{path.name}: unsupported file type {suffix!r}; use one of {', '.join(WEIGHT_EXTENSIONS)}"
        )
    return _flatten(sd, path)


def _load_safetensors(path: Path, device) -> dict:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device=str(device))
    except Exception as e:  # safetensors raises several unrelated types for bad files
        raise CheckpointError(f"{path.name} is not a valid .safetensors file (truncated or corrupted?): {e}") from e


def _load_pickle(path: Path, device) -> dict:
    import pickle
    import zipfile

    try:
        return torch.load(str(path), map_location=device, weights_only=True, mmap=_is_zip(path))
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path.name} was refused: it holds Python objects other than plain tensors, and loading it "
            f"could run code. Only weights are accepted (weights_only=True). Details: {_first_line(e)}"
        ) from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"{path.name} could not be read (truncated or corrupted?): {_first_line(e)}") from e


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _flatten(obj, path: Path) -> dict[str, torch.Tensor]:
    """Unwrap ``{"state_dict": {...}}``-style containers and check every value is a tensor."""
    for _ in range(3):
        if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"{path.name} holds no state dict of tensors (found {type(obj).__name__})")
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{path.name} holds no tensors")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def resolve_in_folder(folder: str | os.PathLike, name: str) -> Path:
    """``folder/name`` if it stays inside ``folder`` after resolving ``..`` and symlinks.

    Backslashes count as separators, so Windows-style names are checked the same way.
    """
    parts = Path(name.replace("\\", "/")).parts if name else ()
    if not name or os.path.isabs(name) or name.startswith(("/", "\\")) or ".." in parts:
        raise CheckpointError(f"refused model name {name!r}: use a file name inside {folder}")
    root = Path(folder).resolve()
    target = (root / name).resolve()
    if root != target and root not in target.parents:
        raise CheckpointError(f"refused model name {name!r}: it leads outside {root} (symlink?)")
    return target
