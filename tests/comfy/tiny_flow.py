"""Tiny random-weight rectified-flow models in ComfyUI 0.3.75's REAL architectures.

The flow (``model_sampling`` CONST) families the ZeCon Guider supports, each built through
its own ``comfy.supported_models`` class (``get_model`` -> ``comfy.model_base`` ->
the family's ``comfy.ldm`` transformer) with the widths shrunk, weights drawn by
:func:`tiny_sd.fill_random_` from a seeded generator (same seed, same model bit for bit),
wrapped in a ``ModelPatcher`` as the loaders return it. Call :func:`tiny_sd.setup_comfy`
first in a test process.

============  =====================  ==============  ======  =========  ==================  =======
family        config class           transformer     latent  context    pooled              blocks
============  =====================  ==============  ======  =========  ==================  =======
flux_dev      Flux (guidance_embed)  flux.Flux       16 ch   [B,8,32]   16 (vector_in)      2 + 2
flux_schnell  FluxSchnell            flux.Flux       16 ch   [B,8,32]   16                  2 + 2
flux2         Flux2                  flux.Flux (*)   128 ch  [B,8,32]   -                   2 + 2
chroma        Chroma                 chroma.Chroma   16 ch   [B,8,32]   -                   2 + 2
sd3           SD3                    mmdit (MMDiT)   16 ch   [B,8,32]   32 (y_embedder)     2
sd35          SD3 (detected file)    mmdit, qk rms,  16 ch   [B,8,32]   32                  2
                                     x-block attn 0
qwen_image    QwenImage              qwen_image      16 ch   [B,8,32]   -                   2
                                                     (5-D: [B,16,1,h,w])
lumina2       Lumina2                lumina NextDiT  16 ch   [B,8,32]   -                   1 ref. + 3
zimage        ZImage                 NextDiT (z-mod) 16 ch   [B,8,32]   -                   1 ref. + 3
hidream       HiDream                hidream (MoE)   16 ch   [B,8,32]   32 (p_embedder)     2 + 2
                                                             + Llama-3 [B,3,8,32]
============  =====================  ==============  ======  =========  ==================  =======

(*) Flux.2: global modulation, 4 rope axes, SiLU-gated MLPs, patch size 1 on 128 channels; its
``extra_conds`` pads the context to 512 tokens. "2 + 2" = double-stream + single-stream blocks.
HiDream's CONDITIONING carries the Llama-3 hidden-state stack as ``conditioning_llama3``.

``sd35`` is the family loaded from a file: :func:`write_sd35_unet` writes a diffusion-model
file (SD3.5-style: RMS q/k norm, the second self-attention in block 0) that ComfyUI's own
``comfy.sd.load_diffusion_model`` (UNETLoader's code path) detects as ``SD3``. MMDiT is the only
family whose detection reads every width from the weights (hidden = 64 x depth); the others fix
their head widths at the real sizes (e.g. Flux: 24 heads x 128), so a file of theirs is GBs.

Conditioning (:func:`conditioning`) is ComfyUI's CONDITIONING format ``[[cond, extras]]``
without a text encoder; :func:`latent` gives a latent in the shape the family's diffusion model
takes (Qwen-Image's 5-D, as ``comfy.sample.fix_empty_latent_channels`` makes it).

VAEs (:func:`tiny_vae`, ``comfy.sd.VAE`` in each family's real VAE architecture, 32 / 8 channels wide):

=====================================  =========================================  ====================
families                               VAE                                        latent
=====================================  =========================================  ====================
flux_*, chroma, sd3, sd35, lumina2,    AutoencoderKL, 16 z-channels               16 ch at 1/8
zimage, hidream
flux2                                  AutoencoderKL + batch-norm latent (2x2     128 ch at 1/16
                                       patches of 32 z-channels), as ComfyUI
                                       builds Flux.2's VAE
qwen_image                             Wan 2.1 VAE (3-D causal), detected by      16 ch at 1/8, 5-D
                                       comfy.sd.VAE from its state dict
=====================================  =========================================  ====================

TAE decoders for models/vae_approx: :func:`write_taef1` (Flux.1 / Chroma / Lumina2 / HiDream latents:
``latent_formats.Flux.taesd_decoder_name``); SD3's ``taesd3`` is ``tiny_sd.write_taesd``'s.

Node pack (tests/comfy/tiny_flow_pack, ``comfy_server_factory(packs={"zecon_tiny_flow": dir})``):
``ZeconTestTinyFlow`` (family, seed, width, height) -> MODEL, positive, negative CONDITIONING, LATENT;
``ZeconTestTinyFlowVAE`` (family, seed) -> VAE; ``ZeconTestTinyRefusedModel`` (kind, seed) -> MODEL, a video or
audio model ZeCon refuses (:func:`refused_model`).
"""
from __future__ import annotations

