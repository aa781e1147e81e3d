"""Headless command line: ``python -m zecon_core`` (or the ``zecon`` script).

Subcommands::

    python -m zecon_core stylize photo.png --prompt "a sketch with crayon" -o out.png
    python -m zecon_core stylize photo.png --style-image painting.jpg --mask sky.png -o out.png
    python -m zecon_core download default          # ImageNet ADM + VGG19 + CLIP ViT-B-16/openai
    python -m zecon_core download --list
    python -m zecon_core convert model.pt [model.safetensors]

``stylize`` uses the same defaults as the ComfyUI nodes (the original ZeCon
README's: 50 steps, skip 25, DDPM, the GuidanceConfig weights) and the same
verified downloader and model folder (``registry.default_cache_dir()``, i.e.
``$ZECON_MODELS_DIR`` or ``~/.cache/zecon/models``, unless ``--models-dir``).

Exit codes (stable; scripts may rely on them):

==== =========================================================================
0    success
1    unexpected internal error (a bug: the traceback is printed)
2    usage or validation error (bad option, bad value, unreadable input image,
     image size the model cannot take, empty prompt or respacing, an output that is
     the input or the other output, an existing output without --overwrite, CUDA
     asked for but absent)
3    model or file error (model file missing or unusable, a model that must be
     fetched by hand, output not writable, conversion refused)
4    download or network error (no URL reachable, verification failed, another
     process holds the download lock)
5    numerical failure (a loss, gradient or sample stopped being finite)
130  interrupted (Ctrl-C)
==== =========================================================================

Progress and messages go to stderr; on success ``stylize`` prints the output
path on stdout (or a JSON summary with ``--json``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_MODEL = 3
EXIT_DOWNLOAD = 4
EXIT_NUMERICAL = 5
EXIT_INTERRUPTED = 130

EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_INTERNAL: "unexpected internal error (a bug; traceback printed)",
    EXIT_USAGE: "usage or validation error",
    EXIT_MODEL: "model or file error",
    EXIT_DOWNLOAD: "download or network error",
    EXIT_NUMERICAL: "numerical failure (non-finite loss, gradient or sample)",
    EXIT_INTERRUPTED: "interrupted",
}

#: --tiny: where the tiny models go under the models folder, and the defaults it changes.
TINY_SUBDIR = "tiny"
TINY_DEFAULTS = {"size": 64, "steps": 10, "skip": 5, "n_patch": 4}
NOISE_NOTE = "tiny random-weight test models: this image is NOISE, not a style transfer"

#: Models `download default` fetches (what the shipped workflows use).
DEFAULT_DOWNLOADS = ("imagenet", "vgg19", "clip_vit_b16_openai")

# GuidanceConfig field -> option (the loss weights keep their field names).
_WEIGHT_OPTIONS = (
    ("clip_global", "CLIP global loss: whole image vs target prompt (style, 0 in the paper's defaults)"),
    ("clip_global_patch", "CLIP patch loss: random crops vs target prompt (style)"),
    ("clip_dir", "CLIP directional loss on the whole image (style, 0 by default)"),
    ("clip_dir_patch", "CLIP directional patch loss: the change source->output follows source->target "
                       "prompt (style)"),
    ("zecon", "ZeCon patch-wise contrastive loss on UNet features (keeps content)"),
    ("mse", "pixel MSE to the source, early steps only (keeps content and colours)"),
    ("vgg", "VGG19 feature loss to the source (keeps content)"),
    ("range", "penalty for pixels outside [-1, 1] (keeps colours valid)"),
)


class CliError(Exception):
    """An error with an exit code and a message for the user."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


# ---------------------------------------------------------------------------
# error classification
# ---------------------------------------------------------------------------
_NETWORK_HINT = (r"failed to download|connection|timed out|timeout|could not resolve|name resolution|network|"
                 r"offline|internet")


def classify(exc: BaseException) -> tuple[int, str]:
    """(exit code, message) for an exception raised while running a command."""
    from ..files.checkpoints import CheckpointError
    from ..files.convert import ConvertError
    from ..files.download import DownloadError, ManualDownloadRequired
    from ..guidance.core import NonFiniteError

    if isinstance(exc, CliError):
        return exc.code, exc.message
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted"
    if isinstance(exc, ManualDownloadRequired):
        return EXIT_MODEL, str(exc)
    if isinstance(exc, DownloadError):
        return EXIT_DOWNLOAD, str(exc)
    if isinstance(exc, NonFiniteError):
        return EXIT_NUMERICAL, (f"numerical failure: {exc}. Lower the guidance weights (the CLIP ones first), "
                                "use --precision fp32, or try another seed.")
    if isinstance(exc, CheckpointError):
        text = str(exc)
        # open_clip could not fetch the named CLIP weights (no network): a download problem.
        if "could not load CLIP" in text and re.search(_NETWORK_HINT, text, re.IGNORECASE):
            return EXIT_DOWNLOAD, text
        return EXIT_MODEL, text
    if isinstance(exc, ConvertError):
        return EXIT_MODEL, str(exc)
    if isinstance(exc, FloatingPointError):
        return EXIT_NUMERICAL, f"numerical failure: {exc}"
    if isinstance(exc, ValueError):
        return EXIT_USAGE, str(exc)
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return EXIT_MODEL, str(exc)
    return EXIT_INTERNAL, f"unexpected error: {type(exc).__name__}: {exc}"


