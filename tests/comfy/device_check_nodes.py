"""GPU check of the node pack (run by hand on a CUDA machine; not collected by pytest).

Loads ComfyUI 0.3.75's own modules in-process (comfy.model_management,
comfy.utils, comfy_api.latest, folder_paths; a stub for PyAV where it is not
installed, since only video nodes use it), imports the pack, and runs the
node classes the way ComfyUI's executor does (a class clone with hidden
inputs, inside torch.inference_mode(), a progress hook that checks the
interrupt flag). Reports device, timings, peak memory and whether the models
went back to the offload device afterwards.

    python tests/comfy/device_check_nodes.py --comfyui DIR [--full] [--out report.json]

--full adds a run with random weights in the real sizes (ImageNet ADM 256,
CLIP ViT-B/16) to measure a guided step.
"""
from __future__ import annotations

import argparse
import importlib.abc
import importlib.machinery
import importlib.util
import json
import sys
import tempfile
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import tiny_sd  # noqa: E402  (tests/comfy/tiny_sd.py: ComfyUI importable in this process)


def setup(comfyui: Path, models: Path, cpu: bool = False):
    tiny_sd.setup_comfy(comfyui, cpu)
    import folder_paths
    folder_paths.add_model_folder_path("zecon", str(models))
    spec = importlib.util.spec_from_file_location("zecon_pack", REPO / "__init__.py",
                                                  submodule_search_locations=[str(REPO)])
    pack = importlib.util.module_from_spec(spec)
    sys.modules["zecon_pack"] = pack
    spec.loader.exec_module(pack)
    import comfy.model_management as mm
    import comfy.utils

    def hook(value, total, preview, prompt_id=None, node_id=None):  # what the server installs
        mm.throw_exception_if_processing_interrupted()
        hook.calls.append((value, total, preview is not None))
        if hook.interrupt_at is not None and value >= hook.interrupt_at:
            mm.interrupt_current_processing(True)

    hook.calls, hook.interrupt_at = [], None
    comfy.utils.set_progress_bar_global_hook(hook)
    nodes = {n.__name__: n for n in pack.nodes.NODES}
    return nodes, hook, mm


