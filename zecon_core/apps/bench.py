"""Benchmark of the ZeCon engine: time and memory per phase, FLOPs, per-image estimate.

    python -m zecon_core.apps.bench --config tiny|medium|full [--model imagenet|ffhq] [--n-patch 8]
        [--steps 2] [--shared-views] [--device cpu|cuda] [--dtype fp32|bf16|fp16] [--size N]
        [--checkpointing] [--compile] [--json OUT.json]

Configs (random weights, nothing is downloaded):

* ``tiny``: the ``zecon_core.apps.tiny`` models (64 px, a 2-layer 64-wide CLIP).
* ``medium``: the ImageNet ADM architecture at ``num_channels`` 64 (about 35 M parameters)
  at 128 px, a full-size CLIP ViT-B/16 and VGG conv1_1..conv2_1.
* ``full``: the real ImageNet-256 (``--model imagenet``, 553 M parameters) or FFHQ-256
  (``--model ffhq``) UNet at 256 px with the full ViT-B/16.

Every guided step uses the original README's loss weights (``GuidanceConfig()``:
global-patch 10000, directional-patch 20000, ZeCon 500, MSE 5000, VGG 100, range 50),
aug_prob 1 and patch scales 0.01-0.3. Timings are means over ``--steps`` after one
warm-up (the warm-up also counts FLOPs with ``torch.utils.flop_counter``). A guided step
is split into UNet forward, CLIP image encoding, ZeCon encoder, VGG, augmentations
(view parameters, crops, warps, CLIP pooling) and the backward pass; ``other`` is the
rest (losses, draws, the step arithmetic). Peak RSS is the high-water mark of resident
memory while the parts run (reset after the models are built; Linux ``clear_refs``),
so it includes the weights but not the one-off cost of making random weights.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ..guidance.clip_model import ClipModel
from ..pixel.determinism import reproducible
from ..guidance.draws import Draws
from .flops import count_flops
from ..guidance.core import GuidanceConfig, GuidanceInputs
from ..pixel.guidance import PixelGuidance
from ..pixel.model import DiffusionModel
from ..pixel.sampler import ddim_invert, step
from ..pixel.schedule import Schedule
from ..pixel.unet import ADMConfig, UNetModel
from ..guidance.vgg import VGGFeatures

CONFIGS = ("tiny", "medium", "full")
MODELS = ("imagenet", "ffhq")
PARTS = ("unet", "inversion", "guided")
DTYPES = {"fp32": "fp32", "bf16": "bf16", "fp16": "fp16"}
PHASES = ("unet_fwd", "clip", "zecon_enc", "vgg", "augment", "backward")

# README settings: respacing 50, skip 25 -> 25 inversion steps and 25 guided steps per image
README_RESPACING, README_SKIP = "50", 25
README_GUIDED_STEPS = README_INVERSION_STEPS = 25

IMAGENET_256 = ADMConfig()   # 256 channels, 2 res blocks, (1,1,2,2,4,4), attention at ds 8/16/32, 64 ch heads
FFHQ_256 = ADMConfig(model_channels=128, num_res_blocks=1, attention_ds=(16,))
MEDIUM = ADMConfig(model_channels=64)


def unet_config(config: str, model: str = "imagenet") -> tuple[ADMConfig, int]:
    """(UNet config, default image size) of a benchmark config."""
    if config == "tiny":
        from .tiny import TINY_UNET
        return TINY_UNET, 64
    if config == "medium":
        return MEDIUM, 128
    if config == "full":
        return (IMAGENET_256 if model == "imagenet" else FFHQ_256), 256
    raise ValueError(f"config must be one of {CONFIGS}, got {config!r}")


def default_n_patch(config: str) -> int:
    return {"tiny": 4, "medium": 8, "full": 32}[config]


# --------------------------------------------------------------------------------------------
# random weights (the same functions make the weights of any reference run)

def random_unet_state_dict(cfg: ADMConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights for ``cfg`` (as ``zecon_core.apps.tiny``: N(0, 1/fan_in), biases N(0, 0.05²))."""
    from .tiny import _randomize
    with torch.device("meta"):
        shell = UNetModel(cfg)
    return _randomize(shell, seed)