def _err(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr, flush=True)


def _note(msg: str, quiet: bool = False) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# argument parsing
# ---------------------------------------------------------------------------
def _nonneg_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return v


def _int_at_least(lo: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {v}")
        return v
    return parse


def _fraction(text: str) -> float:
    v = _nonneg_float(text)
    if v > 1:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {text!r}")
    return v


def _exit_code_epilog() -> str:
    lines = ["exit codes:"]
    lines += [f"  {code:<4d} {text}" for code, text in EXIT_CODES.items()]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    from ..guidance.core import GuidanceConfig
    from ..files.images import SIZE_POLICIES
    from ..pixel.model import PRECISIONS
    from ..files.registry import default_cache_dir

    defaults = GuidanceConfig()
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="python -m zecon_core",
        description="ZeCon: zero-shot contrastive text-guided diffusion style transfer (ICCV 2023), headless.",
        epilog=_exit_code_epilog(), formatter_class=fmt)
    parser.add_argument("--version", action="version", version=f"zecon {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    # ---- stylize
    p = sub.add_parser(
        "stylize", help="restyle an image after a text prompt", formatter_class=fmt,
        description="Restyle INPUT after --prompt with ZeCon. Defaults are the original paper code's "
                    "(and the ComfyUI nodes'). Models not on disk are downloaded and verified first.",
        epilog=_exit_code_epilog())
    p.add_argument("input", metavar="INPUT", help="image file to restyle (PNG, JPEG, WebP, ...)")
    p.add_argument("-o", "--output", required=True, metavar="OUTPUT",
                   help="where to write the result (.png keeps the settings as metadata; .jpg/.webp work too)")
    style = p.add_mutually_exclusive_group(required=True)
    style.add_argument("--prompt", help='target style, e.g. "a sketch with crayon"')
    style.add_argument("--style-image", nargs="+", metavar="PATH",
                       help="take the style from one or several pictures instead of a prompt (any size, at "
                            "least 32 px a side): the target is their mean CLIP image embedding, and the "
                            "directional losses start from the input's own CLIP image embedding (the ZeCon "
                            "Style Image node)")
    p.add_argument("--style-crops", type=_int_at_least(0), default=0, metavar="N",
                   help="with --style-image: also average over N random augmented crops of each style "
                        "picture (the style of its textures rather than of its composition). Default: %(default)s")
    p.add_argument("--source-prompt", default="Photo",
                   help="what the input is now, for the directional CLIP losses of a --prompt "
                        "(default: %(default)s)")
    p.add_argument("--mask", default=None, metavar="PATH",
                   help="restyle only a region: a picture of the input's size, white = restyle, black = keep "
                        "the source (grey values blend; the nodes' MASK). Outside it the result is the "
                        "unguided reconstruction of the input")
    p.add_argument("--feather", type=_nonneg_float, default=None, metavar="PX",
                   help="with --mask: width in pixels (at the working size) of the mask's soft edge, so the "
                        "seam does not show. Default: 8 (as the nodes)")
    g = p.add_argument_group("models")
    g.add_argument("--model", default="imagenet", metavar="imagenet|ffhq|ffhq_baseline|PATH",
                   help="diffusion model: a registry key (downloaded on first use; ffhq_baseline must be "
                        "placed by hand) or a weight file (.safetensors/.pt). ImageNet suits any scene, "
                        "FFHQ only faces. Default: %(default)s")
    g.add_argument("--clip-model", default="ViT-B-16/openai", metavar="NAME/TAG|PATH",
                   help="CLIP: an open_clip name/pretrained tag (fetched by open_clip into the Hugging Face "
                        "cache; open_clip_pytorch_model.bin placed by hand in the models folder is used "
                        "instead) or an OpenAI-format weight file. Default: %(default)s")
    g.add_argument("--vgg-model", default=None, metavar="PATH",
                   help="VGG19 weights (torchvision file); default: vgg19-dcbb9e9d.pth in the models folder, "
                        "downloaded on first use (skipped when --vgg 0)")
    g.add_argument("--models-dir", default=None, metavar="DIR",
                   help=f"model folder (default: $ZECON_MODELS_DIR or {default_cache_dir()})")
    g.add_argument("--no-download", action="store_true",
                   help="never download: a missing model is an error (exit 3)")
    g.add_argument("--tiny", action="store_true",
                   help="use tiny random-weight models written on the fly (offline, seconds): checks the "
                        f"machinery only, the output is NOISE and labelled so. Also defaults to --size "
                        f"{TINY_DEFAULTS['size']} --steps {TINY_DEFAULTS['steps']} --skip {TINY_DEFAULTS['skip']} "
                        f"--n-patch {TINY_DEFAULTS['n_patch']}")
    g.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where to run (auto: CUDA when available). Default: %(default)s")
    g.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="UNet precision on CUDA (auto = fp16 autocast; CPU always fp32). Default: %(default)s")
    g.add_argument("--checkpointing", action="store_true",
                   help="recompute UNet blocks in the backward pass: same result, less memory (512x512 on a "
                        "24 GB GPU), one more UNet forward per guided step")

    g = p.add_argument_group("image size")
    g.add_argument("--size-policy", default="resize", choices=SIZE_POLICIES,
                   help="resize: square SIZE x SIZE (the original; squashes other shapes); fit_short_side: "
                        "short side = SIZE, aspect kept (multiples of 32); as_is: unchanged (sides must be "
                        "multiples of 32). Default: %(default)s")
    g.add_argument("--size", type=_int_at_least(64), default=None,
                   help="target size in pixels, a multiple of 32 (the models are trained at 256). Default: 256")

    g = p.add_argument_group("sampling")
    steps = g.add_mutually_exclusive_group()
    steps.add_argument("--steps", type=_int_at_least(2), default=None,
                       help="diffusion steps of the respaced schedule (more: slower, finer). Default: 50")
    steps.add_argument("--respacing", default=None, metavar="SPEC",
                       help="raw respacing string instead of --steps, e.g. 50, ddim25, 10,20")
    g.add_argument("--skip", type=_int_at_least(0), default=None,
                   help="steps skipped at the noisy end: the source is inverted over STEPS - SKIP steps and "
                        "restyled over as many. Lower: stronger restyling, less of the source kept. "
                        "Default: half the steps (25 of 50)")
    g.add_argument("--seed", type=_int_at_least(0), default=0, help="random seed (default: %(default)s)")
    g.add_argument("--sampler", default="ddpm", choices=("ddpm", "ddim"),
                   help="ddpm: the paper's stochastic sampler; ddim: deterministic with --eta 0. "
                        "Default: %(default)s")
    g.add_argument("--eta", type=_nonneg_float, default=0.0,
                   help="DDIM noise (0 = deterministic). Default: %(default)s")

    g = p.add_argument_group("guidance weights (style vs content)")
    for name, text in _WEIGHT_OPTIONS:
        g.add_argument("--" + name.replace("_", "-"), dest="w_" + name, type=_nonneg_float, default=None,
                       metavar="W", help=f"{text}. Default: {getattr(defaults, name):g}")
    g.add_argument("--n-patch", type=_int_at_least(1), default=None,
                   help=f"random crops per step for the CLIP patch losses (more: steadier style, slower). "
                        f"Default: {defaults.n_patch}")
    g.add_argument("--patch-min", type=_fraction, default=None,
                   help=f"smallest crop, as a fraction of the image side. Default: {defaults.patch_min:g}")
    g.add_argument("--patch-max", type=_fraction, default=None,
                   help=f"largest crop, as a fraction of the image side. Default: {defaults.patch_max:g}")
    g.add_argument("--aug-prob", type=_fraction, default=None,
                   help=f"probability of the perspective augmentation per crop. Default: {defaults.aug_prob:g}")

    g = p.add_argument_group("output")
    g.add_argument("--save-steps", default=None, metavar="GRID.png",
                   help="also write a grid of the intermediate predictions (pred_x0) of the sampling steps")
    g.add_argument("--grid-max", type=_int_at_least(2), default=16,
                   help="at most this many steps in the --save-steps grid (evenly spaced, last included). "
                        "Default: %(default)s")
    g.add_argument("--overwrite", action="store_true",
                   help="replace OUTPUT (and the --save-steps grid) if it exists; without it an existing file "
                        "is an error (exit 2). The input image is never replaced")
    g.add_argument("--quiet", action="store_true", help="no progress bar or notes (errors are still printed)")
    g.add_argument("--json", action="store_true", help="print a JSON summary on stdout instead of the path")

    # ---- download
    p = sub.add_parser(
        "download", help="download and verify models", formatter_class=fmt,
        description="Download and verify models of the registry into the models folder. KEY: "
                    "imagenet, ffhq, ffhq_baseline (hand-placed only), vgg19, clip_vit_b16_openai "
                    "(fetched by open_clip into the Hugging Face cache), or 'default' "
                    f"({', '.join(DEFAULT_DOWNLOADS)}).",
        epilog=_exit_code_epilog())
    p.add_argument("keys", nargs="*", metavar="KEY", help="models to fetch (default: 'default')")
    p.add_argument("--models-dir", default=None, metavar="DIR",
                   help=f"target folder (default: $ZECON_MODELS_DIR or {default_cache_dir()})")
    p.add_argument("--list", action="store_true", help="list the known models and whether they are present")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    # ---- convert
    p = sub.add_parser(
        "convert", help="convert a .pt/.pth/.bin checkpoint to .safetensors", formatter_class=fmt,
        description="Convert a pickled checkpoint to .safetensors (same keys and values, verified). "
                    "Pickles that would run code are refused before anything in them runs.",
        epilog=_exit_code_epilog())
    p.add_argument("src", metavar="SRC", help="checkpoint to convert")
    p.add_argument("dst", metavar="DST", nargs="?", default=None,
                   help="output file (default: SRC with the .safetensors suffix)")
    p.add_argument("--force", action="store_true", help="replace an existing output file")

    # ---- exit-codes
    sub.add_parser("exit-codes", help="print the exit codes and their meaning")
    return parser


