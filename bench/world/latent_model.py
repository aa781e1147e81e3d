"""The miniature latent model: a tiny Stable Diffusion 1.5 in ComfyUI 0.3.75's own classes.

Three parts, each built from ComfyUI's classes at toy width and stored as an fp16
safetensors file in ``bench/world/weights/`` whose metadata ``zecon_config`` holds
the constructor arguments (so a loader needs nothing but the file):

* ``latent_vae``:   ``comfy.ldm.models.autoencoder.AutoencoderKL`` (KL VAE, 3 downsamples:
  64-px pictures -> 8x8x4 latents), loaded as ``comfy.sd.VAE(sd, config=...)``. Its latents
  are scaled (``quant_conv`` / ``post_quant_conv``) so that SD1.5's latent scale factor
  0.18215 makes them about unit variance in model space, as for the real SD1.5 VAE.
* ``latent_taesd``: ``comfy.taesd.taesd`` encoder + decoder (TAESD's fixed 64 channels) on the
  same latents: ``latent_taesd_decoder`` for ``models/vae_approx`` (the guider's taesd decoder
  and ComfyUI's previews: model-space latents -> picture), and ``latent_taesd_vae`` in the
  format the stock VAELoader reads (``taesd_encoder.*``, ``taesd_decoder.*``, ``vae_scale``).
* ``latent_unet``:  ``comfy.ldm.modules.diffusionmodules.openaimodel.UNetModel`` with
  ``comfy.supported_models.SD15``'s config class (ε prediction, SD1.5's discrete schedule,
  cross-attention) at model_channels 32 (levels of 32 and 64 channels at 8x8 and 4x4 latents),
  context 64; MODEL = ``SD15(unet_config).get_model`` in a ``ModelPatcher``, as ComfyUI's loaders do.
* ``latent_clip``:  ComfyUI's SD1.5 text encoder (``comfy.sd1_clip.SD1ClipModel`` + the real
  CLIP tokenizer) at width 64, 3 layers, seeded random weights, frozen: it only has to tell the
  world's 72 captions apart, and the UNet learns to read it.

Why not the stock UNETLoader / CLIPLoader / a KL file in VAELoader: ComfyUI 0.3.75 detects SD1.5
by model_channels 320 and context 768 (``supported_models.SD15.unet_config``), builds CLIP-L with
its fixed 768-wide config, and builds a KL VAE with the fixed SD config (ch 128); none of these
shrink. The stock VAELoader does read the TAESD format (``latent_taesd_vae``), and the vae_approx
decoder is found by ComfyUI's own lookup; MODEL, CLIP and the KL VAE come from the test pack's
``ZeconTestWorldSD`` loader node, which builds them with the classes above from these files.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = Path(__file__).resolve().parent / "weights"
IMAGE_SIZE = 64
LATENT_SIZE = IMAGE_SIZE // 8
SCALE_FACTOR = 0.18215       # SD1.5's latent_format scale (comfy.latent_formats.SD15)
CONFIG_KEY = "zecon_config"

VAE_PARAMS = {"embed_dim": 4, "ddconfig": {
    "double_z": True, "z_channels": 4, "resolution": IMAGE_SIZE, "in_channels": 3, "out_ch": 3, "ch": 32,
    "ch_mult": [1, 1, 2, 2], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}}

# detect_unet_config's keys (as tests/comfy/tiny_sd.py); SD15 adds num_heads 8.
UNET_CONFIG = {"use_checkpoint": False, "image_size": 32, "use_spatial_transformer": True, "legacy": False,
               "in_channels": 4, "out_channels": 4, "use_temporal_resblock": False,
               "use_temporal_attention": False, "adm_in_channels": None, "model_channels": 32,
               "num_res_blocks": [1, 1], "channel_mult": [1, 2], "transformer_depth": [1, 1],
               "transformer_depth_output": [1, 1, 1, 1], "transformer_depth_middle": 1,
               "use_linear_in_transformer": False, "context_dim": 64}

CLIP_CONFIG = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3, "num_attention_heads": 2,
               "projection_dim": 64}

FILES = {"vae": "latent_vae.safetensors", "unet": "latent_unet.safetensors", "clip": "latent_clip.safetensors",
         "taesd_decoder": "latent_taesd_decoder.safetensors", "taesd_vae": "latent_taesd_vae.safetensors"}


def setup_comfy():
    """ComfyUI importable in this process on the CPU (tests/comfy/tiny_sd.setup_comfy)."""
    here = REPO / "tests" / "comfy"
    if str(here) not in sys.path:
        sys.path.insert(0, str(here))
    import tiny_sd
    tiny_sd.setup_comfy(cpu=True)
    return tiny_sd


def fill_random_(module, seed: int):
    """Seeded initial weights for ComfyUI's modules (their layers skip init): tests/comfy/tiny_sd.fill_random_."""
    return setup_comfy().fill_random_(module, seed)


