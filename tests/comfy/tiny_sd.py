"""Tiny random-weight Stable Diffusion models in ComfyUI 0.3.75's REAL architectures.

Everything is built through ComfyUI's own classes (``comfy.supported_models``,
``comfy.model_base``, ``comfy.model_patcher.ModelPatcher``, ``comfy.sd.CLIP`` /
``comfy.sd.VAE``, ``comfy.taesd.taesd``), with weights drawn from a seeded
generator, so the same seed gives the same model bit for bit. ComfyUI is
imported lazily inside the functions: in a ComfyUI server (the test node pack
``tiny_sd_pack``) it is already importable; in a test process call
:func:`setup_comfy` first.

Families (``ARCHS``):

=========  ==========================  =======  ========  ====================  =========
arch       model config class          latent   context   adm_in_channels       sampling
=========  ==========================  =======  ========  ====================  =========
sd15       supported_models.SD15       4 ch     64        None                  eps
sd15_file  SD15 (detected from file)   4 ch     768       None                  eps
sd2v       supported_models.SD20       4 ch     64        None                  v-pred
sdxl       supported_models.SDXL       4 ch     128       1600 (pooled 64)      eps
flow       supported_models.SD3        16 ch    4096      128  (pooled 128)     flow
=========  ==========================  =======  ========  ====================  =========

``sd15_file`` is the smallest UNet that ComfyUI's detection
(``model_detection.detect_unet_config`` + ``SD15.matches``) still calls SD15:
model_channels 320 and context_dim 768 are what SD15 matches on, so only the
depth can shrink (one level, one res block with a depth-1 transformer, no middle block;
no transformer on the output side): 13.6M params, one forward at 16x16 ~55 ms on one thread.

Node pack (tests/comfy/tiny_sd_pack, e.g. ``comfy_server_factory(packs={"zecon_tiny_sd": dir})``):
``ZeconTestTinySD`` (arch, seed) -> MODEL, CLIP, VAE = :func:`tiny_sd`;
``ZeconTestTinyCLIP`` (arch, seed) -> CLIP = :func:`tiny_clip` (seed + 1, as in ZeconTestTinySD).

Files for the stock loaders:

* :func:`write_sd15_unet`       -> models/diffusion_models (UNETLoader), SD15-detected
* :func:`write_sd15_checkpoint` -> models/checkpoints (CheckpointLoaderSimple): UNet + a
  TAESD-format VAE under ``first_stage_model.``; the CLIP only with ``with_clip=True``
  (then the full-size 123M-parameter CLIP-L, since SD15's checkpoint CLIP config is fixed)
* :func:`write_vae`             -> models/vae (VAELoader): a TAESD-format VAE (ComfyUI's
  VAE picks its AutoencoderKL config from fixed sizes: ch=128, 83M params; TAESD is the
  smallest real VAE that VAELoader loads from a models/vae file)
* :func:`write_taesd`           -> models/vae_approx: taesd/taesdxl/taesd3 encoder+decoder
  (previews; VAELoader's "taesd"/"taesdxl"/"taesd3" entries need both halves)
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import types
from pathlib import Path

ARCHS = ("sd15", "sd15_file", "sd2v", "sdxl", "flow")
DEFAULT_SEED = 0
TOKENS = 77                 # CLIP sequence length (conditioning is [B, 77, context])

# ------------------------------------------------------------------ UNet configs
# Keys as model_detection.detect_unet_config returns them (so a detected config
# and a built one are the same dict); the class's unet_extra_config is added by
# supported_models_base.BASE.__init__ (SD15: num_heads 8; SD20/SDXL: 64-wide heads).
_UNET_COMMON = {"use_checkpoint": False, "image_size": 32, "use_spatial_transformer": True,
                "legacy": False, "in_channels": 4, "out_channels": 4,
                "use_temporal_resblock": False, "use_temporal_attention": False}

SD15_FILE_UNET = {**_UNET_COMMON, "adm_in_channels": None, "model_channels": 320,
                  "num_res_blocks": [1], "channel_mult": [1], "transformer_depth": [1],
                  "transformer_depth_output": [0, 0], "transformer_depth_middle": -2,
                  "use_linear_in_transformer": False, "context_dim": 768}

SD15_TINY_UNET = {**_UNET_COMMON, "adm_in_channels": None, "model_channels": 64,
                  "num_res_blocks": [1, 1], "channel_mult": [1, 2], "transformer_depth": [1, 1],
                  "transformer_depth_output": [1, 1, 1, 1], "transformer_depth_middle": 1,
                  "use_linear_in_transformer": False, "context_dim": 64}

SD2V_TINY_UNET = {**SD15_TINY_UNET, "use_linear_in_transformer": True}

# SDXL block structure: no attention at the first level, deeper transformers below,
# label_emb (num_classes "sequential") fed by pooled CLIP-G + 6 size embeds (6*256): real
# SDXL 1280 + 1536 = 2816, here 64 + 1536 = 1600.
SDXL_POOLED = 64           # CLIP-G's pooled output is its width (text_projection is width x width)
SDXL_TINY_UNET = {**_UNET_COMMON, "num_classes": "sequential", "adm_in_channels": SDXL_POOLED + 6 * 256,
                  "model_channels": 64, "num_res_blocks": [1, 1], "channel_mult": [1, 2],
                  "transformer_depth": [0, 2], "transformer_depth_output": [0, 0, 2, 2],
                  "transformer_depth_middle": 2, "use_linear_in_transformer": True,
                  "context_dim": 128}

FLOW_POOLED = 128          # sd3_clip: pooled CLIP-L (64) + pooled CLIP-G (64)
FLOW_TINY_MMDIT = {"in_channels": 16, "out_channels": 16, "patch_size": 2, "depth": 2,
                   "input_size": None, "adm_in_channels": FLOW_POOLED,
                   "context_embedder_config": {"target": "torch.nn.Linear",
                                               "params": {"in_features": 4096, "out_features": 128}},
                   "num_patches": 1024, "pos_embed_max_size": 32,
                   "pos_embed_scaling_factor": None, "x_block_self_attn_layers": []}

# ------------------------------------------------------------------ text encoders
# Overrides of ComfyUI's CLIP json configs, passed as model_options["<name>_model_config"]
# (sd1_clip.SDClipModel applies them); 3 layers because SD2/SDXL/SD3 take layer -2.
# (comfy.clip_model.CLIPTextModel's text_projection is width x width, so pooled = width.)
def _clip_cfg(width: int) -> dict:
    return {"hidden_size": width, "intermediate_size": 2 * width, "num_hidden_layers": 3,
            "num_attention_heads": 2, "projection_dim": width}


CLIP_CONFIGS = {
    "sd15": {"clip_l": _clip_cfg(64)},
    "sd15_file": {"clip_l": {**_clip_cfg(768), "num_attention_heads": 12,
                             "intermediate_size": 128, "num_hidden_layers": 1}},
    "sd2v": {"clip_h": _clip_cfg(64)},
    "sdxl": {"clip_l": _clip_cfg(64), "clip_g": _clip_cfg(64)},
    "flow": {"clip_l": _clip_cfg(64), "clip_g": _clip_cfg(64)},
}

# shapes a CONDITIONING of each arch has (context width, pooled width or None)
COND_SHAPES = {"sd15": (64, None), "sd15_file": (768, None), "sd2v": (64, None),
               "sdxl": (128, SDXL_POOLED), "flow": (4096, FLOW_POOLED)}
LATENT_CHANNELS = {"sd15": 4, "sd15_file": 4, "sd2v": 4, "sdxl": 4, "flow": 16}

# Small AutoencoderKL (real architecture, 32 channels, 3 downsamples = factor 8).
def kl_ddconfig(latent_channels: int = 4) -> dict:
    return {"double_z": True, "z_channels": latent_channels, "resolution": 256, "in_channels": 3,
            "out_ch": 3, "ch": 32, "ch_mult": [1, 1, 1, 1], "num_res_blocks": 1,
            "attn_resolutions": [], "dropout": 0.0}


TAESD_NAMES = {"taesd": (4, 0.18215, 0.0), "taesdxl": (4, 0.13025, 0.0),
               "taesd3": (16, 1.5305, 0.0609),   # name -> (latent channels, vae_scale, vae_shift)
               "taef1": (16, 0.3611, 0.1159)}    # Flux latent format (Flux.1, Chroma, Lumina 2 / Z-Image)


# ------------------------------------------------------------------ ComfyUI import
class _AvStub(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``av`` (PyAV) only serves video nodes; an empty stand-in lets comfy_api import without it."""

    def find_spec(self, name, path=None, target=None):
        if name == "av" or name.startswith("av."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        m = types.ModuleType(spec.name)
        m.__path__ = []
        m.__getattr__ = lambda attr: type(attr, (), {})
        return m

    def exec_module(self, module):
        pass


def comfyui_dir() -> Path:
    import harness   # tests/comfy/harness.py (not imported at module level: the test pack loads this file alone)
    return harness.default_comfyui_dir()


def setup_comfy(comfy_dir: str | os.PathLike | None = None, cpu: bool = True) -> Path:
    """Make ComfyUI's modules importable in this process (idempotent): its dir on sys.path,
    ``args.cpu`` (before comfy.model_management is imported), a PyAV stub where av is missing."""
    d = Path(comfy_dir) if comfy_dir else comfyui_dir()
    if str(d) not in sys.path:
        sys.path.insert(0, str(d))
    from comfy.cli_args import args
    if "comfy.model_management" not in sys.modules:
        args.cpu = cpu
    try:
        import av  # noqa: F401
    except ImportError:
        if not any(isinstance(f, _AvStub) for f in sys.meta_path):
            sys.meta_path.insert(0, _AvStub())
    return d


def comfy_nodes():
    """ComfyUI's own ``nodes`` module (UNETLoader, VAELoader, CheckpointLoaderSimple ...).

    The repository root (on pytest's pythonpath) has a ``nodes`` package of its own; after
    :func:`setup_comfy` the ComfyUI dir comes first, and this checks that the module really is
    ComfyUI's nodes.py rather than importing the wrong one silently."""
    import nodes
    f = Path(getattr(nodes, "__file__", "") or "").resolve()
    if f.name != "nodes.py" or not hasattr(nodes, "UNETLoader"):
        raise RuntimeError(f"'import nodes' gave {f}, not ComfyUI's nodes.py: call setup_comfy() "
                           "before anything imports another top-level 'nodes'")
    return nodes


# ------------------------------------------------------------------ random weights
def fill_random_(module, seed: int = DEFAULT_SEED, scale: float = 1.0):
    """Overwrite every floating tensor of ``module.state_dict()`` in place, deterministically:
    matrices/kernels ~ N(0, 1/fan_in) * scale, 1-D weights (norms) 1, biases and other vectors
    ~ N(0, 0.02), scalars left alone. ComfyUI's layers skip init (torch.empty), so every model
    built here goes through this. Returns the module."""
    import torch
    g = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for name, t in module.state_dict(keep_vars=True).items():
            if not t.is_floating_point() or t.ndim == 0:
                continue
            if t.ndim >= 2:
                fan_in = t[0].numel()
                v = torch.randn(t.shape, generator=g) * (scale / fan_in ** 0.5)
            elif name.endswith("weight"):   # 1-D weights here are all norm scales
                v = torch.ones(t.shape)
            else:
                v = torch.randn(t.shape, generator=g) * 0.02
            t.data.copy_(v.to(t.dtype))
    return module


def random_state_dict(module, seed: int = DEFAULT_SEED) -> dict:
    """A contiguous CPU copy of the module's state dict after :func:`fill_random_`."""
    fill_random_(module, seed)
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}


