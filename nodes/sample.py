"""Make the bundled sample image available to LoadImage, so the shipped workflows open complete.

``assets/sample.png`` of the pack is copied to ComfyUI's input folder as
``sample.png`` when that name is free there; an existing file is never touched.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import folder_paths

SAMPLE_NAME = "sample.png"
ASSET = Path(__file__).resolve().parent.parent / "assets" / SAMPLE_NAME

log = logging.getLogger("zecon")


def install_sample_image() -> Path | None:
    try:
        target = Path(folder_paths.get_input_directory()) / SAMPLE_NAME
        if target.exists() or not ASSET.is_file():
            return None
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ASSET, target)
        return target
    except OSError as e:  # a read-only input folder must not stop the pack from loading
        log.warning("ZeCon: could not copy the sample image to the input folder: %s", e)
        return None