def _version() -> str:
    try:
        from .. import __version__
        return __version__
    except Exception:  # pragma: no cover
        return "unknown"


# ---------------------------------------------------------------------------
# model resolution
# ---------------------------------------------------------------------------
def _models_dir(arg: str | None) -> Path:
    from ..files.registry import default_cache_dir
    return Path(arg).expanduser() if arg else default_cache_dir()


class _Progress:
    """Byte progress for downloads (a tqdm bar unless quiet)."""

    def __init__(self, desc: str, quiet: bool):
        self.desc, self.quiet, self.bar = desc, quiet, None

    def __call__(self, done: int, total: int | None) -> None:
        if self.quiet:
            return
        if self.bar is None:
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=done, unit="B", unit_scale=True, unit_divisor=1024,
                            desc=self.desc, file=sys.stderr, dynamic_ncols=True)
            return
        if total is not None and self.bar.total != total:
            self.bar.total = total
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _folder_hint(folder: Path) -> str:
    return (f"Put the file in {folder} (the models folder; change it with --models-dir or $ZECON_MODELS_DIR), "
            "or pass its full path.")


def resolve_unet(spec: str, folder: Path, *, allow_download: bool, quiet: bool) -> Path:
    """Path of the diffusion model ``spec`` (registry key, file name in ``folder``, or path),
    downloading a known model if needed and allowed."""
    from ..files.download import ensure_known_model
    from ..files.registry import KNOWN_MODELS, get_known

    entry = KNOWN_MODELS.get(spec)
    if entry is not None and entry.kind != "unet":
        raise CliError(EXIT_USAGE, f"--model {spec!r} is a {entry.kind} model, not a diffusion model; "
                                   f"use one of {', '.join(k for k, m in KNOWN_MODELS.items() if m.kind == 'unet')}")
    if entry is None:
        path = Path(spec).expanduser()
        for candidate in (path, folder / spec):
            if candidate.is_file():
                return candidate
        if path.exists() and not path.is_file():
            raise CliError(EXIT_MODEL, f"model {spec!r} is not a file")
        entry = get_known(spec) if path.name == spec else None  # a bare known file name: fetch it
        if entry is None or entry.kind != "unet":
            raise CliError(EXIT_MODEL, f"model file not found: {spec}. {_folder_hint(folder)} Known models: "
                                       + ", ".join(k for k, m in KNOWN_MODELS.items() if m.kind == "unet"))
    present = [folder / n for n in (entry.filename, *entry.aliases) if (folder / n).is_file()]
    if present and (not entry.downloadable or not allow_download or present[0].name != entry.filename):
        return present[0]  # hand-placed files are taken as they are; downloads are verified below
    if not allow_download:
        raise CliError(EXIT_MODEL, f"model {entry.key} ({entry.filename}) is not in {folder} and --no-download "
                                   f"is set. {entry.manual_text(folder)}")
    progress = _Progress(entry.filename, quiet)
    try:
        return ensure_known_model(entry, folder, progress=progress)
    finally:
        progress.close()