# ------------------------------------------------------------------ builders
def vae_module(params: dict = VAE_PARAMS):
    """ComfyUI's AutoencoderKL with ``params`` (weights uninitialised)."""
    from comfy.ldm.models.autoencoder import AutoencoderKL
    return AutoencoderKL(**params)


def unet_model_config(config: dict = UNET_CONFIG):
    """``comfy.supported_models.SD15(config)`` in float32."""
    import comfy.supported_models as sm
    mc = sm.SD15(dict(config))
    mc.set_inference_dtype(torch.float32, None)
    return mc


def clip_object(config: dict = CLIP_CONFIG, sd: dict | None = None, seed: int = 0):
    """``comfy.sd.CLIP`` of ComfyUI's SD1.5 tokenizer + text encoder at ``config``'s width; weights ``sd``
    or, without it, seeded random ones."""
    import comfy.sd
    import comfy.sd1_clip
    import comfy.supported_models_base as smb
    target = smb.ClipTarget(comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel)
    clip = comfy.sd.CLIP(target, model_options={"dtype": torch.float32, "clip_l_model_config": dict(config)})
    if sd is None:
        fill_random_(clip.cond_stage_model, seed)
    else:
        missing, unexpected = clip.load_sd(sd)
        if missing or unexpected:
            raise ValueError(f"latent_clip: missing {list(missing)[:4]}, unexpected {list(unexpected)[:4]}")
    return clip


def taesd_parts():
    """(encoder, decoder) of ComfyUI's TAESD for 4-channel latents (weights uninitialised)."""
    import comfy.taesd.taesd as t
    return t.Encoder(latent_channels=4), t.Decoder(latent_channels=4)


# ------------------------------------------------------------------ files
def save(sd: dict, path, config: dict | None = None) -> Path:
    """fp16 safetensors; ``config`` (JSON) in the metadata under CONFIG_KEY."""
    from safetensors.torch import save_file
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: (v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu()).contiguous()
          for k, v in sd.items()}
    save_file(sd, str(path), metadata={CONFIG_KEY: json.dumps(config)} if config is not None else None)
    return path


def read(path) -> tuple[dict, dict | None]:
    """(float32 state dict, config from the metadata or None)."""
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        sd = {k: f.get_tensor(k).float() for k in f.keys()}
    return sd, (json.loads(meta[CONFIG_KEY]) if CONFIG_KEY in meta else None)


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def weights_path(part: str, folder=None) -> Path:
    return Path(folder or WEIGHTS) / FILES[part]


# ------------------------------------------------------------------ ComfyUI objects from the files
def load_model(path=None):
    """MODEL: the UNet file in SD15's config class, as a ComfyUI loader returns it (ModelPatcher)."""
    import comfy.model_management as mm
    import comfy.model_patcher
    sd, config = read(path or weights_path("unet"))
    base = unet_model_config(config or UNET_CONFIG).get_model({})
    base.diffusion_model.load_state_dict(sd)
    return comfy.model_patcher.ModelPatcher(base, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


def load_clip(path=None):
    sd, config = read(path or weights_path("clip"))
    return clip_object(config or CLIP_CONFIG, sd)


def load_vae(path=None):
    """VAE: ``comfy.sd.VAE`` built from the KL file and its config (``config=`` path of VAE.__init__)."""
    import comfy.sd
    sd, config = read(path or weights_path("vae"))
    config = config or VAE_PARAMS
    vae = comfy.sd.VAE(sd=sd, config={"params": config})
    vae.latent_channels = config["embed_dim"]      # the config= path leaves SD's 4 (bench/world/flow_model: 16)
    return vae


def encode_captions(clip, texts, pooled: bool = False):
    """CLIPTextEncode's cond for each text: [len(texts), 77, 64]; with ``pooled`` also its
    ``pooled_output`` (the projected end-of-text feature, [len(texts), 64]) as a second tensor."""
    out, pools = [], []
    for text in texts:
        cond, extras = clip.encode_from_tokens_scheduled(clip.tokenize(text))[0]
        out.append(cond)
        pools.append(extras["pooled_output"])
    return (torch.cat(out), torch.cat(pools)) if pooled else torch.cat(out)