import sys
from pathlib import Path

try:
    import tiny_sd
except ImportError:   # in a server, loaded by tests/comfy/tiny_flow_pack, which loads tiny_sd.py under this name
    tiny_sd = sys.modules["zecon_tests_tiny_sd"]

DEFAULT_SEED = 0
TOKENS = 8                  # text tokens of the tiny conditioning
CONTEXT = 32                # text feature width of every tiny family
POOLED = {"flux_dev": 16, "flux_schnell": 16, "sd3": 32, "sd35": 32, "hidream": 32}

_FLUX = {"image_model": "flux", "in_channels": 16, "out_channels": 16, "vec_in_dim": POOLED["flux_dev"],
         "context_in_dim": CONTEXT, "hidden_size": 64, "mlp_ratio": 2.0, "num_heads": 2, "depth": 2,
         "depth_single_blocks": 2, "axes_dim": [8, 12, 12], "theta": 10000, "patch_size": 2,
         "qkv_bias": True, "guidance_embed": True}

_FLUX2 = {**_FLUX, "image_model": "flux2", "in_channels": 128, "out_channels": 128, "vec_in_dim": None,
          "mlp_ratio": 3.0, "axes_dim": [8, 8, 8, 8], "theta": 2000, "patch_size": 1, "qkv_bias": False,
          "global_modulation": True, "mlp_silu_act": True, "ops_bias": False, "default_ref_method": "index",
          "ref_index_scale": 10.0}

# Chroma patchifies before img_in (in_channels = 16 x 2 x 2); its modulations come from a small
# MLP ("distilled guidance layer") whose out_dim is the hidden size.
_CHROMA = {"image_model": "chroma", "in_channels": 64, "out_channels": 64, "context_in_dim": CONTEXT,
           "hidden_size": 64, "mlp_ratio": 2.0, "num_heads": 2, "depth": 2, "depth_single_blocks": 2,
           "axes_dim": [8, 12, 12], "theta": 10000, "patch_size": 2, "qkv_bias": True, "in_dim": 64,
           "out_dim": 64, "hidden_dim": 64, "n_layers": 2}

# MMDiT: hidden = 64 x depth, heads = depth (what model_detection assumes).
_SD3 = {"in_channels": 16, "out_channels": 16, "patch_size": 2, "depth": 2, "input_size": None,
        "adm_in_channels": POOLED["sd3"], "num_patches": 1024, "pos_embed_max_size": 32,
        "context_embedder_config": {"target": "torch.nn.Linear",
                                    "params": {"in_features": CONTEXT, "out_features": 128}},
        "pos_embed_scaling_factor": None, "x_block_self_attn_layers": []}
_SD35 = {**_SD3, "qk_norm": "rms", "x_block_self_attn_layers": [0]}

_QWEN = {"image_model": "qwen_image", "patch_size": 2, "in_channels": 64, "out_channels": 16, "num_layers": 2,
         "attention_head_dim": 32, "num_attention_heads": 2, "joint_attention_dim": CONTEXT,
         "axes_dims_rope": [8, 12, 12]}

