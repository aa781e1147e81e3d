"""Table of the models ZeCon for ComfyUI knows how to find or fetch.

Pure data plus a few lookup helpers: importing this module never touches the
network or the file system.

Where files go
--------------
* Inside ComfyUI: ``<ComfyUI>/models/zecon`` (:data:`COMFY_MODELS_SUBDIR`), except
  the TAESD decoders (kind ``"taesd"``), which go where ComfyUI itself looks for
  them: ``<ComfyUI>/models/vae_approx`` (:func:`comfy_models_subdir`).
* Outside ComfyUI (scripts, tests): :func:`default_cache_dir`, i.e. the
  environment variable ``ZECON_MODELS_DIR`` if set, else
  ``$XDG_CACHE_HOME/zecon/models``, else ``~/.cache/zecon/models``.

Loader nodes list the local files of that folder plus the known models that are
not there yet, shown as ``display_name_not_downloaded(entry)``, e.g.
``"256x256_diffusion_uncond.pt (download on first use)"``;
:func:`parse_display_name` maps such a label back to its entry.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

__all__ = [
    "KINDS",
    "COMFY_MODELS_SUBDIR",
    "MODELS_DIR_ENV",
    "COMFY_SUBDIR_FOR_KIND",
    "TAESD_COMMIT",
    "KnownModel",
    "KNOWN_MODELS",
    "comfy_models_subdir",
    "get_known",
    "known_for_kind",
    "display_name_not_downloaded",
    "parse_display_name",
    "default_cache_dir",
    "WorkflowCheckpoint",
    "WORKFLOW_CHECKPOINTS",
    "frontend_model",
]

KINDS = ("unet", "clip", "vgg", "taesd")

#: Sub-folder of ComfyUI's ``models`` directory that holds ZeCon's files.
COMFY_MODELS_SUBDIR = "zecon"

#: Kinds whose files live in another ComfyUI model folder than ``zecon``: the TAESD
#: decoders are ComfyUI's own ``vae_approx`` files (its latent previews use them too).
COMFY_SUBDIR_FOR_KIND: Mapping[str, str] = MappingProxyType({"taesd": "vae_approx"})

#: Commit of https://github.com/madebyollin/taesd the TAESD URLs are pinned to:
#: TAESD 1.3, the last commit that changed taesd_decoder.pth and taesdxl_decoder.pth; its taesd3_decoder.pth
#: and taef1_decoder.pth (TAEF1 1.0; 1.1 came in December 2025) are the registry's too.
TAESD_COMMIT = "7f572ca629c9b0d3c9f71140e5f501e09f9ea280"

#: Environment variable that overrides the cache folder used outside ComfyUI.
MODELS_DIR_ENV = "ZECON_MODELS_DIR"

#: Suffix of the label of a known model that can be fetched on first use.
DOWNLOAD_SUFFIX = " (download on first use)"
#: Suffix of the label of a known model that must be fetched by hand.
MANUAL_SUFFIX = " (not found: place it by hand)"

_SHA256_PATTERN = r"[0-9a-f]{64}"
_GIT_BLOB_PATTERN = r"[0-9a-f]{40}"
_HEX_PATTERN = r"[0-9a-f]+"


@dataclass(frozen=True)
class KnownModel:
    """One model ZeCon knows about.

    ``urls`` are tried in order; an empty tuple means "no direct link" (see
    ``manual_instructions``) or "fetched by another library" (``kind == "clip"``,
    handled by open_clip). ``sha256`` is the full digest when known; otherwise
    ``sha256_prefix`` holds the leading hex digits we can vouch for (torchvision
    names its files ``<name>-<first 8 hex digits of the SHA256>.pth``).
    ``git_blob`` is the Git blob id of the file (40 hex digits: SHA-1 over
    ``b"blob <size>\\0" + content``, what ``git hash-object`` prints), for files
    fetched from a pinned commit of a Git repository whose SHA256 is not known; it
    fixes the content and the size. An entry may carry a SHA256 (or its prefix), a
    Git blob id, or both: every one given is checked.

    ``manual_instructions`` may contain ``{folder}`` and ``{filename}``, filled in
    by :meth:`manual_text`.
    """

    key: str
    kind: str
    filename: str
    urls: tuple[str, ...] = ()
    size: int | None = None
    sha256: str | None = None
    sha256_prefix: str | None = None
    git_blob: str | None = None
    description: str = ""
    source_note: str = ""
    manual_instructions: str = ""
    aliases: tuple[str, ...] = ()
    # open_clip-managed entries (kind "clip"):
    open_clip_model: str | None = None
    open_clip_pretrained: str | None = None
    hf_repo_id: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"KnownModel {self.key!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if not self.key or not self.filename:
            raise ValueError("KnownModel needs a key and a filename")
        if isinstance(self.urls, str):  # a lone string would be iterated per character
            object.__setattr__(self, "urls", (self.urls,))
        else:
            object.__setattr__(self, "urls", tuple(self.urls))
        object.__setattr__(self, "aliases", tuple(self.aliases))
        for u in self.urls:
            if not u.startswith(("https://", "http://")):
                raise ValueError(f"KnownModel {self.key!r}: only http(s) URLs are allowed, got {u!r}")
        if self.sha256 is not None:
            if not re.fullmatch(_SHA256_PATTERN, self.sha256):
                raise ValueError(f"KnownModel {self.key!r}: sha256 must be 64 lower-case hex digits")
        if self.sha256_prefix is not None:
            if not re.fullmatch(_HEX_PATTERN, self.sha256_prefix) or len(self.sha256_prefix) > 64:
                raise ValueError(f"KnownModel {self.key!r}: sha256_prefix must be lower-case hex")
            if self.sha256 is not None and not self.sha256.startswith(self.sha256_prefix):
                raise ValueError(f"KnownModel {self.key!r}: sha256 and sha256_prefix disagree")
        if self.git_blob is not None and not re.fullmatch(_GIT_BLOB_PATTERN, self.git_blob):
            raise ValueError(f"KnownModel {self.key!r}: git_blob must be 40 lower-case hex digits (a Git blob id)")
        if self.size is not None and self.size < 0:
            raise ValueError(f"KnownModel {self.key!r}: negative size")

    # -- convenience -----------------------------------------------------
    @property
    def downloadable(self) -> bool:
        """True when we can fetch the file ourselves (it has a direct URL)."""
        return bool(self.urls)

    @property
    def verifiable(self) -> bool:
        """True when a downloaded file can be checked against a digest (SHA256,
        its prefix, or a Git blob id)."""
        return self.sha256 is not None or self.sha256_prefix is not None or self.git_blob is not None

    @property
    def managed_by_open_clip(self) -> bool:
        return self.open_clip_model is not None

    @property
    def label(self) -> str:
        """Name shown in a loader's list when the file is not present."""
        if self.managed_by_open_clip:
            return f"open_clip {self.open_clip_model}/{self.open_clip_pretrained}"
        return self.filename

    def manual_text(self, folder: str | os.PathLike | None = None) -> str:
        """Human instructions for fetching the file by hand into ``folder``."""
        folder_s = str(folder) if folder is not None else _folder_hint(self.kind)
        if self.manual_instructions:
            return self.manual_instructions.format(folder=folder_s, filename=self.filename)
        if self.urls:
            alt = "".join(f" (or {u})" for u in self.urls[1:])
            return (
                f"Download it by hand from {self.urls[0]}{alt} and put it in {folder_s} "
                f"as {self.filename}."
            )
        return f"Put {self.filename} in {folder_s}."


