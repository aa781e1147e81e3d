"""Benchmark of ZeCon on rectified-flow DiTs: the cost of guidance against a plain sampler step.

    python bench/flow_bench.py --arch flux_dev|sd35_medium|zimage [--size 1024] [--mode shortcut|full|both]
        [--reduced | --tiny] [--n-patch 32] [--zecon-layers 0,2,4] [--decoder taesd|vae] [--no-clip]
        [--no-time] [--no-flops] [--steps 1] [--threads 1] [--json OUT.jsonl]

ComfyUI (``ZECON_COMFYUI_DIR``) in-process and the pack as ``zecon_pack``, as ``bench/latent_bench.py``
(whose helpers this script reuses: CLIP, VGG, TAESD file, component FLOP counter, meta scalars).
Random weights, nothing is downloaded:

* diffusion model: ComfyUI 0.3.75's ``supported_models.Flux`` / ``SD3`` / ``ZImage`` with the configs
  ``comfy.model_detection`` gives for the released files (``CONFIGS``: Flux.1-dev 11.90 G parameters,
  SD3.5-medium 2.24 G, Z-Image 6.15 G), built by the class's own ``get_model``.
* conditioning: CONDITIONING shaped as ComfyUI's text encoders give it for a short prompt (``TEXT``):
  Flux.1: T5-XXL padded to 256 tokens + CLIP-L pooled 768 + FluxGuidance 3.5; SD3.5: CLIP-L/G + T5 =
  77 + 77 tokens of 4096 + pooled 2048; Z-Image: Qwen3-4B hidden states of ``--text-tokens`` (64) tokens
  (its tokenizer does not pad; the template + a 40-word prompt is about that).
* CFG as users run these models (``CFG``): Flux.1-dev is guidance-distilled, cfg 1 (ComfyUI's templates,
  FluxGuidance 3.5): one model pass per step; SD3.5: cfg 4.5, cond + uncond in one batch of 2; Z-Image
  Turbo: cfg 1 (ComfyUI's ``image_z_image_turbo`` template: KSampler cfg 1, 9 steps, res_multistep): one pass.
* the guided step: ``nodes.latent.guider.start_run``'s run (decoded source, CLIP, VGG, draws, the shared
  ``ZeconGuidance``) with the ZeCon features of ``nodes.flow.features.build_features`` (the DiT's blocks
  up to the deepest ZeCon layer at t = 0, default layers 0, 2, 4, modulated tokens), decoder TAESD with 16
  latent channels (taef1 / taesd3 are ComfyUI's TAESD at 16 channels) or the Flux / SD3 VAE decoder.
  The FLOPs of a step do not depend on the shift's scale (flow: σ²/((1−σ)² + σ²) in shortcut mode), only on
  what runs: the plain step, the features of the prediction (the source's are computed once per run), the
  decoder, CLIP, VGG, their backward and, in full mode, the backward through the whole model.

Per mode:

* ``flops`` (meta device): the **plain step** — ``comfy.samplers.sampling_function`` on the processed
  conds, what CFGGuider runs per model call (cfg 1: one pass) — and the **guided step**: the same
  denoise inside ``LatentGuidance.__call__``. Components: model (the plain step's forward), features,
  decoder, clip, vgg, other, backward (everything inside autograd's backward). ``ratio`` = guided / plain.
* ``time`` (``--reduced`` / ``--tiny`` on the CPU): the same two calls on real tensors, wall time per
  call after ``--warmup`` calls (the first guided call builds the run), resident high-water mark.

Output: a table per result and, with ``--json``, one JSON object per line.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import latent_bench as LB  # noqa: E402  (the latent benchmark's helpers, one copy)

ARCHS = ("flux_dev", "sd35_medium", "zimage")
MODES = ("shortcut", "full")
COMPONENTS = ("model", "features", "decoder", "clip", "vgg", "other", "backward")
FIRST_STEP = 10
SCHEDULE_STEPS = 25

_FLUX_DEV = {"image_model": "flux", "axes_dim": [16, 56, 56], "num_heads": 24, "mlp_ratio": 4.0, "theta": 10000,
             "out_channels": 16, "qkv_bias": True, "in_channels": 16, "hidden_size": 3072, "context_in_dim": 4096,
             "patch_size": 2, "vec_in_dim": 768, "depth": 19, "depth_single_blocks": 38, "guidance_embed": True}
_SD35_MEDIUM = {"in_channels": 16, "patch_size": 2, "out_channels": 16, "depth": 24, "input_size": None,
                "adm_in_channels": 2048, "num_patches": 147456, "pos_embed_max_size": 384, "qk_norm": "rms",
                "context_embedder_config": {"target": "torch.nn.Linear",
                                            "params": {"in_features": 4096, "out_features": 1536}},
                "pos_embed_scaling_factor": None, "x_block_self_attn_layers": list(range(13))}
_ZIMAGE = {"image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": 3840, "cap_feat_dim": 2560,
           "n_layers": 30, "qk_norm": True, "n_heads": 30, "n_kv_heads": 30, "axes_dims": [32, 48, 48],
           "axes_lens": [1536, 512, 512], "rope_theta": 256.0, "ffn_dim_multiplier": 8.0 / 3.0,
           "z_image_modulation": True, "time_scale": 1000.0, "pad_tokens_multiple": 32}
# arch -> (comfy.supported_models class, the released model's config as model_detection gives it)
CONFIGS = {"flux_dev": ("Flux", _FLUX_DEV), "sd35_medium": ("SD3", _SD35_MEDIUM), "zimage": ("ZImage", _ZIMAGE)}
# CPU configs: the real depth (block count), narrow (head width 128 kept where the rope needs it)
REDUCED = {"flux_dev": {"hidden_size": 256, "num_heads": 2},
           "sd35_medium": {"depth": 8, "x_block_self_attn_layers": list(range(4)),
                           "context_embedder_config": {"target": "torch.nn.Linear",
                                                       "params": {"in_features": 4096, "out_features": 512}}},
           "zimage": {"dim": 256, "n_heads": 2, "n_kv_heads": 2}}
# smoke-test configs (tests/comfy/tiny_flow.py's families)
TINY = {"flux_dev": "flux_dev", "sd35_medium": "sd35", "zimage": "zimage"}
CFG = {"flux_dev": 1.0, "sd35_medium": 4.5, "zimage": 1.0}
# text conditioning: (tokens, width, pooled width)
TEXT = {"flux_dev": (256, 4096, 768), "sd35_medium": (154, 4096, 2048), "zimage": (64, 2560, None)}


# --------------------------------------------------------------------------------------------- models

def model_config(arch: str, reduced: bool, tiny: bool, dtype: torch.dtype):
    import comfy.supported_models as sm
    if tiny:
        import tiny_flow
        mc = tiny_flow.model_config(TINY[arch])
    else:
        name, cfg = CONFIGS[arch]
        mc = getattr(sm, name)({**cfg, **(REDUCED[arch] if reduced else {})})
    mc.set_inference_dtype(dtype, None)
    return mc


def build_base(args, device):
    """ComfyUI BaseModel on ``device`` (meta: shapes only), random weights (N(0, 1/fan_in))."""
    mc = model_config(args.arch, args.reduced, args.tiny, LB.DTYPES[args.dtype] if device.type != "cpu"
                      else torch.float32)
    with torch.device(device) if device.type == "meta" else contextlib.nullcontext():
        base = mc.get_model({}, device=None if device.type == "meta" else device)
    if device.type != "meta":
        LB.fill_random_(base.diffusion_model, args.seed)
    return base


def text_shape(args) -> tuple[int, int, int | None]:
    if args.tiny:
        import tiny_flow
        return tiny_flow.TOKENS, tiny_flow.CONTEXT, tiny_flow.POOLED.get(TINY[args.arch])
    tokens, width, pooled = TEXT[args.arch]
    return (args.text_tokens if args.arch == "zimage" and args.text_tokens else tokens), width, pooled


def conditioning(args, seed: int) -> list:
    """CONDITIONING ``[[cond, extras]]`` shaped as the family's text encoders give it."""
    tokens, width, pooled = text_shape(args)
    g = torch.Generator().manual_seed(seed)
    extras = {"pooled_output": None if pooled is None else torch.randn(1, pooled, generator=g)}
    if args.arch == "flux_dev":
        extras["guidance"] = 3.5
    return [[torch.randn(1, tokens, width, generator=g), extras]]


