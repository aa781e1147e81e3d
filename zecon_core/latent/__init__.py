"""The latent backbone: ZeCon on Stable Diffusion models (SD1.5, SD2.x, SDXL), pure PyTorch.

The pixel backbone (``zecon_core.pixel.model`` / ``unet`` / ``schedule`` / ``diffusion`` /
``sampler`` / ``pipeline``) runs the original's ADM UNet in pixel space. This one
works in the k-diffusion convention ComfyUI samples in (x = z0 + σ ε, a denoiser
D(x, σ) ≈ z0) and takes everything model-specific as callables, so it has no
ComfyUI imports: the nodes wire ComfyUI's ModelPatcher, VAE / TAESD and
conditioning into them. The losses, augmentations and CLIP scoring are the shared
ones of ``zecon_core.guidance.core``.

* ``inversion``: deterministic Euler inversion of the probability-flow ODE.
* ``guidance``: the guided denoised prediction, in two modes (``shortcut``:
  the gradient is taken on the prediction only; ``full``: through the UNet).
"""

from .guidance import (EPS_SHIFT, GUIDANCE_MODES, LATENT_DEFAULTS, N_REF, LatentGuidance, LatentSource, ShiftRule,
                       needs_decoder, source_for_batch)
from .inversion import invert

__all__ = ["EPS_SHIFT", "GUIDANCE_MODES", "LATENT_DEFAULTS", "LatentGuidance", "LatentSource", "N_REF", "ShiftRule",
           "invert", "needs_decoder", "source_for_batch"]