def comfy_models_subdir(kind: str) -> str:
    """Sub-folder of ComfyUI's ``models`` directory where files of ``kind`` belong:
    ``"vae_approx"`` for ``"taesd"``, :data:`COMFY_MODELS_SUBDIR` (``"zecon"``) otherwise."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return COMFY_SUBDIR_FOR_KIND.get(kind, COMFY_MODELS_SUBDIR)


def _folder_hint(kind: str = "unet") -> str:
    return (
        f"ComfyUI/models/{comfy_models_subdir(kind)} (inside ComfyUI) or {default_cache_dir()} "
        f"(outside ComfyUI)"
    )


def _taesd_urls(filename: str) -> tuple[str, ...]:
    """The file at :data:`TAESD_COMMIT`: raw.githubusercontent.com, then github.com's raw route."""
    return (
        f"https://raw.githubusercontent.com/madebyollin/taesd/{TAESD_COMMIT}/{filename}",
        f"https://github.com/madebyollin/taesd/raw/{TAESD_COMMIT}/{filename}",
    )


_TAESD_NOTE = (
    "TAESD by Ollin Boer Bohan (https://github.com/madebyollin/taesd, MIT license), file {filename} "
    "of TAESD 1.3 at commit " + TAESD_COMMIT + ", the commit the URLs are pinned to. The file's SHA256 "
    "could not be recorded (it was written without network access, from a copy of the repository that "
    "holds the commit's tree but not the weight files), so what is verified is the Git blob id of "
    "{filename} at that commit ({blob}: SHA-1 over 'blob <size>\\0' + content, which fixes both the "
    "content and the size), the same id 'git ls-tree " + TAESD_COMMIT + "' lists."
)


