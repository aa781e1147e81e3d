"""Make the bundled sample images available to LoadImage, so the shipped workflows open complete.

``assets/sample.png`` (the scene), ``assets/sample_masked.png`` (the scene with a
transparent region, whose MASK the masked workflow restyles) and
``assets/style_sample.png`` (a style reference) of the pack are copied to
ComfyUI's input folder under the same names when those names are free there;
an existing file is never touched.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import folder_paths

SAMPLE_NAME = "sample.png"
SAMPLE_NAMES = (SAMPLE_NAME, "sample_masked.png", "style_sample.png")
ASSETS = Path(__file__).resolve().parent.parent / "assets"

log = logging.getLogger("zecon")


def install_sample_image() -> list[Path]:
    """Copy the sample images that are missing from the input folder; returns the files written."""
    written = []
    try:
        folder = Path(folder_paths.get_input_directory())
        for name in SAMPLE_NAMES:
            target, asset = folder / name, ASSETS / name
            if target.exists() or not asset.is_file():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(asset, target)
            written.append(target)
    except OSError as e:  # a read-only input folder must not stop the pack from loading
        log.warning("ZeCon: could not copy the sample images to the input folder: %s", e)
    return written
