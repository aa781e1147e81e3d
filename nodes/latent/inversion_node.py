"""ZeCon Latent Inversion node: MODEL + LATENT -> the inverted LATENT and the SIGMAS that continue from it.

The inversion is ``zecon_core.latent.invert`` (Euler on the probability-flow ODE, up the noise
levels) run as a KSAMPLER function through ComfyUI's own CFGGuider, so the model is loaded,
patched and conditioned exactly as for sampling, with ComfyUI's progress bar and previews.

The same with core nodes: BasicScheduler (steps / denoise) -> FlipSigmas -> SamplerCustomAdvanced
(DisableNoise, CFGGuider at cfg 1, KSamplerSelect euler) on the VAE-encoded picture.
"""

from __future__ import annotations

import math

import comfy.samplers
import latent_preview
import torch
from comfy_api.latest import io

from ...zecon_core import flow
from ...zecon_core.latent import invert
from .. import validation as V
from ..flow import guidance as FG
from ..progress import tell


def inversion_sampler(model, x, sigmas, extra_args=None, callback=None, disable=None, rectified_flow=False):
    """A k-diffusion sampler function (ComfyUI's KSAMPLER) that runs the inversion up ``sigmas``
    (``rectified_flow``: ``zecon_core.flow.invert``, which refuses levels reaching σ = 1)."""
    extra_args = extra_args or {}

    def denoise(xx, sigma):
        return model(xx, sigma, **extra_args)

    def report(step, total, xx, den):
        if callback is not None:
            callback({"x": xx, "i": step - 1, "sigma": sigmas[step], "sigma_hat": sigmas[step], "denoised": den})

    return (flow.invert if rectified_flow else invert)(denoise, x, sigmas, report)


def inversion_sigmas(model, steps: int, denoise: float, scheduler: str) -> torch.Tensor:
    """BasicScheduler's sigmas for ``steps`` at ``denoise``: from the start level down to 0."""
    total = int(steps / denoise)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, total).cpu()
    return sigmas[-(steps + 1):]


def check_sigmas(sigmas: torch.Tensor, made_by: str = "sigmas") -> None:
    """Refuse a schedule the inversion cannot run up; ``made_by`` names the input that made it."""
    if sigmas.ndim != 1 or sigmas.shape[0] < 2:
        raise ValueError(f"sigmas: need at least two noise levels (one step), got shape {tuple(sigmas.shape)}")
    if not torch.isfinite(sigmas).all():
        bad = [i for i, s in enumerate(sigmas.tolist()) if not math.isfinite(s)]
        raise ValueError(f"{made_by}: the schedule has a NaN or infinite noise level (at position {bad[0]} of "
                         f"{sigmas.shape[0]}): {[round(s, 4) for s in sigmas.tolist()]}")
    if not (sigmas[1:] < sigmas[:-1]).all():
        raise ValueError("sigmas: expected a descending schedule as BasicScheduler / SplitSigmas give it "
                         "(the inversion runs it backwards)")
    if float(sigmas[-1]) != 0.0:
        raise ValueError(f"sigmas: the schedule must end at 0 (the clean picture), it ends at {float(sigmas[-1]):.4g}; "
                         f"give the low part of SplitSigmas (low_sigmas), which ends at 0")


