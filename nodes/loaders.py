"""ZeCon Diffusion Loader and ZeCon CLIP Loader (+ the VGG layers the guidance nodes load)."""

from __future__ import annotations

from pathlib import Path

from comfy_api.latest import io

from ..zecon_core.guidance.clip_model import DEFAULT_CLIP, load_clip
from ..zecon_core.files.download import ensure_known_model
from ..zecon_core.pixel.model import PRECISIONS, load_diffusion_model
from ..zecon_core.files.registry import get_known
from ..zecon_core.guidance.vgg import LAYERS_FILE, ensure_vgg, load_vgg
from . import cache, folders
from . import validation as V
from .progress import download_progress
from .types import CATEGORY, ZeconClip, ZeconModel

NO_LOCAL_CLIP = "none"
VGG_AUTO = "auto"


def _resolve_or_none(name: str, kind: str):
    try:
        return folders.resolve(name, kind)
    except ValueError:
        return None


def model_name_error(name, kind: str, input_name: str) -> str | None:
    """Validation of a loader combo: a local file, or a known model that can be fetched."""
    if name is None:
        return None
    try:
        r = folders.resolve(name, kind)
    except ValueError as e:
        return f"{input_name}: {e}"
    if r.path is None and not r.entry.downloadable:
        return f"{input_name}: {r.entry.manual_text(folders.download_dir())}"
    return None


def fetch(resolved: folders.Resolved, node_id=None) -> Path:
    """The file of a resolved name, downloading a known model into the first zecon folder if needed."""
    if resolved.path is not None:
        return resolved.path
    return ensure_known_model(resolved.entry, folders.download_dir(), progress=download_progress(node_id))


class ZeconDiffusionLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ZeconDiffusionLoader",
            display_name="ZeCon Diffusion Loader",
            category=CATEGORY,
            description="Loads a guided-diffusion ADM UNet (ImageNet 256x256_diffusion_uncond.pt, FFHQ ffhq_10m.pt, ...) "
                        "from models/zecon. Its layout is read off the weights. Known models that are not there yet "
                        "are downloaded (and checked) the first time the node runs.",
            inputs=[
                io.Combo.Input("model_name", options=folders.model_options("unet"),
                               tooltip="Weight file in models/zecon (.safetensors/.pt/.pth/.bin). Entries marked "
                                       "'(download on first use)' are fetched into models/zecon when the node runs."),
                io.Combo.Input("precision", options=list(PRECISIONS), default="auto",
                               tooltip="On CUDA: auto/fp16 run the UNet under fp16 autocast (as the original), bf16 "
                                       "under bf16 autocast, fp32 without autocast. On the CPU everything runs in fp32."),
                io.Int.Input("num_head_channels", default=64, min=-1, max=1024, optional=True,
                             tooltip="Advanced: attention head width, which the weights do not record (64 for the "
                                     "ImageNet and FFHQ models); -1 means 4 heads per attention layer."),
                io.Boolean.Input("gradient_checkpointing", default=False, optional=True,
                                 tooltip="Advanced: recompute each UNet block during the backward pass instead of "
                                         "keeping its activations. Same result, less memory (512x512 fits a 24 GB "
                                         "GPU), at the cost of one more UNet forward per guided step."),
            ],
            outputs=[ZeconModel.Output("model", display_name="model",
                                       tooltip="The diffusion model (ZECON_MODEL) for inversion and sampling.")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, input_types=None, **values) -> bool:
        return V.result(*V.schema_errors(cls, values, input_types),
                        model_name_error(values.get("model_name"), "unet", "model_name"),
                        V.combo("precision", values.get("precision"), PRECISIONS),
                        V.head_channels(values.get("num_head_channels")))

    @classmethod
    def fingerprint_inputs(cls, model_name, precision, num_head_channels=64, gradient_checkpointing=False):
        r = _resolve_or_none(model_name, "unet")
        return (r.fingerprint() if r else model_name, precision, num_head_channels, gradient_checkpointing)

    @classmethod
    def execute(cls, model_name, precision, num_head_channels=64, gradient_checkpointing=False) -> io.NodeOutput:
        path = fetch(folders.resolve(model_name, "unet"), cls.hidden.unique_id)
        model = cache.DIFFUSION.get_or_load(
            cache.file_key(path, num_head_channels, precision, gradient_checkpointing),
            lambda: load_diffusion_model(path, num_head_channels=num_head_channels, precision=precision,
                                         gradient_checkpointing=gradient_checkpointing))
        return io.NodeOutput(model)


class ZeconClipLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ZeconClipLoader",
            display_name="ZeCon CLIP Loader",
            category=CATEGORY,
            description="Loads the CLIP model that scores the style: an open_clip model name and pretrained tag "
                        "(ViT-B-16 / openai, as in the paper; fetched by open_clip on first use), or an "
                        "OpenAI-format CLIP weight file from models/zecon.",
            inputs=[
                io.String.Input("clip_name", default=DEFAULT_CLIP[0],
                                tooltip="open_clip model name, e.g. ViT-B-16 (used when local_file is 'none')."),
                io.String.Input("pretrained", default=DEFAULT_CLIP[1],
                                tooltip="open_clip pretrained tag, e.g. openai (used when local_file is 'none')."),
                io.Combo.Input("local_file", options=[NO_LOCAL_CLIP, *folders.local_files()], default=NO_LOCAL_CLIP,
                               tooltip="An OpenAI-format CLIP state dict in models/zecon; when set it is used "
                                       "instead of clip_name/pretrained. 'none' loads by name."),
            ],
            outputs=[ZeconClip.Output("clip", display_name="clip",
                                      tooltip="The CLIP model (ZECON_CLIP) for the style prompt and the guided sampler.")],
        )

    @classmethod
    def validate_inputs(cls, input_types=None, **values) -> bool:
        clip_name, local_file = values.get("clip_name"), values.get("local_file")
        errors = [*V.schema_errors(cls, values, input_types),
                  V.combo("local_file", local_file, [NO_LOCAL_CLIP, *folders.local_files()])]
        if local_file == NO_LOCAL_CLIP and clip_name is not None and not str(clip_name).strip():
            errors.append("clip_name: give an open_clip model name (e.g. ViT-B-16) or choose a local_file")
        return V.result(*errors)

    @classmethod
    def fingerprint_inputs(cls, clip_name, pretrained, local_file):
        if local_file != NO_LOCAL_CLIP:
            r = _resolve_or_none(local_file, "clip")
            return ("file", r.fingerprint() if r else local_file)
        return ("open_clip", clip_name, pretrained)

    @classmethod
    def execute(cls, clip_name, pretrained, local_file) -> io.NodeOutput:
        if local_file != NO_LOCAL_CLIP:
            path = folders.resolve(local_file, "clip").path
            clip = cache.CLIP.get_or_load(cache.file_key(path), lambda: load_clip(path=path))
        else:
            name, tag = clip_name.strip(), (pretrained or "").strip() or None
            clip = cache.CLIP.get_or_load(("open_clip", name, tag), lambda: load_clip(name, tag))
        return io.NodeOutput(clip)


# ---------------------------------------------------------------- VGG layers
def vgg_options() -> list[str]:
    return [VGG_AUTO, *folders.local_files()]


def load_vgg_choice(choice: str, node_id=None):
    """(VGGFeatures, file name). ``auto``: vgg19_zecon_layers.safetensors or torchvision's
    vgg19-dcbb9e9d.pth from a zecon folder, downloading the latter on first use."""
    if choice != VGG_AUTO:
        path = folders.resolve(choice, "vgg").path
        return cache.VGG.get_or_load(cache.file_key(path), lambda: load_vgg(path)), path.name
    entry = get_known("vgg19")
    candidates = [Path(f) for f in folders.folders()]
    target = next((f for f in candidates if (f / LAYERS_FILE).is_file()), None)
    if target is None:
        target = next((f for f in candidates if (f / entry.filename).is_file()), folders.download_dir())
    small = target / LAYERS_FILE
    if not small.is_file():  # first use: extract the layers (downloading VGG19 if needed)
        target.mkdir(parents=True, exist_ok=True)
        return cache.VGG.get_or_load(("auto", str(target)), lambda: ensure_vgg(target, download_progress(node_id))), \
            entry.filename
    return cache.VGG.get_or_load(cache.file_key(small), lambda: load_vgg(small)), LAYERS_FILE
