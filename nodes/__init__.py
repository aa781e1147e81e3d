"""ZeCon for ComfyUI: the node pack (ComfyUI V3 schema).

The nodes are thin: every computation goes through ``zecon_core``. See
``types.py`` for what travels between them. Two backbones share one guidance:
the pixel ADM nodes here (the original's models, the pack's own types) and, in
``latent/``, the ZeCon Guider and Latent Inversion on the user's Stable Diffusion
MODEL / VAE / CONDITIONING through ComfyUI's own sampler.
"""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from . import folders
from .sample import install_sample_image

folders.register()
install_sample_image()

from .guidance import ZeconGuidance  # noqa: E402  (after the folder is registered)
from .pixel.inversion import ZeconInversion  # noqa: E402
from .latent.guider_node import ZeconGuider  # noqa: E402
from .latent.inversion_node import ZeconLatentInversion  # noqa: E402
from .loaders import ZeconClipLoader, ZeconDiffusionLoader  # noqa: E402
from .pixel.sampler import ZeconSampler  # noqa: E402
from .style import ZeconStylePrompt  # noqa: E402
from .style_blend import ZeconStyleBlend  # noqa: E402
from .style_image import ZeconStyleImage  # noqa: E402
from .pixel.style_transfer import ZeconStyleTransfer  # noqa: E402

NODES: list[type[io.ComfyNode]] = [
    ZeconDiffusionLoader,
    ZeconClipLoader,
    ZeconStylePrompt,
    ZeconInversion,
    ZeconGuidance,
    ZeconSampler,
    ZeconStyleTransfer,
    ZeconStyleImage,
    ZeconStyleBlend,
    ZeconLatentInversion,
    ZeconGuider,
]


class ZeconExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return NODES


async def comfy_entrypoint() -> ZeconExtension:
    return ZeconExtension()
