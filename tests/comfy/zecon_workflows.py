"""The shipped workflows, built in the REAL ComfyUI frontend and saved with its own Export.

    ~/.cache/zecon/venv/bin/python tests/comfy/zecon_workflows.py

starts ComfyUI with the pack (tiny models: the model combos still offer the
known models as "(download on first use)"), builds every graph below with
LiteGraph.createNode in headless Chromium, and writes
  workflows/<name>.json         UI format (graphToPrompt().workflow = Export)
  workflows/<name>.jpg          thumbnail: a screenshot of the graph
  workflows/index.json          a valid workflow (one note) whose extra.zecon_workflows
                                lists name, title, description and models of each
  tests/workflows_api/<name>.json   API format (graphToPrompt().output)
  docs/images/modular_graph.png     screenshot of the modular graph
The tests load the same files back (test_zecon_frontend.py).
"""
from __future__ import annotations

import io
import json
import sys
import uuid
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
for p in (HERE, HERE.parents[1]):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import zecon_testing as zt  # noqa: E402
from zecon_core.files.registry import WORKFLOW_CHECKPOINTS, frontend_model  # noqa: E402

IMAGENET = "256x256_diffusion_uncond.pt (download on first use)"
FFHQ = "ffhq_10m.pt (download on first use)"
SAMPLE = zt.SAMPLE_NAME
MASKED_SAMPLE = zt.MASKED_SAMPLE_NAME
STYLE_SAMPLE = zt.STYLE_SAMPLE_NAME
THUMB_WIDTH = 768

NOTE_COMMON = (
    "**First run** downloads the diffusion model into `models/zecon` (and open_clip fetches CLIP ViT-B-16, "
    "VGG19's three layers are extracted once). Replace `sample.png` in **Load Image** with your picture.\n\n"
)

SD15_CKPT = "v1-5-pruned-emaonly.safetensors"
SDXL_CKPT = "sd_xl_base_1.0.safetensors"
LATENT_STYLE_PROMPT = "a watercolor painting"


def latent_note(family: str, ckpt: str, size: str) -> str:
    return (
        f"**ZeCon on your own {family} model.** Pick your checkpoint in **Load Checkpoint** (`{ckpt}` is a "
        f"placeholder: any {family} checkpoint in `models/checkpoints`, LoRAs in between are fine) and your "
        f"picture in **Load Image**; it is scaled to about {size}.\n\n"
        "**Recipe**: VAE Encode -> **ZeCon Latent Inversion** (empty prompt, cfg 1) gives the noisy latent and "
        "the sigmas that lead back to the picture -> **SamplerCustomAdvanced** samples them with the **ZeCon "
        "Guider**: your prompt (with CFG) carries the style, the ZeCon and MSE losses on the UNet's own features "
        "keep the picture's content.\n\n"
        "**Knobs**\n"
        "* Inversion `denoise`: how much is repainted (0.5 = half the schedule; more = stronger restyle, less "
        "of the source). `steps` are the sampling steps too.\n"
        "* Guider `cfg`: prompt strength (about 4-7). `strength`: multiplies every ZeCon loss (0 = plain CFG, "
        "more = closer to the source's layout).\n"
        "* `mode`: shortcut (fast, gradient on the denoised prediction) or full (through the UNet like the "
        "paper, ~2x time and much more memory; `gradient_checkpointing` saves memory).\n"
        "* `decoder`: taesd (tiny, fast) or vae (the connected VAE, best quality, slower) for the losses "
        "that look at the image.\n"
        "* `mask`: connect a MASK (e.g. Load Image's) to restyle only there; `feather` softens the seam.\n\n"
        "**Keep** **DisableNoise**: the inverted latent already holds the noise; added noise would forget "
        "the picture. Keep the inversion's sigmas on the sampler.\n\n"
        "**CLIP losses (optional)**: *ZeCon CLIP Loader* and *ZeCon Style Prompt* are bypassed (purple); "
        "select both and press Ctrl+B to add the original's CLIP style losses (open_clip fetches CLIP ViT-B-16 "
        "on first use).\n\n"
        "**First run**: the TAESD decoder (`taesd_decoder.pth` / `taesdxl_decoder.pth`) is downloaded into "
        "`models/vae_approx` if it is not there (previews use it too)."
    )


