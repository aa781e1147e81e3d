"""ZeCon Style Transfer: the whole pipeline in one node (style prompt, inversion, guided sampling)."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ...zecon_core.guidance.core import GuidanceConfig
from ...zecon_core.files.images import SIZE_POLICIES
from ...zecon_core.guidance.style import encode_style
from ...zecon_core.pixel.sampler import SAMPLERS
from .. import validation as V
from ..guidance import make_bundle, weight_input
from .inversion import invert_on_device, prepared_source, size_inputs, step_inputs
from ..progress import NodeProgress
from .sampler import DEFAULT_FEATHER, mask_inputs, run_sampler, sampler_input, seed_input
from ..types import CATEGORY, ZeconClip, ZeconGuidanceType, ZeconModel, ZeconStyle

MAIN_WEIGHTS = ("clip_global_patch", "clip_dir_patch", "zecon", "mse", "vgg")


class ZeconStyleTransfer(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ZeconStyleTransfer",
            display_name="ZeCon Style Transfer",
            category=CATEGORY,
            description="All in one: restyles the image after the target prompt (style prompt, DDIM inversion and "
                        "guided sampling in one node). Use the separate nodes to change prompts or weights without "
                        "inverting again.",
            inputs=[
                io.Image.Input("image", tooltip="Source image(s)."),
                ZeconModel.Input("model", tooltip="Diffusion model from ZeCon Diffusion Loader."),
                ZeconClip.Input("clip", tooltip="CLIP model from ZeCon CLIP Loader."),
                io.String.Input("target_prompt", multiline=True, default="",
                                placeholder="the style to apply, e.g. a watercolor painting",
                                tooltip="The style to transfer, as text, e.g. 'a sketch with crayon'."),
                io.String.Input("source_prompt", default="Photo",
                                tooltip="What the source image is (the paper uses 'Photo')."),
                *step_inputs(),
                *size_inputs(),
                seed_input(),
                sampler_input(),
                *(weight_input(name) for name in MAIN_WEIGHTS),
                io.Int.Input("n_patch", default=GuidanceConfig().n_patch, min=1, max=512,
                             tooltip="Random crops per image and step for the patch CLIP losses."),
                ZeconGuidanceType.Input("guidance", optional=True,
                                        tooltip="Optional ZeCon Guidance: when connected, all its weights and "
                                                "settings are used and the weights and n_patch here are ignored."),
                ZeconStyle.Input("style", optional=True,
                                 tooltip="Optional style from ZeCon Style Image, Style Prompt or Style Blend: when "
                                         "connected it is used and the prompts here are ignored."),
                *mask_inputs(),
            ],
            outputs=[io.Image.Output("image_out", display_name="image",
                                     tooltip="The stylised image(s), at the size chosen by the size policy.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, input_types=None, **values) -> bool:
        respacing = values.get("respacing")
        _, bad_respacing = V.schedule(respacing)
        return V.result(*V.schema_errors(cls, values, input_types), bad_respacing,
                        None if bad_respacing else V.skip(respacing, values.get("skip")),
                        V.combo("size_policy", values.get("size_policy"), SIZE_POLICIES),
                        V.combo("sampler", values.get("sampler"), SAMPLERS))

    @classmethod
    def execute(cls, image, model, clip, target_prompt, source_prompt, respacing, skip, size_policy, size, seed,
                sampler, clip_global_patch, clip_dir_patch, zecon, mse, vgg, n_patch, guidance=None, style=None,
                mask=None, feather=DEFAULT_FEATHER) -> io.NodeOutput:
        node_id = cls.hidden.unique_id
        if guidance is None:
            config = GuidanceConfig().replace(clip_global_patch=clip_global_patch, clip_dir_patch=clip_dir_patch,
                                              zecon=zecon, mse=mse, vgg=vgg, n_patch=n_patch)
            guidance = make_bundle(config, node_id=node_id)
        source = prepared_source(image, size_policy, size)
        s, bad = V.schedule(respacing)
        if bad:
            raise ValueError(bad)
        steps = s.num_steps - skip
        progress = NodeProgress(2 * steps, node_id)
        if style is None and guidance.config.uses_clip:
            with torch.inference_mode(False):
                style = encode_style(clip, target_prompt, source_prompt)
        latent = invert_on_device(model, source, respacing, skip, progress.phase(steps))
        out = run_sampler(model, latent, style, clip, guidance, sampler=sampler, eta=0.0, seed=seed, start="renoise",
                          callback=progress.phase(steps), mask=mask, feather=feather)
        return io.NodeOutput(out)
