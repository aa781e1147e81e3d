"""ZeCon DDIM Inversion: the source image(s) taken to the latent the guided sampler starts from."""

from __future__ import annotations

import dataclasses

from comfy_api.latest import io

from ...zecon_core.files.images import SIZE_POLICIES, from_bhwc, prepare_source, to_bhwc
from ...zecon_core.pixel.pipeline import Inversion, invert
from .. import validation as V
from ..device import on_device, plain
from ..progress import NodeProgress
from ..types import CATEGORY, ZeconLatent, ZeconModel

RESPACING_TOOLTIP = ("Diffusion steps, as guided-diffusion's timestep_respacing: '50' (the original), sections like "
                     "'10,20', or 'ddim25'. More steps: slower, finer.")
SKIP_TOOLTIP = ("Steps skipped at the noisy end: inversion and sampling each run steps - skip steps. Higher keeps "
                "more of the source's structure (the original: 25 of 50).")
POLICY_TOOLTIP = ("How the image is sized for the UNet: resize = size x size (the original; squashes non-square "
                  "images), fit_short_side = short side to size, aspect ratio kept, both sides multiples of 32, "
                  "as_is = unchanged (both sides must be multiples of 32).")
SIZE_TOOLTIP = "Target size in pixels for resize / fit_short_side (multiples of 32; the models were trained at 256)."


def size_inputs() -> list:
    return [
        io.Combo.Input("size_policy", options=list(SIZE_POLICIES), default="resize", tooltip=POLICY_TOOLTIP),
        io.Int.Input("size", default=256, min=64, max=2048, step=32, tooltip=SIZE_TOOLTIP),
    ]


def step_inputs() -> list:
    return [
        io.String.Input("respacing", default="50", tooltip=RESPACING_TOOLTIP),
        io.Int.Input("skip", default=25, min=0, max=4000, tooltip=SKIP_TOOLTIP),
    ]


def prepared_source(image, size_policy: str, size: int):
    """ComfyUI IMAGE [B, H, W, C] in [0, 1] -> [B, 3, H', W'] in [-1, 1] at the policy's size."""
    return prepare_source(from_bhwc(plain(image)), size_policy, size)


def invert_on_device(model, source, respacing: str, skip: int, callback) -> Inversion:
    b, _, h, w = source.shape
    with on_device(model, height=h, width=w, batch=b):
        inv = invert(model, source, respacing=respacing, skip=skip, callback=callback)
        # keep it on the CPU between nodes; the sampler moves it to its device
        return dataclasses.replace(inv, latent=inv.latent.cpu(), source=inv.source.cpu())


class ZeconInversion(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ZeconInversion",
            display_name="ZeCon DDIM Inversion",
            category=CATEGORY,
            description="Brings the source image(s) to the size policy's size and DDIM-inverts them over "
                        "steps - skip steps. The latent keeps the source image and the schedule, so prompts and "
                        "loss weights can change without running this again.",
            inputs=[
                ZeconModel.Input("model", tooltip="Diffusion model from ZeCon Diffusion Loader."),
                io.Image.Input("image", tooltip="Source image(s); a batch is inverted in one go."),
                *step_inputs(),
                *size_inputs(),
            ],
            outputs=[
                ZeconLatent.Output("latent", display_name="latent",
                                   tooltip="Inverted latent with its source image and schedule (ZECON_LATENT)."),
                io.Image.Output("source_image", display_name="source_image",
                                tooltip="The source as the model sees it (after the size policy)."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, input_types=None, **values) -> bool:
        respacing = values.get("respacing")
        _, bad_respacing = V.schedule(respacing)
        return V.result(*V.schema_errors(cls, values, input_types), bad_respacing,
                        None if bad_respacing else V.skip(respacing, values.get("skip")),
                        V.combo("size_policy", values.get("size_policy"), SIZE_POLICIES))

    @classmethod
    def execute(cls, model, image, respacing, skip, size_policy, size) -> io.NodeOutput:
        source = prepared_source(image, size_policy, size)
        s, bad = V.schedule(respacing)
        if bad:
            raise ValueError(bad)
        steps = s.num_steps - skip
        progress = NodeProgress(steps, cls.hidden.unique_id)
        inv = invert_on_device(model, source, respacing, skip, progress.phase(steps))
        return io.NodeOutput(inv, to_bhwc(inv.source))