def latent_workflow(family: str, title: str, description: str, ckpt: str, megapixels: float, size: str,
                    prefix: str) -> dict:
    return {
        "title": title,
        "description": description,
        "models": [ckpt + " (your own checkpoint)", "TAESD decoder (madebyollin/taesd)",
                   "optional: CLIP ViT-B-16 (openai)"],
        "nodes": [
            {"id": 1, "type": "LoadImage", "pos": [40, 40], "widgets": {"image": SAMPLE}},
            {"id": 2, "type": "CheckpointLoaderSimple", "pos": [40, 420], "widgets": {"ckpt_name": ckpt},
             "models": [frontend_model(ckpt)]},
            {"id": 3, "type": "ImageScaleToTotalPixels", "pos": [440, 40],
             "widgets": {"upscale_method": "lanczos", "megapixels": megapixels}},
            {"id": 4, "type": "VAEEncode", "pos": [440, 200]},
            {"id": 5, "type": "CLIPTextEncode", "pos": [440, 300], "title": "Inversion prompt (empty)",
             "widgets": {"text": ""}},
            {"id": 6, "type": "CLIPTextEncode", "pos": [440, 500], "title": "Positive prompt (the style)",
             "widgets": {"text": LATENT_STYLE_PROMPT}},
            {"id": 7, "type": "CLIPTextEncode", "pos": [440, 700], "title": "Negative prompt",
             "widgets": {"text": ""}},
            {"id": 8, "type": "ZeconLatentInversion", "pos": [840, 40],
             "widgets": {"cfg": 1.0, "steps": 25, "denoise": 0.5, "scheduler": "normal"}},
            {"id": 9, "type": "ZeconClipLoader", "pos": [840, 300],
             "widgets": {"clip_name": "ViT-B-16", "pretrained": "openai", "local_file": "none"}},
            {"id": 10, "type": "ZeconStylePrompt", "pos": [840, 450],
             "widgets": {"target_prompt": LATENT_STYLE_PROMPT, "source_prompt": "Photo"}},
            {"id": 11, "type": "ZeconGuider", "pos": [1240, 40],
             "widgets": {"cfg": 5.0, "mode": "shortcut", "decoder": "taesd", "start_percent": 0.0,
                         "end_percent": 1.0, "strength": 1.0, "seed": 0, "control_after_generate": "fixed",
                         "zecon_layers": "auto"},
             "models": [frontend_model(WORKFLOW_CHECKPOINTS[ckpt].taesd)]},
            {"id": 12, "type": "DisableNoise", "pos": [1240, 600]},
            {"id": 13, "type": "KSamplerSelect", "pos": [1240, 700], "widgets": {"sampler_name": "euler"}},
            {"id": 14, "type": "SamplerCustomAdvanced", "pos": [1640, 40]},
            {"id": 15, "type": "VAEDecode", "pos": [1640, 400]},
            {"id": 16, "type": "SaveImage", "pos": [2040, 40], "widgets": {"filename_prefix": prefix}},
            {"id": 17, "type": "MarkdownNote", "pos": [2040, 420], "title": "About this workflow",
             "widgets": {"text": latent_note(family, ckpt, size)}},
        ],
        "links": [
            (1, 0, 3, "image"), (3, 0, 4, "pixels"), (2, 2, 4, "vae"),
            (2, 1, 5, "clip"), (2, 1, 6, "clip"), (2, 1, 7, "clip"),
            (2, 0, 8, "model"), (4, 0, 8, "latent"), (5, 0, 8, "conditioning"),
            (9, 0, 10, "clip"),
            (2, 0, 11, "model"), (6, 0, 11, "positive"), (7, 0, 11, "negative"), (4, 0, 11, "source"),
            (2, 2, 11, "vae"), (9, 0, 11, "clip"), (10, 0, 11, "style"),
            (12, 0, 14, "noise"), (11, 0, 14, "guider"), (13, 0, 14, "sampler"), (8, 1, 14, "sigmas"),
            (8, 0, 14, "latent_image"),
            (14, 0, 15, "samples"), (2, 2, 15, "vae"), (15, 0, 16, "images"),
        ],
        "bypass": [9, 10],
        "columns": [[1, 2], [3, 4, 5, 6, 7], [8, 9, 10], [11, 12, 13], [14, 15], [16, 17]],
        "sizes": {1: [380, 380], 2: [380, 110], 5: [380, 160], 6: [380, 160], 7: [380, 160], 8: [380, 220],
                  10: [380, 200], 11: [400, 560], 14: [320, 120], 16: [360, 320], 17: [440, 640]},
    }


# Files a flow workflow's loaders name, as ComfyUI's own templates declare them (properties.models: the
# frontend's missing-models dialog offers the downloads); URLs from comfyui-workflow-templates 0.7.25.
FLUX_DEV_UNET, FLUX_CLIP_L, FLUX_T5, FLUX_VAE = (frontend_model(n) for n in (
    "flux1-dev.safetensors", "clip_l.safetensors", "t5xxl_fp8_e4m3fn_scaled.safetensors", "ae.safetensors"))
ZIMAGE_UNET, ZIMAGE_TEXT, ZIMAGE_VAE = (frontend_model(n) for n in (
    "z_image_turbo_bf16.safetensors", "qwen_3_4b.safetensors", "ae.safetensors"))


def files_note(files: list[dict]) -> str:
    """The note's "which file goes where" list."""
    return "\n".join(f"* `{f['name']}` -> `models/{f['directory']}/` ({f['url']})" for f in files)


