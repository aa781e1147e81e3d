"""The miniature world's restyle workflow (issue 19), built in the REAL ComfyUI frontend like the shipped ones.

    ~/.cache/zecon/venv/bin/python tests/comfy/world_workflows.py

starts ComfyUI with the pack and the test pack tests/comfy/tiny_sd_pack (its ZeconTestWorldSD loads the
world's trained SD1.5-config model from bench/world/weights), puts the world picture world_source.png into
its input folder, builds the graph below with zecon_workflows.build (LiteGraph.createNode in headless
Chromium) and writes, all from that one graph:
  bench/world/workflows/zecon_world_latent.json   UI format (graphToPrompt().workflow = Export)
  bench/world/workflows/zecon_world_latent.jpg    thumbnail: a screenshot of the graph
  tests/workflows_world/zecon_world_latent.json   API format (graphToPrompt().output), run by
                                                  test_world_latent_server.py
Not in workflows/ (the pack's template folder): users do not have the test node.
test_world_workflow.py loads the UI file back and checks that it converts to the API file.
"""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for p in (HERE, HERE.parents[1]):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import zecon_testing as zt  # noqa: E402
import zecon_workflows as zw  # noqa: E402
from bench.world import world as W  # noqa: E402

NAME = "zecon_world_latent"
UI_DIR = zt.REPO / "bench" / "world" / "workflows"
API_DIR = zt.REPO / "tests" / "workflows_world"
UI_PATH = UI_DIR / f"{NAME}.json"
API_PATH = API_DIR / f"{NAME}.json"

#: the picture Load Image names: "a dots blue square" at 64 px (the world's size), and the edit the prompt asks
SOURCE = W.Scene("square", "dots", "blue", 0.5, 0.5, 0.6, 0.7)
TARGET = W.restyle(SOURCE, colour="red")
SOURCE_NAME = "world_source.png"
IMAGE_SIZE = 64                       # = bench.world.latent_model.IMAGE_SIZE (imported there with ComfyUI)
#: the pack and the test pack with ZeconTestWorldSD (no model folders: the world's model loads from
#: bench/world/weights, and neither building nor loading the graph reads a model file)
PACKS = {zt.PACK_NAME: zt.PACK_DIR, zt.TINY_SD_PACK_NAME: zt.TINY_SD_PACK}
#: the name test_world_latent_server.py gives the world's TAESD decoder in models/vae_approx
TAESD_DECODER_NAME = "taesd_decoder_world.safetensors"


def write_source_picture(folder: str | Path) -> Path:
    """The world picture of SOURCE as ``folder``/world_source.png (64x64 RGB)."""
    from PIL import Image

    picture = ((W.render([SOURCE], IMAGE_SIZE)[0] + 1) * 127.5).round().clamp(0, 255).byte()
    path = Path(folder) / SOURCE_NAME
    Image.fromarray(picture.permute(1, 2, 0).numpy()).save(path)
    return path


NOTE = (
    "**Miniature world (issue 19), not a shipped template.** The model is the tiny SD1.5-config latent model "
    "of the miniature world (`bench/world`: procedural 64-px pictures of one shape with a texture and a colour; "
    "weights in `bench/world/weights`, built by `bench/world/latent_model.py`).\n\n"
    "**Setup**\n"
    "* Link the test pack `tests/comfy/tiny_sd_pack` into `custom_nodes` next to this pack (e.g. `ln -s "
    "<repo>/tests/comfy/tiny_sd_pack ComfyUI/custom_nodes/zecon_tiny_sd`): it provides **ZeCon test: "
    "miniature world SD model** (it reads the weights from the repository it is linked from).\n"
    "* For the guider's `decoder` taesd: link `bench/world/weights/latent_taesd_decoder.safetensors` into "
    f"`models/vae_approx` as `{TAESD_DECODER_NAME}` (without it the guider fetches SD1.5's TAESD, which "
    "does not know this model's latents), or set `decoder` to vae.\n"
    f"* **Load Image** wants a 64x64 world picture: `{SOURCE_NAME}` is `{W.caption(SOURCE)}` "
    "(`bench.world.world.render`; `python -m bench.world OUT.png --n 1 --seed S` draws another and prints its "
    "caption). The model knows only 64-px pictures of this world.\n\n"
    "**Steps**\n"
    "* **Miniature world SD model**: MODEL (UNet), CLIP (SD1.5 text encoder at toy width) and VAE (KL, "
    "64-px picture -> 8x8x4 latent).\n"
    "* **VAE Encode**: the picture's latent, which the guider also keeps as the source.\n"
    "* **ZeCon Latent Inversion** (empty prompt, cfg 1, 10 steps, denoise 0.6): the noisy latent and the "
    "sigmas that lead back to the picture.\n"
    f"* **Positive prompt**: the target caption, the source's caption with one attribute changed "
    f"(`{W.caption(TARGET)}`); negative empty.\n"
    "* **ZeCon Guider** (defaults, cfg 5): the prompt carries the edit, the ZeCon and MSE losses on the "
    "UNet's features keep the object's shape and place.\n"
    "* **DisableNoise** + **KSamplerSelect** (euler) + **SamplerCustomAdvanced**: sample the inverted latent "
    "along the inversion's sigmas (no added noise).\n"
    "* **VAE Decode** -> **Save Image**: the restyled 64-px picture.\n\n"
    "The same graph in API format (`tests/workflows_world/zecon_world_latent.json`) runs in "
    "`tests/comfy/test_world_latent_server.py`; the quality figures are in `bench/RESULTS.md` "
    "(Quality (miniature world): latent guider)."
)