def clip_state_dict(config: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """An OpenAI-format CLIP state dict: tiny for ``tiny``, ViT-B/16 (OpenAI layout) otherwise."""
    from .tiny import _randomize, tiny_clip_state_dict
    if config == "tiny":
        return tiny_clip_state_dict(seed=seed)
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
    with torch.device("meta"):
        shell = CLIP(512, CLIPVisionCfg(layers=12, width=768, patch_size=16, image_size=224),
                     CLIPTextCfg(context_length=77, vocab_size=49408, width=512, heads=8, layers=12),
                     quick_gelu=True)
    sd = _randomize(shell, seed)
    sd["logit_scale"] = torch.tensor(4.6052)
    return sd


def vgg_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    from .tiny import tiny_vgg_state_dict
    return tiny_vgg_state_dict(seed=seed)


def source_image(size: int, seed: int = 0, batch: int = 1) -> torch.Tensor:
    """A smooth random image [batch, 3, size, size] in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(batch, 3, max(size // 16, 2), max(size // 16, 2), generator=g)
    img = torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
    return torch.tanh(img)


def build_models(config: str, model: str = "imagenet", *, device="cpu", dtype: str = "fp32",
                 checkpointing: bool = False, compile: bool = False, seed: int = 0):
    """(DiffusionModel, ClipModel, VGGFeatures) with random weights, on ``device``."""
    from open_clip import get_tokenizer
    from open_clip.model import build_model_from_openai_state_dict

    from ..pixel.adm_loader import build_unet

    cfg, _ = unet_config(config, model)
    unet = build_unet(random_unet_state_dict(cfg, seed), cfg)
    dm = DiffusionModel(unet, f"bench-{config}-{model}", precision=DTYPES[dtype],
                        gradient_checkpointing=checkpointing, compile=compile).to(device)
    sd = clip_state_dict(config, seed)
    clip_net = build_model_from_openai_state_dict(dict(sd), quick_gelu=True, cast_dtype=None).float()
    clip_net.load_state_dict(sd)
    del sd
    clip_net = clip_net.train(False).requires_grad_(False).to(device)
    clip = ClipModel(clip_net, get_tokenizer("ViT-B-16"), f"bench-clip-{config}")
    vgg = VGGFeatures()
    vgg.load_state_dict(vgg_state_dict(seed))
    vgg = vgg.train(False).requires_grad_(False).to(device)
    return dm, clip, vgg


# --------------------------------------------------------------------------------------------
# measuring

class PhaseTimer:
    """Wall-clock seconds per named phase (inclusive), synchronising CUDA at each boundary."""

    def __init__(self, device: torch.device):
        self.cuda = torch.device(device).type == "cuda"
        self.seconds: dict[str, float] = defaultdict(float)

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    @contextmanager
    def __call__(self, name: str):
        self.sync()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.sync()
            self.seconds[name] += time.perf_counter() - t0

    def reset(self):
        self.seconds = defaultdict(float)


class _TimedClip:
    def __init__(self, clip: ClipModel, timer: PhaseTimer):
        self._clip, self._timer = clip, timer

    def preprocess(self, images):
        with self._timer("augment"):
            return self._clip.preprocess(images)

    def embed(self, pixels, autocast_dtype=None):
        with self._timer("clip"):
            return self._clip.embed(pixels, autocast_dtype)

    def __getattr__(self, name):
        return getattr(self._clip, name)


class _TimedGuidance(PixelGuidance):
    """PixelGuidance that books its views and its backward pass on a PhaseTimer."""

    timer: PhaseTimer

    def _grad(self, outputs, inputs, grad_outputs=None):
        with self.timer("backward"):
            return super()._grad(outputs, inputs, grad_outputs)

    def _views(self, i, key, image, crop):
        with self.timer("augment"):
            return super()._views(i, key, image, crop)


def _timed(timer, name, fn):
    def wrapped(*args, **kwargs):
        with timer(name):
            return fn(*args, **kwargs)
    return wrapped


def parse_clip_batch(value: str):
    if value == "auto":
        return "auto"
    if value.lower() in ("none", "all", "0"):
        return None
    return int(value)


def trim_heap() -> None:
    """glibc ``malloc_trim(0)``: return freed heap pages to the OS (no-op elsewhere)."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_peak_rss() -> bool:
    """Reset the kernel's resident-memory high-water mark (VmHWM); False where that is impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss_gb() -> float:
    """VmHWM (since the last reset) in GB, or the process-lifetime ru_maxrss where /proc is missing."""
    kb = _status_kb("VmHWM")
    if kb is None:
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb * 1024 / 1e9


def rss_gb() -> float:
    kb = _status_kb("VmRSS")
    return (kb or 0) * 1024 / 1e9


def machine_info(device) -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), platform.processor())
    except OSError:
        info["cpu"] = platform.processor()
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def loadavg():
    try:
        return list(os.getloadavg())
    except OSError:
        return None


@dataclass
class Setup:
    model: DiffusionModel
    clip: ClipModel
    vgg: VGGFeatures
    schedule: Schedule
    source: torch.Tensor
    target_embeds: torch.Tensor
    source_embeds: torch.Tensor
    guidance: GuidanceConfig


def make_setup(args) -> Setup:
    cfg, default_size = unet_config(args.config, args.model)
    size = args.size or default_size
    dm, clip, vgg = build_models(args.config, args.model, device=args.device, dtype=args.dtype,
                                 checkpointing=args.checkpointing, compile=args.compile, seed=args.seed)
    dm.check_image_size(size, size)
    src = source_image(size, args.seed).to(args.device)
    tgt = clip.encode_text(["a sketch with crayon"])
    srcp = clip.encode_text(["Photo"])
    gcfg = GuidanceConfig(n_patch=args.n_patch, shared_views=args.shared_views, aug_prob=1.0,
                          patch_min=0.01, patch_max=0.3)
    return Setup(dm, clip, vgg, Schedule.create(README_RESPACING), src, tgt, srcp, gcfg)


def _mean(xs):
    return statistics.fmean(xs) if xs else None


def _time_runs(fn, name: str, steps: int, timer: PhaseTimer, flops: bool, warmup: int) -> dict:
    """``{name}_s`` (mean), ``{name}_all_s`` of ``fn()`` over ``steps`` after ``warmup`` runs;
    ``{name}_flops`` counted in the first run when ``flops``."""
    times, out = [], {}
    for k in range(warmup + steps):
        timer.sync()
        t0 = time.perf_counter()
        if k == 0 and flops:
            with count_flops() as c:
                fn()
            out[f"{name}_flops"] = c.total
        else:
            fn()
        timer.sync()
        if k >= warmup:
            times.append(time.perf_counter() - t0)
    return {**out, f"{name}_s": _mean(times), f"{name}_all_s": times}


def bench_unet(st: Setup, steps: int, timer: PhaseTimer, flops: bool, warmup: int = 1) -> dict:
    m, x = st.model, st.source
    t = st.schedule.model_timesteps(20, x.shape[0], x.device)
    g = torch.Generator().manual_seed(1)
    weight = torch.randn((x.shape[0], 2 * x.shape[1], *x.shape[2:]), generator=g).to(x.device)

    def forward():
        with torch.no_grad():
            m(x, t)

    def forward_backward():
        xx = x.detach().requires_grad_()
        y = m(xx, t)
        torch.autograd.grad((y * weight).sum(), xx)

    return {**_time_runs(forward, "unet_fwd", steps, timer, flops, warmup),
            **_time_runs(forward_backward, "unet_fwd_bwd", steps, timer, flops, warmup)}


def _denoiser(st: Setup, timer: PhaseTimer | None = None):
    m, s = st.model, st.schedule

    def denoise(x, i):
        return m(x, s.model_timesteps(i, x.shape[0], x.device))

    return denoise if timer is None else _timed(timer, "unet_fwd", denoise)


def bench_inversion(st: Setup, steps: int, timer: PhaseTimer, warmup: int = 1) -> dict:
    denoise, s, x = _denoiser(st), st.schedule, st.source
    times = []
    for k in range(warmup + steps):
        timer.sync()
        t0 = time.perf_counter()
        x = _inversion_step(denoise, s, x, k)
        timer.sync()
        if k >= warmup:
            times.append(time.perf_counter() - t0)
    return {"inversion_step_s": _mean(times), "inversion_step_all_s": times}


def _inversion_step(denoise, s, x, i):
    # exactly one iteration of sampler.ddim_invert
    from ..pixel import diffusion as D
    with torch.no_grad():
        out = D.p_mean_variance(s, denoise(x, i), x, i)
        return D.ddim_inversion_step(s, out.pred_x0, x, i)


def bench_guided(st: Setup, steps: int, timer: PhaseTimer, flops: bool, seed: int, clip_batch="auto",
                 warmup: int = 1) -> dict:
    s = st.schedule
    start = s.num_steps - README_SKIP - 1
    draws = Draws(seed)
    g = _TimedGuidance(st.guidance, s, GuidanceInputs(st.source, st.target_embeds, st.source_embeds), draws,
                       features=_timed(timer, "zecon_enc", st.model.features),
                       clip=_TimedClip(st.clip, timer), vgg=_timed(timer, "vgg", st.vgg),
                       clip_autocast=st.model.autocast_dtype(), clip_batch=clip_batch)
    g.timer = timer
    denoise = _denoiser(st, timer)
    x = draws.normal(st.source)
    times, phases = [], defaultdict(list)
    out = {}
    for k in range(warmup + steps):
        i = start - k
        timer.reset()
        timer.sync()
        t0 = time.perf_counter()
        if k == 0 and flops:
            with count_flops() as c:
                r = step(denoise, s, x, i, method="ddpm", guidance=g, draws=draws)
            out["guided_step_flops"] = c.total
        else:
            r = step(denoise, s, x, i, method="ddpm", guidance=g, draws=draws)
        timer.sync()
        dt = time.perf_counter() - t0
        x = r.x
        if k >= warmup:
            times.append(dt)
            for name in PHASES:
                phases[name].append(timer.seconds.get(name, 0.0))
            phases["other"].append(dt - sum(timer.seconds.get(n, 0.0) for n in PHASES))
    out["guided_step_s"] = _mean(times)
    out["guided_step_all_s"] = times
    out["guided_phases_s"] = {k: _mean(v) for k, v in phases.items()}
    out["losses"] = dict(g.last_losses)
    return out


def derived(res: dict) -> dict:
    """Cost multiples, GFLOP/s, the FLOP floor and the per-image estimate from measured values."""
    d = {}
    gs, fb = res.get("guided_step_s"), res.get("unet_fwd_bwd_s")
    if gs and fb:
        d["guided_step_x_unet_fwd_bwd"] = gs / fb
    gf, uf = res.get("guided_step_flops"), res.get("unet_fwd_bwd_flops")
    if gs and gf:
        d["guided_step_gflops_per_s"] = gf / gs / 1e9
    if fb and uf:
        d["unet_fwd_bwd_gflops_per_s"] = uf / fb / 1e9
    if gf and uf:
        d["guided_step_flops_x_unet_fwd_bwd"] = gf / uf
    if gs and gf and fb and uf:
        floor = gf / (uf / fb)          # seconds a guided step would take at the UNet's fwd+bwd rate
        d["guided_step_floor_s"] = floor
        d["guided_step_x_floor"] = gs / floor
    inv = res.get("inversion_step_s")
    if gs and inv:
        d["per_image_estimate_s"] = README_GUIDED_STEPS * gs + README_INVERSION_STEPS * inv
    return d


def run(args) -> dict:
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.n_patch is None:
        args.n_patch = default_n_patch(args.config)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    bad = set(parts) - set(PARTS)
    if bad:
        raise SystemExit(f"--parts: unknown {sorted(bad)}; choose from {PARTS}")
    torch.manual_seed(args.seed)
    load_before = loadavg()
    t0 = time.perf_counter()
    st = make_setup(args)
    build_s = time.perf_counter() - t0
    dev = torch.device(args.device)
    timer = PhaseTimer(dev)
    res = {
        "config": args.config, "model": args.model if args.config == "full" else None,
        "size": int(st.source.shape[-1]), "device": args.device,
        "dtype": args.dtype if dev.type == "cuda" else "fp32",
        "n_patch": args.n_patch, "steps": args.steps, "warmup": args.warmup, "shared_views": args.shared_views,
        "checkpointing": args.checkpointing, "compile": args.compile and dev.type == "cuda",
        "clip_batch": args.clip_batch,
        "unet_parameters": sum(p.numel() for p in st.model.unet.parameters()),
        "build_s": build_s, "machine": machine_info(dev), "loadavg_before": load_before,
    }
    if args.dtype != "fp32" and dev.type != "cuda":
        res["note"] = "reduced precision applies on CUDA only; the CPU path runs in fp32"
    trim_heap()   # give the one-off garbage of making random weights back to the OS
    res["resident_after_build_gb"] = rss_gb()
    hwm_reset = reset_peak_rss()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(dev)
        res["cuda_after_build_gb"] = torch.cuda.memory_allocated(dev) / 1e9
    flops = not args.no_flops
    res["deterministic"] = dev.type == "cuda" and not args.fast_cuda
    with reproducible(dev, not args.fast_cuda):   # what a pipeline run uses (a no-op on the CPU)
        if "unet" in parts:
            res.update(bench_unet(st, args.steps, timer, flops, args.warmup))
        if "inversion" in parts:
            res.update(bench_inversion(st, args.steps, timer, args.warmup))
        if "guided" in parts:
            res.update(bench_guided(st, args.steps, timer, flops, args.seed, parse_clip_batch(args.clip_batch),
                                     args.warmup))
    res["peak_rss_gb"] = peak_rss_gb()
    res["peak_rss_scope"] = "parts (reset after build)" if hwm_reset else "process lifetime"
    res["process_peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    if dev.type == "cuda":
        res["peak_cuda_gb"] = torch.cuda.max_memory_allocated(dev) / 1e9
        res["peak_cuda_reserved_gb"] = torch.cuda.max_memory_reserved(dev) / 1e9
    res.update(derived(res))
    res["loadavg_after"] = loadavg()
    return res


def table(res: dict) -> str:
    def f(v, unit="s"):
        if v is None:
            return "-"
        return f"{v:.3f} {unit}" if unit else f"{v:.3f}"

    rows = [
        ("config", f"{res['config']}{'/' + res['model'] if res.get('model') else ''} {res['size']}px "
                   f"n_patch {res['n_patch']}{' shared-views' if res['shared_views'] else ''}"),
        ("device / dtype", f"{res['device']} / {res['dtype']}"
                           f"{' checkpointing' if res['checkpointing'] else ''}{' compile' if res['compile'] else ''}"),
        ("UNet forward", f(res.get("unet_fwd_s"))),
        ("UNet forward+backward", f(res.get("unet_fwd_bwd_s"))),
        ("inversion step", f(res.get("inversion_step_s"))),
        ("guided step", f(res.get("guided_step_s"))),
    ]
    for name, v in (res.get("guided_phases_s") or {}).items():
        rows.append((f"  {name}", f(v)))
    rows += [(label, show(res[key])) for key, label, show in (
        ("guided_step_x_unet_fwd_bwd", "guided step / UNet fwd+bwd", lambda v: f"{v:.2f}x"),
        ("guided_step_flops", "guided step FLOPs", lambda v: f"{v / 1e12:.3f} TFLOP"),
        ("unet_fwd_bwd_flops", "UNet fwd+bwd FLOPs", lambda v: f"{v / 1e12:.3f} TFLOP"),
        ("guided_step_gflops_per_s", "guided step GFLOP/s", lambda v: f"{v:.1f}"),
        ("unet_fwd_bwd_gflops_per_s", "UNet fwd+bwd GFLOP/s", lambda v: f"{v:.1f}"),
        ("guided_step_x_floor", "guided step / FLOP floor", lambda v: f"{v:.2f}x"),
        ("per_image_estimate_s", "per image (README: 25+25)", f),
    ) if key in res]
    rows.append(("peak RSS", f(res.get("peak_rss_gb"), "GB")))
    if "peak_cuda_gb" in res:
        rows.append(("peak CUDA", f(res["peak_cuda_gb"], "GB")))
    w = max(len(r[0]) for r in rows)
    return "\n".join(f"{k.ljust(w)}  {v}" for k, v in rows)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m zecon_core.apps.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", choices=CONFIGS, default="tiny")
    p.add_argument("--model", choices=MODELS, default="imagenet", help="UNet of the full config")
    p.add_argument("--n-patch", type=int, default=None, help="views per CLIP loss (default: tiny 4, medium 8, full 32)")
    p.add_argument("--steps", type=int, default=2, help="timed steps per part after the warm-up")
    p.add_argument("--warmup", type=int, default=1,
                   help="untimed steps first (FLOPs are counted in the first step; with 0 in a timed one)")
    p.add_argument("--shared-views", action="store_true", help="GuidanceConfig.shared_views")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="fp32", help="UNet/CLIP autocast dtype on CUDA")
    p.add_argument("--size", type=int, default=None, help="image side (default: tiny 64, medium 128, full 256)")
    p.add_argument("--checkpointing", action="store_true", help="gradient checkpointing of UNet blocks")
    p.add_argument("--compile", action="store_true", help="torch.compile the UNet (CUDA)")
    p.add_argument("--fast-cuda", action="store_true",
                   help="CUDA: fused, non-deterministic kernels (the pipeline's deterministic=False)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {PARTS}")
    p.add_argument("--clip-batch", default="auto",
                   help="views per CLIP pass with gradients: auto (4 on CPU, all on GPU), none (all) or N")
    p.add_argument("--no-flops", action="store_true", help="skip the FLOP count of the warm-up steps")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the results here")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    res = run(args)
    print(table(res))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
        print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