def source_latent(base, args) -> torch.Tensor:
    """A VAE-space latent of an ``args.size`` px picture (what VAE Encode gives): 16 channels at 1/8."""
    h = args.size // 8
    g = torch.Generator().manual_seed(args.seed + 7)
    return torch.randn(1, base.latent_format.latent_channels, h, h, generator=g)


def sigma_at_step(base) -> torch.Tensor:
    """The noise level of guided step ``FIRST_STEP`` of a 25-step simple schedule (the model's shift)."""
    import comfy.model_base
    import comfy.samplers
    sampling = comfy.model_base.model_sampling(base.model_config, base.model_type)
    return comfy.samplers.calculate_sigmas(sampling, "simple", SCHEDULE_STEPS)[FIRST_STEP:FIRST_STEP + 1].float()


def resolve_layers(args, model_patcher) -> tuple[int, ...]:
    """``--zecon-layers``, else the family's default layers (``nodes.flow.features``) the model has."""
    from zecon_pack.nodes.flow import features as F
    if args.zecon_layers is None:
        n = F.block_count(model_patcher)
        args.zecon_layers = tuple(i for i in F.default_layers(F.family_of(model_patcher)) if i < n) or (0,)
    return args.zecon_layers


def cfg_of(args) -> float:
    """The CFG scale of the run: ``--cfg``, else what users run the model with (``CFG``)."""
    return CFG[args.arch] if args.cfg is None else args.cfg


