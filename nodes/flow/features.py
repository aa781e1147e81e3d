"""ZeCon content features of a rectified-flow DiT (Flux, Flux.2, Chroma, SD3, Qwen-Image, Lumina2 / Z-Image, HiDream).

A DiT has no UNet encoder; the image tokens of its first transformer blocks play its role (one
token per latent patch, so PatchNCE's patches are tokens). As the SD backbone does with its
encoder, the blocks run at t = 0 (σ = 0: the clean-image end of the flow) on the given clean
latent, with one fixed text context per run (the negative prompt's, else the positive's).

Layer ``i`` is the i-th transformer block in the order the model runs them (Flux-type and HiDream:
the double-stream blocks, then the single-stream blocks; Lumina2 / Z-Image: ``layers``, after the
refiners). Its feature is the image tokens *entering* block i, either

* ``"modulated"`` (default): as block i's AdaLN modulates them for its attention,
  (1 + scale) · norm(x) + shift — the token DiT correspondence work found far better than the raw
  stream on Flux (DiTF, NeurIPS 2025: PCK 65.3 vs 29.9; design note §0.5); or
* ``"residual"``: the residual stream itself.

Features are [B, C, h, w] float32 maps on the token grid (h, w = latent size / patch size),
the shape ``zecon_core``'s PatchNCE (``zecon_loss``) takes from the SD encoder.

=============  ========================================  ======================  ===============  ========
family         models                                    blocks (layer order)    modulation       default
=============  ========================================  ======================  ===============  ========
flux           Flux.1 dev / schnell / Kontext / Krea     double_blocks,          img_norm1 +      0, 2, 4
                                                         single_blocks           img_mod / vec
flux2          Flux.2                                    double_blocks,          global (vec      0, 2, 4
                                                         single_blocks           tuple)
chroma         Chroma                                    double_blocks,          distilled        0, 2, 4
                                                         single_blocks           (vec tuple)
sd3            SD3, SD3.5 (medium / large)               joint_blocks            x_block.norm1 +  0, 2, 4
                                                                                 adaLN (shift,
                                                                                 scale)
qwen_image     Qwen-Image, Qwen-Image-Edit               transformer_blocks      img_norm1 +      0, 2, 4
                                                                                 img_mod
lumina2        Lumina 2, Z-Image (NextDiT)               layers                  attention_norm1  0, 2, 4
                                                                                 × (1 + scale)
hidream        HiDream-I1 (not E1's image_cond)          double_stream_blocks,   norm1_i +        0, 2, 4
                                                         single_stream_blocks    adaLN
=============  ========================================  ======================  ===============  ========

The defaults are the same on every family: three blocks from the first five (ZeCon's layers
likewise go from the input to the middle of the encoder), so the features run the embedders, the
first four blocks and block 4's modulation. They have not been tuned on a quality benchmark.
Cost at 1024 px (128² latent, FLOPs counted on the meta device with 0.3.75's classes at real
sizes, defaults): the differentiated call (forward + backward to the latent) is 0.15 of a plain
forward on Flux.1-dev (11.4 of 74.4 TFLOP), 0.47 on SD3.5-medium (5.3 of 11.3), 0.39 on Z-Image
(24.7 of 62.5: its two noise and two context refiners run first); the source's no-grad call
(0.07 / 0.20 / 0.19) is computed once per run (see :class:`FlowFeatures`).

How it runs: :func:`build_features` copies, after the model is loaded (so LoRAs and other
weight patches are in), the diffusion model's small parts (embedders, refiners, final layer)
and its blocks up to the deepest layer, with every weight *as the model's forward uses it*:
through ComfyUI's own ``cast_bias_weight`` (low-VRAM LoRA patches applied, fp8 / quantised
weights dequantised), in a float compute dtype (bfloat16 for fp8 / fp16 models, float32 on the
CPU), outside inference mode, frozen. It then runs ComfyUI's OWN forward of that copy
(``BaseModel.apply_model`` at σ = 0 with the conditioning's ``model_conds``); forward pre-hooks
on the blocks record the tokens and stop the forward after the deepest wanted block. Only
Flux-type blocks are replaced, by the out-of-place forwards of :mod:`.flux_blocks`. With grad
enabled, every attention call goes through PyTorch's kernel (``optimized_attention_override``),
which has a backward; no-grad calls keep ComfyUI's kernel (except on the meta device).

Meta device: a model whose weights are on ``meta`` gives a meta copy and meta features (FLOP
counting with ``torch.utils.flop_counter``), without loading anything.
"""

