"""ZeCon (Yang, Hwang & Ye, ICCV 2023): zero-shot contrastive text-guided image style transfer.

A pure-PyTorch engine, no ComfyUI imports. Typical use::

    import zecon_core as zc
    model = zc.load_diffusion_model("256x256_diffusion_uncond.pt")
    clip = zc.load_clip()                       # ViT-B-16 / openai through open_clip
    vgg = zc.load_vgg("vgg19-dcbb9e9d.pth")
    image = zc.prepare_source(zc.load_image("photo.png"), "resize", 256)
    out = zc.stylize(image, "a sketch with crayon", "Photo", model=model, clip=clip, vgg_model=vgg, seed=0)
    zc.tensor_to_pil(out)[0].save("out.png")

Step by step: ``encode_style`` -> ``invert`` -> ``sample_guided`` with a ``GuidanceConfig``.

Layout: ``guidance`` holds what every backbone shares (the losses of eq. 8 on a ``LossView``,
CLIP/VGG scoring, views, styles, masks, draws); each backbone builds its view of them:
``pixel`` (the original's ADM models in pixel space) and ``latent`` (latent diffusion models
given as callables: denoiser, decoder, encoder features). ``files`` reads and writes weights,
downloads and pictures; ``apps`` holds the command line and the benchmark.
"""

from .files.checkpoints import CheckpointError, load_state_dict
from .guidance.clip_model import DEFAULT_CLIP, ClipModel, PromptTooLongWarning, load_clip
from .guidance.draws import Draws
from .guidance.core import LOSS_NAMES, GuidanceConfig, NonFiniteError
from .files.images import SIZE_POLICIES, load_image, pil_to_tensor, prepare_source, target_size, tensor_to_pil
from .pixel.guidance import PixelGuidance
from .pixel.model import DiffusionModel, load_diffusion_model
from .pixel.pipeline import Inversion, StylePrompt, encode_style, invert, sample_guided, stylize
from .pixel.schedule import Schedule
from .pixel.unet import ADMConfig, UNetModel
from .guidance.vgg import VGGFeatures, load_vgg

__version__ = "0.1.0"

__all__ = [
    "ADMConfig", "CheckpointError", "ClipModel", "DEFAULT_CLIP", "DiffusionModel", "Draws", "GuidanceConfig",
    "Inversion", "LOSS_NAMES", "NonFiniteError", "PixelGuidance", "PromptTooLongWarning", "SIZE_POLICIES", "Schedule",
    "StylePrompt", "UNetModel", "VGGFeatures", "encode_style", "invert", "load_clip", "load_diffusion_model",
    "load_image", "load_state_dict", "load_vgg", "pil_to_tensor", "prepare_source", "sample_guided", "stylize",
    "target_size", "tensor_to_pil",
]
