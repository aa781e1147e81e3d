"""TAESD decoder weights for the latent backbone, found the way ComfyUI finds them.

ComfyUI's latent previews (``latent_preview.get_previewer``) take the first file in
its ``vae_approx`` folders whose name starts with the latent format's
``taesd_decoder_name`` (``"taesd_decoder"`` for SD1.x/SD2.x, ``"taesdxl_decoder"``
for SDXL). :func:`resolve_taesd` does the same, and when nothing is there fetches
the registry's file (``zecon_core.files.registry``, kind ``"taesd"``: pinned to a commit
of https://github.com/madebyollin/taesd and checked against its Git blob id) into
the first ``vae_approx`` folder, so ComfyUI's previews find it afterwards too.

A file the user put there is taken as it is, as ComfyUI takes it; only downloads
(and an existing file under the registry's own name when a download is attempted)
are verified. ``ZECON_DOWNLOAD_URL_OVERRIDE`` redirects the download as for every
other model (see ``zecon_core.files.download``).
"""

from __future__ import annotations

import folder_paths

from ...zecon_core.files.download import DownloadError, ensure_known_model
from ...zecon_core.files.registry import KNOWN_MODELS, comfy_models_subdir
from ..progress import download_progress

#: ComfyUI's folder name for the TAESD files (``models/vae_approx``).
FOLDER = comfy_models_subdir("taesd")
#: Where TAESD decoders without a registry entry can be found.
TAESD_SOURCE = "https://github.com/madebyollin/taesd"


def find_local_taesd(decoder_name: str) -> str | None:
    """Full path of the first ``vae_approx`` file whose name starts with ``decoder_name``
    (ComfyUI's own lookup), or ``None``."""
    name = next((fn for fn in folder_paths.get_filename_list(FOLDER) if fn.startswith(decoder_name)), None)
    return folder_paths.get_full_path(FOLDER, name) if name is not None else None


def _entry_for(decoder_name: str):
    entry = KNOWN_MODELS.get(decoder_name)
    return entry if entry is not None and entry.kind == "taesd" else None


def resolve_taesd(decoder_name: str, node_id=None, input_name: str = "decoder") -> str:
    """Full path of the TAESD decoder weights named by a latent format's ``taesd_decoder_name``.

    1. A file in ComfyUI's ``vae_approx`` folders whose name starts with ``decoder_name``.
    2. Else the registry entry of that name, downloaded (and verified) into the first
       ``vae_approx`` folder, with progress on the node ``node_id``.
    3. Else (no entry, or the download fails) ``ValueError``: its message starts with
       ``input_name`` and names the file, the folder and the URL to fetch it from.
    """
    if not isinstance(decoder_name, str) or not decoder_name:
        raise ValueError(f"{input_name}: this model's latent format names no TAESD decoder; "
                         f"use the 'vae' decoder instead.")
    local = find_local_taesd(decoder_name)
    if local is not None:
        return local
    folders = folder_paths.get_folder_paths(FOLDER)
    if not folders:
        raise ValueError(f"{input_name}: ComfyUI has no '{FOLDER}' model folder configured; add one "
                         f"(extra_model_paths.yaml) and put the TAESD decoder {decoder_name}.pth there "
                         f"(from {TAESD_SOURCE}).")
    dest = folders[0]
    where = " or ".join(folders)
    entry = _entry_for(decoder_name)
    if entry is None:
        raise ValueError(f"{input_name}: no TAESD decoder file starting with '{decoder_name}' in {where}, and "
                         f"ZeCon has no download for it. Download {decoder_name}.pth from {TAESD_SOURCE} and "
                         f"put it in {dest} as {decoder_name}.pth, or use the 'vae' decoder.")
    try:
        return str(ensure_known_model(entry, dest, progress=download_progress(node_id)))
    except DownloadError as e:
        causes = "; ".join(f"{url}: {text}" for url, text in e.causes) or str(e)
        raise ValueError(
            f"{input_name}: the TAESD decoder {entry.filename} is not in {where} and could not be "
            f"downloaded ({causes}). {_by_hand(entry, dest)}"
        ) from e


def _by_hand(entry, dest: str) -> str:
    """What to fetch from where, and where to put it."""
    if not entry.urls:
        return entry.manual_text(dest)
    alt = "".join(f" (or {u})" for u in entry.urls[1:])
    checks = [f"SHA256 {entry.sha256}"] if entry.sha256 else []
    if entry.git_blob:
        checks.append(f"Git blob id {entry.git_blob}")
    expected = f" (expected {' and '.join(checks)})" if checks else ""
    return (f"Download it by hand from {entry.urls[0]}{alt} and put it in {dest} as {entry.filename}"
            f"{expected}, then run again.")