class ZeconLatentInversion(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ZeconLatentInversion",
            display_name="ZeCon Latent Inversion",
            category="ZeCon",
            description="Deterministic inversion of a VAE-encoded picture with your SD or rectified-flow model "
                        "(DDIM / Euler on the probability-flow ODE, up the flipped sigmas): gives the noisy latent that the model would turn back into the "
                        "picture, and the sigmas that continue from it. Sample with SamplerCustomAdvanced, "
                        "DisableNoise and the ZeCon Guider.",
            inputs=[
                io.Model.Input("model", tooltip="The model you sample with: SD (ε / v) or rectified flow (Flux.1 / .2, Chroma, SD3, "
                                                "Qwen-Image, Z-Image, HiDream; their schedules must stay below σ = 1, "
                                                "so denoise < 1)."),
                io.Latent.Input("latent", tooltip="VAE Encode of the source picture (a batch is fine)."),
                io.Conditioning.Input("conditioning", tooltip="Prompt for the inversion: an empty prompt or a plain "
                                                              "description of the source picture."),
                io.Float.Input("cfg", default=1.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Guidance scale of the inversion; keep 1 (higher values drift away from "
                                       "the picture)."),
                io.Int.Input("steps", default=25, min=1, max=10000,
                             tooltip="Steps from the picture to the start level (the same steps sample back)."),
                io.Float.Input("denoise", default=0.5, min=0.01, max=1.0, step=0.01, round=0.001,
                               tooltip="How far into the noise: 0.5 = half of the schedule, as the original's skip 25 "
                                       "of 50. More = stronger restyling, less of the source."),
                io.Combo.Input("scheduler", options=list(comfy.samplers.SCHEDULER_NAMES), default="normal",
                               tooltip="Noise schedule (as in BasicScheduler); sample with the same one."),
                io.Sigmas.Input("sigmas", optional=True,
                                tooltip="Optional: your own descending schedule ending at 0 (e.g. the low part of "
                                        "SplitSigmas); replaces steps, denoise and scheduler."),
            ],
            outputs=[
                io.Latent.Output("inverted_latent", display_name="inverted_latent",
                                 tooltip="The inverted latent: connect to SamplerCustomAdvanced's latent_image "
                                         "(with DisableNoise)."),
                io.Sigmas.Output("sigmas_out", display_name="sigmas",
                                 tooltip="The sigmas that continue from the inverted latent down to 0."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, input_types=None, **values) -> bool:
        return V.result(*V.schema_errors(cls, values, input_types),
                        V.combo("scheduler", values.get("scheduler"), comfy.samplers.SCHEDULER_NAMES))

    @classmethod
    def execute(cls, model, latent, conditioning, cfg, steps, denoise, scheduler, sigmas=None) -> io.NodeOutput:
        V.result(*V.schema_errors(cls, dict(cfg=cfg, steps=steps, denoise=denoise, scheduler=scheduler), None))
        made_by = "sigmas"
        rectified_flow = FG.guided_family(model) != FG.SD
        given = sigmas is not None
        if sigmas is None:
            sigmas = inversion_sigmas(model, steps, denoise, scheduler)
            made_by = f"scheduler: {scheduler} at {steps} step(s), denoise {denoise}"
        check_sigmas(sigmas, made_by)
        samples = latent["samples"]
        FG.check_source(samples, model, "latent")
        if rectified_flow:
            try:
                flow.check_flow_sigmas(sigmas)
            except ValueError as e:
                raise ValueError(str(e) if given else f"denoise: {denoise} starts the inversion at pure noise; "
                                                      f"{e}") from None
        if latent.get("noise_mask") is not None:
            tell("latent: its noise mask (SetLatentNoiseMask) is not used here: the whole picture is inverted, and "
                 "the inverted latent carries no noise mask. To restyle only that region, give the noise-masked "
                 "LATENT to the ZeCon Guider's source (or the MASK to its mask input).", cls.hidden.unique_id)
        guider = comfy.samplers.CFGGuider(model)
        guider.set_conds(conditioning, conditioning)
        guider.set_cfg(cfg)
        up = sigmas.flip(0)
        callback = latent_preview.prepare_callback(model, up.shape[0] - 1)
        sampler = comfy.samplers.KSAMPLER(inversion_sampler, extra_options={"rectified_flow": rectified_flow})
        out = guider.sample(torch.zeros_like(samples), samples, sampler, up,
                            callback=callback, disable_pbar=True, seed=0)
        inverted = {k: v for k, v in latent.items() if k != "noise_mask"}
        inverted["samples"] = out.to(samples.device)
        return io.NodeOutput(inverted, sigmas)