def flow_note(family: str, files: list[dict], size: str, cfg_text: str, extra: str) -> str:
    return (
        f"**ZeCon on {family}.** Put these files into your ComfyUI `models` folder (the loaders list them; "
        f"ComfyUI offers the downloads when they are missing):\n{files_note(files)}\n\n"
        f"Pick your picture in **Load Image**; it is scaled to about {size}.\n\n"
        "**Recipe**: VAE Encode -> **ZeCon Latent Inversion** (empty prompt, cfg 1) runs the flow backwards "
        "part of the way and gives the noisy latent and the sigmas that lead back to the picture -> "
        "**SamplerCustomAdvanced** samples them with the **ZeCon Guider**: your prompt carries the style, the "
        "ZeCon loss on the transformer's own image tokens (first blocks, at t = 0) and the MSE keep the "
        "picture's content.\n\n"
        "**Knobs**\n"
        "* Inversion `denoise`: how much is repainted (more = stronger restyle, less of the source); it must "
        "stay below 1 (the flow's start, pure noise, cannot be inverted). `steps` are the sampling steps too.\n"
        f"* Guider `cfg`: {cfg_text} `strength`: multiplies every ZeCon loss (0 = plain sampling, more = "
        "closer to the source's layout).\n"
        "* `mode`: shortcut (default: gradient on the denoised prediction; a guided step costs about 1.2-1.5x "
        "the FLOPs of a plain step) or full (through the whole transformer like the paper: about 2.4-2.9x, and "
        "far more memory).\n"
        "* `decoder`: taesd (tiny, fast; its weights are fetched into `models/vae_approx` on first use) or vae "
        "(the connected VAE: best quality, slower) for the losses that look at the image.\n"
        "* `zecon_layers`: `auto` = transformer blocks 0, 2, 4.\n\n"
        "**Keep** **DisableNoise**: the inverted latent already holds the noise.\n\n"
        "**CLIP losses (optional)**: *ZeCon CLIP Loader* and *ZeCon Style Prompt* are bypassed (purple); "
        "select both and press Ctrl+B to add the original's CLIP style losses (open_clip fetches CLIP ViT-B-16 "
        f"on first use).\n\n{extra}"
    )


def flow_workflow(title: str, description: str, loaders: list[dict], model_patch: dict | None,
                  positive_patch: dict | None, files: list[dict], note: str, cfg: float, steps: int,
                  denoise: float, scheduler: str, prefix: str) -> dict:
    """Load Image -> VAE Encode -> ZeCon Latent Inversion -> SamplerCustomAdvanced (DisableNoise + ZeCon Guider)
    -> VAE Decode for a rectified-flow model. ``loaders``: nodes 2 (MODEL), 3 (CLIP), 4 (VAE);
    ``model_patch``: node 21 between the loader and the model's users (e.g. ModelSamplingAuraFlow);
    ``positive_patch``: node 22 between the positive prompt and the guider (e.g. FluxGuidance)."""
    model = (21, 0) if model_patch else (2, 0)
    positive = (22, 0) if positive_patch else (8, 0)
    nodes = [
        {"id": 1, "type": "LoadImage", "pos": [40, 40], "widgets": {"image": SAMPLE}},
        *loaders,
        {"id": 5, "type": "ImageScaleToTotalPixels", "pos": [440, 40],
         "widgets": {"upscale_method": "lanczos", "megapixels": 1.0}},
        {"id": 6, "type": "VAEEncode", "pos": [440, 200]},
        {"id": 7, "type": "CLIPTextEncode", "pos": [440, 300], "title": "Inversion prompt (empty)",
         "widgets": {"text": ""}},
        {"id": 8, "type": "CLIPTextEncode", "pos": [440, 500], "title": "Positive prompt (the style)",
         "widgets": {"text": LATENT_STYLE_PROMPT}},
        {"id": 9, "type": "CLIPTextEncode", "pos": [440, 700], "title": "Negative prompt",
         "widgets": {"text": ""}},
        {"id": 11, "type": "ZeconLatentInversion", "pos": [840, 40],
         "widgets": {"cfg": 1.0, "steps": steps, "denoise": denoise, "scheduler": scheduler}},
        {"id": 12, "type": "ZeconClipLoader", "pos": [840, 300],
         "widgets": {"clip_name": "ViT-B-16", "pretrained": "openai", "local_file": "none"}},
        {"id": 13, "type": "ZeconStylePrompt", "pos": [840, 450],
         "widgets": {"target_prompt": LATENT_STYLE_PROMPT, "source_prompt": "Photo"}},
        {"id": 14, "type": "ZeconGuider", "pos": [1240, 40],
         "widgets": {"cfg": cfg, "mode": "shortcut", "decoder": "taesd", "start_percent": 0.0,
                     "end_percent": 1.0, "strength": 1.0, "seed": 0, "control_after_generate": "fixed",
                     "zecon_layers": "auto"}, "models": [frontend_model("taef1_decoder")]},
        {"id": 15, "type": "DisableNoise", "pos": [1240, 600]},
        {"id": 16, "type": "KSamplerSelect", "pos": [1240, 700], "widgets": {"sampler_name": "euler"}},
        {"id": 17, "type": "SamplerCustomAdvanced", "pos": [1640, 40]},
        {"id": 18, "type": "VAEDecode", "pos": [1640, 400]},
        {"id": 19, "type": "SaveImage", "pos": [2040, 40], "widgets": {"filename_prefix": prefix}},
        {"id": 20, "type": "MarkdownNote", "pos": [2040, 420], "title": "About this workflow",
         "widgets": {"text": note}},
    ]
    links = [
        (1, 0, 5, "image"), (5, 0, 6, "pixels"), (4, 0, 6, "vae"),
        (3, 0, 7, "clip"), (3, 0, 8, "clip"), (3, 0, 9, "clip"),
        (*model, 11, "model"), (6, 0, 11, "latent"), (7, 0, 11, "conditioning"),
        (12, 0, 13, "clip"),
        (*model, 14, "model"), (*positive, 14, "positive"), (9, 0, 14, "negative"), (6, 0, 14, "source"),
        (4, 0, 14, "vae"), (12, 0, 14, "clip"), (13, 0, 14, "style"),
        (15, 0, 17, "noise"), (14, 0, 17, "guider"), (16, 0, 17, "sampler"), (11, 1, 17, "sigmas"),
        (11, 0, 17, "latent_image"),
        (17, 0, 18, "samples"), (4, 0, 18, "vae"), (18, 0, 19, "images"),
    ]
    column1 = [5, 6]
    if model_patch:
        nodes.append({**model_patch, "id": 21, "pos": [440, 900]})
        links.append((2, 0, 21, "model"))
        column1.append(21)
    if positive_patch:
        nodes.append({**positive_patch, "id": 22, "pos": [840, 700]})
        links.append((8, 0, 22, "conditioning"))
    return {
        "title": title, "description": description,
        "models": [f["name"] for f in files] + ["TAESD decoder taef1 (madebyollin/taesd)",
                                                  "optional: CLIP ViT-B-16 (openai)"],
        "nodes": nodes, "links": links, "bypass": [12, 13],
        "columns": [[1, 2, 3, 4], column1 + [7, 8, 9], [11, 12, 13] + ([22] if positive_patch else []),
                    [14, 15, 16], [17, 18], [19, 20]],
        "sizes": {1: [380, 380], 2: [380, 110], 7: [380, 160], 8: [380, 160], 9: [380, 160], 11: [380, 220],
                  13: [380, 200], 14: [400, 560], 17: [320, 120], 19: [360, 320], 20: [460, 760]},
    }


