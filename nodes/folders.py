"""The ``zecon`` model folder and how loader names map to files.

ComfyUI applies the extra-model-paths yaml before packs import, so paths
already registered for ``zecon`` are kept (first) and ``models/zecon`` is
added after them. Known models that are not present yet are listed with the
label ``"<file> (download on first use)"``, which stays listed after the download
so that workflows naming it keep working; they are fetched into the first
``zecon`` folder when a node runs, never at import.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import folder_paths

from ..zecon_core.files import registry
from ..zecon_core.files.checkpoints import CheckpointError, check_model_name, regular_file
from ..zecon_core.files.registry import KnownModel

FOLDER = registry.COMFY_MODELS_SUBDIR  # "zecon"
EXTENSIONS = {".safetensors", ".pt", ".pth", ".bin"}


def register() -> None:
    """Register ``zecon`` with folder_paths, keeping paths the yaml already added."""
    default = os.path.join(folder_paths.models_dir, FOLDER)
    existing = folder_paths.folder_names_and_paths.get(FOLDER)
    paths = list(existing[0]) if existing else []
    if default not in paths:
        paths.append(default)
    folder_paths.folder_names_and_paths[FOLDER] = (paths, set(EXTENSIONS))


def folders() -> list[str]:
    return folder_paths.get_folder_paths(FOLDER)


def download_dir() -> Path:
    """Where known models are fetched to: the first ``zecon`` folder."""
    return Path(folders()[0])


def local_files() -> list[str]:
    """Weight files in every ``zecon`` folder (names relative to their folder, sub-folders included).

    Symlinks that users put in a folder are listed when they lead to a regular file (as
    ComfyUI's own loaders follow them); links to devices, FIFOs or nothing are left out.
    """
    return [name for name in folder_paths.get_filename_list(FOLDER) if _is_regular(name)]


def _is_regular(name: str) -> bool:
    path = folder_paths.get_full_path(FOLDER, name)
    return bool(path) and os.path.isfile(path)


def _local_path(name: str) -> Path | None:
    path = folder_paths.get_full_path(FOLDER, name)
    return Path(path) if path else None


def _present(entry: KnownModel, files: list[str]) -> str | None:
    """The local file name of a known model, if it is in the folder (top level)."""
    for name in (entry.filename, *entry.aliases):
        if name in files:
            return name
    return None


def model_options(kind: str, files: list[str] | None = None) -> list[str]:
    """Combo options: every local weight file, then the known models of ``kind``.

    A known model that can be fetched keeps its label even after the download (the
    label then resolves to the local file), so a shared workflow that names it stays
    valid on every machine; one that must be placed by hand is listed only while missing.
    """
    files = local_files() if files is None else files
    known = [registry.display_name_not_downloaded(e) for e in registry.known_for_kind(kind)
             if e.downloadable or e.managed_by_open_clip or _present(e, files) is None]
    return list(files) + known


@dataclass(frozen=True)
class Resolved:
    """What a loader name stands for: a local file, or a known model still to fetch."""

    name: str
    path: Path | None = None
    entry: KnownModel | None = None

    def fingerprint(self):
        """Changes when the file changes (path, mtime, size), so ComfyUI re-runs the loader."""
        if self.path is None:
            return ("to-download", self.name)
        try:
            st = self.path.stat()
        except OSError:
            return ("missing", str(self.path))
        return (str(self.path.resolve()), st.st_mtime_ns, st.st_size)


def resolve(name: str, kind: str) -> Resolved:
    """Map a combo value to a file. Raises ``ValueError`` with what to do when it is unknown.

    Accepted: a local file name; a known model's label, file name or alias
    (the local copy if present, else a download when the node runs).

    The name comes from a workflow, so it must be a relative name without ``..`` and one of
    the listed files (or a known model); the file it names may be a symlink the user placed
    in the folder, and is followed, but only to a regular file.
    """
    if not isinstance(name, str) or not name:
        raise ValueError("no model file selected")
    try:
        check_model_name(name, describe_folders())
    except CheckpointError as e:
        raise ValueError(str(e)) from None
    files = local_files()
    if name in files:
        return Resolved(name, _checked(_local_path(name)))
    entry = registry.get_known(name)
    if entry is not None and entry.kind == kind:
        local = _present(entry, files)
        if local is not None:
            return Resolved(name, _checked(_local_path(local)), entry)
        return Resolved(name, None, entry)
    where = " or ".join(folders())
    raise ValueError(
        f"model file {name!r} not found in {where}. Put the file there and refresh the node list (press R), "
        f"or pick one of: {', '.join(model_options(kind, files)) or '(none)'}")


def _checked(path: Path | None) -> Path:
    """The listed file, checked again when it is used (a link may have changed since the listing)."""
    if path is None:
        raise ValueError("the model file disappeared from the folder; refresh the node list (press R)")
    try:
        return regular_file(path)
    except CheckpointError as e:
        raise ValueError(str(e)) from None


def describe_folders() -> str:
    return " or ".join(folders())