def guidance_config(args):
    from zecon_pack.zecon_core.guidance.core import GuidanceConfig
    cfg = GuidanceConfig(n_patch=args.n_patch, zecon_patches=args.zecon_patches, zecon_layers=args.zecon_layers)
    if args.no_clip:
        cfg = dataclasses.replace(cfg, clip_global=0.0, clip_global_patch=0.0, clip_dir=0.0, clip_dir_patch=0.0)
    return cfg


def start_guidance(args, base, model_patcher, conds, x, clip, style, vgg, vae, mode):
    """The run's ``LatentGuidance`` as the ZeCon Guider builds it at its first guided call on a flow model
    (``ZeconCFGGuider._start_run``: the DiT features of ``nodes/flow/guidance.flow_features``, the flow shift)."""
    from zecon_pack.nodes.flow import guidance as FG
    from zecon_pack.nodes.latent.guider import GuiderPlan, start_run
    from zecon_pack.zecon_core.flow import FLOW_SHIFT
    plan = GuiderPlan(config=guidance_config(args), source=source_latent(base, args).to(x.device),
                      decoder=args.decoder, mode=mode, start=0.0, end=1.0, seed=args.seed, strength=1.0,
                      taesd_path=LB.taesd_path(base.latent_format.latent_channels) if args.decoder == "taesd"
                      else None, vae=vae, clip=clip, style=style, vgg=vgg, family=FG.guided_family(model_patcher))
    features = None
    if plan.config.zecon > 0:
        features = FG.flow_features(model_patcher, conds, plan.config.zecon_layers, x.device)
    return start_run(plan, base, None, None, x, features, FLOW_SHIFT)


def differentiable_blocks(base, mode: str):
    """Full mode: the guider's out-of-place Flux-type blocks (``nodes/flow/guidance.out_of_place_blocks``)."""
    from zecon_pack.nodes.flow import guidance as FG
    if mode != "full":
        return contextlib.nullcontext()
    return FG.out_of_place_blocks(base.diffusion_model, FG.guided_family(LB.patcher(base)))


def processed_conds(args, base, x, device) -> dict:
    """CFGGuider's conds for this run (``comfy.samplers.process_conds``: the model's ``extra_conds``)."""
    import comfy.sampler_helpers
    import comfy.samplers
    raw = {"positive": comfy.sampler_helpers.convert_cond(conditioning(args, args.seed + 1)),   # at cfg 1
           "negative": comfy.sampler_helpers.convert_cond(conditioning(args, args.seed + 2))}   # unused
    return comfy.samplers.process_conds(base, x, raw, device, latent_image=x, seed=args.seed)


