"""ZeCon Style Image: a style taken from one or several pictures (their CLIP image embedding)."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..zecon_core.files.images import from_bhwc
from ..zecon_core.guidance.style import encode_style_images
from . import validation as V
from .device import plain
from .types import CATEGORY, ZeconClip, ZeconStyle


class ZeconStyleImage(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ZeconStyleImage",
            display_name="ZeCon Style Image",
            category=CATEGORY,
            description="Takes the style from pictures instead of words: the target is the mean CLIP image "
                        "embedding of the style image(s). The directional losses then move from the CLIP image "
                        "embedding of the picture being restyled towards it. Usable wherever a Style Prompt is.",
            inputs=[
                ZeconClip.Input("clip", tooltip="CLIP model from ZeCon CLIP Loader (the sampler must get the same one)."),
                io.Image.Input("images", tooltip="One or several style images (any size, at least 32 px a side; "
                                                 "grey is used as grey RGB, alpha is ignored)."),
                io.Int.Input("crops", default=0, min=0, max=256, optional=True,
                             tooltip="Also average over this many random augmented crops of each style image (the "
                                     "crops the patch losses take): the style of its textures rather than of the "
                                     "whole composition. 0: the whole images only."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFF, optional=True,
                             tooltip="Seed of the crops (image k uses seed + k); unused when crops is 0."),
                io.Boolean.Input("per_image", default=False, optional=True,
                                 tooltip="Each style image is a separate style, one per image of the source batch "
                                         "(style image 1 for image 1, ...). Off: one style, the mean of all of them."),
            ],
            outputs=[ZeconStyle.Output("style", display_name="style",
                                       tooltip="The image style (ZECON_STYLE), for the sampler, the all-in-one node "
                                               "or a Style Blend.")],
        )

    @classmethod
    def validate_inputs(cls, input_types=None, **values) -> bool:
        return V.result(*V.schema_errors(cls, values, input_types))

    @classmethod
    def execute(cls, clip, images, crops=0, seed=0, per_image=False) -> io.NodeOutput:
        with torch.inference_mode(False):
            style = encode_style_images(clip, from_bhwc(plain(images)), crops=crops, seed=seed, per_image=per_image)
        return io.NodeOutput(style)