def _looks_like_path(spec: str) -> bool:
    from ..files.checkpoints import WEIGHT_EXTENSIONS
    return os.sep in spec or spec.lower().endswith(WEIGHT_EXTENSIONS) or Path(spec).expanduser().is_file()


def load_clip_spec(spec: str, folder: Path, device):
    from ..guidance.clip_model import load_clip

    if _looks_like_path(spec):
        path = Path(spec).expanduser()
        if not path.is_file() and (folder / spec).is_file():
            path = folder / spec
        if not path.is_file():
            raise CliError(EXIT_MODEL, f"CLIP weight file not found: {spec}. {_folder_hint(folder)}")
        return load_clip(path=path, device=device)
    name, _, tag = spec.partition("/")
    from ..files.registry import KNOWN_MODELS
    entry = KNOWN_MODELS["clip_vit_b16_openai"]
    if (name, tag) == (entry.open_clip_model, entry.open_clip_pretrained) and (folder / entry.filename).is_file():
        return load_clip(path=folder / entry.filename, device=device)  # placed by hand (offline machines)
    if not name or not tag:
        raise CliError(EXIT_USAGE, f"--clip-model {spec!r}: use NAME/TAG (e.g. ViT-B-16/openai) or a weight file")
    return load_clip(name, tag, device=device)


def load_vgg_spec(spec: str | None, folder: Path, *, allow_download: bool, quiet: bool):
    from ..guidance.vgg import LAYERS_FILE, ensure_vgg, load_vgg

    if spec:
        path = Path(spec).expanduser()
        if not path.is_file() and (folder / spec).is_file():
            path = folder / spec
        if not path.is_file():
            raise CliError(EXIT_MODEL, f"VGG weight file not found: {spec}. {_folder_hint(folder)}")
        return load_vgg(path)
    if not allow_download:
        from ..files.registry import KNOWN_MODELS
        entry = KNOWN_MODELS["vgg19"]
        for name in (LAYERS_FILE, entry.filename):
            if (folder / name).is_file():
                return load_vgg(folder / name)
        raise CliError(EXIT_MODEL, f"VGG19 ({entry.filename}) is not in {folder} and --no-download is set. "
                                   f"{entry.manual_text(folder)} (or pass --vgg 0 to switch the VGG loss off)")
    progress = _Progress("vgg19-dcbb9e9d.pth", quiet)
    try:
        return ensure_vgg(folder, progress=progress)
    finally:
        progress.close()


