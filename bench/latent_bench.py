"""Benchmark of ZeCon's latent backbone (the ZeCon Guider on Stable Diffusion): one guided step.

    python bench/latent_bench.py --arch sd15|sdxl [--size 512] [--mode shortcut|full|both]
        [--checkpointing] [--device cpu|cuda] [--dtype fp16|bf16|fp32] [--width 320] [--n-patch 32]
        [--decoder taesd|vae] [--steps 2] [--warmup 1] [--no-time] [--no-flops] [--threads 1]
        [--json OUT.jsonl] [--tiny]

ComfyUI (``ZECON_COMFYUI_DIR``, default ~/.cache/zecon/comfyui-0.3.75) is imported in this
process (``tests/comfy/tiny_sd.setup_comfy``) and the pack as the package ``zecon_pack``
(``tests/comfy/comfy_inprocess``). Random weights, nothing is downloaded:

* UNet: ComfyUI's ``supported_models.SD15`` / ``SDXL`` with the full UNet configs that
  ``comfy.model_detection`` detects for the real checkpoints (``UNETS`` below; SD1.5 860 M,
  SDXL 2.57 G parameters), built by the class's own ``get_model``, weights N(0, 1/fan_in)
  (``tiny_sd.fill_random_``'s scheme, drawn on the model's device). ``--width`` replaces
  model_channels (reduced configs for the CPU; everything else stays).
* decoder: ComfyUI's TAESD (``comfy.taesd.taesd.TAESD``, what ``decoder=taesd`` runs) or, with
  ``--decoder vae``, the real SD VAE decoder (AutoencoderKL ch 128, [1,2,4,4], 2 res blocks).
* CLIP: open_clip ViT-B/16 (``create_model('ViT-B-16', pretrained=None)``) in the pack's ``ClipModel``.
* VGG: the pack's ``VGGFeatures`` (real VGG19 conv1_1..conv2_1) with random weights.
* losses: the original README's weights (``GuidanceConfig()``: global-patch 10000, directional-patch
  20000, ZeCon 500, MSE 5000, VGG 100, range 50, n_patch 32, 256 ZeCon positions), ZeCon layers
  ``backbone.default_layers`` (SD1.5 0,2,5,8; SDXL 0,2,5), CFG 5 with a batch of 2 (cond + uncond).

Two measurements per mode:

* ``flops``: the guided step on the **meta device** (no data, no time), counted with
  ``zecon_core.apps.flops.count_flops``: ``nodes.latent.guider.start_run`` builds the run's
  ``LatentGuidance`` (encoder copy, decoder, CLIP, VGG, draws) exactly as the guider does, and
  ``LatentGuidance.__call__`` runs one step with a denoise closure that calls
  ``BaseModel.apply_model`` on the CFG batch of 2 (what ``sampling_function`` batches).
  Forward FLOPs are split by component (unet, zecon_encoder, decoder, clip, vgg, other);
  everything that runs inside the backward pass is ``backward``. Data-dependent checks
  (``isfinite(...).all()``, ``float(loss)``) get a dummy answer on meta tensors.
* ``time``: the real sampler on ``--device``: ``ZeconCFGGuider.sample`` (SamplerCustomAdvanced's
  call, euler) over ``warmup + steps`` guided steps from the middle of a 25-step normal schedule,
  the model under ComfyUI's model management (``differentiable_clone`` in full mode, as the node
  does). The first step also builds the run (copies of the encoder blocks and the decoder, the
  source's decode and CLIP embedding) and is reported apart (``first_step_s``). Peak memory:
  CUDA ``max_memory_allocated`` (weights included) or, on the CPU, the resident high-water mark
  VmHWM reset before the run (weights included; not the one-off cost of making random weights).

Output: a table per result and, with ``--json``, one JSON object per line (appended as each lands).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
TESTS_COMFY = REPO / "tests" / "comfy"

ARCHS = ("sd15", "sdxl")
MODES = ("shortcut", "full")
DEFAULT_SIZE = {"sd15": 512, "sdxl": 1024}
CONTEXT = {"sd15": 768, "sdxl": 2048}
SDXL_POOLED = 1280
CFG = 5.0
SCHEDULE_STEPS = 25          # the 25 guided steps
FIRST_STEP = 10              # guided steps are timed from the middle of the schedule

# comfy/model_detection.py (unet_config_from_diffusers_unet: SD15, SDXL): what detect_unet_config gives for
# the real checkpoints; supported_models adds unet_extra_config (SD15 num_heads 8, SDXL 64-wide heads).
_COMMON = {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
           "legacy": False, "in_channels": 4, "use_temporal_attention": False, "use_temporal_resblock": False}
UNETS = {
    "sd15": {**_COMMON, "adm_in_channels": None, "model_channels": 320, "num_res_blocks": [2, 2, 2, 2],
             "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "channel_mult": [1, 2, 4, 4],
             "transformer_depth_middle": 1, "use_linear_in_transformer": False, "context_dim": 768,
             "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0]},
    "sdxl": {**_COMMON, "num_classes": "sequential", "adm_in_channels": 2816, "model_channels": 320,
             "num_res_blocks": [2, 2, 2], "transformer_depth": [0, 0, 2, 2, 10, 10], "channel_mult": [1, 2, 4],
             "transformer_depth_middle": 10, "use_linear_in_transformer": True, "context_dim": 2048,
             "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10]},
}
# the SD VAE decoder (comfy.sd.VAE's default ddconfig for SD1.x / SDXL checkpoints)
VAE_DDCONFIG = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
COMPONENTS = ("unet", "zecon_encoder", "decoder", "clip", "vgg", "other", "backward")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


# --------------------------------------------------------------------------------------------- ComfyUI + pack

def setup(device: str):
    """ComfyUI in-process (CPU or CUDA) and the pack as ``zecon_pack``; returns the pack module."""
    if str(TESTS_COMFY) not in sys.path:
        sys.path.insert(0, str(TESTS_COMFY))
    import tiny_sd
    tiny_sd.setup_comfy(cpu=torch.device(device).type == "cpu")
    import comfy.model_management  # noqa: F401  (fixes args.cpu before comfy_inprocess asks for the CPU)
    import comfy_inprocess
    return comfy_inprocess.load(Path(tempfile.mkdtemp(prefix="zecon_lbench_input_")))


def unet_config(arch: str, width: int | None, tiny: bool) -> dict:
    cfg = dict(UNETS[arch])
    if tiny:   # test config: one transformer level, two levels, narrow
        cfg.update(model_channels=64, channel_mult=[1, 2], num_res_blocks=[1, 1],
                   transformer_depth=[0, 1] if arch == "sdxl" else [1, 1],
                   transformer_depth_output=[0, 0, 1, 1] if arch == "sdxl" else [1, 1, 1, 1],
                   transformer_depth_middle=1)
    if width:
        cfg["model_channels"] = int(width)
    return cfg


def model_config(arch: str, width, tiny: bool, dtype: torch.dtype):
    import comfy.supported_models as sm
    mc = {"sd15": sm.SD15, "sdxl": sm.SDXL}[arch](unet_config(arch, width, tiny))
    mc.set_inference_dtype(dtype, None)
    return mc


def fill_random_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """``tiny_sd.fill_random_``'s scheme (kernels N(0, 1/fan_in), norm weights 1, vectors N(0, 0.02²)),
    drawn on the module's own device (fast on a GPU)."""
    with torch.no_grad():
        for i, (name, t) in enumerate(module.state_dict(keep_vars=True).items()):
            if not t.is_floating_point() or t.ndim == 0 or t.is_meta:
                continue
            g = torch.Generator(t.device).manual_seed(seed * 100003 + i)
            if t.ndim >= 2:
                v = torch.randn(t.shape, generator=g, device=t.device) / t[0].numel() ** 0.5
            elif name.endswith("weight"):
                v = torch.ones(t.shape, device=t.device)
            else:
                v = torch.randn(t.shape, generator=g, device=t.device) * 0.02
            t.data.copy_(v.to(t.dtype))
    return module


