"""ZeCon Style Blend: a weighted mix of two styles (text, image or blends)."""

from __future__ import annotations

from comfy_api.latest import io

from ..zecon_core.guidance.style import blend_styles
from . import validation as V
from .types import CATEGORY, ZeconStyle


class ZeconStyleBlend(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ZeconStyleBlend",
            display_name="ZeCon Style Blend",
            category=CATEGORY,
            description="Mixes two styles: (1 - weight) x style_a + weight x style_b, applied to the CLIP "
                        "embeddings of both (targets and sources), so text and image styles mix. Chain blends "
                        "for more styles.",
            inputs=[
                ZeconStyle.Input("style_a", tooltip="The first style (Style Prompt, Style Image or another blend)."),
                ZeconStyle.Input("style_b", tooltip="The second style; both must come from the same CLIP model."),
                io.Float.Input("weight", default=0.5, min=0.0, max=1.0, step=0.01, round=0.001,
                               tooltip="Share of style_b: 0 = only style_a, 1 = only style_b, 0.5 = half each."),
            ],
            outputs=[ZeconStyle.Output("style", display_name="style", tooltip="The blended style (ZECON_STYLE).")],
        )

    @classmethod
    def validate_inputs(cls, input_types=None, **values) -> bool:
        return V.result(*V.schema_errors(cls, values, input_types))

    @classmethod
    def execute(cls, style_a, style_b, weight) -> io.NodeOutput:
        return io.NodeOutput(blend_styles([(style_a, 1.0 - weight), (style_b, weight)]))