def tiny_models(folder: Path) -> dict[str, Path]:
    """The tiny random-weight models in ``folder/tiny`` (written once, then reused)."""
    from .tiny import TINY_FILES, write_tiny_models

    tiny_dir = folder / TINY_SUBDIR
    paths = {kind: tiny_dir / name for kind, name in TINY_FILES.items()}
    if not all(p.is_file() for p in paths.values()):
        paths = write_tiny_models(tiny_dir)
    return paths


# ---------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------
def _check_output_path(path: Path, what: str) -> None:
    from PIL import Image

    ext = path.suffix.lower()
    if ext not in Image.registered_extensions():
        raise CliError(EXIT_USAGE, f"{what} {str(path)!r}: unknown image extension {ext or '(none)'!r}; "
                                   "use .png, .jpg or .webp")
    if path.is_dir():
        raise CliError(EXIT_USAGE, f"{what} {str(path)!r} is a directory")


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file: resolved paths (``..``, symlinks), or one inode (hard links,
    case-insensitive file systems) when both exist."""
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _check_writable(path: Path, what: str) -> None:
    """Exit 3 unless ``path`` can be written: probed with a temporary file in the nearest existing
    folder (permissions, read-only or pseudo file systems such as /proc), and an existing file
    opened for writing without truncating it."""
    import tempfile

    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise CliError(EXIT_MODEL, f"cannot write the {what} {path}: {folder} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".zecon-write-check-")
        os.close(fd)
        os.unlink(probe)
        if path.exists():
            with open(path, "r+b"):
                pass
    except OSError as e:
        raise CliError(EXIT_MODEL, f"cannot write the {what} {path}: {e.strerror or e}") from None


def _check_output_targets(source: Path, output: Path, grid: Path | None, *, overwrite: bool) -> None:
    """Before any work: no output may be the input or another output (exit 2), an existing output
    is replaced only with ``--overwrite`` (exit 2), and every output must be writable (exit 3)."""
    targets = [("output", "-o/--output", output)] + ([("--save-steps grid", "--save-steps", grid)] if grid else [])
    for what, option, path in targets:
        if _same_file(path, source):
            raise CliError(EXIT_USAGE, f"{option} {str(path)!r} is the input image {str(source)!r}; it would be "
                                       "replaced. Choose another file name")
    if grid is not None and _same_file(grid, output):
        raise CliError(EXIT_USAGE, f"--save-steps {str(grid)!r} is the output {str(output)!r}; the grid would "
                                   "replace the result. Choose another file name")
    for what, option, path in targets:
        if path.exists() and not overwrite:
            raise CliError(EXIT_USAGE, f"{option} {str(path)!r} already exists; pass --overwrite to replace it "
                                       "or choose another file name")
    for what, _, path in targets:
        _check_writable(path, what)


def _load_input(path: str):
    from PIL import UnidentifiedImageError

    from ..files.images import load_image

    p = Path(path).expanduser()
    if not p.exists():
        raise CliError(EXIT_USAGE, f"input image not found: {path}")
    if not p.is_file():
        raise CliError(EXIT_USAGE, f"input {path} is not a file")
    try:
        return load_image(p)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise CliError(EXIT_USAGE, f"cannot read {path} as an image: {e}") from None


def _read_picture(path: str, option: str):
    """A picture given to ``option`` as [1, 3, H, W] in [-1, 1]; exit 2 naming the option if it cannot be read."""
    from PIL import UnidentifiedImageError

    from ..files.images import load_image

    p = Path(path).expanduser()
    if not p.is_file():
        raise CliError(EXIT_USAGE, f"{option} {path}: " + ("not a file" if p.exists() else "file not found"))
    try:
        return load_image(p)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise CliError(EXIT_USAGE, f"{option} {path}: cannot read it as an image: {e}") from None


def load_mask(path: str, image, source, feather: float):
    """The --mask picture as [1, H, W] in [0, 1] (white = restyle), checked against the input.

    It must have the input's size (the size policy then resizes both alike) and keep some of the
    picture at the working size; grey values give a partial restyle, as the nodes' MASK.
    """
    from ..guidance.mask import prepare_mask

    picture = _read_picture(path, "--mask")
    (mh, mw), (ih, iw) = picture.shape[-2:], image.shape[-2:]
    if (mh, mw) != (ih, iw):
        raise CliError(EXIT_USAGE, f"--mask {path} is {mw}x{mh} but the input is {iw}x{ih}; "
                                   "draw the mask at the input's size")
    mask = ((picture + 1) / 2).mean(dim=1).clamp(0, 1)   # grey level; white = 1 = restyle
    try:
        prepare_mask(mask, 1, *source.shape[-2:], feather)
    except ValueError as e:
        raise CliError(EXIT_USAGE, f"--mask {path}: {e} (white marks the region to restyle)") from None
    return mask


def load_style_image(path: str):
    """One --style-image picture as [1, 3, H, W] in [-1, 1], checked as the Style Image node does."""
    from ..guidance.style import check_style_images

    picture = _read_picture(path, "--style-image")
    try:
        check_style_images(picture)
    except ValueError as e:
        raise CliError(EXIT_USAGE, f"--style-image {path}: {e}") from None
    return picture


def style_from_images(clip, pictures, crops: int, seed: int):
    """One style from the --style-image pictures: the mean over pictures (each at its own size) of
    the per-picture style, as ``encode_style_images`` does for one batch."""
    from ..guidance.style import blend_styles, encode_style_images

    styles = [encode_style_images(clip, pic, crops=crops, seed=seed + k) for k, pic in enumerate(pictures)]
    return styles[0] if len(styles) == 1 else blend_styles([(st, 1.0) for st in styles])


def label_noise(im):
    """Stamp a visible 'NOISE' banner on an image made by the tiny models."""
    from PIL import ImageDraw

    im = im.copy()
    d = ImageDraw.Draw(im)
    text = "NOISE (tiny test models)" if im.width >= 200 else "NOISE"
    box = d.textbbox((0, 0), text)
    w, h = box[2] - box[0] + 6, box[3] - box[1] + 6
    d.rectangle((0, 0, w, h), fill=(200, 0, 0))
    d.text((3 - box[0], 3 - box[1]), text, fill=(255, 255, 255))
    return im


def _save_image(im, path: Path, metadata: dict | None, what: str) -> None:
    from PIL import PngImagePlugin

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        kwargs = {}
        if metadata and path.suffix.lower() == ".png":
            info = PngImagePlugin.PngInfo()
            for k, v in metadata.items():
                info.add_text(k, v if isinstance(v, str) else json.dumps(v))
            kwargs["pnginfo"] = info
        if path.suffix.lower() in (".jpg", ".jpeg"):
            kwargs["quality"] = 95
        im.save(path, **kwargs)
    except OSError as e:
        raise CliError(EXIT_MODEL, f"cannot write the {what} {path}: {e}") from None


def make_grid(tiles: list, labels: list[str], tile_size: int = 128, noise: bool = False):
    """A labelled grid of PIL images (one row of ``ceil(sqrt(n))`` columns per line)."""
    from PIL import Image, ImageDraw

    n = len(tiles)
    cols = max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    w0, h0 = tiles[0].size
    scale = tile_size / max(w0, h0)
    tw, th = max(1, round(w0 * scale)), max(1, round(h0 * scale))
    label_h = 14
    pad = 4
    grid = Image.new("RGB", (cols * (tw + pad) + pad, rows * (th + label_h + pad) + pad), (255, 255, 255))
    d = ImageDraw.Draw(grid)
    for k, (tile, label) in enumerate(zip(tiles, labels)):
        r, c = divmod(k, cols)
        x, y = pad + c * (tw + pad), pad + r * (th + label_h + pad)
        grid.paste(tile.resize((tw, th), Image.LANCZOS), (x, y + label_h))
        d.text((x + 1, y + 1), label, fill=(0, 0, 0))
    if noise:
        grid = label_noise(grid)
    return grid


def pick_steps(n: int, k: int) -> list[int]:
    """Up to ``k`` of the indices 0..n-1, evenly spaced, first and last included."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


