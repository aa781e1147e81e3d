"""The bundled sample image: drawn by scripts/make_sample_image.py, CC0, usable by the models."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("make_sample_image", ROOT / "scripts" / "make_sample_image.py")
gen = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen)


def test_sample_is_what_the_script_draws():
    committed = np.asarray(Image.open(ROOT / "assets" / "sample.png").convert("RGB")).astype(int)
    drawn = np.asarray(gen.draw_scene()).astype(int)
    assert committed.shape == drawn.shape == (256, 256, 3)
    # same picture (a tolerance for other Pillow versions' resampling/rounding)
    assert np.abs(committed - drawn).mean() < 1.0


def test_sample_is_a_scene_not_a_flat_image():
    im = np.asarray(Image.open(ROOT / "assets" / "sample.png").convert("RGB")).astype(float)
    assert im.std() > 30                                  # real contrast for the losses to work on
    top, bottom = im[:40].mean(axis=(0, 1)), im[-40:].mean(axis=(0, 1))
    assert top[2] > top[1] > top[0]                       # blue sky at the top
    assert bottom[1] > bottom[0] and bottom[1] > bottom[2]  # green grass at the bottom


def test_licence_is_stated():
    text = (ROOT / "assets" / "README.md").read_text()
    assert "sample.png" in text and "CC0" in text and "make_sample_image.py" in text