FLUX_FILES = [FLUX_DEV_UNET, FLUX_CLIP_L, FLUX_T5, FLUX_VAE]
ZIMAGE_FILES = [ZIMAGE_UNET, ZIMAGE_TEXT, ZIMAGE_VAE]

WORKFLOWS = {
    "zecon_style_transfer_imagenet": {
        "title": "ZeCon text style transfer (ImageNet model, all-in-one)",
        "description": "Restyles a photo after a text prompt with the all-in-one ZeCon Style Transfer node and "
                       "the ImageNet 256x256 unconditional diffusion model; the original paper's settings "
                       "(50 steps, skip 25, 256x256).",
        "models": ["256x256_diffusion_uncond.pt", "CLIP ViT-B-16 (openai)", "VGG19 (torchvision)"],
        "nodes": [
            {"id": 1, "type": "LoadImage", "pos": [40, 40], "widgets": {"image": SAMPLE}},
            {"id": 2, "type": "ZeconDiffusionLoader", "pos": [40, 420],
             "widgets": {"model_name": IMAGENET, "precision": "auto"}, "models": [frontend_model("imagenet")]},
            {"id": 3, "type": "ZeconClipLoader", "pos": [40, 610],
             "widgets": {"clip_name": "ViT-B-16", "pretrained": "openai", "local_file": "none"}},
            {"id": 4, "type": "ZeconStyleTransfer", "pos": [440, 40],
             "widgets": {"target_prompt": "a sketch with crayon", "source_prompt": "Photo", "respacing": "50",
                         "skip": 25, "size_policy": "resize", "size": 256, "seed": 0, "sampler": "ddpm"}},
            {"id": 5, "type": "SaveImage", "pos": [860, 40], "widgets": {"filename_prefix": "zecon/style_transfer"}},
            {"id": 6, "type": "MarkdownNote", "pos": [860, 420], "title": "About this workflow",
             "widgets": {"text": NOTE_COMMON + "**ZeCon Style Transfer** does everything in one node. Change "
                                               "`target_prompt` for another style; raise `zecon`/`mse` to keep "
                                               "more of the photo. The modular workflow re-uses one inversion "
                                               "for many prompts."}},
        ],
        "links": [(1, 0, 4, "image"), (2, 0, 4, "model"), (3, 0, 4, "clip"), (4, 0, 5, "images")],
        "columns": [[1, 2, 3], [4], [5, 6]],
        "sizes": {1: [380, 380], 2: [380, 110], 3: [380, 110], 4: [400, 620], 5: [360, 320], 6: [360, 240]},
    },
    "zecon_modular_imagenet": {
        "title": "ZeCon modular graph: one inversion, two styles (ImageNet model)",
        "description": "The pipeline as separate nodes: the photo is DDIM-inverted once, then two Style Prompts "
                       "are sampled with the same guidance. Changing a prompt or a weight re-runs only the "
                       "sampler that depends on it.",
        "models": ["256x256_diffusion_uncond.pt", "CLIP ViT-B-16 (openai)", "VGG19 (torchvision)"],
        "nodes": [
            {"id": 1, "type": "LoadImage", "pos": [40, 40], "widgets": {"image": SAMPLE}},
            {"id": 2, "type": "ZeconDiffusionLoader", "pos": [40, 420],
             "widgets": {"model_name": IMAGENET, "precision": "auto"}, "models": [frontend_model("imagenet")]},
            {"id": 3, "type": "ZeconClipLoader", "pos": [40, 610],
             "widgets": {"clip_name": "ViT-B-16", "pretrained": "openai", "local_file": "none"}},
            {"id": 4, "type": "ZeconInversion", "pos": [420, 40],
             "widgets": {"respacing": "50", "skip": 25, "size_policy": "resize", "size": 256}},
            {"id": 5, "type": "ZeconGuidance", "pos": [420, 300], "widgets": {}},
            {"id": 6, "type": "ZeconStylePrompt", "pos": [800, 40], "title": "Style A",
             "widgets": {"target_prompt": "a sketch with crayon", "source_prompt": "Photo"}},
            {"id": 7, "type": "ZeconStylePrompt", "pos": [800, 330], "title": "Style B",
             "widgets": {"target_prompt": "a watercolor painting", "source_prompt": "Photo"}},
            {"id": 8, "type": "ZeconSampler", "pos": [1180, 40], "title": "Guided Sampler A",
             "widgets": {"sampler": "ddpm", "eta": 0.0, "seed": 0, "start": "renoise"}},
            {"id": 9, "type": "ZeconSampler", "pos": [1180, 400], "title": "Guided Sampler B",
             "widgets": {"sampler": "ddpm", "eta": 0.0, "seed": 0, "start": "renoise"}},
            {"id": 10, "type": "SaveImage", "pos": [1540, 40], "widgets": {"filename_prefix": "zecon/style_a"}},
            {"id": 11, "type": "SaveImage", "pos": [1540, 400], "widgets": {"filename_prefix": "zecon/style_b"}},
            {"id": 12, "type": "MarkdownNote", "pos": [800, 640], "title": "About this workflow",
             "widgets": {"text": NOTE_COMMON + "The **DDIM Inversion** runs once; both samplers start from its "
                                               "latent. Edit a style prompt or a **Guidance** weight and queue "
                                               "again: the inversion stays cached."}},
        ],
        "links": [
            (1, 0, 4, "image"), (2, 0, 4, "model"),
            (3, 0, 6, "clip"), (3, 0, 7, "clip"),
            (2, 0, 8, "model"), (4, 0, 8, "latent"), (6, 0, 8, "style"), (3, 0, 8, "clip"), (5, 0, 8, "guidance"),
            (2, 0, 9, "model"), (4, 0, 9, "latent"), (7, 0, 9, "style"), (3, 0, 9, "clip"), (5, 0, 9, "guidance"),
            (8, 0, 10, "images"), (9, 0, 11, "images"),
        ],
        "columns": [[1, 2, 3], [4, 5], [6, 7, 12], [8, 9], [10, 11]],
        "sizes": {1: [380, 380], 2: [380, 110], 3: [380, 110], 6: [340, 200], 7: [340, 200], 10: [300, 290],
                  11: [300, 290], 12: [340, 200]},
    },
    "zecon_faces_ffhq": {
        "title": "ZeCon faces (FFHQ model)",
        "description": "Style transfer for face portraits with the FFHQ 256x256 diffusion model (ILVR's "
                       "ffhq_10m.pt). Works best on aligned, centred faces.",
        "models": ["ffhq_10m.pt", "CLIP ViT-B-16 (openai)", "VGG19 (torchvision)"],
        "nodes": [
            {"id": 1, "type": "LoadImage", "pos": [40, 40], "widgets": {"image": SAMPLE}},
            {"id": 2, "type": "ZeconDiffusionLoader", "pos": [40, 420],
             "widgets": {"model_name": FFHQ, "precision": "auto"}, "models": [frontend_model("ffhq")]},
            {"id": 3, "type": "ZeconClipLoader", "pos": [40, 610],
             "widgets": {"clip_name": "ViT-B-16", "pretrained": "openai", "local_file": "none"}},
            {"id": 4, "type": "ZeconStyleTransfer", "pos": [440, 40],
             "widgets": {"target_prompt": "a 3D cartoon character in the style of Pixar", "source_prompt": "Photo",
                         "respacing": "50", "skip": 25, "size_policy": "resize", "size": 256, "seed": 0,
                         "sampler": "ddpm"}},
            {"id": 5, "type": "SaveImage", "pos": [860, 40], "widgets": {"filename_prefix": "zecon/faces"}},
            {"id": 6, "type": "MarkdownNote", "pos": [860, 420], "title": "About this workflow",
             "widgets": {"text": NOTE_COMMON + "The FFHQ model was trained on aligned 256x256 faces: crop your "
                                               "portrait to the face first. FFHQ is CC BY-NC-SA 4.0 (check the "
                                               "terms before commercial use)."}},
        ],
        "links": [(1, 0, 4, "image"), (2, 0, 4, "model"), (3, 0, 4, "clip"), (4, 0, 5, "images")],
        "columns": [[1, 2, 3], [4], [5, 6]],
        "sizes": {1: [380, 380], 2: [380, 110], 3: [380, 110], 4: [400, 620], 5: [360, 320], 6: [360, 240]},
    },
    "zecon_masked_style_image": {
        "title": "ZeCon region restyled after a style image and a prompt (ImageNet model)",
        "description": "Restyles only the masked region of a photo (Load Image's mask: the transparent part, or "
                       "what you paint in the mask editor) after a style image blended with a text prompt; outside "
                       "the mask the photo is kept.",
        "models": ["256x256_diffusion_uncond.pt", "CLIP ViT-B-16 (openai)", "VGG19 (torchvision)"],
        "nodes": [
            {"id": 1, "type": "LoadImage", "pos": [40, 40], "title": "Photo and region (mask)",
             "widgets": {"image": MASKED_SAMPLE}},
            {"id": 2, "type": "ZeconDiffusionLoader", "pos": [40, 420],
             "widgets": {"model_name": IMAGENET, "precision": "auto"}, "models": [frontend_model("imagenet")]},
            {"id": 3, "type": "ZeconClipLoader", "pos": [40, 610],
             "widgets": {"clip_name": "ViT-B-16", "pretrained": "openai", "local_file": "none"}},
            {"id": 4, "type": "LoadImage", "pos": [440, 40], "title": "Style image",
             "widgets": {"image": STYLE_SAMPLE}},
            {"id": 5, "type": "ZeconStyleImage", "pos": [440, 420], "widgets": {"crops": 8, "seed": 0}},
            {"id": 6, "type": "ZeconStylePrompt", "pos": [440, 600],
             "widgets": {"target_prompt": "a mosaic of coloured tiles", "source_prompt": "Photo"}},
            {"id": 7, "type": "ZeconStyleBlend", "pos": [820, 420], "widgets": {"weight": 0.3}},
            {"id": 8, "type": "ZeconStyleTransfer", "pos": [820, 40],
             "widgets": {"target_prompt": "", "source_prompt": "Photo", "respacing": "50", "skip": 25,
                         "size_policy": "resize", "size": 256, "seed": 0, "sampler": "ddpm", "feather": 8}},
            {"id": 9, "type": "SaveImage", "pos": [1240, 40], "widgets": {"filename_prefix": "zecon/masked_style"}},
            {"id": 10, "type": "MarkdownNote", "pos": [1240, 420], "title": "About this workflow",
             "widgets": {"text": NOTE_COMMON + "Only the **masked region** is restyled (right-click Load Image "
                                               "-> *Open in MaskEditor* to paint your own); `feather` softens its "
                                               "edge. The style comes from **Style Image** blended with the "
                                               "prompt: **Style Blend** `weight` is the prompt's share (0 = image "
                                               "only). The all-in-one node's own prompts are ignored while a "
                                               "style is connected."}},
        ],
        "links": [(1, 0, 8, "image"), (1, 1, 8, "mask"), (2, 0, 8, "model"), (3, 0, 8, "clip"),
                  (3, 0, 5, "clip"), (4, 0, 5, "images"), (3, 0, 6, "clip"),
                  (5, 0, 7, "style_a"), (6, 0, 7, "style_b"), (7, 0, 8, "style"), (8, 0, 9, "images")],
        "columns": [[1, 2, 3], [4, 5, 6], [8, 7], [9, 10]],
        "sizes": {1: [380, 380], 2: [380, 110], 3: [380, 110], 4: [380, 380], 6: [380, 200], 8: [400, 700],
                  9: [360, 320], 10: [360, 280]},
    },
    "zecon_sd15_latent": latent_workflow(
        "Stable Diffusion 1.5", "ZeCon restyle with your own SD 1.5 checkpoint (latent, SamplerCustomAdvanced)",
        "Restyles a photo with your Stable Diffusion 1.5 checkpoint: ZeCon Latent Inversion, then the stock "
        "SamplerCustomAdvanced with the ZeCon Guider (your prompt carries the style, the ZeCon losses on the UNet's "
        "features keep the content); 512x512, 25 steps at denoise 0.5.",
        SD15_CKPT, 0.25, "512x512 (0.25 megapixels)", "zecon/sd15_latent"),
    "zecon_sdxl_latent": latent_workflow(
        "SDXL", "ZeCon restyle with your own SDXL checkpoint (latent, SamplerCustomAdvanced)",
        "Restyles a photo with your SDXL checkpoint: ZeCon Latent Inversion, then the stock SamplerCustomAdvanced "
        "with the ZeCon Guider (your prompt carries the style, the ZeCon losses on the UNet's features keep the "
        "content); 1024x1024, 25 steps at denoise 0.5.",
        SDXL_CKPT, 1.0, "1024x1024 (1 megapixel)", "zecon/sdxl_latent"),
    "zecon_flux_latent": flow_workflow(
        "ZeCon restyle with Flux.1 dev (rectified flow, SamplerCustomAdvanced)",
        "Restyles a photo with Flux.1 dev: ZeCon Latent Inversion, then SamplerCustomAdvanced with the ZeCon "
        "Guider (your prompt with FluxGuidance carries the style, the ZeCon loss on the transformer's image "
        "tokens keeps the content); 1024x1024, 20 steps at denoise 0.5.",
        [{"id": 2, "type": "UNETLoader", "pos": [40, 420], "models": [FLUX_DEV_UNET],
          "widgets": {"unet_name": FLUX_DEV_UNET["name"], "weight_dtype": "fp8_e4m3fn"}},
         {"id": 3, "type": "DualCLIPLoader", "pos": [40, 560], "models": [FLUX_CLIP_L, FLUX_T5],
          "widgets": {"clip_name1": FLUX_CLIP_L["name"], "clip_name2": FLUX_T5["name"], "type": "flux"}},
         {"id": 4, "type": "VAELoader", "pos": [40, 760], "models": [FLUX_VAE],
          "widgets": {"vae_name": FLUX_VAE["name"]}}],
        None, {"type": "FluxGuidance", "widgets": {"guidance": 3.5}}, FLUX_FILES,
        flow_note("Flux.1 dev", FLUX_FILES, "1024x1024 (1 megapixel)",
                  "1 (Flux.1 dev is guidance-distilled: the prompt strength is **FluxGuidance** `guidance`, "
                  "about 3.5; cfg 1 is one model pass per step).",
                  "**Memory**: the diffusion model loads as fp8 (`weight_dtype` fp8_e4m3fn, about 12 GB); "
                  "`default` loads the full bf16 weights (24 GB). Flux.1 schnell works the same way "
                  "(`flux1-schnell.safetensors`, 4 steps, no FluxGuidance needed)."),
        1.0, 20, 0.5, "simple", "zecon/flux_latent"),
    "zecon_zimage_latent": flow_workflow(
        "ZeCon restyle with Z-Image Turbo (rectified flow, SamplerCustomAdvanced)",
        "Restyles a photo with Z-Image Turbo: ZeCon Latent Inversion, then SamplerCustomAdvanced with the ZeCon "
        "Guider (your prompt carries the style, the ZeCon loss on the transformer's image tokens keeps the "
        "content); 1024x1024, 10 steps at denoise 0.6, cfg 1 as the Turbo model is run.",
        [{"id": 2, "type": "UNETLoader", "pos": [40, 420], "models": [ZIMAGE_UNET],
          "widgets": {"unet_name": ZIMAGE_UNET["name"], "weight_dtype": "default"}},
         {"id": 3, "type": "CLIPLoader", "pos": [40, 560], "models": [ZIMAGE_TEXT],
          "widgets": {"clip_name": ZIMAGE_TEXT["name"], "type": "lumina2"}},
         {"id": 4, "type": "VAELoader", "pos": [40, 760], "models": [ZIMAGE_VAE],
          "widgets": {"vae_name": ZIMAGE_VAE["name"]}}],
        {"type": "ModelSamplingAuraFlow", "widgets": {"shift": 3.0}}, None, ZIMAGE_FILES,
        flow_note("Z-Image Turbo", ZIMAGE_FILES, "1024x1024 (1 megapixel)",
                  "1 (Z-Image Turbo is distilled for cfg 1, as ComfyUI's Z-Image template runs it: one model "
                  "pass per step; the negative prompt still gives the ZeCon features their text context).",
                  "**Schedule**: **ModelSamplingAuraFlow** shift 3 as in ComfyUI's Z-Image Turbo template; "
                  "Turbo is made for few steps (the template samples 9)."),
        1.0, 10, 0.6, "simple", "zecon/zimage_latent"),
}

