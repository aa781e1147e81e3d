"""ZeCon Guider node: MODEL + conditioning + source LATENT (+ CLIP style, loss weights) -> GUIDER."""

from __future__ import annotations

import dataclasses

from comfy_api.latest import io

from ...zecon_core.guidance.core import CLIP_LOSSES, GuidanceConfig
from ...zecon_core.latent import GUIDANCE_MODES, LATENT_DEFAULTS, needs_decoder
from ...zecon_core.guidance.mask import prepare_mask
from .. import validation as V
from ..flow import guidance as FG
from ..pixel.sampler import SEED_MAX
from ..progress import tell
from ..types import CATEGORY, ZeconClip, ZeconGuidanceType, ZeconStyle
from . import backbone as B
from .guider import GuiderPlan, ZeconCFGGuider
from .taesd import resolve_taesd

AUTO_LAYERS = "auto"


def own_weight_copy(weight):
    """Weight wrapper for the full mode: its presence makes ComfyUI copy each weight per forward
    (``cast_bias_weight(copy=True)``), so the UNet's graph holds normal tensors instead of
    inference tensors and a backward through it works."""
    return weight


def differentiable_clone(model):
    """A clone of the ModelPatcher whose diffusion-model weights go through ``own_weight_copy`` (full mode);
    only the weights of ComfyUI's casting ops take wrappers (for the others, e.g. SD3.5's RMSNorm, see
    ``nodes/flow/guidance.normal_parameters``)."""
    clone = model.clone()
    for key in clone.model.state_dict():
        owner = key.rpartition(".")[0]
        if key.startswith("diffusion_model.") and hasattr(clone.model.get_submodule(owner), "weight_function"):
            clone.add_weight_wrapper(key, own_weight_copy)
    return clone


def resolve_config(bundle, model, family: str, zecon_layers: str, has_style: bool) -> GuidanceConfig:
    """The loss weights for this model: the bundle's (or the defaults), its ZeCon layers (UNet input blocks,
    or transformer blocks of a flow model), CLIP off without a style."""
    config = bundle.config if bundle is not None else LATENT_DEFAULTS
    auto = zecon_layers.strip() == AUTO_LAYERS
    if family == FG.SD:
        unet = model.model.diffusion_model
        layers = B.default_layers(unet) if auto else V.parse_layers(zecon_layers)
        B.check_layers(unet, layers)
    else:
        layers = FG.default_layers(model, family) if auto else V.parse_layers(zecon_layers)
        FG.check_layers(model, family, layers)
    changes = {"zecon_layers": layers}
    if not has_style:
        changes.update({k: 0.0 for k in CLIP_LOSSES})
    return dataclasses.replace(config, **changes)


def check_mask(mask, samples) -> None:
    """Refuse a mask the source latent's batch cannot take, or an empty one, before anything runs.

    A source of one picture serves any sampled batch: its masks are counted when sampling starts."""
    batch = samples.shape[0]
    if batch == 1 and mask.ndim >= 3:
        batch = mask.shape[0]
    try:
        prepare_mask(mask.float(), batch, *samples.shape[-2:])
    except ValueError as e:
        raise ValueError(f"mask: {e}") from None