_LUMINA2 = {"image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": 64, "n_layers": 3,
            "n_refiner_layers": 1, "n_heads": 2, "n_kv_heads": 2, "multiple_of": 16, "ffn_dim_multiplier": 4.0,
            "norm_eps": 1e-5, "qk_norm": True, "cap_feat_dim": CONTEXT, "axes_dims": [8, 12, 12],
            "axes_lens": [300, 512, 512], "rope_theta": 10000.0}

# Z-Image's adaLN takes the 256-wide time embedding: its width must be >= 256.
_ZIMAGE = {**_LUMINA2, "dim": 256, "n_heads": 4, "n_kv_heads": 4, "axes_dims": [16, 24, 24],
           "axes_lens": [1536, 512, 512], "rope_theta": 256.0, "ffn_dim_multiplier": 8.0 / 3.0,
           "z_image_modulation": True, "time_scale": 1000.0, "pad_tokens_multiple": 32}

# HiDream: every block also attends to its own Llama-3 layer (llama_layers picks them from the
# [B, layers, tokens, width] stack "conditioning_llama3"); the MoE MLPs route each token to 1 of 2 experts.
_HIDREAM = {"image_model": "hidream", "patch_size": 2, "in_channels": 16, "out_channels": 16, "num_layers": 2,
            "num_single_layers": 2, "attention_head_dim": 32, "num_attention_heads": 2,
            "caption_channels": [CONTEXT, CONTEXT], "text_emb_dim": 32, "num_routed_experts": 2,
            "num_activated_experts": 1, "axes_dims_rope": [16, 8, 8], "max_resolution": [128, 128],
            "llama_layers": [0, 1, 2, 2]}
LLAMA_LAYERS = 3

# family -> (comfy.supported_models class name, unet config)
CONFIGS = {"flux_dev": ("Flux", _FLUX), "flux_schnell": ("FluxSchnell", {**_FLUX, "guidance_embed": False}),
           "flux2": ("Flux2", _FLUX2), "chroma": ("Chroma", _CHROMA), "sd3": ("SD3", _SD3),
           "sd35": ("SD3", _SD35), "qwen_image": ("QwenImage", _QWEN), "lumina2": ("Lumina2", _LUMINA2),
           "zimage": ("ZImage", _ZIMAGE), "hidream": ("HiDream", _HIDREAM)}
FAMILIES = tuple(CONFIGS)
LATENT_CHANNELS = {f: (128 if f == "flux2" else 16) for f in FAMILIES}
SD35_FILE = "tiny_sd35_mmdit.safetensors"


def _check(family: str) -> str:
    if family not in CONFIGS:
        raise ValueError(f"unknown flow family {family!r}; one of {FAMILIES}")
    return family


def model_config(family: str, weight_dtype=None):
    """The ``comfy.supported_models`` config object of ``family`` (float32 compute; with
    ``weight_dtype`` e.g. ``torch.float8_e4m3fn`` the weights are stored in it and cast per op)."""
    import torch
    import comfy.supported_models as sm
    cls_name, cfg = CONFIGS[_check(family)]
    mc = getattr(sm, cls_name)(cfg)
    if weight_dtype is None:
        mc.set_inference_dtype(torch.float32, None)
    else:
        mc.set_inference_dtype(weight_dtype, torch.float32)
    return mc


def tiny_model(family: str = "flux_dev", seed: int = DEFAULT_SEED, weight_dtype=None):
    """MODEL (``ModelPatcher``) of ``family`` with seeded random weights (drawn in float32,
    then stored in ``weight_dtype`` if given)."""
    import torch
    mc = model_config(family, weight_dtype)
    base = mc.get_model({})
    if weight_dtype is None:
        tiny_sd.fill_random_(base.diffusion_model, seed)
    else:
        base.diffusion_model.load_state_dict(
            {k: v.to(weight_dtype) if v.is_floating_point() and v.ndim > 0 else v
             for k, v in unet_state_dict(family, seed).items()})
    return tiny_sd._patcher(base)