from __future__ import annotations

import copy
import inspect
import math
from dataclasses import dataclass, field

import comfy.model_management
import comfy.model_sampling
import comfy.ops
import torch
from comfy.ldm.chroma.model import Chroma
from comfy.ldm.flux.layers import apply_mod
from comfy.ldm.flux.model import Flux
from comfy.ldm.hidream.model import HiDreamImageTransformer2DModel
from comfy.ldm.lumina.model import NextDiT
from comfy.ldm.lumina.model import modulate as lumina_modulate
from comfy.ldm.modules.diffusionmodules.mmdit import OpenAISignatureMMDITWrapper
from comfy.ldm.modules.diffusionmodules.mmdit import modulate as mmdit_modulate
from comfy.ldm.qwen_image.model import QwenImageTransformer2DModel

from ..latent.backbone import differentiable_attention
from .flux_blocks import double_block_forward, single_block_forward

FEATURES = ("modulated", "residual")
DEFAULT_LAYERS = {"flux": (0, 2, 4), "flux2": (0, 2, 4), "chroma": (0, 2, 4), "sd3": (0, 2, 4),
                  "qwen_image": (0, 2, 4), "lumina2": (0, 2, 4), "hidream": (0, 2, 4)}
FAMILIES = tuple(DEFAULT_LAYERS)

# family -> the block lists in the order the model runs them: (attribute, block kind)
BLOCK_LISTS = {"flux": (("double_blocks", "double"), ("single_blocks", "single")),
               "flux2": (("double_blocks", "double"), ("single_blocks", "single")),
               "chroma": (("double_blocks", "double"), ("single_blocks", "single")),
               "sd3": (("joint_blocks", "joint"),),
               "qwen_image": (("transformer_blocks", "qwen"),),
               "lumina2": (("layers", "lumina"),),
               "hidream": (("double_stream_blocks", "hidream"), ("single_stream_blocks", "hidream"))}
OUT_OF_PLACE = {"double": double_block_forward, "single": single_block_forward}

# diffusion-model class -> family (Flux.2 is a Flux with global modulation)
ARCHITECTURES = {Flux: "flux", Chroma: "chroma", OpenAISignatureMMDITWrapper: "sd3",
                 QwenImageTransformer2DModel: "qwen_image", NextDiT: "lumina2",
                 HiDreamImageTransformer2DModel: "hidream"}
SUPPORTED = ("Flux.1 (dev, schnell, Kontext, Krea), Flux.2, Chroma, SD3 / SD3.5, Qwen-Image, Lumina 2 / Z-Image, "
             "HiDream-I1")


def family_of(model_patcher) -> str:
    """The feature family of a MODEL (``ModelPatcher``); ``ValueError`` naming the model type for any
    model that is not one of the supported rectified-flow image DiTs (video, audio, UNets, pixel-space ...)."""
    base = model_patcher.model
    dm = getattr(base, "diffusion_model", None)
    sampling = model_patcher.get_model_object("model_sampling")
    family = ARCHITECTURES.get(type(dm))       # exact classes: subclasses (e.g. ChromaRadiance) are other models
    if family == "flux" and dm.params.global_modulation:
        family = "flux2"
    if family is None or not isinstance(sampling, comfy.model_sampling.CONST):
        prediction = getattr(getattr(base, "model_type", None), "name", "?")
        raise ValueError(
            f"model: {type(base).__name__} ({type(dm).__name__}, prediction type {prediction}) is not a "
            f"rectified-flow image model ZeCon can guide; supported: {SUPPORTED}.")
    return family


