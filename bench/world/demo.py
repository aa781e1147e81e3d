"""``make demo TINY=1``: one picture of the miniature world restyled by the pack's pixel nodes.

The demo (``scripts/demo.py --tiny``) runs the shipped all-in-one workflow's API twin in a real
ComfyUI with the committed miniature models (``bench/world/weights``: the 32-px ADM UNet and the
world's CLIP) in place of ImageNet's, on a picture drawn by ``world.render``. This module holds
what is particular to the world: the demo's scene and captions, the models folder, the settings
patched into the workflow, and the report (source | result | ground truth, graded by the grader,
which never guides).
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, PngImagePlugin

from bench.world import manifest
from bench.world.figures import to_pil
from bench.world.world import COLOURS, SHAPES, TEXTURES, Scene, caption, object_mask, render, restyle, segment
from bench.world.world import iou as mask_iou

SOURCE = Scene("square", "stripes", "blue", 0.5, 0.5, 0.6, 0.7)
TARGET_CAPTION = "a stripes red square"
SIZE = 32
VIEW_SCALE = 8                      # the saved pictures are shown 8x larger (nearest neighbour)
UNET_FILE, CLIP_FILE = manifest.UNET.name, manifest.CLIP.name
NOTE = ("the miniature world (bench/world): 32-px pictures of one shape, restyled by the pack's pixel nodes "
        "with small models trained on that world; not a photograph model")
#: What the workflow's all-in-one node gets in the world (the benchmark's defaults; VGG off: no VGG knows the world).
SETTINGS = {"respacing": "50", "skip": 25, "size_policy": "as_is", "size": 64, "vgg": 0.0}


@dataclass(frozen=True)
class Verdict:
    """What the grader sees on the result, and how well the object's geometry held."""
    texture: str
    colour: str
    shape: str
    iou: float
    target: Scene

    @property
    def reached(self) -> bool:
        """The grader names the target's texture, colour and shape, and the object is where it was."""
        return ((self.texture, self.colour, self.shape) == (self.target.texture, self.target.colour,
                                                            self.target.shape) and self.iou >= 0.5)

    def line(self) -> str:
        got = f"a {self.texture} {self.colour} {self.shape}"
        return (f"grader sees \"{got}\" (target \"{caption(self.target)}\": "
                f"{'reached' if self.reached else 'not reached'}), object IoU {self.iou:.2f}")


def target_scene(text: str, source: Scene = SOURCE) -> Scene:
    """The ground truth for a target caption ``"a {texture} {colour} {shape}"`` of the world.

    Raises ``ValueError`` naming the words the world knows when ``text`` is not such a caption
    or changes the shape (the world's models restyle texture and colour; geometry is kept).
    """
    words = text.strip().lower().split()
    if len(words) == 4 and words[0] in ("a", "an"):
        _, texture, colour, shape = words
        if texture in TEXTURES and colour in COLOURS and shape in SHAPES:
            if shape != source.shape:
                raise ValueError(f"the demo keeps the source's shape ({source.shape}); change texture or colour")
            return restyle(source, texture=texture, colour=colour)
    raise ValueError(f"the miniature world's models know captions \"a {{texture}} {{colour}} {{shape}}\" with "
                     f"texture in {TEXTURES}, colour in {COLOURS}, shape in {SHAPES}; got {text!r}")


def prepare_models(folder: Path) -> Path:
    """Copy the committed UNet and CLIP (with its config) into ``folder`` after checking the manifest."""
    problems = manifest.check()
    if problems:
        raise RuntimeError("the committed miniature models do not match bench/world/weights/manifest.json: "
                           + "; ".join(problems))
    folder.mkdir(parents=True, exist_ok=True)
    for path in (manifest.UNET, manifest.CLIP, manifest.CLIP_CONFIG):
        dst = folder / path.name
        if not dst.is_file() or manifest.sha256(dst) != manifest.sha256(path):
            shutil.copyfile(path, dst)
    return folder


def from_pil(im: Image.Image) -> torch.Tensor:
    """RGB picture -> [3, H, W] in [-1, 1]."""
    t = torch.frombuffer(bytearray(im.convert("RGB").tobytes()), dtype=torch.uint8)
    return t.view(im.height, im.width, 3).permute(2, 0, 1).float() / 127.5 - 1


def save_source(path: Path, source: Scene = SOURCE) -> None:
    to_pil(render([source], SIZE)[0], 1).save(path)


def grade(result: torch.Tensor, source: Scene, target: Scene) -> Verdict:
    """The grader's reading of the result [3, H, W] and the object's IoU against the true mask."""
    from bench.world.grader import load_grader

    pred = load_grader().predict(result[None])
    size = result.shape[-1]
    iou = float(mask_iou(segment(result[None], [source.background]), object_mask([source], size))[0])
    return Verdict(pred["texture"][0], pred["colour"][0], pred["shape"][0], iou, target)


def report(result_png: Path, source: Scene, target: Scene, out: Path) -> tuple[dict[str, Path], Verdict]:
    """Save source, result and ground truth (8x larger) and the side-by-side sheet; grade the result."""
    with Image.open(result_png) as im:
        result = from_pil(im)
    truth = render([target], result.shape[-1])[0]
    src = render([source], result.shape[-1])[0]
    verdict = grade(result, source, target)
    info = PngImagePlugin.PngInfo()
    info.add_text("zecon_note", NOTE)
    info.add_text("zecon_source", caption(source))
    info.add_text("zecon_target", caption(target))
    info.add_text("zecon_grader", verdict.line())
    out.mkdir(parents=True, exist_ok=True)
    paths = {"source": out / "world_source.png", "result": out / "world_result.png",
             "ground_truth": out / "world_ground_truth.png", "sheet": out / "world_demo.png"}
    pictures = {"source": src, "result": result, "ground_truth": truth}
    for key, picture in pictures.items():
        to_pil(picture, VIEW_SCALE).save(paths[key], pnginfo=info)
    big = [to_pil(pictures[k], VIEW_SCALE) for k in ("source", "result", "ground_truth")]
    gap = 8
    sheet = Image.new("RGB", (sum(b.width for b in big) + gap * 4, big[0].height + gap * 2), (255, 255, 255))
    x = gap
    for b in big:
        sheet.paste(b, (x, gap))
        x += b.width + gap
    sheet.save(paths["sheet"], pnginfo=info)
    return paths, verdict