def unet_state_dict(family: str, seed: int = DEFAULT_SEED) -> dict:
    """The diffusion model's weights as a file holds them (no key prefix); the same tensors
    ``tiny_model(family, seed)`` holds."""
    return tiny_sd.random_state_dict(model_config(family).get_model({}).diffusion_model, seed)


def write_sd35_unet(path, seed: int = DEFAULT_SEED) -> Path:
    """A .safetensors diffusion model (models/diffusion_models) that ComfyUI detects as SD3."""
    return tiny_sd._save(unet_state_dict("sd35", seed), path)


def load_file_model(path, weight_dtype=None):
    """MODEL loaded from ``path`` by ComfyUI's own loader (``comfy.sd.load_diffusion_model``, as
    UNETLoader does; ``weight_dtype`` as its weight_dtype widget, e.g. ``torch.float8_e4m3fn``)."""
    import comfy.sd
    options = {} if weight_dtype is None else {"dtype": weight_dtype}
    return comfy.sd.load_diffusion_model(str(path), model_options=options)


def conditioning(family: str = "flux_dev", seed: int = DEFAULT_SEED, batch: int = 1) -> list:
    """CONDITIONING ``[[cond [batch, 8, 32], extras]]``; ``pooled_output`` where the family
    embeds one (Flux.1's vector_in, SD3's y_embedder); Flux.1-dev's guidance 3.5 (FluxGuidance)."""
    import torch
    g = torch.Generator().manual_seed(int(seed))
    cond = torch.randn(batch, TOKENS, CONTEXT, generator=g)
    extras = {"pooled_output": None}     # what the text encoders of the families without one give
    if _check(family) in POOLED:
        extras["pooled_output"] = torch.randn(batch, POOLED[family], generator=g)
    if family in ("flux_dev", "flux2"):
        extras["guidance"] = 3.5
    if family == "hidream":
        extras["conditioning_llama3"] = torch.randn(batch, LLAMA_LAYERS, TOKENS, CONTEXT, generator=g)
    return [[cond, extras]]


def latent(family: str = "flux_dev", seed: int = DEFAULT_SEED, batch: int = 1, height: int = 8,
           width: int = 8):
    """A standard-normal latent [batch, C, height, width] (Qwen-Image: [batch, 16, 1, height, width])."""
    import torch
    g = torch.Generator().manual_seed(int(seed))
    shape = (batch, LATENT_CHANNELS[_check(family)], height, width)
    if family == "qwen_image":
        shape = (batch, 16, 1, height, width)
    return torch.randn(shape, generator=g)


# ------------------------------------------------------------------ models ZeCon refuses
# kind -> (comfy.supported_models class name, unet config): a video and two audio models, each built by its
# own config class (none needs torchaudio: that only ACE-Step's and MMAudio's VAEs and the audio encoders import)
_WAN21 = {"image_model": "wan2.1", "model_type": "t2v", "dim": 32, "ffn_dim": 64, "freq_dim": 32, "num_heads": 2,
          "num_layers": 1, "in_dim": 16, "out_dim": 16, "text_len": 8, "text_dim": CONTEXT}
# Stable Audio Open 1.0 (v-prediction): its seconds_start / seconds_total embedders are 768 wide
_STABLE_AUDIO = {"audio_model": "dit1.0", "io_channels": 64, "embed_dim": 64, "depth": 1, "num_heads": 2,
                 "cond_token_dim": 768, "global_cond_dim": 1536, "project_cond_tokens": False}
# ACE-Step (a rectified-flow music DiT): its lyric Conformer has a fixed 1024 width (about 80 M weights)
_ACE_STEP = {"audio_model": "ace", "num_layers": 1, "attention_head_dim": 16, "num_attention_heads": 2,
             "text_embedding_dim": CONTEXT, "ssl_latent_dims": [32, 32], "ssl_encoder_depths": [1, 1],
             "lyric_encoder_vocab_size": 32, "lyric_hidden_size": 32, "max_position": 256}