INDEX_TEXT = "# ZeCon for ComfyUI workflows\n\n" + "\n".join(
    f"* **{w['title']}** (`{name}`): {w['description']}" for name, w in WORKFLOWS.items())


LAYOUT_JS = """
([columns, sizes]) => {
  const TITLE = LiteGraph.NODE_TITLE_HEIGHT || 30, GAP_X = 60, GAP_Y = 40;
  for (const [id, size] of Object.entries(sizes)) {
    const node = app.graph.getNodeById(Number(id)), min = node.computeSize();
    node.setSize([Math.max(size[0], min[0]), Math.max(size[1], min[1])]);
  }
  let x = 0;
  for (const column of columns) {
    let y = TITLE, width = 0;
    for (const id of column) {
      const node = app.graph.getNodeById(id);
      node.pos = [x, y];
      y += node.size[1] + TITLE + GAP_Y;
      width = Math.max(width, node.size[0]);
    }
    x += width + GAP_X;
  }
  app.graph.setDirtyCanvas(true, true);
}
"""


def build(fe, name: str, spec: dict | None = None) -> None:
    """Create the nodes and links with the frontend's own LiteGraph, then lay them out in columns
    (``spec``: a workflow as in WORKFLOWS; default WORKFLOWS[name])."""
    spec = spec or WORKFLOWS[name]
    # previews are kept per node id: without this a node inherits the image of the previous graph's node
    # with its id (the thumbnail would show it)
    fe.evaluate("() => { app.nodeOutputs = {}; }")
    fe.build_graph(spec["nodes"], spec["links"])
    fe.page.wait_for_timeout(1000)  # LoadImage grows when its preview has loaded
    fe.evaluate(LAYOUT_JS, [spec["columns"], spec.get("sizes", {})])
    # ComfyUI's model metadata on the nodes that need a file (as its own templates carry it): the frontend
    # offers the download of a missing file whose name is one of the node's widget values
    fe.evaluate("""(models) => { for (const [id, list] of models) {
                     const node = app.graph.getNodeById(id); node.properties = node.properties || {};
                     node.properties.models = list; } }""",
                [[n["id"], n["models"]] for n in spec["nodes"] if n.get("models")])
    if spec.get("bypass"):  # LiteGraph mode 4 = bypass (Ctrl+B): shipped off, one keystroke to turn on
        fe.evaluate("(ids) => { for (const id of ids) app.graph.getNodeById(id).mode = 4; "
                    "app.graph.setDirtyCanvas(true, true); }", spec["bypass"])
    set_id(fe, name)