# ---------------------------------------------------------------------------
# loss values for the progress bar
# ---------------------------------------------------------------------------
_SHORT = {"clip_global": "glob", "clip_global_patch": "glob_p", "clip_dir": "dir", "clip_dir_patch": "dir_p",
          "zecon": "zecon", "mse": "mse", "vgg": "vgg", "range": "range"}


def _loss_postfix(losses: dict) -> str:
    if not losses:
        return ""
    total = sum(losses.values())
    parts = [f"loss={total:.4g}"] + [f"{_SHORT.get(k, k)}={v:.3g}" for k, v in losses.items() if v]
    return " ".join(parts)


# ---------------------------------------------------------------------------
# stylize
# ---------------------------------------------------------------------------
def _pick_device(name: str):
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise CliError(EXIT_USAGE, "--device cuda: no CUDA device is available (use --device cpu or auto)")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def cmd_stylize(args: argparse.Namespace) -> int:
    import torch

    from ..guidance.core import GuidanceConfig
    from ..files.images import prepare_source, tensor_to_pil
    from ..pixel.pipeline import encode_style, invert, sample_guided
    from ..pixel.schedule import Schedule

    quiet = args.quiet
    t_start = time.monotonic()

    # -- settings (validated before anything is loaded or downloaded)
    tiny = args.tiny
    if tiny:
        for key, value in TINY_DEFAULTS.items():
            if getattr(args, key, None) is None and not (key == "steps" and args.respacing is not None):
                setattr(args, key, value)
    size = args.size if args.size is not None else 256
    if size % 32:
        raise CliError(EXIT_USAGE, f"--size {size}: must be a multiple of 32 (e.g. 256)")
    respacing = args.respacing if args.respacing is not None else str(args.steps if args.steps is not None else 50)
    try:
        schedule = Schedule.create(respacing)
    except ValueError as e:
        raise CliError(EXIT_USAGE, f"--respacing/--steps: {e}") from None
    skip = args.skip if args.skip is not None else schedule.num_steps // 2
    if not 0 <= skip < schedule.num_steps:
        raise CliError(EXIT_USAGE, f"--skip {skip}: must lie in 0..{schedule.num_steps - 1} for "
                                   f"{schedule.num_steps} steps")
    changes = {name: getattr(args, "w_" + name) for name, _ in _WEIGHT_OPTIONS
               if getattr(args, "w_" + name) is not None}
    for name in ("n_patch", "patch_min", "patch_max", "aug_prob"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    try:
        cfg = GuidanceConfig().replace(**changes)
    except ValueError as e:
        raise CliError(EXIT_USAGE, str(e)) from None
    if args.style_image and not cfg.uses_clip:
        raise CliError(EXIT_USAGE, "--style-image needs a CLIP loss, but every CLIP weight is 0")
    if args.style_image is None and cfg.uses_clip and not args.prompt.strip():
        raise CliError(EXIT_USAGE, "--prompt is empty; describe a style, e.g. \"a sketch with crayon\" "
                                   "(or set every CLIP weight to 0 to guide by content only)")
    output = Path(args.output).expanduser()
    _check_output_path(output, "output")
    grid_path = Path(args.save_steps).expanduser() if args.save_steps else None
    if grid_path is not None:
        _check_output_path(grid_path, "--save-steps")
    _check_output_targets(Path(args.input).expanduser(), output, grid_path, overwrite=args.overwrite)
    if args.feather is not None and args.mask is None:
        raise CliError(EXIT_USAGE, "--feather is only used with --mask")
    if args.style_crops and args.style_image is None:
        raise CliError(EXIT_USAGE, "--style-crops is only used with --style-image")
    device = _pick_device(args.device)
    image = _load_input(args.input)
    try:
        source = prepare_source(image, args.size_policy, size)
    except ValueError as e:
        raise CliError(EXIT_USAGE, str(e)) from None
    from ..guidance.mask import DEFAULT_FEATHER

    feather = DEFAULT_FEATHER if args.feather is None else args.feather
    mask = None if args.mask is None else load_mask(args.mask, image, source, feather)
    style_images = None if args.style_image is None else [load_style_image(p) for p in args.style_image]

    # -- models
    folder = _models_dir(args.models_dir)
    allow_download = not args.no_download
    if tiny:
        _note(f"--tiny: {NOISE_NOTE}", quiet)
        paths = tiny_models(folder)
        unet_spec, clip_spec, vgg_spec = str(paths["unet"]), str(paths["clip"]), str(paths["vgg"])
    else:
        unet_spec, clip_spec, vgg_spec = args.model, args.clip_model, args.vgg_model

    from ..pixel.model import load_diffusion_model

    unet_path = resolve_unet(unet_spec, folder, allow_download=allow_download, quiet=quiet)
    _note(f"loading diffusion model {unet_path}", quiet)
    model = load_diffusion_model(unet_path, precision=args.precision,
                                 gradient_checkpointing=args.checkpointing).to(device)
    try:
        model.check_image_size(*source.shape[-2:])
    except ValueError as e:
        raise CliError(EXIT_USAGE, str(e)) from None
    clip = None
    if cfg.uses_clip:
        _note(f"loading CLIP {clip_spec}", quiet)
        clip = load_clip_spec(clip_spec, folder, device)
    vgg_model = None
    if cfg.vgg > 0:
        vgg_model = load_vgg_spec(vgg_spec, folder, allow_download=allow_download, quiet=quiet).to(device)

    # -- run
    from tqdm import tqdm

    n_invert = schedule.num_steps - skip
    n_sample = schedule.num_steps - skip
    bar_opts = dict(file=sys.stderr, disable=quiet, dynamic_ncols=True, leave=True)
    snapshots: list[tuple[int, torch.Tensor]] = []

    def on_invert(step, total, x, pred_x0):
        inv_bar.update(1)

    def on_losses(losses):
        if losses:
            sample_bar.set_postfix_str(_loss_postfix(losses), refresh=False)

    def on_sample(step, total, x, pred_x0):
        sample_bar.update(1)
        if grid_path is not None:
            snapshots.append((step, pred_x0[:1].detach().float().cpu()))

    if not cfg.uses_clip:
        style = None
    elif style_images is not None:
        style = style_from_images(clip, style_images, args.style_crops, args.seed)
    else:
        style = encode_style(clip, args.prompt, args.source_prompt)
    with tqdm(total=n_invert, desc="invert ", unit="step", **bar_opts) as inv_bar:
        inv = invert(model, source, respacing=respacing, skip=skip, callback=on_invert)
    with tqdm(total=n_sample, desc="stylize", unit="step", **bar_opts) as sample_bar:
        out = sample_guided(model, inv, style, clip, cfg, vgg_model=vgg_model, sampler=args.sampler,
                            eta=args.eta, seed=args.seed, callback=on_sample, on_losses=on_losses,
                            mask=mask, feather=feather).cpu()
    seconds = time.monotonic() - t_start

    # -- write
    settings = {
        "zecon_version": _version(), "prompt": args.prompt,
        "source_prompt": args.source_prompt if args.style_image is None else None,
        "style_images": [Path(p).name for p in args.style_image] if args.style_image else None,
        "style_crops": args.style_crops if args.style_image else None,
        "mask": Path(args.mask).name if args.mask else None, "feather": feather if args.mask else None,
        "model": Path(unet_path).name, "clip": clip.name if clip is not None else None,
        "respacing": respacing, "skip": skip, "seed": args.seed, "sampler": args.sampler, "eta": args.eta,
        "size_policy": args.size_policy, "size": size, "device": str(device), "precision": args.precision,
        "guidance": {f: getattr(cfg, f) for f in ("clip_global", "clip_global_patch", "clip_dir",
                                                   "clip_dir_patch", "zecon", "mse", "vgg", "range",
                                                   "n_patch", "patch_min", "patch_max", "aug_prob")},
        "tiny": tiny,
    }
    metadata = {"zecon": settings}
    if tiny:
        metadata["zecon_note"] = NOISE_NOTE
    result = tensor_to_pil(out)[0]
    if tiny:
        result = label_noise(result)
    _save_image(result, output, metadata, "output")
    summary = {"output": str(output), "seconds": round(seconds, 2), "noise": tiny, **settings}
    if grid_path is not None and snapshots:
        keep = pick_steps(len(snapshots), args.grid_max - 1)
        tiles = [tensor_to_pil(source)[0]] + [tensor_to_pil(snapshots[k][1])[0] for k in keep]
        labels = ["source"] + [f"step {snapshots[k][0]}/{n_sample}" for k in keep]
        _save_image(make_grid(tiles, labels, noise=tiny), grid_path, metadata, "--save-steps grid")
        summary["grid"] = str(grid_path)
    if tiny:
        _note(f"note: {output} was made by tiny random-weight models: it is NOISE (labelled so).", quiet)
    _note(f"done in {seconds:.1f}s", quiet)
    if args.json:
        print(json.dumps(summary))
    else:
        print(output)
    return EXIT_OK


# ---------------------------------------------------------------------------
# download / convert
# ---------------------------------------------------------------------------
def _present(entry, folder: Path) -> str | None:
    for name in (entry.filename, *entry.aliases):
        if (folder / name).is_file():
            return str(folder / name)
    if entry.managed_by_open_clip:
        try:   # open_clip's cache; huggingface_hub comes with open_clip but is not ours to require
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return None
        hit = try_to_load_from_cache(entry.hf_repo_id, entry.filename)
        if isinstance(hit, str):
            return hit
    return None


def cmd_download(args: argparse.Namespace) -> int:
    from ..files.download import ensure_known_model
    from ..files.registry import KNOWN_MODELS

    folder = _models_dir(args.models_dir)
    if args.list:
        print(f"models folder: {folder}")
        for m in KNOWN_MODELS.values():
            how = "auto" if m.downloadable else ("open_clip" if m.managed_by_open_clip else "by hand")
            where = _present(m, folder)
            print(f"{m.key:20s} {m.kind:5s} {m.filename:30s} [{how:9s}] "
                  f"{'present: ' + where if where else 'missing'}")
        return EXIT_OK
    keys: list[str] = []
    for k in args.keys or ["default"]:
        keys.extend(DEFAULT_DOWNLOADS if k == "default" else [k])
    unknown = [k for k in keys if k not in KNOWN_MODELS]
    if unknown:
        raise CliError(EXIT_USAGE, f"unknown model {', '.join(map(repr, unknown))}; known: "
                                   f"{', '.join(KNOWN_MODELS)} or 'default'")
    worst = EXIT_OK
    for key in dict.fromkeys(keys):
        entry = KNOWN_MODELS[key]
        try:
            if entry.managed_by_open_clip:
                local = _present(entry, folder)
                if local is None or not local.startswith(str(folder)):
                    from ..guidance.clip_model import load_clip
                    _note(f"{key}: fetching {entry.open_clip_model}/{entry.open_clip_pretrained} through open_clip "
                          f"(Hugging Face {entry.hf_repo_id})", args.quiet)
                    load_clip(entry.open_clip_model, entry.open_clip_pretrained)
                    local = _present(entry, folder) or f"{entry.open_clip_model}/{entry.open_clip_pretrained}"
                print(local)
            elif key == "vgg19":
                from ..guidance.vgg import ensure_vgg
                progress = _Progress(entry.filename, args.quiet)
                try:
                    ensure_vgg(folder, progress=progress)
                finally:
                    progress.close()
                print(folder / entry.filename if (folder / entry.filename).is_file() else folder)
            else:
                progress = _Progress(entry.filename, args.quiet)
                try:
                    print(ensure_known_model(entry, folder, progress=progress))
                finally:
                    progress.close()
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001 - reported per model, the worst code wins
            code, msg = classify(e)
            if code == EXIT_INTERNAL:
                raise
            _err(f"{key}: {msg}")
            worst = max(worst, code)
    return worst


def cmd_convert(args: argparse.Namespace) -> int:
    from ..files.convert import convert_to_safetensors

    print(convert_to_safetensors(args.src, args.dst, overwrite=args.force))
    return EXIT_OK


def cmd_exit_codes(args: argparse.Namespace) -> int:
    for code, text in EXIT_CODES.items():
        print(f"{code:<4d} {text}")
    return EXIT_OK


COMMANDS = {"stylize": cmd_stylize, "download": cmd_download, "convert": cmd_convert,
            "exit-codes": cmd_exit_codes}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # usage errors: argparse exits with 2
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        _err("interrupted")
        return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001
        code, msg = classify(e)
        if code == EXIT_INTERNAL:
            import traceback
            traceback.print_exc()
        _err(msg)
        return code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
