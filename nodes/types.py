"""The custom ComfyUI types of the pack: plain, documented Python objects.

Each type travels between nodes as the zecon_core object named here; the
nodes never wrap or copy them. All tensors in them are float32.

``ZECON_MODEL``    :class:`zecon_core.pixel.model.DiffusionModel` - an ADM UNet
                   (``.unet``), its file (``.name``, ``.path``), ``.precision``
                   and ``.config``. Lives on the offload device (the CPU unless
                   ComfyUI runs with --highvram/--gpu-only) between runs.
``ZECON_CLIP``     :class:`zecon_core.guidance.clip_model.ClipModel` - open_clip model
                   and tokenizer; ``.name`` identifies the weights.
``ZECON_STYLE``    :class:`zecon_core.guidance.style.StylePrompt` - target/source
                   labels and their CLIP embeddings (text prompts, style images
                   or blends; on the CLIP's device, the CPU between runs), the
                   share of the source taken from the source picture's image
                   embedding, and the name of the CLIP that encoded them.
``ZECON_LATENT``   :class:`zecon_core.pixel.pipeline.Inversion` - the DDIM-inverted
                   latent, the prepared source image it came from (both CPU,
                   [B, 3, H, W]), the respaced schedule and the skip count.
``ZECON_GUIDANCE`` :class:`GuidanceBundle` - a :class:`zecon_core.guidance.core.GuidanceConfig`
                   (loss weights and settings) plus the VGG19 layers when the
                   VGG loss is on.
"""

from __future__ import annotations

from dataclasses import dataclass

from comfy_api.latest import io

from ..zecon_core.guidance.core import GuidanceConfig
from ..zecon_core.guidance.vgg import VGGFeatures

ZeconModel = io.Custom("ZECON_MODEL")
ZeconClip = io.Custom("ZECON_CLIP")
ZeconStyle = io.Custom("ZECON_STYLE")
ZeconLatent = io.Custom("ZECON_LATENT")
ZeconGuidanceType = io.Custom("ZECON_GUIDANCE")

CATEGORY = "ZeCon"


@dataclass(eq=False)
class GuidanceBundle:
    """``ZECON_GUIDANCE``: what the guided sampler needs besides the model, latent, style and CLIP.

    ``vgg`` is ``None`` when ``config.vgg == 0`` (the layers are not loaded then);
    ``vgg_name`` names the file the layers came from.
    """

    config: GuidanceConfig
    vgg: VGGFeatures | None = None
    vgg_name: str | None = None
