"""The original's pixel-space backbone: guided-diffusion's ADM UNet (``unet``, ``adm_loader``,
``model``), its schedule and DDPM/DDIM steps (``schedule``, ``diffusion``, ``sampler``), the
pixel view of the shared losses (``guidance``) and the invert-then-guide pipeline (``pipeline``)."""