def make_denoise(args, base, conds, sigma, options):
    """The plain step's model call: ``sampling_function`` as CFGGuider.predict_noise calls it."""
    import comfy.samplers

    def denoise(xx):
        return comfy.samplers.sampling_function(base, xx, sigma, conds["negative"], conds["positive"], cfg_of(args),
                                                model_options={"transformer_options": dict(options)}, seed=args.seed)
    return denoise


def make_style(clip, device):
    from zecon_pack.zecon_core.guidance.style import StylePrompt, encode_style
    if device.type == "meta":
        width = getattr(clip.model.visual, "output_dim", 512)
        e = torch.zeros(1, width, device=device)
        return StylePrompt(("a watercolor painting",), ("Photo",), e, e, clip.name)
    return encode_style(clip, "a watercolor painting", "Photo")


# --------------------------------------------------------------------------------------------- FLOPs (meta)

class RuleCheckedOn:
    """The guidance's shift rule with its σ check made on the real (CPU) noise level: on meta tensors a
    data-dependent check cannot be answered (``meta_scalars`` says True to every question)."""

    def __init__(self, rule, sigma: torch.Tensor):
        self.rule, self.sigma = rule, sigma

    def check(self, sigma, mode):
        self.rule.check(self.sigma, mode)

    def __getattr__(self, name):
        return getattr(self.rule, name)


def count_step_flops(args, mode: str) -> dict:
    """FLOPs of the plain step and of one steady-state guided step of ``mode`` on the meta device."""
    from zecon_pack.nodes.latent import backbone as B
    meta = torch.device("meta")
    base = build_base(args, meta)
    mp = LB.patcher(base)
    mp.pre_run()          # what CFGGuider.outer_sample does first (sampling_function asks for the patcher)
    resolve_layers(args, mp)
    clip = LB.build_clip(args.tiny, "cpu")
    clip.model.to(meta)
    style = make_style(clip, meta)
    vgg = LB.build_vgg(meta)
    vae = LB.RandomVAE(meta, latent_channels=base.latent_format.latent_channels) if args.decoder == "vae" else None
    x = base.process_latent_in(source_latent(base, args)).to(meta)
    sigma_cpu = sigma_at_step(base)
    sigma = sigma_cpu.to(meta)
    res = {}
    with torch.inference_mode(False), LB.meta_scalars():
        conds = processed_conds(args, base, x, meta)
        plain_counter = LB.component_counter(COMPONENTS)
        plain = plain_counter.label("model", make_denoise(args, base, conds, sigma, {}))
        with plain_counter:
            plain(x)
        guidance = start_guidance(args, base, mp, conds, x, clip, style, vgg, vae, mode)
        guidance.rule = RuleCheckedOn(guidance.rule, sigma_cpu)
        counter = LB.component_counter(COMPONENTS)
        if guidance.decode is not None:
            guidance.decode = counter.label("decoder", guidance.decode)
        losses = guidance.losses
        if losses.features is not None:
            losses.features = counter.label("features", losses.features)
        if losses.clip is not None:
            losses.clip = LB._LabelledClip(losses.clip, counter)
        if losses.vgg is not None:
            losses.vgg = counter.label("vgg", losses.vgg)
        options = B.with_differentiable_attention({}) if mode == "full" else {}
        denoise = counter.label("model", make_denoise(args, base, conds, sigma, options))
        blocks = differentiable_blocks(base, mode)
        blocks.__enter__()
        guidance(denoise, x, sigma, FIRST_STEP, mode)     # the run's first step (caches the source features)
        saved = {k: 0 for k in COMPONENTS}

        def pack(t):   # bytes autograd keeps for the backward, by the component whose forward made them
            if not isinstance(t, torch.nn.Parameter):
                saved[counter.stack[-1] if counter.stack else "other"] += t.numel() * t.element_size()
            return t

        with counter, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            guidance(denoise, x, sigma, FIRST_STEP + 1, mode)   # a steady-state step: counted
        blocks.__exit__(None, None, None)
    res.update({"plain_flops": plain_counter.total, "flops": counter.total,
                "flops_by_component": dict(counter.by_component), "ratio": counter.total / plain_counter.total,
                "model_parameters": LB.parameter_count(base.diffusion_model),
                "feature_blocks": max(args.zecon_layers) + 1 if losses.features is not None else 0,
                "saved_for_backward_gb": {k: v / 1e9 for k, v in saved.items() if v}, "meta_dtype": args.dtype,
                "model_weights_gb": sum(p.numel() * p.element_size() for p in base.diffusion_model.parameters()) / 1e9})
    return res