def build_base(arch, width, tiny, dtype, device, seed=0):
    """ComfyUI BaseModel of ``arch`` on ``device`` (meta: shapes only), random weights."""
    mc = model_config(arch, width, tiny, dtype)
    dev = torch.device(device)
    with torch.device(dev) if dev.type == "meta" else contextlib.nullcontext():
        base = mc.get_model({}, device=None if dev.type == "meta" else dev)
    if dev.type != "meta":
        fill_random_(base.diffusion_model, seed)
    return base


def patcher(base):
    import comfy.model_management as mm
    import comfy.model_patcher
    return comfy.model_patcher.ModelPatcher(base, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


def conditioning(arch: str, size: int, device, seed: int) -> list:
    """A CONDITIONING like CLIPTextEncode's for the real text encoders (77 tokens; SDXL: pooled CLIP-G 1280)."""
    g = torch.Generator().manual_seed(seed)
    extras = {}
    cond = torch.randn(1, 77, CONTEXT[arch], generator=g)
    if arch == "sdxl":
        extras = {"pooled_output": torch.randn(1, SDXL_POOLED, generator=g), "width": size, "height": size}
    return [[cond.to(device), {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in extras.items()}]]


def build_clip(tiny: bool, device):
    """The pack's ClipModel: open_clip ViT-B/16 with random weights (tiny: the pack's test CLIP)."""
    import open_clip
    from zecon_pack.zecon_core.guidance.clip_model import ClipModel, load_clip
    if tiny:
        from safetensors.torch import save_file
        from zecon_pack.zecon_core.apps.tiny import tiny_clip_state_dict
        path = Path(tempfile.mkdtemp(prefix="zecon_lbench_clip_")) / "tiny_clip.safetensors"
        save_file(tiny_clip_state_dict(), str(path))
        clip = load_clip(path=path)
    else:
        torch.manual_seed(0)
        net = open_clip.create_model("ViT-B-16", pretrained=None).float().train(False).requires_grad_(False)
        clip = ClipModel(net, open_clip.get_tokenizer("ViT-B-16"), "bench-ViT-B-16-random")
    return clip.to(device)


def build_vgg(device):
    from zecon_pack.zecon_core.apps.tiny import tiny_vgg_state_dict
    from zecon_pack.zecon_core.guidance.vgg import VGGFeatures
    vgg = VGGFeatures()
    vgg.load_state_dict(tiny_vgg_state_dict())
    return vgg.train(False).requires_grad_(False).to(device)


class RandomVAE:
    """What ``backbone.vae_decoder`` reads of a ComfyUI VAE: the SD VAE's first stage (random weights); with
    ``latent_channels`` 16 the decoder of the Flux / SD3 VAE (same layers, 16 latent channels)."""

    def __init__(self, device, dtype=torch.float32, latent_channels: int = 4):
        from comfy.ldm.models.autoencoder import AutoencoderKL
        with torch.device(device) if torch.device(device).type == "meta" else contextlib.nullcontext():
            stage = AutoencoderKL(ddconfig={**VAE_DDCONFIG, "z_channels": latent_channels}, embed_dim=latent_channels)
        stage = stage.to(device)
        if torch.device(device).type != "meta":
            fill_random_(stage)
        self.first_stage_model = stage
        self.vae_dtype = dtype
        self.latent_channels = latent_channels
        self.downscale_ratio = 8


def guidance_config(args, unet):
    from zecon_pack.nodes.latent import backbone as B
    from zecon_pack.zecon_core.guidance.core import GuidanceConfig
    cfg = GuidanceConfig(n_patch=args.n_patch, zecon_patches=args.zecon_patches)
    return dataclasses.replace(cfg, zecon_layers=B.default_layers(unet))


_TAESD_FILES: dict = {}


def taesd_path(latent_channels: int = 4) -> str:
    """A TAESD decoder file with random weights (``tiny_sd.taesd_half``: ComfyUI's fixed 64-channel TAESD,
    the size of the real taesd/taesdxl decoders), written once per process."""
    if latent_channels not in _TAESD_FILES:
        import tiny_sd
        from safetensors.torch import save_file
        path = Path(tempfile.mkdtemp(prefix="zecon_lbench_taesd_")) / "taesd_decoder.safetensors"
        save_file(tiny_sd.taesd_half("decoder", latent_channels, seed=11), str(path))
        _TAESD_FILES[latent_channels] = str(path)
    return _TAESD_FILES[latent_channels]


def make_plan(args, unet, source, clip, style, vgg, vae, mode):
    from zecon_pack.nodes.latent.guider import GuiderPlan
    return GuiderPlan(config=guidance_config(args, unet), source=source, decoder=args.decoder, mode=mode,
                      start=0.0, end=1.0, seed=args.seed, strength=1.0,
                      taesd_path=taesd_path() if args.decoder == "taesd" else None, vae=vae,
                      clip=clip, style=style, vgg=vgg, checkpointing=args.checkpointing and mode == "full")


def source_latent(base, size: int, seed: int, device) -> torch.Tensor:
    """A VAE-space latent (what VAE Encode gives) of a 'size' px picture: unit variance in model space."""
    h = size // 8
    g = torch.Generator().manual_seed(seed + 7)
    z = torch.randn(1, base.latent_format.latent_channels, h, h, generator=g)
    return base.process_latent_out(z).to(device)


def sigma_schedule(base, n: int) -> torch.Tensor:
    """``n + 1`` levels of a 25-step normal schedule from step ``FIRST_STEP`` on (computed on the CPU)."""
    import comfy.model_base
    import comfy.samplers
    sampling = base.model_sampling
    if sampling.sigmas.is_meta:
        sampling = comfy.model_base.model_sampling(base.model_config, base.model_type)
    sigmas = comfy.samplers.calculate_sigmas(sampling, "normal", SCHEDULE_STEPS)
    if FIRST_STEP + n + 1 > sigmas.shape[0]:
        raise SystemExit(f"at most {sigmas.shape[0] - 1 - FIRST_STEP} guided steps")
    return sigmas[FIRST_STEP:FIRST_STEP + n + 1].float()


def parameter_count(module) -> int:
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------------------------- FLOPs (meta)

@contextlib.contextmanager
def meta_scalars():
    """Data-dependent Python scalars of meta tensors (``bool``, ``float``, ``item``) answer True / 0.0, so
    that the guidance's finiteness checks and loss logging run on the meta device; ComfyUI's free-memory
    query (the VAE's sliced attention) answers 1 TB for the meta device."""
    T = torch.Tensor
    saved = {k: getattr(T, k) for k in ("__bool__", "__float__", "item")}

    def patch(name, dummy):
        orig = saved[name]

        def f(self, *a, **k):
            return dummy if self.is_meta else orig(self, *a, **k)
        setattr(T, name, f)

    patch("__bool__", True)
    patch("__float__", 0.0)
    patch("item", 0.0)
    import comfy.model_management as mm
    free = mm.get_free_memory

    def get_free_memory(dev=None, torch_free_too=False):   # the VAE's sliced attention asks; meta has no memory
        if dev is not None and torch.device(dev).type == "meta":
            return (1 << 40, 1 << 40) if torch_free_too else 1 << 40
        return free(dev, torch_free_too)

    mm.get_free_memory = get_free_memory
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(T, k, v)
        mm.get_free_memory = free


def component_counter(components=COMPONENTS):
    """``zecon_core.apps.flops.FlopCount`` that books each op on the innermost labelled component
    (forward), or on ``backward`` while autograd runs a backward node; ``components``: the labels."""
    from zecon_pack.zecon_core.apps.flops import FlopCount

    class ComponentCount(FlopCount):
        def __init__(self):
            super().__init__()
            self.stack = []
            self.by_component = {k: 0 for k in components}

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            before = self.total
            out = super().__torch_dispatch__(func, types, args, kwargs)
            n = self.total - before
            if n:
                if torch._C._current_autograd_node() is not None:
                    label = "backward"
                else:
                    label = self.stack[-1] if self.stack else "other"
                self.by_component[label] += n
            return out

        def label(self, name, fn):
            def wrapped(*a, **k):
                self.stack.append(name)
                try:
                    return fn(*a, **k)
                finally:
                    self.stack.pop()
            return wrapped

    return ComponentCount()


class _LabelledClip:
    def __init__(self, clip, counter):
        self._clip = clip
        self.embed = counter.label("clip", clip.embed)
        self.encode_image = counter.label("clip", clip.encode_image)

    def __getattr__(self, name):
        return getattr(self._clip, name)


def count_step_flops(args, mode: str) -> dict:
    """FLOPs of one steady-state guided step of ``mode`` on the meta device: the run's setup (decoded source,
    its CLIP embedding) and the first step's one-off source features are not counted."""
    from zecon_pack.nodes.latent import backbone as B
    from zecon_pack.nodes.latent.guider import start_run
    from zecon_pack.zecon_core.guidance.style import StylePrompt
    meta = torch.device("meta")
    dtype = DTYPES[args.dtype]   # the GPU's UNet dtype (FLOPs do not depend on it; saved bytes do)
    base = build_base(args.arch, args.width, args.tiny, dtype, meta)
    clip = build_clip(args.tiny, "cpu")
    clip.model.to(meta)
    width = clip.model.visual.output_dim if hasattr(clip.model.visual, "output_dim") else 512
    e = torch.zeros(1, width, device=meta)
    style = StylePrompt(("a watercolor painting",), ("Photo",), e, e, clip.name)
    vgg = build_vgg(meta)
    vae = RandomVAE(meta) if args.decoder == "vae" else None
    source = source_latent(base, args.size, args.seed, "cpu").to(meta)
    cond = conditioning(args.arch, args.size, meta, args.seed + 1)
    uncond = conditioning(args.arch, args.size, meta, args.seed + 2)
    context = uncond[0][0]
    y = torch.zeros(1, 2816, device=meta) if args.arch == "sdxl" else None
    y_cond = None if y is None else torch.cat([y, y])
    sigma = sigma_schedule(base, 1)[:1].to(meta)
    x = torch.zeros_like(source, dtype=torch.float32)
    plan = make_plan(args, base.diffusion_model, source, clip, style, vgg, vae, mode)
    counter = component_counter()
    with torch.inference_mode(False), meta_scalars():
        guidance = start_run(plan, base, context, y, x)
        if guidance.decode is not None:
            guidance.decode = counter.label("decoder", guidance.decode)
        losses = guidance.losses
        if losses.features is not None:
            losses.features = counter.label("zecon_encoder", losses.features)
        if losses.clip is not None:
            losses.clip = _LabelledClip(losses.clip, counter)
        if losses.vgg is not None:
            losses.vgg = counter.label("vgg", losses.vgg)
        options = B.with_differentiable_attention({})
        ctx2 = torch.cat([cond[0][0], context])

        def denoise(xx):   # CFG as sampling_function computes it: cond and uncond in one batch of 2
            out = base.apply_model(torch.cat([xx, xx]), torch.cat([sigma, sigma]), c_crossattn=ctx2,
                                   transformer_options=options, **({} if y is None else {"y": y_cond}))
            c, u = out.chunk(2)
            return u + (c - u) * CFG

        denoise = counter.label("unet", denoise)
        recompute = mode == "full" and args.checkpointing
        with B.checkpointed_blocks(base.diffusion_model) if recompute else contextlib.nullcontext():
            guidance(denoise, x, sigma, FIRST_STEP, mode)        # the run's first step (caches the source features)
            saved = {k: 0 for k in COMPONENTS}

            def pack(t):   # bytes autograd keeps for the backward, by the component whose forward made them
                if not isinstance(t, torch.nn.Parameter):
                    saved[counter.stack[-1] if counter.stack else "other"] += t.numel() * t.element_size()
                return t

            with counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                guidance(denoise, x, sigma, FIRST_STEP + 1, mode)   # a steady-state step: counted
    res = {"flops": counter.total, "flops_by_component": dict(counter.by_component),
           "flops_by_op": dict(sorted(counter.by_op.items(), key=lambda kv: -kv[1])),
           "unet_parameters": parameter_count(base.diffusion_model), "meta_dtype": args.dtype,
           "saved_for_backward_gb": {k: v / 1e9 for k, v in saved.items() if v},
           "unet_weights_gb": sum(p.numel() * p.element_size() for p in base.diffusion_model.parameters()) / 1e9}
    return res


# --------------------------------------------------------------------------------------------- time + memory

def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_steps(args, built, mode: str) -> dict:
    """``warmup + steps`` guided euler steps through ``ZeconCFGGuider.sample``; per-step wall times, peak memory."""
    import comfy.model_management as mm
    import comfy.samplers
    from zecon_pack.nodes.latent.guider import ZeconCFGGuider
    from zecon_pack.nodes.latent.guider_node import differentiable_clone
    from zecon_pack.zecon_core.apps import bench as PB
    dev = torch.device(args.device)
    base, model = built["base"], built["model"]
    plan = make_plan(args, base.diffusion_model, built["source"], built["clip"], built["style"], built["vgg"],
                     built["vae"], mode)
    patcher_ = differentiable_clone(model) if mode == "full" else model
    guider = ZeconCFGGuider(patcher_, plan)
    guider.set_conds(built["positive"], built["negative"])
    guider.set_cfg(CFG)
    n = args.warmup + args.steps
    sigmas = sigma_schedule(base, n)
    g = torch.Generator().manual_seed(args.seed + 3)
    noise = torch.randn(built["source"].shape, generator=g)
    stamps = []

    def callback(i, x0, x, total):
        sync(dev)
        stamps.append(time.perf_counter())

    gc.collect()
    PB.trim_heap()
    mm.load_models_gpu([patcher_])
    res = {}
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
        res["cuda_before_gb"] = torch.cuda.memory_allocated(dev) / 1e9
    res["resident_before_gb"] = PB.rss_gb()
    hwm = PB.reset_peak_rss()
    sync(dev)
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = guider.sample(noise, built["source"], comfy.samplers.sampler_object("euler"), sigmas,
                            callback=callback, disable_pbar=True, seed=args.seed)
    sync(dev)
    times = [b - a for a, b in zip([t0] + stamps[:-1], stamps)]
    res.update({
        "first_step_s": times[0] if times else None,
        "step_all_s": times[args.warmup:],
        "step_s": (sum(times[args.warmup:]) / len(times[args.warmup:])) if len(times) > args.warmup else None,
        "finite": bool(torch.isfinite(out).all()),
        "peak_rss_gb": PB.peak_rss_gb(),
        "peak_rss_scope": "run (reset before sampling)" if hwm else "process lifetime",
    })
    if dev.type == "cuda":
        res["peak_cuda_gb"] = torch.cuda.max_memory_allocated(dev) / 1e9
        res["peak_cuda_reserved_gb"] = torch.cuda.max_memory_reserved(dev) / 1e9
    del guider, out
    if mode == "full":
        del patcher_
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return res


def build_real(args) -> dict:
    """The models of a timed run on ``--device``."""
    from zecon_pack.zecon_core.guidance.style import encode_style
    dev = torch.device(args.device)
    dtype = DTYPES[args.dtype] if dev.type == "cuda" else torch.float32
    with torch.inference_mode():   # as a checkpoint loader runs inside ComfyUI's executor
        base = build_base(args.arch, args.width, args.tiny, dtype, dev, args.seed)
    clip = build_clip(args.tiny, dev)
    style = encode_style(clip, "a watercolor painting", "Photo")
    return {"base": base, "model": patcher(base), "clip": clip, "style": style, "vgg": build_vgg(dev),
            "vae": RandomVAE(dev, torch.bfloat16 if dtype == torch.float16 else dtype)
            if args.decoder == "vae" else None,
            "source": source_latent(base, args.size, args.seed, "cpu"),
            "positive": conditioning(args.arch, args.size, "cpu", args.seed + 1),
            "negative": conditioning(args.arch, args.size, "cpu", args.seed + 2)}


# --------------------------------------------------------------------------------------------- driver

def describe(args, mode: str) -> dict:
    cfg = unet_config(args.arch, args.width, args.tiny)
    return {"arch": args.arch, "size": args.size, "latent": args.size // 8, "mode": mode,
            "checkpointing": bool(args.checkpointing and mode == "full"), "device": args.device,
            "dtype": args.dtype if args.device.startswith("cuda") else "fp32", "decoder": args.decoder,
            "model_channels": cfg["model_channels"], "tiny": args.tiny, "n_patch": args.n_patch,
            "zecon_patches": args.zecon_patches, "cfg": CFG, "cfg_batch": 2}


def report(results, table, json_path) -> int:
    """Print each result row with ``table`` and append it to ``json_path`` (JSON lines; non-finite floats as
    null) as it lands; 1 when any measurement failed. Shared by this benchmark and ``flow_bench``."""
    failed = False
    for res in results:
        print(table(res), flush=True)
        failed |= "flops_error" in res or "time_error" in res
        if json_path:
            os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
            with open(json_path, "a") as f:
                f.write(json.dumps(res, default=lambda o: None if isinstance(o, float) and not math.isfinite(o)
                                   else str(o)) + "\n")
    return 1 if failed else 0


def measure(args, describe, count_step_flops, build_real, timed):
    """One result row per mode: ``describe(args, mode)``, its FLOPs on the meta device
    (``count_step_flops(args, mode)``) and its timings (``timed(built, mode, res)`` on the models
    ``build_real(args)`` built once); a failed measurement is kept in the row as ``flops_error`` /
    ``time_error`` so that the others still land. Shared by this benchmark and ``flow_bench``."""
    from zecon_pack.zecon_core.apps import bench as PB
    if args.threads:
        torch.set_num_threads(args.threads)
    built = None
    for mode in (MODES if args.mode == "both" else (args.mode,)):
        res = describe(args, mode)
        res["loadavg_before"] = PB.loadavg()
        if not args.no_flops:
            t = time.perf_counter()
            try:
                res.update(count_step_flops(args, mode))
            except Exception as e:   # keep going: the other measurements still land
                res["flops_error"] = f"{type(e).__name__}: {e}"
                if args.traceback:
                    raise
            res["flops_count_s"] = time.perf_counter() - t
        if not args.no_time:
            try:
                if built is None:
                    t = time.perf_counter()
                    built = build_real(args)
                    res["build_s"] = time.perf_counter() - t
                timed(built, mode, res)
                res["steps"], res["warmup"] = args.steps, args.warmup
            except Exception as e:
                res["time_error"] = f"{type(e).__name__}: {e}"
                if args.traceback:
                    raise
                if torch.device(args.device).type == "cuda":
                    res["peak_cuda_gb"] = torch.cuda.max_memory_allocated() / 1e9
        res["machine"] = PB.machine_info(args.device)
        res["loadavg_after"] = PB.loadavg()
        yield res


def run(args):
    def timed(built, mode, res):
        res["unet_parameters"] = parameter_count(built["base"].diffusion_model)
        res.update(time_steps(args, built, mode))

    for res in measure(args, describe, count_step_flops, build_real, timed):
        if res.get("flops") and res.get("step_s"):
            res["gflops_per_s"] = res["flops"] / res["step_s"] / 1e9
        yield res


def table(res: dict) -> str:
    def f(v, fmt="{:.3f}"):
        return "-" if v is None else fmt.format(v)
    head = (f"{res['arch']} {res['size']}px (latent {res['latent']}) {res['mode']}"
            f"{' +checkpointing' if res['checkpointing'] else ''} width {res['model_channels']} "
            f"n_patch {res['n_patch']} decoder {res['decoder']} {res['device']}/{res['dtype']}")
    rows = [head]
    if "flops" in res:
        rows.append(f"  FLOPs per guided step: {res['flops'] / 1e12:.3f} TFLOP  ("
                    + ", ".join(f"{k} {v / 1e12:.3f}" for k, v in res["flops_by_component"].items() if v) + ")")
        rows.append(f"  saved for backward ({res['meta_dtype']} UNet, sum over the step, GB): "
                    + ", ".join(f"{k} {v:.2f}" for k, v in res["saved_for_backward_gb"].items())
                    + f"; UNet weights {res['unet_weights_gb']:.2f} GB")
    for k in ("flops_error", "time_error"):
        if k in res:
            rows.append(f"  {k}: {res[k]}")
    if "step_s" in res:
        rows.append(f"  guided step {f(res['step_s'])} s (all {', '.join(f'{t:.3f}' for t in res['step_all_s'])}; "
                    f"first step incl. run setup {f(res['first_step_s'])} s)")
        rows.append(f"  peak RSS {f(res.get('peak_rss_gb'))} GB" +
                    (f", peak CUDA {f(res.get('peak_cuda_gb'))} GB" if "peak_cuda_gb" in res else ""))
    return "\n".join(rows)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python bench/latent_bench.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", choices=ARCHS, default="sd15")
    p.add_argument("--size", type=int, default=None, help="image side in pixels (default: sd15 512, sdxl 1024)")
    p.add_argument("--mode", choices=(*MODES, "both"), default="both")
    p.add_argument("--checkpointing", action="store_true", help="full mode: gradient checkpointing of the UNet")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="fp16",
                   help="UNet weights on CUDA (the CPU runs fp32) and of the meta count's UNet")
    p.add_argument("--width", type=int, default=None, help="UNet model_channels (default: the real 320)")
    p.add_argument("--tiny", action="store_true", help="test config: a 2-level 64-wide UNet, the pack's tiny CLIP")
    p.add_argument("--n-patch", type=int, default=32, help="views per CLIP loss (README: 32)")
    p.add_argument("--zecon-patches", type=int, default=256, help="ZeCon positions per layer (README: 256)")
    p.add_argument("--decoder", choices=("taesd", "vae"), default="taesd")
    p.add_argument("--steps", type=int, default=2, help="timed guided steps after the warm-up")
    p.add_argument("--warmup", type=int, default=1, help="untimed guided steps first (the first builds the run)")
    p.add_argument("--no-time", action="store_true", help="FLOPs only (meta device)")
    p.add_argument("--no-flops", action="store_true", help="time and memory only")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--traceback", action="store_true", help="stop at the first error with its traceback")
    p.add_argument("--json", default=None, help="append one JSON line per result to this file")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    args.size = args.size or DEFAULT_SIZE[args.arch]
    if args.size % 8:
        raise SystemExit("--size must be a multiple of 8")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device")
    setup(args.device)
    return report(run(args), table, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
