"""The miniature flow model: a tiny Stable Diffusion 3 (rectified-flow MMDiT) in ComfyUI 0.3.75's own classes.

The flow sibling of ``bench.world.latent_model`` (same helpers, file format and text encoder):

* ``flow_vae``: ``comfy.ldm.models.autoencoder.AutoencoderKL`` at the SD one's toy width with 16 z-channels
  (64-px pictures -> 8x8x16 latents), loaded as ``comfy.sd.VAE(sd, config=...)``; ``quant_conv`` /
  ``post_quant_conv`` are rescaled at training so that SD3's latent format (``comfy.latent_formats.SD3``:
  ``(z - 0.0609) * 1.5305``) makes the latents about zero-mean, unit-variance in model space.
* ``flow_dit``: ``comfy.ldm.modules.diffusionmodules.mmdit.MMDiT`` (through ``model_base.SD3``'s
  ``OpenAISignatureMMDITWrapper``) in ``comfy.supported_models.SD3``'s config class: rectified flow
  (``model_sampling`` CONST, shift 3), the model predicts v = noise - x0 at x_t = (1 - t) x0 + t noise.
  Depth 2, hidden 64 x depth = 128 (what ComfyUI's MMDiT detection assumes), patch 2 (16 image tokens);
  the context embedder (a Linear, as SD3's) reads the world's SD1.5-type text encoder
  (``latent_clip.safetensors``, 64 wide) directly, and the y (pooled) embedder its 64-wide pooled output,
  so CLIPTextEncode's CONDITIONING of that encoder drives it with no projection in between.
* the text encoder is the latent model's ``latent_clip`` (``latent_model.load_clip``).

ComfyUI 0.3.75's own diffusion-model loader (UNETLoader's ``comfy.sd.load_diffusion_model``) detects the
``flow_dit`` file as SD3 from its weights (MMDiT reads every width from them; tested), but the file also carries
its config in the metadata (``latent_model.CONFIG_KEY``) as the other parts do, and the test pack's
``ZeconTestWorldFlow`` node builds MODEL, CLIP and VAE from the files with these classes (the SD1.5-type CLIP
and the toy KL VAE have no stock loader at these widths).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

try:
    from bench.world import latent_model as lm
except ImportError:   # in a server, loaded by tests/comfy/tiny_sd_pack, which loads latent_model.py under this name
    lm = sys.modules["zecon_tests_world_latent_model"]

LATENT_CHANNELS = 16
SCALE_FACTOR = 1.5305        # comfy.latent_formats.SD3
SHIFT_FACTOR = 0.0609

VAE_PARAMS = {"embed_dim": LATENT_CHANNELS,
              "ddconfig": {**lm.VAE_PARAMS["ddconfig"], "z_channels": LATENT_CHANNELS}}

DEPTH = 2
HIDDEN = 64 * DEPTH
# comfy.model_detection's MMDiT keys (as tests/comfy/tiny_flow._SD3), for 8x8 latents (4x4 patches)
DIT_CONFIG = {"in_channels": LATENT_CHANNELS, "out_channels": LATENT_CHANNELS, "patch_size": 2, "depth": DEPTH,
              "input_size": None, "adm_in_channels": lm.CLIP_CONFIG["projection_dim"], "num_patches": 64,
              "pos_embed_max_size": 8,
              "context_embedder_config": {"target": "torch.nn.Linear",
                                          "params": {"in_features": lm.CLIP_CONFIG["hidden_size"],
                                                     "out_features": HIDDEN}},
              "pos_embed_scaling_factor": None, "x_block_self_attn_layers": []}

FILES = {"flow_vae": "flow_vae.safetensors", "flow_dit": "flow_dit.safetensors"}


def weights_path(part: str, folder=None) -> Path:
    return Path(folder or lm.WEIGHTS) / FILES[part]


def dit_model_config(config: dict = DIT_CONFIG):
    """``comfy.supported_models.SD3(config)`` in float32."""
    import comfy.supported_models as sm
    mc = sm.SD3(dict(config))
    mc.set_inference_dtype(torch.float32, None)
    return mc


def load_model(path=None):
    """MODEL: the MMDiT file in SD3's config class, as a ComfyUI loader returns it (ModelPatcher)."""
    import comfy.model_management as mm
    import comfy.model_patcher
    sd, config = lm.read(path or weights_path("flow_dit"))
    base = dit_model_config(config or DIT_CONFIG).get_model({})
    base.diffusion_model.load_state_dict(sd)
    return comfy.model_patcher.ModelPatcher(base, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


def load_vae(path=None):
    """VAE: the 16-channel KL file through ``comfy.sd.VAE``'s ``config=`` path."""
    return lm.load_vae(path or weights_path("flow_vae"))


def load_clip(path=None):
    """CLIP: the latent model's SD1.5-type text encoder (its cond is the MMDiT's context, 64 wide)."""
    return lm.load_clip(path)


def conditioning(clip, texts) -> list:
    """CONDITIONING of a batch of prompts as CLIPTextEncode gives it (cond + pooled_output, which SD3's
    ``encode_adm`` requires)."""
    cond, pooled = lm.encode_captions(clip, texts, pooled=True)
    return [[cond, {"pooled_output": pooled}]]