REFUSED = {"wan21": ("WAN21_T2V", _WAN21), "stable_audio": ("StableAudio", _STABLE_AUDIO),
           "ace_step": ("ACEStep", _ACE_STEP)}
# the model class names (``type(model.model).__name__``) ComfyUI gives them
REFUSED_TYPES = {"wan21": "WAN21", "stable_audio": "StableAudio1", "ace_step": "ACEStep"}


def refused_model(kind: str = "wan21", seed: int = DEFAULT_SEED):
    """MODEL of a video / audio model ZeCon cannot guide (seeded random weights), built by ComfyUI's own config
    class: ``wan21`` (Wan 2.1 text-to-video), ``stable_audio`` (Stable Audio Open), ``ace_step`` (ACE-Step)."""
    import torch
    import comfy.supported_models as sm
    if kind not in REFUSED:
        raise ValueError(f"unknown refused model {kind!r}; one of {tuple(REFUSED)}")
    cls_name, cfg = REFUSED[kind]
    mc = getattr(sm, cls_name)(cfg)
    mc.set_inference_dtype(torch.float32, None)
    state = {}
    if kind == "stable_audio":   # get_model loads the two number embedders from the checkpoint's conditioner keys
        from comfy.ldm.audio.embedders import NumberConditioner
        for j, name in enumerate(("seconds_start", "seconds_total")):
            weights = tiny_sd.random_state_dict(NumberConditioner(768, min_val=0, max_val=512), seed + 1 + j)
            state.update({f"conditioner.conditioners.{name}.{k}": v for k, v in weights.items()})
    base = mc.get_model(state)
    tiny_sd.fill_random_(base.diffusion_model, seed)
    return tiny_sd._patcher(base)


# ------------------------------------------------------------------ VAEs
def tiny_vae(family: str = "flux_dev", seed: int = DEFAULT_SEED):
    """VAE (``comfy.sd.VAE``) whose latents are the family's (see the module table)."""
    import comfy.sd
    if _check(family) == "qwen_image":
        return comfy.sd.VAE(sd=wan21_vae_state_dict(seed))
    if family != "flux2":
        return tiny_sd.tiny_vae("flow", seed)
    from comfy.ldm.models.autoencoder import AutoencoderKL
    params = {"ddconfig": {**tiny_sd.kl_ddconfig(32), "batch_norm_latent": True}, "embed_dim": 32}
    sd = tiny_sd.random_state_dict(AutoencoderKL(**params), seed)
    sd["bn.running_var"] = sd["bn.running_var"].abs() + 1.0        # a variance (fill_random_ draws N(0, 0.02))
    vae = comfy.sd.VAE(sd=sd, config={"params": params})
    # what comfy.sd.VAE sets when it detects the batch-norm latent in a Flux.2 VAE file
    vae.latent_channels, vae.downscale_ratio, vae.upscale_ratio = 128, 16, 16
    return vae


def wan21_vae_state_dict(seed: int = DEFAULT_SEED) -> dict:
    """A Wan 2.1 VAE (Qwen-Image's) 8 channels wide, as a file holds it: ``comfy.sd.VAE`` reads the width
    from ``decoder.head.0.gamma`` and the rest of the architecture from the key names."""
    from comfy.ldm.wan.vae import WanVAE
    net = WanVAE(dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                 temperal_downsample=[False, True, True], dropout=0.0)
    sd = tiny_sd.random_state_dict(net, seed)
    return {k: (v.abs() + 1.0 if k.endswith("gamma") else v) for k, v in sd.items()}   # RMS-norm scales ~ 1


def write_taef1(folder, seed: int = DEFAULT_SEED) -> dict:
    """``taef1_decoder.safetensors`` and ``taef1_encoder.safetensors`` (16-channel TAESD halves) in ``folder``."""
    folder = Path(folder)
    return {f"taef1_{part}.safetensors": tiny_sd._save(tiny_sd.taesd_half(part, 16, seed + j),
                                                      folder / f"taef1_{part}.safetensors")
            for j, part in enumerate(("decoder", "encoder"))}