def default_layers(family: str) -> tuple[int, ...]:
    """ZeCon layers (block indices in run order) used when none are given; see the module table."""
    if family not in DEFAULT_LAYERS:
        raise ValueError(f"family: {family!r} is not one of {FAMILIES}")
    return DEFAULT_LAYERS[family]


def block_count(model_patcher) -> int:
    """How many transformer blocks (ZeCon layers 0 .. n-1) the model has."""
    dm = model_patcher.model.diffusion_model
    return sum(len(getattr(dm, name)) for name, _ in BLOCK_LISTS[family_of(model_patcher)])


class _Stop(Exception):
    """Raised by the hook of the deepest wanted block: the rest of the forward is not needed."""


@dataclass
class _Grid:
    """Where the image tokens sit: ``n`` = h·w tokens of the latent; ``txt`` text tokens before them
    in Flux's single-stream blocks; ``pad`` pad tokens after them in Z-Image's joint stream."""

    h: int
    w: int
    txt: int
    pad: int

    @property
    def n(self) -> int:
        return self.h * self.w


@dataclass
class _Run:
    wanted: list[int]
    grid: _Grid
    modulated: bool
    out: dict[int, torch.Tensor] = field(default_factory=dict)


def _arguments(block, args, kwargs) -> dict:
    return inspect.signature(type(block).forward).bind(block, *args, **kwargs).arguments


def _flux_double(block, args, kwargs, grid, modulated):
    a = _arguments(block, args, kwargs)
    img = a["img"][:, :grid.n]
    if not modulated:
        return img
    mod = block.img_mod(a["vec"])[0] if block.modulation else a["vec"][0][0]
    return apply_mod(block.img_norm1(img), 1 + mod.scale, mod.shift)


def _flux_single(block, args, kwargs, grid, modulated):
    a = _arguments(block, args, kwargs)
    x = a["x"][:, grid.txt:grid.txt + grid.n]
    if not modulated:
        return x
    mod = block.modulation(a["vec"])[0] if block.modulation else a["vec"]
    return apply_mod(block.pre_norm(x), 1 + mod.scale, mod.shift)


def _joint(block, args, kwargs, grid, modulated):
    # JointBlock.forward(context, x, c=..., use_checkpoint=..., transformer_options=...)
    x = (args[1] if len(args) > 1 else kwargs["x"])[:, :grid.n]
    if not modulated:
        return x
    xb = block.x_block
    chunks = 9 if xb.x_block_self_attn else (4 if xb.scale_mod_only else 6)
    mods = xb.adaLN_modulation(kwargs["c"] if "c" in kwargs else args[2]).chunk(chunks, dim=1)
    shift, scale = (None, mods[0]) if xb.scale_mod_only else (mods[0], mods[1])
    return mmdit_modulate(xb.norm1(x), shift, scale)


def _qwen(block, args, kwargs, grid, modulated):
    a = _arguments(block, args, kwargs)
    hidden = a["hidden_states"][:, :grid.n]
    if not modulated:
        return hidden
    return block._modulate(block.img_norm1(hidden), block.img_mod(a["temb"]).chunk(2, dim=-1)[0])[0]


def _lumina(block, args, kwargs, grid, modulated):
    a = _arguments(block, args, kwargs)
    x = a["x"]
    start = x.shape[1] - grid.n - grid.pad
    x = x[:, start:start + grid.n]
    if not modulated or not block.modulation:
        return x
    return lumina_modulate(block.attention_norm1(x), block.adaLN_modulation(a["adaln_input"]).chunk(4, dim=1)[0])


def _hidream(block, args, kwargs, grid, modulated):
    # HiDreamImageBlock -> its .block (double or single); image tokens come first in both
    a = _arguments(block, args, kwargs)
    inner = block.block
    x = a["image_tokens"][:, :grid.n]
    if not modulated:
        return x
    chunks = 12 if a["text_tokens"] is not None else 6
    shift, scale = inner.adaLN_modulation(a["adaln_input"])[:, None].chunk(chunks, dim=-1)[:2]
    return inner.norm1_i(x).to(dtype=x.dtype) * (1 + scale) + shift


