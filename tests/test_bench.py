"""Smoke test of the benchmark (``python -m zecon_core.apps.bench``) at the tiny config on the CPU.

No timing asserts: the values only have to be there and positive.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from zecon_core.apps import bench
from zecon_core.apps.flops import count_flops

REPO = Path(__file__).resolve().parents[1]
REQUIRED = ("unet_fwd_s", "unet_fwd_bwd_s", "inversion_step_s", "guided_step_s", "peak_rss_gb")


def test_bench_cli_tiny(tmp_path):
    out = tmp_path / "tiny.json"
    proc = subprocess.run(
        [sys.executable, "-m", "zecon_core.apps.bench", "--config", "tiny", "--steps", "1", "--threads", "1",
         "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    for key in REQUIRED:
        assert res[key] > 0, key
    for key in ("guided_step_flops", "unet_fwd_bwd_flops", "guided_step_gflops_per_s", "unet_fwd_bwd_gflops_per_s",
                "guided_step_x_unet_fwd_bwd", "guided_step_x_floor", "per_image_estimate_s"):
        assert res[key] > 0, key
    assert set(bench.PHASES) <= set(res["guided_phases_s"])
    assert all(v >= 0 for k, v in res["guided_phases_s"].items() if k != "other")
    assert res["config"] == "tiny" and res["device"] == "cpu" and res["dtype"] == "fp32"
    assert set(res["losses"]) == {"clip_global_patch", "clip_dir_patch", "zecon", "mse", "vgg", "range"}
    assert "guided step" in proc.stdout and "per image" in proc.stdout


def test_flop_count_sees_cpu_attention():
    """The CPU attention kernels count (torch's own counter skips them)."""
    import torch
    import torch.nn.functional as F

    q = torch.randn(2, 4, 16, 8, requires_grad=True)
    with count_flops() as c:
        out = F.scaled_dot_product_attention(q, q, q)
    assert c.total >= 2 * (2 * 2 * 4 * 16 * 16 * 8)
    with count_flops() as c:
        torch.autograd.grad(out.sum(), q)
    assert c.total > 0


def test_staged_and_chunked_backward_give_the_one_pass_gradient():
    """The staged guidance backward (and CLIP in chunks) computes the gradient of the summed loss."""
    import torch

    from zecon_core.guidance.draws import Draws
    from zecon_core.guidance.core import GuidanceConfig, GuidanceInputs
    from zecon_core.pixel.guidance import PixelGuidance
    from zecon_core.pixel.sampler import _model_output

    args = bench.parser().parse_args(["--config", "tiny", "--n-patch", "3"])
    st = bench.make_setup(args)
    s = st.schedule
    den = bench._denoiser(st)
    x = torch.randn(st.source.shape, generator=torch.Generator().manual_seed(5))
    grads, losses = {}, {}
    for shared in (False, True):
        cfg = GuidanceConfig(n_patch=3, shared_views=shared, clip_global=300.0, clip_dir=700.0)
        for mode in ("one_pass", None, 1, 4, "auto"):
            g = PixelGuidance(cfg, s, GuidanceInputs(st.source, st.target_embeds, st.source_embeds), Draws(0),
                              features=st.model.features, clip=st.clip, vgg=st.vgg,
                              clip_batch="auto" if mode == "one_pass" else mode)
            if mode == "one_pass":   # the plain definition: one backward of the summed terms
                xx = x.clone().requires_grad_()
                from zecon_core.pixel import diffusion as D
                pred = D.p_mean_variance(s, den(xx, 20), xx, 20).pred_x0
                terms = g.terms(xx, 20, pred)
                grads[shared, mode] = -torch.autograd.grad(sum(terms.values()), xx)[0]
                losses[shared, mode] = {k: float(v.detach()) for k, v in terms.items()}
            else:
                _, grads[shared, mode] = _model_output(den, s, x, 20, g, True)
                losses[shared, mode] = dict(g.last_losses)
        ref = grads[shared, "one_pass"]
        for mode in (None, 1, 4, "auto"):
            assert torch.allclose(grads[shared, mode], ref, rtol=1e-4, atol=1e-6 * float(ref.abs().max())), mode
            assert losses[shared, mode].keys() == losses[shared, "one_pass"].keys()
            for k, v in losses[shared, "one_pass"].items():
                assert abs(losses[shared, mode][k] - v) <= 1e-4 * abs(v) + 1e-6, (mode, k)


def test_gradient_checkpointing_same_gradient_less_saved_memory():
    """UNet gradient checkpointing (loader option, CLI --checkpointing) recomputes blocks in the
    backward: the input gradient is unchanged and far fewer activations are kept."""
    import torch

    from zecon_core.pixel.memory import estimate_guided_step_bytes

    st = bench.make_setup(bench.parser().parse_args(["--config", "tiny", "--n-patch", "2"]))
    m, x = st.model, st.source
    t = st.schedule.model_timesteps(20, x.shape[0], x.device)
    w = torch.randn(x.shape[0], 6, *x.shape[-2:], generator=torch.Generator().manual_seed(2))
    grads, need = {}, {}
    for ckpt in (False, True):
        m.gradient_checkpointing = m.unet.gradient_checkpointing = ckpt
        xx = x.clone().requires_grad_()
        grads[ckpt] = torch.autograd.grad((m(xx, t) * w).sum(), xx)[0]
        need[ckpt] = estimate_guided_step_bytes(m, 256, 256, 1)
    m.gradient_checkpointing = m.unet.gradient_checkpointing = False
    assert torch.allclose(grads[True], grads[False], rtol=1e-5, atol=1e-6 * float(grads[False].abs().max()))
    weights = sum(p.numel() * p.element_size() for p in m.unet.parameters()) + 8 * 3 * 256 * 256 * 4
    assert need[True] - weights < 0.5 * (need[False] - weights)