def set_id(fe, name: str) -> None:
    """A fixed id per workflow (graph.clear() leaves the all-zero one)."""
    fe.evaluate("(id) => { app.graph.id = id; }", str(uuid.uuid5(uuid.NAMESPACE_URL, f"zecon-comfyui/{name}")))


def build_index(fe) -> None:
    fe.build_graph([{"id": 1, "type": "MarkdownNote", "pos": [40, 40], "title": "ZeCon workflows",
                     "widgets": {"text": INDEX_TEXT}}])
    fe.evaluate("""(entries) => { const n = app.graph.getNodeById(1); n.size = [720, 360];
                   app.graph.extra = app.graph.extra || {}; app.graph.extra.zecon_workflows = entries; }""",
                index_entries())
    set_id(fe, "index")


def index_entries() -> list[dict]:
    return [{"name": name, "title": w["title"], "description": w["description"], "models": w["models"],
             "thumbnail": f"{name}.jpg"} for name, w in WORKFLOWS.items()]


def save_thumbnail(png: Path, jpg: Path, width: int = THUMB_WIDTH) -> Path:
    with Image.open(png) as im:
        im = im.convert("RGB")
        if im.width > width:
            im = im.resize((width, round(im.height * width / im.width)), Image.LANCZOS)
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=85, optimize=True)
    jpg.write_bytes(buf.getvalue())
    return jpg