def _taesd_entry(name: str, family: str, blob: str) -> KnownModel:
    """A TAESD decoder of the pinned commit, verified by its Git blob id."""
    return KnownModel(
        key=name,
        kind="taesd",
        filename=f"{name}.pth",
        urls=_taesd_urls(f"{name}.pth"),
        git_blob=blob,
        description=(
            f"TAESD decoder for {family} latents (ComfyUI's taesd_decoder_name '{name}'): the latent "
            f"backbone decodes predicted latents with it. Lives in ComfyUI's models/vae_approx."
        ),
        source_note=_TAESD_NOTE.format(filename=f"{name}.pth", blob=blob),
    )


_TABLE: tuple[KnownModel, ...] = (
    KnownModel(
        key="imagenet",
        kind="unet",
        filename="256x256_diffusion_uncond.pt",
        urls=("https://openaipublic.blob.core.windows.net/diffusion/jul-2021/256x256_diffusion_uncond.pt",),
        size=2_211_383_297,
        sha256="a37c32fffd316cd494cf3f35b339936debdc1576dad13fe57c42399a5dbc78b1",
        description="ImageNet 256x256 unconditional ADM (guided-diffusion), the default ZeCon model.",
        source_note=(
            "OpenAI guided-diffusion release (https://github.com/openai/guided-diffusion, MIT "
            "license); trained on ImageNet."
        ),
    ),
    KnownModel(
        key="ffhq",
        kind="unet",
        filename="ffhq_10m.pt",
        urls=("https://huggingface.co/deepinv/diffunet/resolve/main/diffusion_ffhq_10m.pt",),
        size=374_417_833,
        sha256="81d535743156ec6be34d8668e6920da94f0614074d7793a16c8fa9e306237faa",
        aliases=("diffusion_ffhq_10m.pt",),
        description="FFHQ 256x256 ADM from ILVR (ffhq_10m.pt), for faces.",
        source_note=(
            "Checkpoint of ILVR (https://github.com/jychoi118/ilvr_adm), fetched from the Hugging "
            "Face mirror deepinv/diffunet (file diffusion_ffhq_10m.pt, stored here as "
            "ffhq_10m.pt); trained on FFHQ (NVIDIA, CC BY-NC-SA 4.0): check the terms before use."
        ),
    ),
    KnownModel(
        key="ffhq_baseline",
        kind="unet",
        filename="ffhq_baseline.pt",
        description="FFHQ 256x256 ADM baseline of P2-weighting (the original ZeCon face model).",
        source_note=(
            "P2-weighting (https://github.com/jychoi118/P2-weighting); shared through Google Drive "
            "only; trained on FFHQ (NVIDIA, CC BY-NC-SA 4.0)."
        ),
        manual_instructions=(
            "ffhq_baseline.pt has no direct download link, so it cannot be fetched automatically. "
            "Open https://github.com/jychoi118/P2-weighting (section 'Pre-trained models', link "
            "'FFHQ baseline', a Google Drive file: "
            "https://drive.google.com/file/d/17SR1lih6BxBxJhr8s1iOjhw540H3Pc_m/view), download "
            "ffhq_baseline.pt by hand and put it in {folder} as {filename}. "
            "Alternatively use the 'ffhq' model (ffhq_10m.pt), which is downloaded automatically."
        ),
    ),
    KnownModel(
        key="vgg19",
        kind="vgg",
        filename="vgg19-dcbb9e9d.pth",
        urls=("https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",),
        size=574_673_361,
        # torchvision convention: the 8 hex digits in the name are the start of the SHA256.
        # Only that prefix is enforced (the full digest is not vouched for here).
        sha256_prefix="dcbb9e9d",
        description="VGG19 ImageNet weights (torchvision) for ZeCon's style/content losses.",
        source_note="torchvision model zoo (https://github.com/pytorch/vision, BSD-3-Clause code; ImageNet-trained weights).",
    ),
    KnownModel(
        key="clip_vit_b16_openai",
        kind="clip",
        filename="open_clip_pytorch_model.bin",
        open_clip_model="ViT-B-16",
        open_clip_pretrained="openai",
        hf_repo_id="timm/vit_base_patch16_clip_224.openai",
        description=(
            "OpenAI CLIP ViT-B/16. Downloaded by open_clip itself "
            "(open_clip.create_model_and_transforms('ViT-B-16', pretrained='openai')) into the "
            "Hugging Face cache; a local weights file can be given instead."
        ),
        source_note="OpenAI CLIP (https://github.com/openai/CLIP, MIT license) via open_clip / Hugging Face timm.",
        manual_instructions=(
            "CLIP ViT-B-16 'openai' is downloaded by open_clip from the Hugging Face repository "
            "timm/vit_base_patch16_clip_224.openai (file open_clip_pytorch_model.bin). Without "
            "network, download that file by hand from "
            "https://huggingface.co/timm/vit_base_patch16_clip_224.openai and put it in {folder}, "
            "then select it as a local file."
        ),
    ),
    _taesd_entry("taesd_decoder", "SD1.x/SD2.x", "5915a429fc08eba4adf62bf74f96705b8b0d5c1f"),
    _taesd_entry("taesdxl_decoder", "SDXL", "477bc7e9604f418029508e72ac8719bb9d048291"),
    _taesd_entry("taesd3_decoder", "SD3 / SD3.5", "7943be72a9151d0b330c5d8a4fbb885d889b60a1"),
    _taesd_entry("taef1_decoder", "Flux.1, Chroma, Lumina 2 / Z-Image, HiDream (the Flux latent format)",
                 "0052642b054c2cb6e1b40e4cf43777774a98cdf9"),
)

