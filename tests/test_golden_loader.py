"""The golden-set loader takes every stage's inputs from that stage's own file (issue 11, item 4).

No golden set with a non-square source exists on disk, and one cannot be made without the
original implementation. These tests build a small synthetic set of the same format in which the
source is not square (preprocess:init_image is S x S, the DDIM / guidance / loop files hold a
48 x 80 source, each with different values) and check that the loader and the parity producers
read each stage's source from its own file. They check where inputs come from, not the
original's numbers.
"""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from golden import VENDORED_DIR, Golden
from zecon_core.pixel.schedule import Schedule

H, W, S = 48, 80, 64


def _entry(t, kind="input"):
    return {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", ""), "kind": kind,
            "atol": 0.0, "rtol": 0.0}


@pytest.fixture()
def non_square_set(tmp_path):
    files = {
        "preprocess.safetensors": {"init_image": torch.full((1, 3, S, S), 0.1)},
        "ddim.safetensors": {"x0": torch.stack([torch.full((3, H, W), 0.5), torch.full((3, H, W), -0.5)])},
        "unet_forward.safetensors": {"x0": torch.full((2, 3, H, W), 0.3)},
        "cond_fn.safetensors": {"init_image": torch.full((1, 3, H, W), 0.7)},
        "e2e.safetensors": {"init_image": torch.full((1, 3, H, W), -0.2)},
        "guided_step.safetensors": {"step_noise": torch.zeros(1, 3, H, W)},
    }
    manifest = {"image_hw": [H, W], "respacing": "10", "skip_timesteps": 5,
                "info": {"unet": {"config": {"image_size": S}},
                         "init_image_source": "cond_fn.safetensors:init_image (non-square source)"},
                "files": {}}
    for name, tensors in files.items():
        save_file(tensors, str(tmp_path / name))
        manifest["files"][name] = {"description": name, "tensors": {k: _entry(v) for k, v in tensors.items()}}
    manifest["files"]["preprocess.safetensors"]["tensors"]["init_image"]["kind"] = "output"
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    return Golden(tmp_path), files


def test_each_stage_source_comes_from_its_own_file(non_square_set):
    g, files = non_square_set
    assert g.preprocess_size() == (S, S) != tuple(g.manifest["image_hw"])
    ddim = g.source_image("ddim.safetensors")
    assert ddim.shape == (1, 3, H, W)
    assert torch.equal(ddim, files["ddim.safetensors"]["x0"][0:1])          # not preprocess:init_image
    assert torch.equal(g.source_image("unet_forward.safetensors"), files["unet_forward.safetensors"]["x0"][0:1])
    assert torch.equal(g.source_image("cond_fn.safetensors"), files["cond_fn.safetensors"]["init_image"])
    assert torch.equal(g.source_image("e2e.safetensors"), files["e2e.safetensors"]["init_image"])
    assert g.source_image("preprocess.safetensors").shape == (1, 3, S, S)
    # a file without a source of its own: the one info.init_image_source names
    assert torch.equal(g.source_image("guided_step.safetensors"), files["cond_fn.safetensors"]["init_image"])


def test_parity_producers_use_the_stage_sources(non_square_set, monkeypatch):
    """ddpm_loop_start is built from ddim.safetensors:x0 (non-square here); the preprocess producer
    resizes to S x S, not to image_hw."""
    import test_parity as tp

    g, files = non_square_set
    s = Schedule.create(g.manifest["respacing"])
    latent = torch.randn(1, 3, H, W)
    start = tp.ddpm_loop_start(g, s, 4, latent)
    assert start.shape == (1, 3, H, W)
    a = s.arrays["alphas_cumprod"][4]
    want = a.sqrt() * files["ddim.safetensors"]["x0"][0:1].double() + (1 - a).sqrt() * latent.double()
    torch.testing.assert_close(start.double(), want, atol=1e-5, rtol=1e-5)

    from PIL import Image
    Image.new("RGB", (W + 8, H + 8), (10, 200, 30)).save(g.root / "source.png")
    out = tp.produce_preprocess(None, golden=g)["init_image"]
    assert out.shape == (1, 3, S, S)


def test_vendored_set_is_complete_and_default():
    """The parity tests' default is the set in the repository, so a clone without ../shared runs them."""
    import golden

    assert (VENDORED_DIR / "manifest.json").is_file()
    m = json.loads((VENDORED_DIR / "manifest.json").read_text())
    for name in m["files"]:
        assert (VENDORED_DIR / name).is_file(), name
    for f in ("unet", "clip", "vgg"):
        files = m["info"][f].get("files") or [m["info"][f]["file"]]
        for name in files:
            assert (VENDORED_DIR / name).is_file(), name
    assert (VENDORED_DIR / "source.png").is_file()
    import os
    if not os.environ.get("ZECON_GOLDEN_DIR"):
        assert golden.GOLDEN_DIR == VENDORED_DIR.resolve()