WORKFLOW = {
    "nodes": [
        {"id": 1, "type": "LoadImage", "pos": [40, 40], "title": "Load Image (a picture of the miniature world)",
         "widgets": {"image": SOURCE_NAME}},
        {"id": 2, "type": "ZeconTestWorldSD", "pos": [40, 420], "title": "Miniature world SD model (test pack)"},
        {"id": 4, "type": "VAEEncode", "pos": [440, 40]},
        {"id": 5, "type": "CLIPTextEncode", "pos": [440, 140], "title": "Inversion prompt (empty)",
         "widgets": {"text": ""}},
        {"id": 6, "type": "CLIPTextEncode", "pos": [440, 340], "title": "Positive prompt (the target)",
         "widgets": {"text": W.caption(TARGET)}},
        {"id": 7, "type": "CLIPTextEncode", "pos": [440, 540], "title": "Negative prompt",
         "widgets": {"text": ""}},
        {"id": 8, "type": "ZeconLatentInversion", "pos": [840, 40],
         "widgets": {"cfg": 1.0, "steps": 10, "denoise": 0.6, "scheduler": "normal"}},
        {"id": 11, "type": "ZeconGuider", "pos": [1240, 40],
         "widgets": {"cfg": 5.0, "mode": "shortcut", "decoder": "taesd", "start_percent": 0.0,
                     "end_percent": 1.0, "strength": 1.0, "seed": 0, "control_after_generate": "fixed",
                     "zecon_layers": "auto"}},
        {"id": 12, "type": "DisableNoise", "pos": [1240, 600]},
        {"id": 13, "type": "KSamplerSelect", "pos": [1240, 700], "widgets": {"sampler_name": "euler"}},
        {"id": 14, "type": "SamplerCustomAdvanced", "pos": [1640, 40]},
        {"id": 15, "type": "VAEDecode", "pos": [1640, 400]},
        {"id": 16, "type": "SaveImage", "pos": [2040, 40], "widgets": {"filename_prefix": "zecon/world_latent"}},
        {"id": 17, "type": "MarkdownNote", "pos": [2040, 420], "title": "About this workflow (miniature world)",
         "widgets": {"text": NOTE}},
    ],
    "links": [
        (1, 0, 4, "pixels"), (2, 2, 4, "vae"),
        (2, 1, 5, "clip"), (2, 1, 6, "clip"), (2, 1, 7, "clip"),
        (2, 0, 8, "model"), (4, 0, 8, "latent"), (5, 0, 8, "conditioning"),
        (2, 0, 11, "model"), (6, 0, 11, "positive"), (7, 0, 11, "negative"), (4, 0, 11, "source"),
        (2, 2, 11, "vae"),
        (12, 0, 14, "noise"), (11, 0, 14, "guider"), (13, 0, 14, "sampler"), (8, 1, 14, "sigmas"),
        (8, 0, 14, "latent_image"),
        (14, 0, 15, "samples"), (2, 2, 15, "vae"), (15, 0, 16, "images"),
    ],
    "columns": [[1, 2], [4, 5, 6, 7], [8], [11, 12, 13], [14, 15], [16, 17]],
    "sizes": {1: [320, 360], 2: [320, 110], 5: [360, 140], 6: [360, 140], 7: [360, 140], 8: [360, 220],
              11: [400, 560], 14: [320, 120], 16: [320, 320], 17: [480, 820]},
}


def write(fe, out_ui: Path = UI_DIR, out_api: Path = API_DIR,
          shots: Path = zt.ARTIFACTS / "workflow_builder") -> list[Path]:
    paths, _ = zw.write_workflow(fe, NAME, out_ui, out_api, shots, spec=WORKFLOW)
    return paths


def main() -> int:
    import tempfile

    import browser
    import harness

    with tempfile.TemporaryDirectory(prefix="zecon_world_wf_") as tmp:
        server = harness.ComfyServer(Path(tmp) / "comfy", custom_node_packs=PACKS, env=zt.SERVER_ENV)
        with server:
            write_source_picture(server.input_dir)   # before the page: Load Image's list is read at load
            with browser.ComfyFrontend(server) as fe:
                for path in write(fe):
                    print(path.relative_to(zt.REPO))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