# --------------------------------------------------------------------------------------------- time + memory

def build_real(args) -> dict:
    """The models of a timed run on the CPU (fp32), weights frozen (no weight gradients in full mode)."""
    dev = torch.device(args.device)
    base = build_base(args, dev)
    base.requires_grad_(False)
    clip = LB.build_clip(args.tiny, dev)
    return {"base": base, "model": LB.patcher(base), "clip": clip, "style": make_style(clip, dev),
            "vgg": LB.build_vgg(dev),
            "vae": LB.RandomVAE(dev, latent_channels=base.latent_format.latent_channels)
            if args.decoder == "vae" else None}


def timed(fn, n: int, warmup: int) -> dict:
    """Wall seconds of ``warmup + n`` calls of ``fn`` (the first ``warmup`` apart) and the resident peak."""
    from zecon_pack.zecon_core.apps import bench as PB
    gc.collect()
    PB.trim_heap()
    before = PB.rss_gb()
    hwm = PB.reset_peak_rss()
    times = []
    for _ in range(warmup + n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return {"first_s": times[0] if warmup else None, "all_s": times[warmup:],
            "s": sum(times[warmup:]) / max(1, n), "resident_before_gb": before, "peak_rss_gb": PB.peak_rss_gb(),
            "peak_rss_scope": "calls (reset before)" if hwm else "process lifetime"}


def time_steps(args, built, mode: str) -> dict:
    """The plain step and the guided step of ``mode`` on real tensors: time per call, peak memory."""
    from zecon_pack.nodes.latent import backbone as B
    base, dev = built["base"], torch.device(args.device)
    built["model"].pre_run()
    resolve_layers(args, built["model"])
    x = base.process_latent_in(source_latent(base, args)).to(dev)
    g = torch.Generator().manual_seed(args.seed + 3)
    sigma = sigma_at_step(base).to(dev)
    xt = ((1 - sigma) * x + sigma * torch.randn(x.shape, generator=g).to(dev))
    conds = processed_conds(args, base, xt, dev)
    plain = make_denoise(args, base, conds, sigma, {})
    with torch.no_grad():
        res = {"plain": timed(lambda: plain(xt), args.steps, args.warmup)}
    guidance = start_guidance(args, base, built["model"], conds, xt, built["clip"], built["style"], built["vgg"],
                              built["vae"], mode)
    denoise = make_denoise(args, base, conds, sigma, B.with_differentiable_attention({}) if mode == "full" else {})
    step = iter(range(FIRST_STEP, 10 ** 6))
    outs = []

    def guided():
        out, _ = guidance(denoise, xt, sigma, next(step), mode)
        outs.append(bool(torch.isfinite(out).all()))

    with differentiable_blocks(base, mode):
        res["guided"] = timed(guided, args.steps, args.warmup)
    res["finite"] = all(outs)
    res["time_ratio"] = res["guided"]["s"] / res["plain"]["s"]
    return res


# --------------------------------------------------------------------------------------------- driver

def describe(args, mode: str) -> dict:
    tokens, width, pooled = text_shape(args)
    return {"arch": args.arch, "size": args.size, "latent": args.size // 8, "mode": mode,
            "config": "tiny" if args.tiny else ("reduced" if args.reduced else "real"),
            "device": args.device, "decoder": args.decoder, "n_patch": args.n_patch,
            "clip_losses": not args.no_clip, "zecon_patches": args.zecon_patches,
            "zecon_layers": None if args.zecon_layers is None else list(args.zecon_layers), "cfg": cfg_of(args),
            "passes_per_step": 1 if cfg_of(args) == 1.0 else 2, "text_tokens": tokens}


def run(args):
    def timed(built, mode, res):
        res["model_parameters"] = LB.parameter_count(built["base"].diffusion_model)
        res["time"] = time_steps(args, built, mode)

    for res in LB.measure(args, describe, count_step_flops, build_real, timed):
        res["zecon_layers"] = None if args.zecon_layers is None else list(args.zecon_layers)
        yield res


def table(res: dict) -> str:
    rows = [f"{res['arch']} {res['size']}px ({res['config']}) {res['mode']} cfg {res['cfg']} "
            f"({res['passes_per_step']} pass/step) n_patch {res['n_patch']} layers {res['zecon_layers']} "
            f"decoder {res['decoder']}{'' if res['clip_losses'] else ' no-CLIP'}"]
    if "flops" in res:
        rows.append(f"  plain step {res['plain_flops'] / 1e12:.3f} TFLOP; guided step {res['flops'] / 1e12:.3f} TFLOP"
                    f" = {res['ratio']:.3f}x  (" + ", ".join(f"{k} {v / 1e12:.3f}"
                                                      for k, v in res["flops_by_component"].items() if v) + ")")
        rows.append(f"  model {res['model_parameters'] / 1e9:.3f} G parameters; saved for backward (GB): "
                    + ", ".join(f"{k} {v:.2f}" for k, v in res["saved_for_backward_gb"].items()))
    for k in ("flops_error", "time_error"):
        if k in res:
            rows.append(f"  {k}: {res[k]}")
    if "time" in res:
        t = res["time"]
        rows.append(f"  time: plain {t['plain']['s']:.3f} s, guided {t['guided']['s']:.3f} s = {t['time_ratio']:.2f}x "
                    f"(first guided call, builds the run: {t['guided']['first_s']:.3f} s); peak RSS plain "
                    f"{t['plain']['peak_rss_gb']:.2f} GB, guided {t['guided']['peak_rss_gb']:.2f} GB")
    return "\n".join(rows)


def layers_arg(text: str) -> tuple[int, ...]:
    try:
        layers = tuple(sorted({int(v) for v in text.split(",") if v.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--zecon-layers: {text!r} is not a comma-separated list of block indices")
    if not layers or layers[0] < 0:
        raise argparse.ArgumentTypeError(f"--zecon-layers: {text!r} needs block indices >= 0")
    return layers


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python bench/flow_bench.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", choices=ARCHS, default="flux_dev")
    p.add_argument("--size", type=int, default=1024, help="image side in pixels")
    p.add_argument("--mode", choices=(*MODES, "both"), default="both")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--reduced", action="store_true", help="CPU config: the real depth, narrow (REDUCED)")
    size.add_argument("--tiny", action="store_true", help="test config: tests/comfy/tiny_flow.py, the tiny CLIP")
    p.add_argument("--device", default="cpu", help="where the timed calls run (cpu)")
    p.add_argument("--dtype", choices=tuple(LB.DTYPES), default="bf16", help="the meta count's model weights")
    p.add_argument("--n-patch", type=int, default=32, help="views per CLIP loss (README: 32)")
    p.add_argument("--zecon-patches", type=int, default=256, help="ZeCon positions per layer (README: 256)")
    p.add_argument("--zecon-layers", type=layers_arg, default=None,
                   help="DiT blocks (default: the family's, nodes/flow/features.py: 0,2,4)")
    p.add_argument("--text-tokens", type=int, default=None, help="Z-Image: prompt tokens (default 64)")
    p.add_argument("--cfg", type=float, default=None,
                   help="CFG scale (default: flux_dev 1, sd35_medium 4.5, zimage 1); 1 = one model pass per step")
    p.add_argument("--decoder", choices=("taesd", "vae"), default="taesd")
    p.add_argument("--no-clip", action="store_true", help="CLIP losses off (ZeCon, MSE, VGG, range only)")
    p.add_argument("--steps", type=int, default=1, help="timed calls after the warm-up")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls first (the first guided one builds the run)")
    p.add_argument("--no-time", action="store_true", help="FLOPs only (meta device)")
    p.add_argument("--no-flops", action="store_true", help="time and memory only")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--traceback", action="store_true", help="stop at the first error with its traceback")
    p.add_argument("--json", default=None, help="append one JSON line per result to this file")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.size % 16:
        raise SystemExit("--size must be a multiple of 16 (8x VAE, 2x2 patches)")
    if not args.no_time and torch.device(args.device).type != "cpu":
        raise SystemExit("--device: the timed calls run on the CPU only (GPU figures: not measured here)")
    LB.setup("cpu")
    return LB.report(run(args), table, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
