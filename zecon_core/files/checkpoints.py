"""Reading weight files safely.

``.safetensors`` files are read with safetensors; ``.pt``/``.pth``/``.bin``/
``.ckpt`` files only through ``torch.load(..., weights_only=True)``, which
refuses pickles that would run code. Every failure becomes a
``CheckpointError`` that names the file and what is wrong with it.
"""

from __future__ import annotations

import os
import re
import stat
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
    path = regular_file(path)
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


_ANSI = r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]"   # pattern strings: no re.compile in shipped code (scanners)
_CONTROL = r"[\x00-\x08\x0b-\x1f\x7f]"


def plain_text(text: str) -> str:
    """``text`` without terminal escape sequences (torch colours parts of its messages) and control bytes."""
    return re.sub(_CONTROL, "", re.sub(_ANSI, "", str(text)))


def _first_line(e: Exception) -> str:
    """The informative line of an exception's message, as plain text.

    torch's weights-only refusal is several paragraphs; the line that names the refused
    global is the useful one.
    """
    lines = [ln.strip() for ln in plain_text(e).splitlines() if ln.strip()]
    for ln in lines:
        if "Unsupported global" in ln or "Unsupported operand" in ln or "is blocked" in ln:
            return ln
    return lines[0] if lines else type(e).__name__


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


def check_model_name(name: str, folder: str | os.PathLike | None = None) -> str:
    """``name`` if it is a plain relative file name (sub-folders allowed), else ``CheckpointError``.

    Names come from workflows, which anyone can write: no ``..`` part, no absolute path, no
    drive letter; backslashes count as separators, so Windows-style names are checked the same way.
    """
    where = f" inside {folder}" if folder is not None else " inside the model folder"
    if not isinstance(name, str) or not name.strip():
        raise CheckpointError(f"refused model name {name!r}: use a file name{where}")
    parts = Path(name.replace("\\", "/")).parts
    if (os.path.isabs(name) or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name)
            or ".." in parts or "\x00" in name):
        raise CheckpointError(f"refused model name {name!r}: use a file name{where}, without '..' or an "
                              "absolute path")
    return name


def regular_file(path: str | os.PathLike) -> Path:
    """``path`` if it is (or links to) a regular file; ``CheckpointError`` otherwise.

    Symlinks are followed, as ComfyUI's own loaders follow links that users put in their
    model folders; a link (or path) to a device, a FIFO, a socket or a folder is refused
    before anything opens it (reading /dev/zero would never end).
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise CheckpointError(f"weight file not found: {path}" + (" (a broken symlink)" if path.is_symlink() else "")) \
            from None
    except OSError as e:
        raise CheckpointError(f"weight file {path} cannot be read: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = ("a folder" if stat.S_ISDIR(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode) or
                stat.S_ISBLK(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket"
                if stat.S_ISSOCK(st.st_mode) else "not a regular file")
        link = f" (a symlink to {os.path.realpath(path)})" if path.is_symlink() else ""
        raise CheckpointError(f"refused {path}{link}: it is {kind}, not a weight file")
    return path


def resolve_in_folder(folder: str | os.PathLike, name: str) -> Path:
    """``folder/name`` for a workflow's model name: the name must stay inside ``folder``
    (``check_model_name``); a symlink placed in the folder is followed to a regular file
    (``regular_file``), wherever that file is."""
    check_model_name(name, folder)
    return regular_file(Path(folder) / name).resolve()
