"""CUDA-only checks (skipped without a CUDA device; bench/gpu_check.sh runs them on a GPU machine).

* Golden parity subset on CUDA in fp32: UNet outputs, ZeCon encoder features and the full
  guidance gradient (``cond_fn``) against the original's vectors, with TF32 off (strict fp32;
  with PyTorch's default TF32 convolutions the VGG gradient, a difference of nearly equal
  features, drifts ~1.5%). Tolerance: 1e-2 of the tensor's largest magnitude (CUDA kernels
  sum in other orders than the CPU reference).
* fp16 / bf16 autocast: a short guided run stays finite; the UNet really runs in that
  dtype with channels-last weights.
* One seed gives one image on CUDA; gradient checkpointing changes no value.
* GPU memory is released after a run.
"""

from __future__ import annotations

import gc

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)

from zecon_core.pixel import diffusion as D  # noqa: E402
from zecon_core.guidance.clip_model import load_clip  # noqa: E402
from zecon_core.guidance.core import GuidanceConfig, GuidanceInputs, ZeconGuidance  # noqa: E402
from zecon_core.pixel.model import load_diffusion_model  # noqa: E402
from zecon_core.pixel.pipeline import stylize  # noqa: E402
from zecon_core.pixel.schedule import Schedule  # noqa: E402
from zecon_core.apps.tiny import write_tiny_models  # noqa: E402
from zecon_core.guidance.vgg import load_vgg  # noqa: E402

CUDA = torch.device("cuda")
REL_TOL = 1e-2


def _close(ours: torch.Tensor, golden: torch.Tensor, rel: float = REL_TOL) -> str | None:
    ours, golden = ours.detach().double().cpu(), golden.detach().double().cpu()
    if ours.shape != golden.shape:
        return f"shape {tuple(ours.shape)} != {tuple(golden.shape)}"
    scale = max(float(golden.abs().max()), 1e-12)
    err = float((ours - golden).abs().max())
    return None if err <= rel * scale else f"max |diff| {err:.3g} > {rel} x max|golden| {scale:.3g}"


