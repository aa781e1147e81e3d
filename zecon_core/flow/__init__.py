"""The flow backbone: ZeCon on rectified-flow models (Flux, SD3 / SD3.5, Qwen-Image, Z-Image, Chroma), pure PyTorch.

Rectified-flow models noise as x = (1 − σ)·z0 + σ·ε, σ ∈ [0, 1], and predict the velocity
v = ε − z0; ComfyUI (``model_sampling`` CONST) turns it into the same denoised prediction
D = x − σ·v ≈ z0 that the latent backbone shifts. Everything but the noise form is the latent
backbone's: ``zecon_core.latent.LatentGuidance`` with :data:`FLOW_SHIFT` (the shift rule of
this noise form, derived in :mod:`.shift`) and ``zecon_core.latent.invert`` behind
:func:`invert` (which refuses the levels where the flow form is singular, σ ≥ 1).
"""

from .inversion import check_flow_sigmas, invert
from .shift import FLOW_SHIFT, FlowShift

__all__ = ["FLOW_SHIFT", "FlowShift", "check_flow_sigmas", "invert"]