def write_workflow(fe, name: str, out_workflows: Path, out_api: Path, shots: Path,
                   spec: dict | None = None) -> tuple[list[Path], Path]:
    """Build one workflow and write its UI format (Export), thumbnail and API format (graphToPrompt().output),
    all from the same graph: ([the three paths], the full-size screenshot)."""
    out_workflows.mkdir(parents=True, exist_ok=True)
    out_api.mkdir(parents=True, exist_ok=True)
    build(fe, name, spec)
    fe.export_workflow(out_workflows / f"{name}.json")
    api = fe.api_prompt()
    (out_api / f"{name}.json").write_text(json.dumps(api, indent=2) + "\n")
    png = fe.screenshot(shots / f"{name}.png")
    save_thumbnail(png, out_workflows / f"{name}.jpg")
    return [out_workflows / f"{name}.json", out_workflows / f"{name}.jpg", out_api / f"{name}.json"], png


def write_all(fe, out_workflows: Path = zt.WORKFLOWS_DIR, out_api: Path = zt.API_DIR,
              docs_image: Path | None = zt.REPO / "docs" / "images" / "modular_graph.png",
              shots: Path = zt.ARTIFACTS / "workflow_builder") -> list[Path]:
    out_workflows.mkdir(parents=True, exist_ok=True)
    out_api.mkdir(parents=True, exist_ok=True)
    written = []
    for name in WORKFLOWS:
        paths, png = write_workflow(fe, name, out_workflows, out_api, shots)
        written += paths
        if name == "zecon_modular_imagenet" and docs_image is not None:
            docs_image.parent.mkdir(parents=True, exist_ok=True)
            docs_image.write_bytes(png.read_bytes())
            written.append(docs_image)
    build_index(fe)
    fe.export_workflow(out_workflows / "index.json")
    png = fe.screenshot(shots / "index.png")
    save_thumbnail(png, out_workflows / "index.jpg")
    written += [out_workflows / "index.json", out_workflows / "index.jpg"]
    return written


def main() -> int:
    import tempfile

    import browser
    import harness

    with tempfile.TemporaryDirectory(prefix="zecon_wf_") as tmp:
        tmp = Path(tmp)
        models = zt.write_models(tmp / "models")
        server = harness.ComfyServer(tmp / "comfy", custom_node_packs={zt.PACK_NAME: zt.PACK_DIR},
                                     model_folders={"zecon": models}, env=zt.SERVER_ENV)
        with server:
            zt.ensure_sample(server)
            with browser.ComfyFrontend(server) as fe:
                for path in write_all(fe):
                    print(path.relative_to(zt.REPO))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