TOKENS = {"double": _flux_double, "single": _flux_single, "joint": _joint, "qwen": _qwen, "lumina": _lumina,
          "hidream": _hidream}


def _grid(family: str, dm, latent: torch.Tensor, txt_tokens: int) -> _Grid:
    p = dm.patch_size
    h, w = math.ceil(latent.shape[-2] / p), math.ceil(latent.shape[-1] / p)
    pad = 0
    if family == "lumina2" and dm.pad_tokens_multiple is not None:
        pad = (-(h * w)) % dm.pad_tokens_multiple
    return _Grid(h, w, txt_tokens, pad)


def compute_dtype(base_model, device: torch.device) -> torch.dtype:
    """The dtype features are computed and differentiated in: float32 on the CPU; else the model's
    compute dtype, bfloat16 in place of fp8 / fp16 (fp8 has no autograd; DiTs overflow in fp16)."""
    if device.type == "cpu":
        return torch.float32
    dtype = base_model.manual_cast_dtype or base_model.get_dtype()
    return dtype if dtype in (torch.float32, torch.bfloat16) else torch.bfloat16


def _effective(src: torch.nn.Module, name: str, device, dtype) -> torch.Tensor:
    """Parameter ``name`` of ``src`` as its forward uses it, dequantised, in ``dtype`` on ``device``, a new tensor."""
    t = getattr(src, name)
    if hasattr(src, "weight_function") and name in ("weight", "bias"):
        weight, bias = comfy.ops.cast_bias_weight(src, None, dtype=dtype, device=device, bias_dtype=dtype)
        t = weight if name == "weight" else bias
        scale = getattr(src, "scale_weight", None)
        if name == "weight" and scale is not None:     # scaled fp8: the op multiplies by it
            t = t.float() * scale.to(device=device, dtype=torch.float32)
    if t.is_floating_point():
        t = t.to(device=device, dtype=dtype)
    else:
        t = t.to(device=device)
    return t.clone() if t.data_ptr() == getattr(src, name).data_ptr() or t.is_inference() else t


def _frozen_copy(module: torch.nn.Module, device, dtype) -> torch.nn.Module:
    """A copy of ``module`` whose parameters are :func:`_effective` tensors, frozen; ComfyUI's per-op
    casting state (weight functions, fp8 scales, quantised layouts) reset to plain weights."""
    memo = {}
    for m in module.modules():
        for t in list(m._parameters.values()) + list(m._buffers.values()):
            if t is not None:
                memo[id(t)] = t                    # shared for now, replaced below: no second full copy
        for attr in ("weight_function", "bias_function"):
            if isinstance(getattr(m, attr, None), list):
                memo[id(getattr(m, attr))] = []    # baked into the weights below
    clone = copy.deepcopy(module, memo)
    for src, dst in zip(module.modules(), clone.modules()):
        for name, p in src._parameters.items():
            if p is not None:
                dst._parameters[name] = torch.nn.Parameter(_effective(src, name, device, dtype), requires_grad=False)
        for name, b in src._buffers.items():
            if b is not None:
                dst._buffers[name] = b.to(device=device).clone()
        if getattr(dst, "scale_weight", None) is not None:
            dst.scale_weight = torch.nn.Parameter(torch.ones((), device=device), requires_grad=False)
        if getattr(dst, "scale_input", None) is not None:
            dst.scale_input = None
        if getattr(dst, "layout_type", None) is not None:
            dst.layout_type = None
    return clone


def _prefix(dm: torch.nn.Module, lists, n_blocks: int) -> torch.nn.Module:
    """A shallow stand-in for ``dm`` that holds its blocks up to ``n_blocks`` (in run order) and all its other parts."""
    shell = copy.copy(dm)
    shell._modules = dict(dm._modules)
    shell._parameters = dict(dm._parameters)
    shell._buffers = dict(dm._buffers)
    remaining = n_blocks
    for name, _ in lists:
        blocks = list(getattr(dm, name))
        take = min(remaining, len(blocks))
        shell._modules[name] = torch.nn.ModuleList(blocks[:take])
        remaining -= take
    return shell


