"""ZeCon Guidance: every loss weight and setting of the guided sampler, plus the VGG layers."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..zecon_core.guidance.core import GuidanceConfig
from . import validation as V
from .loaders import VGG_AUTO, load_vgg_choice, model_name_error, vgg_options
from .types import CATEGORY, GuidanceBundle, ZeconGuidanceType

D = GuidanceConfig()  # the original README's defaults
WEIGHT_MAX = 1e7

WEIGHT_TOOLTIPS = {
    "clip_global": "Weight of the global CLIP loss: the whole (augmented) output image against the target text.",
    "clip_global_patch": "Weight of the patch CLIP loss: random crops of the output against the target text.",
    "clip_dir": "Weight of the directional CLIP loss: the image change source->output follows the text change "
                "source prompt->target prompt.",
    "clip_dir_patch": "Weight of the patch directional CLIP loss (directional loss on random crops).",
    "zecon": "Weight of the zero-shot contrastive loss on UNet features: keeps the content of the source "
             "(the paper's main idea).",
    "mse": "Weight of the pixel MSE to the (re-noised) source: keeps colours and layout.",
    "vgg": "Weight of the VGG19 perceptual loss to the source. 0 skips loading VGG.",
    "range": "Weight of the range loss: keeps predicted pixels inside [-1, 1].",
}


def weight_input(name: str, default: float | None = None):
    return io.Float.Input(name, default=getattr(D, name) if default is None else default, min=0.0, max=WEIGHT_MAX,
                          step=10.0, round=0.001, tooltip=WEIGHT_TOOLTIPS[name])


def vgg_file_input():
    return io.Combo.Input(
        "vgg_file", options=vgg_options(), default=VGG_AUTO, optional=True,
        tooltip="Where the VGG19 layers come from when the vgg weight is above 0. auto: "
                "vgg19_zecon_layers.safetensors or torchvision's vgg19-dcbb9e9d.pth in models/zecon, downloaded "
                "(548 MB, once; the 3 layers used are then kept as a 450 KB file) on first use. Or a VGG19 "
                "state dict file from models/zecon.")


def vgg_file_error(vgg_file) -> str | None:
    if vgg_file is None or vgg_file == VGG_AUTO:
        return None
    return V.combo("vgg_file", vgg_file, vgg_options()) or model_name_error(vgg_file, "vgg", "vgg_file")


def make_bundle(config: GuidanceConfig, vgg_file: str = VGG_AUTO, node_id=None) -> GuidanceBundle:
    """The config plus the VGG layers, loaded only when the VGG loss is on."""
    if config.vgg <= 0:
        return GuidanceBundle(config)
    with torch.inference_mode(False):
        vgg, name = load_vgg_choice(vgg_file or VGG_AUTO, node_id)
    return GuidanceBundle(config, vgg, name)


class ZeconGuidance(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ZeconGuidance",
            display_name="ZeCon Guidance",
            category=CATEGORY,
            description="Loss weights and settings of the guided sampler (the paper's eq. 8). Defaults are the "
                        "original README's. Changing them re-runs only the sampler, never the inversion.",
            inputs=[
                *(weight_input(name) for name in WEIGHT_TOOLTIPS),
                io.Int.Input("n_patch", default=D.n_patch, min=1, max=512,
                             tooltip="Random crops (patch losses) or augmented views (global losses) per image "
                                     "and step."),
                io.Float.Input("patch_min", default=D.patch_min, min=0.001, max=1.0, step=0.01, round=0.001,
                               tooltip="Smallest crop, as a fraction of the image side."),
                io.Float.Input("patch_max", default=D.patch_max, min=0.001, max=1.0, step=0.01, round=0.001,
                               tooltip="Largest crop, as a fraction of the image side (>= patch_min)."),
                io.Float.Input("aug_prob", default=D.aug_prob, min=0.0, max=1.0, step=0.05, round=0.01,
                               tooltip="Probability of the affine and perspective augmentations of each view."),
                io.String.Input("zecon_layers", default=",".join(str(i) for i in D.zecon_layers),
                                tooltip="UNet input blocks whose features the ZeCon loss compares, comma separated "
                                        "(the original: 0,2,5,8,11)."),
                io.Int.Input("zecon_patches", default=D.zecon_patches, min=1, max=65536,
                             tooltip="Feature positions sampled per layer for the contrastive loss."),
                io.Float.Input("nce_temperature", default=D.nce_temperature, min=0.001, max=10.0, step=0.01,
                               round=0.001, tooltip="Temperature of the contrastive (PatchNCE) loss."),
                io.Int.Input("mse_max_t", default=D.mse_max_t, min=0, max=1000,
                             tooltip="MSE applies while the respaced step index is below this (the original's "
                                     "t < 700; with 50 steps it is always on)."),
                io.Int.Input("vgg_max_t", default=D.vgg_max_t, min=0, max=1000,
                             tooltip="VGG applies while the respaced step index is below this (the original's "
                                     "t < 800)."),
                io.Boolean.Input("shared_views", default=D.shared_views,
                                 tooltip="Global and directional CLIP losses share the same random views (CLIP "
                                         "encodes them once: faster, losses correlated). Off = the original."),
                vgg_file_input(),
            ],
            outputs=[ZeconGuidanceType.Output("guidance", display_name="guidance",
                                              tooltip="Loss weights and settings, with the VGG layers when the VGG "
                                                      "loss is on (ZECON_GUIDANCE).")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, input_types=None, **values) -> bool:
        patch_min, patch_max = values.get("patch_min"), values.get("patch_max")
        errors = [*V.schema_errors(cls, values, input_types), V.layers(values.get("zecon_layers")),
                  vgg_file_error(values.get("vgg_file", VGG_AUTO))]
        bounds_ok = not any(e and e.startswith(("patch_min:", "patch_max:")) for e in errors)
        if bounds_ok and patch_min is not None and patch_max is not None:
            if not 0 < patch_min <= patch_max:
                errors.append(f"patch_min/patch_max: need 0 < patch_min <= patch_max, got {patch_min}, {patch_max}")
        return V.result(*errors)

    @classmethod
    def execute(cls, clip_global, clip_global_patch, clip_dir, clip_dir_patch, zecon, mse, vgg, range, n_patch,
                patch_min, patch_max, aug_prob, zecon_layers, zecon_patches, nce_temperature, mse_max_t,
                vgg_max_t, shared_views, vgg_file=VGG_AUTO) -> io.NodeOutput:
        config = GuidanceConfig(
            clip_global=clip_global, clip_global_patch=clip_global_patch, clip_dir=clip_dir,
            clip_dir_patch=clip_dir_patch, zecon=zecon, mse=mse, vgg=vgg, range=range, n_patch=n_patch,
            patch_min=patch_min, patch_max=patch_max, aug_prob=aug_prob,
            zecon_layers=V.parse_layers(zecon_layers), zecon_patches=zecon_patches,
            nce_temperature=nce_temperature, mse_max_t=mse_max_t, vgg_max_t=vgg_max_t,
            shared_views=bool(shared_views))
        return io.NodeOutput(make_bundle(config, vgg_file, cls.hidden.unique_id))