@pytest.fixture
def strict_fp32():
    """TF32 off for cuDNN convolutions and matmuls inside the test, restored afterwards."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.fixture(scope="module")
def golden():
    from golden import Golden  # tests/golden.py (ZECON_GOLDEN_DIR)
    return Golden()


@pytest.fixture(scope="module")
def golden_models(golden):
    cfg = golden.unet_config
    m = load_diffusion_model(golden.root / golden.info["unet"]["files"][0], precision="fp32",
                             num_head_channels=cfg["num_head_channels"], num_heads=cfg["num_heads"]).to(CUDA)
    c = load_clip(path=golden.root / golden.info["clip"]["file"]).to(CUDA)
    v = load_vgg(golden.root / golden.info["vgg"]["file"]).to(CUDA)
    return m, c, v


@pytest.fixture(scope="module")
def tiny_paths(tmp_path_factory):
    return write_tiny_models(tmp_path_factory.mktemp("tiny"))


def _tiny(paths, precision="fp32", **kw):
    m = load_diffusion_model(paths["unet"], precision=precision, **kw).to(CUDA)
    return m, load_clip(path=paths["clip"]).to(CUDA), load_vgg(paths["vgg"]).to(CUDA)


def _image(seed=0, size=64):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, size, size, generator=g) * 2 - 1


def test_unet_forward_matches_golden_fp32(golden, golden_models, strict_fp32):
    import re
    m, g = golden_models[0], golden["unet_forward.safetensors"]
    with torch.no_grad():
        for key in g:
            if mm := re.fullmatch(r"out_(\d+)", key):
                out = m(g["x"].to(CUDA), g[f"t_scaled_{mm.group(1)}"].to(CUDA))
                assert out.dtype == torch.float32
                assert (p := _close(out, g[key])) is None, f"{key}: {p}"
        layers = sorted(int(k[4:]) for k in g if k.startswith("enc_"))
        feats = m.features(g["x0"][0:1].to(CUDA), layers)
    for k, f in zip(layers, feats):
        assert (p := _close(f, g[f"enc_{k}"])) is None, f"enc_{k}: {p}"


def test_guidance_gradient_matches_golden_fp32(golden, golden_models, strict_fp32):
    from golden import METRICS, RecordedDraws

    m, c, v = golden_models
    g = golden["cond_fn.safetensors"]
    spec = golden.spec("cond_fn.safetensors")
    s, i = Schedule.create(golden.manifest["respacing"]), int(g["t_index"][0])
    noises = {k[len("noise_"):]: t for k, t in g.items() if k.startswith("noise_")}
    ids = {int(k.rsplit("_", 1)[1]): t for k, t in g.items() if k.startswith("zecon_patch_ids_")}
    checked = 0
    for name, setting in spec["settings"].items():
        weights = {k: 0.0 for k in METRICS.values()}
        weights.update(golden.setting_weights(setting))
        cfg = GuidanceConfig(**weights, n_patch=spec["n_patch"], aug_prob=golden.aug_prob("cond_fn.safetensors", setting))
        draws = RecordedDraws(source_noises=noises, patch_ids=ids)
        gd = PixelGuidance(cfg, s, GuidanceInputs(g["init_image"].to(CUDA), g["text_embed_tgt"].to(CUDA),
                                                  g["text_embed_src"].to(CUDA)), draws,
                           features=m.features, clip=c, vgg=v)
        x = g["x_t"].to(CUDA).requires_grad_()
        out = D.p_mean_variance(s, m(x, s.model_timesteps(i, 1, CUDA)), x, i)
        grad, _ = gd(x, i, out.pred_x0)
        assert (p := _close(grad, g[f"grad_{name}"])) is None, f"grad_{name}: {p}"
        checked += 1
    assert checked


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_autocast_runs_finite(tiny_paths, precision):
    m, c, v = _tiny(tiny_paths, precision)
    want = torch.float16 if precision == "fp16" else torch.bfloat16
    assert m.autocast_dtype() == want
    seen = []
    conv = m.unet.input_blocks[1][0].in_layers[2]
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    h = conv.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    try:
        out = stylize(_image(), "a sketch with crayon", model=m, clip=c, vgg_model=v, respacing="50", skip=46,
                      seed=0, n_patch=4)
    finally:
        h.remove()
    assert want in seen
    assert out.shape == (1, 3, 64, 64) and torch.isfinite(out).all()


def test_one_seed_one_image(tiny_paths):
    m, c, v = _tiny(tiny_paths)
    runs = [stylize(_image(1), "oil painting", model=m, clip=c, vgg_model=v, respacing="50", skip=46, seed=7,
                    n_patch=4) for _ in range(2)]
    other = stylize(_image(1), "oil painting", model=m, clip=c, vgg_model=v, respacing="50", skip=46, seed=8,
                    n_patch=4)
    diff = float((runs[0] - runs[1]).abs().max())
    assert torch.equal(runs[0], runs[1]), f"same seed differs by {diff}"
    assert float((runs[0] - other).abs().max()) > 1e-3


def test_checkpointing_changes_no_value(tiny_paths):
    from zecon_core.guidance.draws import Draws
    from zecon_core.pixel.sampler import step

    grads = []
    for ckpt in (False, True):
        m, c, v = _tiny(tiny_paths, gradient_checkpointing=ckpt)
        s = Schedule.create("50")
        x0 = _image(2).to(CUDA)
        tgt, src = c.encode_text(["a watercolor"]), c.encode_text(["Photo"])
        draws = Draws(0)
        gd = PixelGuidance(GuidanceConfig(n_patch=4), s, GuidanceInputs(x0, tgt, src), draws,
                           features=m.features, clip=c, vgg=v)
        x = draws.normal(x0)
        r = step(lambda xx, i: m(xx, s.model_timesteps(i, 1, CUDA)), s, x, 24, guidance=gd, draws=draws)
        grads.append(r.grad)
    assert (p := _close(grads[1], grads[0], 1e-4)) is None, p


def test_memory_released_after_run(tiny_paths):
    m, c, v = _tiny(tiny_paths)
    gc.collect()
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    out = stylize(_image(3), "pencil drawing", model=m, clip=c, vgg_model=v, respacing="50", skip=46, seed=0,
                  n_patch=4)
    assert out.device.type == "cpu"
    del out
    gc.collect()
    torch.cuda.synchronize()
    after = torch.cuda.memory_allocated()
    assert after - before <= 1 << 20, f"{(after - before) / 2**20:.1f} MiB still allocated after the run"