def _model_conds(base_model, cond, latent, device) -> dict:
    """``model_conds`` of one conditioning entry, tensors copied onto ``device`` outside inference mode.

    ``cond``: a processed entry (a dict with ``"model_conds"``, as a guider's ``conds`` hold them), a
    ``model_conds`` dict, or a CONDITIONING list (its first entry is encoded with the model's own
    ``extra_conds``, for a latent shaped like ``latent``)."""
    import comfy.sampler_helpers
    import comfy.samplers
    if isinstance(cond, dict):
        conds = cond.get("model_conds", cond)
    else:
        if latent is None:
            fmt = base_model.latent_format
            shape = (1, fmt.latent_channels) + (1,) * (fmt.latent_dimensions - 2) + (8, 8)
            latent = torch.zeros(shape)
        entries = comfy.sampler_helpers.convert_cond(list(cond)[:1])
        conds = comfy.samplers.encode_model_conds(base_model.extra_conds, entries, latent[:1].to(device), device,
                                                  "negative")[0]["model_conds"]
    out = {}
    for key, c in conds.items():
        value = c.cond
        if torch.is_tensor(value):
            value = value.to(device).clone()
        elif isinstance(value, list):
            value = [v.to(device).clone() if torch.is_tensor(v) else v for v in value]
        out[key] = c._copy_with(value)
    return out


class FlowFeatures:
    """ZeCon features of a flow DiT: ``features(latent, layers)`` -> one [B, C, h, w] float32 map per
    distinct layer, in ascending order (the ``features`` callable of ``zecon_core``'s guidance).

    ``latent``: model-space latent (``process_latent_in`` applied) as the diffusion model takes it
    ([B, C, H, W]; Qwen-Image [B, C, 1, H, W]); differentiable with respect to it. A no-grad call with
    the tensor of the previous no-grad call (or a view of it with the same layout), unchanged since (the
    source latent, whose features the guidance asks for at every step), returns the same features."""

    def __init__(self, family: str, base_model, model_conds: dict, n_blocks: int, feature: str, device, dtype,
                 layers: tuple[int, ...]):
        self.family, self.feature, self.dtype, self.layers = family, feature, dtype, layers
        self.n_blocks = n_blocks
        self.model_conds = model_conds
        lists = BLOCK_LISTS[family]
        with torch.inference_mode(False):
            dm = _frozen_copy(_prefix(base_model.diffusion_model, lists, n_blocks), device, dtype)
        dm.dtype = dtype
        if family == "sd3":
            dm.use_checkpoint = False
        position = 0
        for name, kind in lists:
            for block in getattr(dm, name):
                if kind in OUT_OF_PLACE:
                    block.forward = OUT_OF_PLACE[kind].__get__(block)
                block.register_forward_pre_hook(self._hook(position, TOKENS[kind]), with_kwargs=True)
                position += 1
        self.diffusion_model = dm
        self.model = copy.copy(base_model)          # the model's own apply_model, on the copy
        self.model._modules = {**base_model._modules, "diffusion_model": dm}
        self.model.manual_cast_dtype = dtype
        self._run = None
        self._source = None     # (latent, its key, features) of the last no-grad call

    def _hook(self, position: int, tokens):
        def pre_hook(block, args, kwargs):
            run = self._run
            if run is None or position not in run.wanted:
                return None
            run.out[position] = tokens(block, args, kwargs, run.grid, run.modulated)
            if position == run.wanted[-1]:
                raise _Stop
            return None
        return pre_hook

    def __call__(self, latent: torch.Tensor, layers=None) -> list[torch.Tensor]:
        wanted = sorted(set(self.layers if layers is None else layers))
        if wanted[-1] >= self.n_blocks or wanted[0] < 0:
            raise ValueError(f"zecon_layers: {wanted} outside the {self.n_blocks} blocks these features were built "
                             f"with (0..{self.n_blocks - 1})")
        key = self._source_key(latent, wanted)
        if key is not None and self._source is not None and self._source[1] == key:
            return self._source[2]
        b = latent.shape[0]
        kwargs = {k: c.process_cond(batch_size=b, area=None).concat([]) for k, c in self.model_conds.items()}
        context = kwargs.get("c_crossattn")
        grid = _grid(self.family, self.diffusion_model, latent, 0 if context is None else context.shape[1])
        differentiated = torch.is_grad_enabled() or latent.is_meta   # (ComfyUI's CPU kernel queries device memory)
        options = {"optimized_attention_override": differentiable_attention} if differentiated else {}
        sigma = torch.zeros(b, device=latent.device)
        self._run = run = _Run(wanted, grid, self.feature == "modulated")
        try:
            self.model.apply_model(latent, sigma, transformer_options=options, **kwargs)
        except _Stop:
            pass
        finally:
            self._run = None
        if len(run.out) != len(wanted):
            raise RuntimeError(f"{type(self.diffusion_model).__name__}'s forward did not reach blocks "
                               f"{[i for i in wanted if i not in run.out]}")
        out = [self._map(run.out[i], grid) for i in wanted]
        if key is not None:
            self._source = (latent, key, out)      # the tensor is held: its memory cannot be reused meanwhile
        return out

    @staticmethod
    def _source_key(latent: torch.Tensor, wanted: list[int]):
        """What identifies a no-grad call's input without reading it: the same memory, layout and version
        counter (shared by all views of a tensor, bumped by every in-place change) mean the same values."""
        if torch.is_grad_enabled() or latent.is_inference() or latent.is_meta:
            return None
        return (latent.data_ptr(), latent.shape, latent.stride(), latent.dtype, latent.device, latent._version,
                tuple(wanted))

    @staticmethod
    def _map(tokens: torch.Tensor, grid: _Grid) -> torch.Tensor:
        if tokens.shape[1] != grid.n:
            raise RuntimeError(f"expected {grid.n} image tokens ({grid.h}x{grid.w}), got {tokens.shape[1]}")
        return tokens.float().transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], grid.h, grid.w)


