"""TAESD decoder weights from ComfyUI's models/vae_approx (placeholder until the registry download lands)."""

from __future__ import annotations

import folder_paths


def resolve_taesd(decoder_name: str, node_id=None, input_name: str = "decoder") -> str:
    for name in folder_paths.get_filename_list("vae_approx"):
        if name.startswith(decoder_name):
            return folder_paths.get_full_path("vae_approx", name)
    raise ValueError(f"{input_name}: {decoder_name}.pth not found in models/vae_approx")