# ------------------------------------------------------------------ models
def model_config(arch: str):
    """The ComfyUI model-config object (``comfy.supported_models.<class>``) for ``arch``,
    dtype float32, no manual cast."""
    import torch
    import comfy.supported_models as sm
    cls, cfg = {"sd15": (sm.SD15, SD15_TINY_UNET), "sd15_file": (sm.SD15, SD15_FILE_UNET),
                "sd2v": (sm.SD20, SD2V_TINY_UNET), "sdxl": (sm.SDXL, SDXL_TINY_UNET),
                "flow": (sm.SD3, FLOW_TINY_MMDIT)}[_check_arch(arch)]
    mc = cls(cfg)
    mc.set_inference_dtype(torch.float32, None)
    return mc


def _check_arch(arch: str) -> str:
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; one of {ARCHS}")
    return arch


def _patcher(base_model):
    import comfy.model_management as mm
    import comfy.model_patcher
    return comfy.model_patcher.ModelPatcher(base_model, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


def tiny_model(arch: str = "sd15", seed: int = DEFAULT_SEED):
    """MODEL (``comfy.model_patcher.ModelPatcher``) of ``arch`` with random weights.

    The BaseModel comes from the config class's own ``get_model`` (SD15/SDXL/SD3); SD20's
    get_model guesses eps vs v from trained weights, so sd2v is ``model_base.BaseModel(SD20
    config, ModelType.V_PREDICTION)`` - what get_model returns for a v-model."""
    import comfy.model_base as mb
    mc = model_config(arch)
    if arch == "sd2v":
        base = mb.BaseModel(mc, model_type=mb.ModelType.V_PREDICTION)
    else:
        base = mc.get_model({})
    fill_random_(base.diffusion_model, seed)
    return _patcher(base)


def unet_state_dict(arch: str = "sd15_file", seed: int = DEFAULT_SEED) -> dict:
    """The diffusion model's weights (keys as in a diffusion_models file, no prefix); the same
    tensors as ``tiny_model(arch, seed)`` holds."""
    return random_state_dict(model_config(arch).get_model({}).diffusion_model, seed)


def _save(sd: dict, path, fp16: bool = False) -> Path:
    import torch
    from safetensors.torch import save_file
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fp16:
        sd = {k: (v.half() if v.is_floating_point() else v) for k, v in sd.items()}
    save_file(sd, str(path))
    return path


def write_sd15_unet(path, seed: int = DEFAULT_SEED, fp16: bool = False) -> Path:
    """A .safetensors diffusion model that UNETLoader (models/diffusion_models or models/unet)
    loads and detects as SD15 (13.7M params, 55 MB fp32)."""
    return _save(unet_state_dict("sd15_file", seed), path, fp16)


def sd15_file_model(path=None, seed: int = DEFAULT_SEED):
    """MODEL for arch sd15_file: loaded from ``path`` through comfy.sd.load_diffusion_model (the
    UNETLoader code path), or without a path from the same weights in memory."""
    import comfy.sd
    if path is not None:
        return comfy.sd.load_diffusion_model(str(path))
    return comfy.sd.load_diffusion_model_state_dict(unet_state_dict("sd15_file", seed))


def write_sd15_checkpoint(path, seed: int = DEFAULT_SEED, with_clip: bool = False,
                          fp16: bool = False) -> Path:
    """A checkpoint for CheckpointLoaderSimple (models/checkpoints): ``model.diffusion_model.*``
    (the SD15-detected UNet) + ``first_stage_model.taesd_*`` (ComfyUI's VAE builds TAESD from
    these) and, with ``with_clip``, ``cond_stage_model.transformer.text_model.*``: the real-size
    CLIP-L (SD1ClipModel's fixed config: 768 wide, 12 layers, 123M params, ~250 MB fp16).
    Without it the loader's CLIP output is None (it logs that the checkpoint has no text encoder)."""
    sd = {"model.diffusion_model." + k: v for k, v in unet_state_dict("sd15_file", seed).items()}
    sd.update({"first_stage_model." + k: v for k, v in taesd_vae_state_dict("taesd", seed + 1).items()})
    if with_clip:
        import comfy.sd1_clip
        import torch
        clip_model = comfy.sd1_clip.SDClipModel(dtype=torch.float32)
        clip_sd = random_state_dict(clip_model.transformer, seed + 2)
        sd.update({"cond_stage_model.transformer." + k: v for k, v in clip_sd.items()})
    return _save(sd, path, fp16)


# ------------------------------------------------------------------ text encoders
def _clip_target(arch: str):
    import comfy.sd1_clip
    import comfy.sdxl_clip
    import comfy.supported_models_base as smb
    import comfy.text_encoders.sd2_clip
    import comfy.text_encoders.sd3_clip
    if arch in ("sd15", "sd15_file"):
        return smb.ClipTarget(comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel)
    if arch == "sd2v":
        return smb.ClipTarget(comfy.text_encoders.sd2_clip.SD2Tokenizer,
                              comfy.text_encoders.sd2_clip.SD2ClipModel)
    if arch == "sdxl":
        return smb.ClipTarget(comfy.sdxl_clip.SDXLTokenizer, comfy.sdxl_clip.SDXLClipModel)
    return smb.ClipTarget(comfy.text_encoders.sd3_clip.SD3Tokenizer,
                          comfy.text_encoders.sd3_clip.sd3_clip(clip_l=True, clip_g=True, t5=False))


def tiny_clip(arch: str = "sd15", seed: int = DEFAULT_SEED):
    """CLIP (``comfy.sd.CLIP``) for ``arch``: ComfyUI's own tokenizer + text-encoder classes
    (SD1ClipModel / SD2ClipModel / SDXLClipModel / sd3_clip without T5) with small widths
    (``CLIP_CONFIGS``), float32, random weights. Stock CLIPTextEncode gives a CONDITIONING of
    ``COND_SHAPES[arch]``: [1, 77, context] (+ pooled_output [1, pooled] for sdxl/flow)."""
    import torch
    import comfy.sd
    _check_arch(arch)
    opts = {"dtype": torch.float32}
    for name, cfg in CLIP_CONFIGS[arch].items():
        opts[f"{name}_model_config"] = dict(cfg)
    clip = comfy.sd.CLIP(_clip_target(arch), model_options=opts)
    fill_random_(clip.cond_stage_model, seed)
    return clip


def conditioning(arch: str = "sd15", seed: int = DEFAULT_SEED, batch: int = 1,
                 width: int | None = None, height: int | None = None) -> list:
    """CONDITIONING without a text encoder: ``[[cond [batch, 77, context], extras]]`` with
    ``pooled_output`` [batch, pooled] for sdxl/flow and, for sdxl, width/height (pixel size
    the ADM embeds; ComfyUI's default 768 if not given)."""
    import torch
    ctx, pooled = COND_SHAPES[_check_arch(arch)]
    g = torch.Generator().manual_seed(int(seed))
    extras = {}
    cond = torch.randn(batch, TOKENS, ctx, generator=g)
    if pooled is not None:
        extras["pooled_output"] = torch.randn(batch, pooled, generator=g)
    if arch == "sdxl":
        extras["width"], extras["height"] = width or 768, height or 768
    return [[cond, extras]]


def encode(clip, text: str) -> list:
    """What CLIPTextEncode does: tokenize + encode_from_tokens_scheduled."""
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


# ------------------------------------------------------------------ VAEs
def tiny_vae(arch: str = "sd15", seed: int = DEFAULT_SEED):
    """VAE (``comfy.sd.VAE``) in the real AutoencoderKL architecture with 32 channels
    (``kl_ddconfig``): downscale 8, 4 latent channels (16 for flow), through VAE's
    ``config=`` path (the state-dict path only knows the full-size configs)."""
    from comfy.ldm.models.autoencoder import AutoencoderKL
    import comfy.sd
    ch = LATENT_CHANNELS[_check_arch(arch)]
    params = {"ddconfig": kl_ddconfig(ch), "embed_dim": ch}
    sd = random_state_dict(AutoencoderKL(**params), seed)
    vae = comfy.sd.VAE(sd=sd, config={"params": params})
    vae.latent_channels = ch
    return vae


def taesd_half(part: str, latent_channels: int = 4, seed: int = DEFAULT_SEED) -> dict:
    """Random state dict of ``comfy.taesd.taesd.Encoder`` or ``Decoder`` (fixed 64 channels)."""
    import comfy.taesd.taesd as t
    net = {"encoder": t.Encoder, "decoder": t.Decoder}[part](latent_channels=latent_channels)
    return random_state_dict(net, seed)


def taesd_vae_state_dict(name: str = "taesd", seed: int = DEFAULT_SEED) -> dict:
    """One TAESD state dict as VAELoader.load_taesd assembles it (taesd_encoder.*, taesd_decoder.*,
    vae_scale, vae_shift): ComfyUI's VAE(sd) builds a TAESD from it."""
    import torch
    ch, scale, shift = TAESD_NAMES[name]
    sd = {"taesd_encoder." + k: v for k, v in taesd_half("encoder", ch, seed).items()}
    sd.update({"taesd_decoder." + k: v for k, v in taesd_half("decoder", ch, seed + 1).items()})
    sd["vae_scale"], sd["vae_shift"] = torch.tensor(scale), torch.tensor(shift)
    return sd


def write_vae(path, name: str = "taesd", seed: int = DEFAULT_SEED) -> Path:
    """A VAE file for VAELoader (models/vae): the TAESD format (about 2.4M params, 10 MB)."""
    return _save(taesd_vae_state_dict(name, seed), path)


def write_taesd(folder, names=("taesd", "taesdxl", "taesd3", "taef1"), seed: int = DEFAULT_SEED,
                encoders: bool = True) -> dict:
    """``<name>_decoder.safetensors`` (and ``<name>_encoder.safetensors``) in ``folder`` (use it as
    models/vae_approx): the decoder names latent_format.taesd_decoder_name looks for
    (SD15 'taesd_decoder', SDXL 'taesdxl_decoder', SD3 'taesd3_decoder', Flux 'taef1_decoder'). Returns
    {file name: path}."""
    folder = Path(folder)
    out = {}
    for i, name in enumerate(names):
        ch = TAESD_NAMES[name][0]
        parts = ("decoder", "encoder") if encoders else ("decoder",)
        for j, part in enumerate(parts):
            fn = f"{name}_{part}.safetensors"
            out[fn] = _save(taesd_half(part, ch, seed + 10 * i + j), folder / fn)
    return out


def write_taesd_decoders(folder, seed: int = DEFAULT_SEED) -> dict:
    """Only ``taesd_decoder.safetensors`` and ``taesdxl_decoder.safetensors`` (previews)."""
    return write_taesd(folder, names=("taesd", "taesdxl"), seed=seed, encoders=False)


def write_model_folders(root, seed: int = DEFAULT_SEED) -> dict:
    """All loader files under ``root``; returns {model folder name: dir} for the harness
    (``comfy_server_factory(model_folders=...)``) plus the file names:
    diffusion_models/tiny_sd15_unet.safetensors, vae/tiny_taesd_vae.safetensors,
    checkpoints/tiny_sd15_ckpt.safetensors (no CLIP), vae_approx/taesd*_{en,de}coder.safetensors."""
    root = Path(root)
    write_sd15_unet(root / "diffusion_models" / SD15_UNET_FILE, seed)
    write_vae(root / "vae" / VAE_FILE, "taesd", seed)
    write_sd15_checkpoint(root / "checkpoints" / SD15_CKPT_FILE, seed)
    write_taesd(root / "vae_approx", seed=seed)
    return {name: root / name for name in ("diffusion_models", "vae", "checkpoints", "vae_approx")}


SD15_UNET_FILE = "tiny_sd15_unet.safetensors"
SD15_CKPT_FILE = "tiny_sd15_ckpt.safetensors"
VAE_FILE = "tiny_taesd_vae.safetensors"


# ------------------------------------------------------------------ bundles
def tiny_sd(arch: str = "sd15", seed: int = DEFAULT_SEED, unet_path=None):
    """(MODEL, CLIP, VAE) of one family, like a checkpoint loader's outputs; seeds derived
    from ``seed`` (model seed, CLIP seed+1, VAE seed+2). sd15_file loads ``unet_path`` if given."""
    model = sd15_file_model(unet_path, seed) if arch == "sd15_file" else tiny_model(arch, seed)
    return model, tiny_clip(arch, seed + 1), tiny_vae(arch, seed + 2)