class ZeconGuider(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ZeconGuider",
            display_name="ZeCon Guider (latent)",
            category=CATEGORY,
            description="ZeCon on your own latent model: Stable Diffusion (SD1.5, SD2.x, SDXL) or a rectified-flow "
                        "model (Flux.1, Flux.2, Chroma, SD3 / SD3.5, Qwen-Image, Lumina 2 / Z-Image); a GUIDER for "
                        "SamplerCustomAdvanced. Classifier-free guidance with your prompt, plus the ZeCon losses: "
                        "the contrastive loss on the model's own features (UNet encoder blocks, or a DiT's first "
                        "transformer blocks) and the MSE keep the source's content; optional CLIP losses (connect a "
                        "ZeCon CLIP and Style) pull towards a style. Start the sampler from ZeCon Latent Inversion's "
                        "latent and sigmas.",
            inputs=[
                io.Model.Input("model", tooltip="The model (Load Checkpoint / Load Diffusion Model; LoRAs applied are "
                                                "kept): an SD UNet with ε or v prediction, or a rectified-flow image "
                                                "model (Flux.1, Flux.2, Chroma, SD3 / SD3.5, Qwen-Image, Z-Image)."),
                io.Conditioning.Input("positive", tooltip="Your prompt for the model, e.g. 'a watercolor painting "
                                                          "of ...' (the style can live here)."),
                io.Conditioning.Input("negative", tooltip="Negative prompt; its (usually empty) text is also the "
                                                          "context of the ZeCon encoder features."),
                io.Float.Input("cfg", default=5.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Classifier-free guidance scale, as in KSampler."),
                io.Latent.Input("source", tooltip="VAE Encode of the source picture: what the content losses keep. One "
                                                  "picture serves every image of a batch. A noise mask on it "
                                                  "(SetLatentNoiseMask) is the region to restyle, as the mask "
                                                  "input."),
                io.Combo.Input("mode", options=list(GUIDANCE_MODES), default="shortcut",
                               tooltip="shortcut: the loss gradient is taken on the denoised prediction (fast, no "
                                       "backward through the UNet). full: through the UNet, as the original "
                                       "(about twice the cost per step and much more memory)."),
                io.Combo.Input("decoder", options=list(B.DECODERS), default="taesd",
                               tooltip="Decoder inside the guidance (CLIP, VGG and range losses see its image): "
                                       "taesd (tiny, fast; models/vae_approx, downloaded if missing) or vae (the "
                                       "real VAE: best quality, ~15x the cost). Unused when only the ZeCon and MSE "
                                       "losses are on."),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.01, round=0.001,
                               tooltip="Guide from this fraction of the steps on (0 = from the first step)."),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.01, round=0.001,
                               tooltip="Stop guiding at this fraction of the steps (1 = to the end)."),
                io.Float.Input("strength", default=1.0, min=0.0, max=100.0, step=0.05, round=0.001,
                               tooltip="Multiplies every loss weight at once (0 = plain CFG)."),
                io.Int.Input("seed", default=0, min=0, max=SEED_MAX, control_after_generate=True,
                             tooltip="Seed of the guidance's random draws (CLIP crops and augmentations, ZeCon "
                                     "patch positions); image b of a batch uses seed + b."),
                io.String.Input("zecon_layers", default=AUTO_LAYERS,
                                tooltip="Blocks whose features the ZeCon loss compares, comma separated: UNet input "
                                        "blocks (auto: block 0 and the last block of every resolution level but the "
                                        "deepest; SD1.5: 0,2,5,8; SDXL: 0,2,5), or a flow model's transformer blocks "
                                        "in run order (auto: 0,2,4)."),
                io.Boolean.Input("gradient_checkpointing", default=False, optional=True,
                                 tooltip="full mode: recompute the UNet's blocks during the backward pass instead "
                                         "of keeping their activations. Same result, much less memory (SDXL full "
                                         "mode on 24 GB), one more UNet forward per guided step. SD UNets only "
                                         "(flow models ignore it)."),
                io.Vae.Input("vae", optional=True, tooltip="The model's VAE: needed for decoder 'vae'; checked "
                                                           "against the model's latent format."),
                ZeconClip.Input("clip", optional=True, tooltip="CLIP that scores the style (ZeCon CLIP Loader). "
                                                               "Without clip and style the CLIP losses are off."),
                ZeconStyle.Input("style", optional=True, tooltip="Style from ZeCon Style Prompt (encoded with this "
                                                                 "clip)."),
                io.Mask.Input("mask", optional=True,
                              tooltip="Restyle only where the mask is 1 (e.g. Load Image's MASK); outside, the "
                                      "result is the source latent. One mask, or one per image of the batch."),
                io.Int.Input("feather", default=8, min=0, max=512, optional=True,
                             tooltip="Width of the soft seam at the mask's edge, in image pixels."),
                ZeconGuidanceType.Input("guidance", optional=True,
                                        tooltip="Loss weights from ZeCon Guidance (its zecon_layers, mse_max_t and "
                                                "vgg_max_t are for the pixel model and are not used here). Default: "
                                                "the original's weights, VGG off, and ZeCon 8000 instead of 500 "
                                                "(chosen on the miniature world's benchmarks)."),
            ],
            outputs=[io.Guider.Output("guider", display_name="guider",
                                      tooltip="Connect to SamplerCustomAdvanced's guider.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, input_types=None, **values) -> bool:
        start_percent, end_percent = values.get("start_percent"), values.get("end_percent")
        zecon_layers = values.get("zecon_layers")
        errors = [*V.schema_errors(cls, values, input_types), V.combo("mode", values.get("mode"), GUIDANCE_MODES),
                  V.combo("decoder", values.get("decoder"), B.DECODERS)]
        if zecon_layers is not None and zecon_layers.strip() != AUTO_LAYERS:
            errors.append(V.layers(zecon_layers))
        if not any(errors) and start_percent is not None and end_percent is not None and start_percent > end_percent:
            errors.append(f"end_percent: must be >= start_percent ({start_percent}), got {end_percent}")
        return V.result(*errors)

    @classmethod
    def execute(cls, model, positive, negative, cfg, source, mode, decoder, start_percent, end_percent, strength,
                seed, zecon_layers, gradient_checkpointing=False, vae=None, clip=None, style=None, mask=None,
                feather=8, guidance=None) -> io.NodeOutput:
        V.result(*V.schema_errors(cls, dict(cfg=cfg, mode=mode, decoder=decoder, start_percent=start_percent,
                                            end_percent=end_percent, strength=strength, feather=feather), None))
        family = FG.guided_family(model)
        flow = family != FG.SD
        if vae is not None:
            (FG.check_vae if flow else B.check_vae)(vae, model)
        if decoder == "vae":
            if vae is None:
                raise ValueError("vae: decoder 'vae' needs the model's VAE connected (or use decoder 'taesd')")
            if not flow:
                B.check_kl_vae(vae)
        if style is not None and clip is None:
            raise ValueError("clip: a style is connected but no CLIP model to score it")
        config = resolve_config(guidance, model, family, zecon_layers, style is not None)
        samples = source["samples"]
        FG.check_source(samples, model, "source")
        if flow and strength > 0 and needs_decoder(config.weights_on()):
            FG.check_decoder(decoder, model, vae)
        if source.get("noise_mask") is not None:
            if mask is None:
                mask = source["noise_mask"]   # SetLatentNoiseMask on the source: restyle that region
            else:
                tell("source: its noise mask (SetLatentNoiseMask) is not used: the guider's mask input is "
                     "connected and sets the region", cls.hidden.unique_id)
        if mask is not None:
            check_mask(mask, samples)
        taesd_path = None
        if decoder == "taesd" and strength > 0 and needs_decoder(config.weights_on()):
            taesd_path = resolve_taesd(model.model.latent_format.taesd_decoder_name, cls.hidden.unique_id)
        plan = GuiderPlan(config=config, source=samples, decoder=decoder, mode=mode,
                          start=start_percent, end=end_percent, seed=seed, strength=strength,
                          taesd_path=taesd_path, vae=vae, clip=clip if config.uses_clip else None,
                          style=style if config.uses_clip else None,
                          vgg=guidance.vgg if guidance is not None else None,
                          checkpointing=bool(gradient_checkpointing), mask=mask, feather=float(feather),
                          family=family,
                          node_id=cls.hidden.unique_id)
        patcher = differentiable_clone(model) if mode == "full" and plan.active else model
        guider = ZeconCFGGuider(patcher, plan)
        guider.set_conds(positive, negative)
        guider.set_cfg(cfg)
        return io.NodeOutput(guider)