def build_features(model_patcher, cond, layers=None, feature: str = "modulated", latent=None, device=None,
                   dtype=None, load: bool = True) -> FlowFeatures:
    """ZeCon features of a flow MODEL with the text context of ``cond`` (the negative prompt's).

    ``layers``: the layers the features will be asked for (default: :func:`default_layers`, those the
    model has); the copy holds the blocks up to the deepest. ``feature``: ``"modulated"`` or
    ``"residual"``. ``cond``, ``latent``: see :func:`_model_conds`. ``device``: the model's load device;
    ``dtype``: :func:`compute_dtype`. ``load``: load the model first with ComfyUI's ``load_models_gpu``
    (so weight patches are applied) — pass ``False`` where sampling has loaded it already (fully or in
    low-VRAM mode: both are copied as the forward sees them). Meta-device models are never loaded."""
    family = family_of(model_patcher)
    if feature not in FEATURES:
        raise ValueError(f"feature: {feature!r} is not one of {FEATURES}")
    n_model = block_count(model_patcher)
    if layers is None:
        layers = tuple(i for i in default_layers(family) if i < n_model) or (0,)
    layers = tuple(sorted(set(int(i) for i in layers)))
    if not layers or layers[0] < 0 or layers[-1] >= n_model:
        raise ValueError(f"zecon_layers: {list(layers)} - this {family} model has {n_model} blocks (0..{n_model - 1})")
    base = model_patcher.model
    meta = any(p.is_meta for p in base.diffusion_model.parameters())
    if meta:
        device = torch.device("meta")
    else:
        if load:
            comfy.model_management.load_models_gpu([model_patcher])
        device = torch.device(device) if device is not None else model_patcher.load_device
    dtype = dtype or compute_dtype(base, device)
    with torch.inference_mode(False):
        conds = _model_conds(base, cond, latent, device)
    if "image_cond" in conds:
        raise ValueError("model: HiDream-E1's edit conditioning (image_cond: the source image beside the latent) "
                         "is not supported for ZeCon features; use HiDream-I1")
    return FlowFeatures(family, base, conds, layers[-1] + 1, feature, device, dtype, layers)