def run(node_cls, **inputs):
    import torch
    clone = node_cls.PREPARE_CLASS_CLONE({"UNIQUE_ID": "1"})
    with torch.inference_mode():
        return clone.EXECUTE_NORMALIZED(**inputs).args


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--comfyui", required=True)
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--cpu", action="store_true", help="ComfyUI's --cpu")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    import torch
    from safetensors.torch import save_file

    from zecon_core.apps import tiny

    report = {}
    models = Path(tempfile.mkdtemp(prefix="zecon_dev_"))
    tiny.write_tiny_models(models)
    (models / "vgg19_zecon_layers.safetensors").write_bytes((models / "tiny_vgg.safetensors").read_bytes())
    nodes, hook, mm = setup(Path(args.comfyui), models, args.cpu)
    dev = mm.get_torch_device()
    report["device"] = str(dev)
    report["device_name"] = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    report["offload_device"] = str(mm.unet_offload_device())
    cuda = dev.type == "cuda"

    def mem():
        return torch.cuda.memory_allocated(dev) if cuda else 0

    def pipeline(unet_file, clip_file, size, respacing, skip, precision, n_patch, zecon_patches, tag, seed=0,
                 interrupt_at=None, weights=None):
        rec = {}
        hook.interrupt_at = None
        t0 = time.perf_counter()
        (model,) = run(nodes["ZeconDiffusionLoader"], model_name=unet_file, precision=precision)
        (clip,) = run(nodes["ZeconClipLoader"], clip_name="ViT-B-16", pretrained="openai", local_file=clip_file)
        rec["load_s"] = time.perf_counter() - t0
        g = dict(clip_global=0.0, clip_global_patch=10000.0, clip_dir=0.0, clip_dir_patch=20000.0, zecon=500.0,
                 mse=5000.0, vgg=100.0, range=50.0, n_patch=n_patch, patch_min=0.01, patch_max=0.3, aug_prob=1.0,
                 zecon_layers="0,2,5,8,11", zecon_patches=zecon_patches, nce_temperature=0.07, mse_max_t=700,
                 vgg_max_t=800, shared_views=False, vgg_file="auto")
        g.update(weights or {})
        (guidance,) = run(nodes["ZeconGuidance"], **g)
        (style,) = run(nodes["ZeconStylePrompt"], clip=clip, target_prompt="a sketch with crayon",
                       source_prompt="Photo")
        image = torch.rand(1, size + 16, size + 8, 3, generator=torch.Generator().manual_seed(0))
        if cuda:
            torch.cuda.reset_peak_memory_stats(dev)
        t0 = time.perf_counter()
        latent, source = run(nodes["ZeconInversion"], model=model, image=image, respacing=respacing, skip=skip,
                             size_policy="resize", size=size)
        rec["inversion_s"] = time.perf_counter() - t0
        rec["latent_device"] = str(latent.latent.device)
        hook.calls.clear()
        hook.interrupt_at = interrupt_at
        t0 = time.perf_counter()
        try:
            (out,) = run(nodes["ZeconSampler"], model=model, latent=latent, style=style, clip=clip,
                         guidance=guidance, sampler="ddpm", eta=0.0, seed=seed, start="renoise")
            rec["sampler"] = {"shape": list(out.shape), "finite": bool(torch.isfinite(out).all()),
                              "min": float(out.min()), "max": float(out.max()), "device": str(out.device)}
        except mm.InterruptProcessingException:
            rec["interrupted_after_steps"] = len(hook.calls)
            mm.interrupt_current_processing(False)
        hook.interrupt_at = None
        rec["sampling_s"] = time.perf_counter() - t0
        steps = len(hook.calls)
        rec["steps"] = steps
        rec["s_per_step"] = rec["sampling_s"] / max(steps, 1)
        rec["previews"] = sum(1 for c in hook.calls if c[2])
        rec["peak_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30 if cuda else None
        rec["after_gib"] = mem() / 2**30
        rec["model_device_after"] = str(model.device)
        rec["clip_device_after"] = str(clip.device)
        rec["vgg_device_after"] = str(next(guidance.vgg.parameters()).device) if guidance.vgg is not None else None
        report[tag] = rec
        print(tag, json.dumps(rec), flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=2))
        return out if "sampler" in rec else None

    for precision in ("auto", "bf16", "fp32"):
        pipeline("tiny_adm.safetensors", "tiny_clip.safetensors", 64, "6", 3, precision, 4, 16, f"tiny_{precision}")
    a = pipeline("tiny_adm.safetensors", "tiny_clip.safetensors", 64, "6", 3, "fp32", 4, 16, "tiny_seed_a", seed=5)
    b = pipeline("tiny_adm.safetensors", "tiny_clip.safetensors", 64, "6", 3, "fp32", 4, 16, "tiny_seed_b", seed=5)
    report["same_seed_identical"] = bool(torch.equal(a, b))
    report["same_seed_max_abs_diff"] = float((a - b).abs().max())
    if cuda:  # is the difference cuDNN's algorithm choice?
        torch.backends.cudnn.deterministic, bench = True, torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = False
        a = pipeline("tiny_adm.safetensors", "tiny_clip.safetensors", 64, "6", 3, "fp32", 4, 16, "tiny_det_a", seed=5)
        b = pipeline("tiny_adm.safetensors", "tiny_clip.safetensors", 64, "6", 3, "fp32", 4, 16, "tiny_det_b", seed=5)
        report["cudnn_deterministic_identical"] = bool(torch.equal(a, b))
        report["cudnn_deterministic_max_abs_diff"] = float((a - b).abs().max())
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = False, bench
    pipeline("tiny_adm.safetensors", "tiny_clip.safetensors", 64, "20", 0, "fp32", 4, 16, "tiny_interrupt",
             interrupt_at=3, weights=dict(clip_global_patch=1.0, clip_dir_patch=1.0, zecon=1.0, mse=1.0, vgg=1.0,
                                          range=1.0))

    if args.full:
        from zecon_core.pixel.unet import ADMConfig
        big = ADMConfig(model_channels=256, num_res_blocks=2, channel_mult=(1, 1, 2, 2, 4, 4),
                        attention_ds=(8, 16, 32), num_head_channels=64)
        t0 = time.perf_counter()
        save_file(tiny.tiny_unet_state_dict(big), str(models / "full_adm.safetensors"))
        save_file(tiny.tiny_clip_state_dict(patch_size=16, width=768, layers=12, embed_dim=512),
                  str(models / "full_clip.safetensors"))
        report["write_full_s"] = time.perf_counter() - t0
        pipeline("full_adm.safetensors", "full_clip.safetensors", 256, "50", 45, "auto", 32, 256, "full_auto_fp16",
                 weights=dict(clip_global_patch=1.0, clip_dir_patch=1.0, zecon=1.0, mse=1.0, vgg=1.0, range=1.0))
    report["comfy_files"] = sorted(
        str(Path(m.__file__).resolve().relative_to(Path(args.comfyui).resolve()))
        for m in list(sys.modules.values())
        if isinstance(getattr(m, "__file__", None), str)
        and Path(m.__file__).resolve().is_relative_to(Path(args.comfyui).resolve()))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if not isinstance(v, (dict, list))}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