#: key -> entry (read-only).
KNOWN_MODELS: Mapping[str, KnownModel] = MappingProxyType({m.key: m for m in _TABLE})


def get_known(key_or_filename: str | os.PathLike | None) -> KnownModel | None:
    """Entry for a registry key, a file name (or a path ending in one), an alias, or a
    loader label made by :func:`display_name_not_downloaded`. ``None`` if unknown."""
    if key_or_filename is None:
        return None
    name = os.fspath(key_or_filename)
    if name in KNOWN_MODELS:
        return KNOWN_MODELS[name]
    parsed = parse_display_name(name)
    if parsed is not None:
        return parsed
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    for m in _TABLE:
        if base == m.filename or base in m.aliases:
            return m
    return None


def known_for_kind(kind: str) -> list[KnownModel]:
    """All entries of one kind ("unet", "clip", "vgg" or "taesd"), in table order."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return [m for m in _TABLE if m.kind == kind]


def display_name_not_downloaded(entry: KnownModel) -> str:
    """Loader label for a known model not present locally, e.g.
    ``"256x256_diffusion_uncond.pt (download on first use)"``."""
    if entry.downloadable or entry.managed_by_open_clip:
        return entry.label + DOWNLOAD_SUFFIX
    return entry.label + MANUAL_SUFFIX


def parse_display_name(name: str) -> KnownModel | None:
    """Inverse of :func:`display_name_not_downloaded`; ``None`` for any other string
    (e.g. a plain local file name)."""
    for suffix in (DOWNLOAD_SUFFIX, MANUAL_SUFFIX):
        if name.endswith(suffix):
            label = name[: -len(suffix)]
            for m in _TABLE:
                if m.label == label and display_name_not_downloaded(m) == name:
                    return m
    return None


def default_cache_dir() -> Path:
    """Model folder used outside ComfyUI (not created here)."""
    env = os.environ.get(MODELS_DIR_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "zecon" / "models"
    return Path.home() / ".cache" / "zecon" / "models"


@dataclass(frozen=True)
class WorkflowCheckpoint:
    """A file a shipped latent workflow names in a stock loader: an SD checkpoint (Load Checkpoint) or a flow
    model's diffusion model, text encoder or VAE (Load Diffusion Model / CLIP loaders / Load VAE).

    The pack never downloads these (the latent workflows run on the user's own checkpoint; the
    name is a placeholder). They are listed only so that the workflows can carry ComfyUI's model
    metadata (``properties.models``: name, url, directory), with which the frontend offers the
    download instead of a bare "missing" message.
    """

    filename: str
    url: str
    taesd: str   # registry key of the TAESD decoder for its latents ("" for text encoders and VAEs)
    note: str
    directory: str = "checkpoints"


#: Checkpoints named by the shipped latent workflows, at their canonical public URLs (not in the
#: table above: the pack does not fetch or verify them; ComfyUI's frontend downloads them on request).
WORKFLOW_CHECKPOINTS: Mapping[str, WorkflowCheckpoint] = MappingProxyType({c.filename: c for c in (
    WorkflowCheckpoint(
        "v1-5-pruned-emaonly.safetensors",
        "https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5/resolve/main/v1-5-pruned-emaonly.safetensors",
        "taesd_decoder",
        "Stable Diffusion 1.5 (EMA weights) at stable-diffusion-v1-5/stable-diffusion-v1-5, where Hugging Face "
        "moved the withdrawn runwayml/stable-diffusion-v1-5 repository (CreativeML Open RAIL-M licence)."),
    WorkflowCheckpoint(
        "sd_xl_base_1.0.safetensors",
        "https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/resolve/main/sd_xl_base_1.0.safetensors"
        "?download=true",
        "taesdxl_decoder",
        "SDXL 1.0 base by Stability AI (CreativeML Open RAIL++-M licence); the URL ComfyUI's own SDXL "
        "templates carry."),
    # the flow workflows' files, at the URLs ComfyUI's own templates (comfyui-workflow-templates 0.7.25) carry
    WorkflowCheckpoint(
        "flux1-dev.safetensors", "https://huggingface.co/Comfy-Org/flux1-dev/resolve/main/flux1-dev.safetensors",
        "taef1_decoder", "FLUX.1 [dev] by Black Forest Labs (FLUX.1 [dev] Non-Commercial License).",
        "diffusion_models"),
    WorkflowCheckpoint(
        "clip_l.safetensors", "https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/clip_l.safetensors",
        "", "CLIP-L text encoder for Flux.1 (DualCLIPLoader, type flux).", "text_encoders"),
    WorkflowCheckpoint(
        "t5xxl_fp8_e4m3fn_scaled.safetensors",
        "https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/t5xxl_fp8_e4m3fn_scaled.safetensors",
        "", "T5-XXL text encoder (fp8) for Flux.1.", "text_encoders"),
    WorkflowCheckpoint(
        "ae.safetensors",
        "https://huggingface.co/Comfy-Org/Lumina_Image_2.0_Repackaged/resolve/main/split_files/vae/ae.safetensors",
        "", "The Flux VAE (Flux.1, Lumina 2, Z-Image).", "vae"),
    WorkflowCheckpoint(
        "z_image_turbo_bf16.safetensors",
        "https://huggingface.co/Comfy-Org/z_image_turbo/resolve/main/split_files/diffusion_models/"
        "z_image_turbo_bf16.safetensors",
        "taef1_decoder", "Z-Image Turbo by Tongyi-MAI (Apache-2.0).", "diffusion_models"),
    WorkflowCheckpoint(
        "qwen_3_4b.safetensors",
        "https://huggingface.co/Comfy-Org/z_image_turbo/resolve/main/split_files/text_encoders/qwen_3_4b.safetensors",
        "", "Qwen3-4B text encoder for Z-Image (CLIPLoader, type lumina2).", "text_encoders"),
)})


def frontend_model(name: str) -> dict[str, str]:
    """ComfyUI's model metadata for a file a workflow needs: ``{"name", "url", "directory"}``.

    ``name``: a registry key or file name (its first URL; its ComfyUI models sub-folder) or a file of
    :data:`WORKFLOW_CHECKPOINTS`. A node's ``properties.models`` holds a list of these; the frontend
    offers the download of those whose ``name`` is one of the node's widget values and is not on disk.
    """
    if name in WORKFLOW_CHECKPOINTS:
        c = WORKFLOW_CHECKPOINTS[name]
        return {"name": c.filename, "url": c.url, "directory": c.directory}
    entry = get_known(name)
    if entry is None or not entry.urls:
        raise ValueError(f"no download URL is known for {name!r}")
    return {"name": entry.filename, "url": entry.urls[0], "directory": comfy_models_subdir(entry.kind)}
