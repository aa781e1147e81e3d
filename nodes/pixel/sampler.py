"""ZeCon Guided Sampler: the reverse process from an inversion, steered by the ZeCon losses."""

from __future__ import annotations

from comfy_api.latest import io

from ...zecon_core.files.images import to_bhwc
from ...zecon_core.guidance.mask import DEFAULT_FEATHER
from ...zecon_core.pixel.pipeline import START_MODES, sample_guided
from ...zecon_core.pixel.sampler import SAMPLERS
from .. import validation as V
from ..device import on_device, plain
from ..progress import NodeProgress
from ..types import CATEGORY, ZeconClip, ZeconGuidanceType, ZeconLatent, ZeconModel, ZeconStyle

SEED_MAX = 0xFFFFFFFFFFFFFFFF


def mask_inputs() -> list:
    return [
        io.Mask.Input("mask", optional=True,
                      tooltip="Optional region to restyle (ComfyUI MASK, 1 = restyle, e.g. Load Image's mask or "
                              "the mask editor; any size, resized to the image). Outside it the picture keeps the "
                              "source. One mask for all images, or one per image. Unconnected: the whole picture."),
        io.Int.Input("feather", default=DEFAULT_FEATHER, min=0, max=256, optional=True,
                     tooltip="Width in pixels (at the working size) of the soft edge of the mask, so the seam does "
                             "not show. Only used with a mask."),
    ]


def seed_input():
    return io.Int.Input("seed", default=0, min=0, max=SEED_MAX, control_after_generate=True,
                        tooltip="Random seed of the sampler noise, the crops and the augmentations; image b of a "
                                "batch uses seed + b. Same seed, same settings: same image.")


def sampler_input():
    return io.Combo.Input("sampler", options=list(SAMPLERS), default="ddpm",
                          tooltip="Reverse process: ddpm (the original; guidance shifts the mean of each ancestral "
                                  "step) or ddim (guidance shifts the predicted noise; deterministic when eta = 0).")


def seeds_for(seed: int, batch: int) -> list[int]:
    return [(int(seed) + b) % (SEED_MAX + 1) for b in range(batch)]


def run_sampler(model, latent, style, clip, bundle, *, sampler, eta, seed, start, callback, mask=None,
                feather=DEFAULT_FEATHER):
    """sample_guided on ComfyUI's device; returns ComfyUI IMAGE [B, H, W, 3] in [0, 1] on the CPU."""
    cfg = bundle.config
    if cfg.zecon > 0:
        V.check_layers_fit(model, cfg.zecon_layers)
    b, _, h, w = latent.latent.shape
    clip = clip if cfg.uses_clip else None
    with on_device(model, clip, bundle.vgg, height=h, width=w, batch=b, guidance=cfg, clip=clip):
        out = sample_guided(model, latent, style, clip, cfg, vgg_model=bundle.vgg, sampler=sampler, eta=eta,
                            seed=seeds_for(seed, len(latent)), start=start, callback=callback,
                            mask=None if mask is None else plain(mask), feather=feather)
        return to_bhwc(out)


def check_same_model(model, latent, allow_other_model: bool) -> None:
    """Refuse a latent inverted with another diffusion model unless the user opted in."""
    if latent.model_name != model.name and not allow_other_model:
        raise ValueError(
            f"latent: it was inverted with the diffusion model {latent.model_name!r}, but this sampler's model is "
            f"{model.name!r}. Connect the same ZeCon Diffusion Loader to ZeCon DDIM Inversion and to this sampler, "
            f"or set allow_other_model to sample it with {model.name!r} anyway.")


class ZeconSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ZeconSampler",
            display_name="ZeCon Guided Sampler",
            category=CATEGORY,
            description="Runs the reverse diffusion from the inverted latent; every step is steered by the "
                        "guidance losses towards the style prompt while keeping the source's content. Shows a "
                        "preview of the predicted image at every step.",
            inputs=[
                ZeconModel.Input("model", tooltip="Diffusion model (the one the latent was inverted with)."),
                ZeconLatent.Input("latent", tooltip="Inverted source from ZeCon DDIM Inversion."),
                ZeconStyle.Input("style", tooltip="The style: ZeCon Style Prompt, Style Image or Style Blend."),
                ZeconClip.Input("clip", tooltip="The CLIP model that encoded the style (scores the output)."),
                ZeconGuidanceType.Input("guidance", tooltip="Loss weights and settings from ZeCon Guidance."),
                sampler_input(),
                io.Float.Input("eta", default=0.0, min=0.0, max=1.0, step=0.01, round=0.001,
                               tooltip="DDIM only: noise added per step (0 = deterministic DDIM, 1 = DDPM-like)."),
                seed_input(),
                io.Combo.Input("start", options=list(START_MODES), default="renoise",
                               tooltip="ddpm only: renoise = start from the source re-noised with the inverted "
                                       "latent as noise (the original); latent = start from the inverted latent "
                                       "itself. ddim always starts from the latent."),
                *mask_inputs(),
                io.Boolean.Input("allow_other_model", default=False, optional=True,
                                 tooltip="Advanced: sample a latent that was inverted with another diffusion model "
                                         "than the one connected here. Off: such a graph is refused with both model "
                                         "names, because the other model does not reproduce the source from that "
                                         "latent (the result is mostly noise)."),
            ],
            outputs=[io.Image.Output("image", display_name="image",
                                     tooltip="The stylised image(s), at the size chosen at inversion.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, input_types=None, **values) -> bool:
        return V.result(*V.schema_errors(cls, values, input_types), V.combo("sampler", values.get("sampler"), SAMPLERS),
                        V.combo("start", values.get("start"), START_MODES))

    @classmethod
    def execute(cls, model, latent, style, clip, guidance, sampler, eta, seed, start, mask=None,
                feather=DEFAULT_FEATHER, allow_other_model=False) -> io.NodeOutput:
        check_same_model(model, latent, allow_other_model)
        steps = latent.start + 1
        progress = NodeProgress(steps, cls.hidden.unique_id)
        image = run_sampler(model, latent, style, clip, guidance, sampler=sampler, eta=eta, seed=seed,
                            start=start, callback=progress.phase(steps), mask=mask, feather=feather)
        return io.NodeOutput(image)
