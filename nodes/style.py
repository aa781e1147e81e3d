"""ZeCon Style Prompt: target and source prompts encoded once by CLIP."""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..zecon_core.guidance.style import encode_style
from .types import CATEGORY, ZeconClip, ZeconStyle


def split_targets(text: str, per_line: bool) -> list[str]:
    if not per_line:
        return [text]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines or [text]


class ZeconStylePrompt(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ZeconStylePrompt",
            display_name="ZeCon Style Prompt",
            category=CATEGORY,
            description="Encodes the target style prompt and the source prompt with CLIP, once. ComfyUI keeps the "
                        "result until a prompt or the CLIP model changes.",
            inputs=[
                ZeconClip.Input("clip", tooltip="CLIP model from ZeCon CLIP Loader (the sampler must get the same one)."),
                io.String.Input("target_prompt", multiline=True, default="",
                                placeholder="the style to apply, e.g. a watercolor painting",
                                tooltip="The style to transfer, as text, e.g. 'a sketch with crayon'. Weighted blend of "
                                        "prompts: only (prompt:weight) groups, e.g. '(a watercolor painting:1.2) "
                                        "(a pencil sketch:0.8)' (weights >= 0, normalised to sum 1)."),
                io.String.Input("source_prompt", default="Photo",
                                tooltip="What the source image is; the directional CLIP losses move from this text "
                                        "towards the target (the paper uses 'Photo')."),
                io.Boolean.Input("per_line", default=False, optional=True,
                                 tooltip="Each non-empty line of target_prompt is a separate style, one per image of "
                                         "the batch (line 1 for image 1, ...). Off: the whole text is one style for "
                                         "every image."),
            ],
            outputs=[ZeconStyle.Output("style", display_name="style",
                                       tooltip="Encoded prompts (ZECON_STYLE) for the guided sampler.")],
        )

    @classmethod
    def execute(cls, clip, target_prompt, source_prompt, per_line=False) -> io.NodeOutput:
        with torch.inference_mode(False):
            style = encode_style(clip, split_targets(target_prompt, per_line), source_prompt)
        return io.NodeOutput(style)
