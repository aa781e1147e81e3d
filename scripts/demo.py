#!/usr/bin/env python3
"""``make demo``: restyle the bundled sample image with a shipped workflow in a real, headless ComfyUI.

    python scripts/demo.py            # real models (downloaded and verified first; about 2.8 GB)
    python scripts/demo.py --tiny     # the miniature world, offline, about a minute on a CPU

Run it with the environment ``scripts/setup_env.sh`` builds (``make demo`` does
both). What it does:

1. models: downloads the default models into the models folder
   (``$ZECON_MODELS_DIR`` or ``~/.cache/zecon/models``, shared with the CLI):
   ImageNet ADM ``256x256_diffusion_uncond.pt`` (verified SHA256), VGG19 (its
   three layers are extracted once), and CLIP ViT-B-16/openai through
   open_clip (Hugging Face cache). Without network it says which URL failed,
   where to put the files by hand, and suggests ``make demo TINY=1``.
   With ``--tiny``: the miniature world's committed models instead
   (``bench/world/weights``: a 32-px ADM UNet and a small CLIP trained on the
   world's pictures, checked against their manifest), and a picture of that
   world ("a stripes blue square") restyled to "a stripes red square"
   (``bench/world/demo.py``);
2. starts ComfyUI (the tree setup_env.sh unpacked) with this pack linked into a
   throw-away ``custom_nodes`` folder (tests/comfy/harness.py), on 127.0.0.1;
3. POSTs the API-format twin of the shipped workflow
   (``tests/workflows_api/zecon_style_transfer_imagenet.json`` by default)
   with the image, the model names and, if asked, prompt/steps/size patched;
4. waits (progress bar), copies the saved image(s) to ``output/demo/`` and
   prints where they are; stops ComfyUI. With ``--tiny`` it saves the world's
   source, the result and the ground truth (8x larger) and a sheet of the three,
   and prints what the world's grader sees on the result.

Exit codes: 0 ok, 2 usage, 3 ComfyUI/workflow/model-file problem, 4 download
or network problem, 5 the workflow failed while running, 130 interrupted.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / "tests" / "comfy"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import harness  # noqa: E402  (tests/comfy/harness.py: the real ComfyUI server runner)
from bench.world import demo as world  # noqa: E402  (the miniature world: --tiny)

DEFAULT_WORKFLOW = REPO / "tests" / "workflows_api" / "zecon_style_transfer_imagenet.json"
DEFAULT_IMAGE = REPO / "assets" / "sample.png"
DEFAULT_OUT = REPO / "output" / "demo"
PACK_NAME = "zecon_comfyui"
INPUT_NAME = "zecon_demo_input.png"

EXIT_OK, EXIT_USAGE, EXIT_SETUP, EXIT_DOWNLOAD, EXIT_RUN, EXIT_INTERRUPTED = 0, 2, 3, 4, 5, 130


class DemoError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def say(msg: str = "") -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- workflow patching
def patch_workflow(prompt: dict, *, image_name: str, tiny: bool, present_files: set[str] = frozenset(),
                   prompt_text: str | None = None, respacing: str | None = None, skip: int | None = None,
                   size: int | None = None, seed: int | None = None, n_patch: int | None = None) -> dict:
    """A copy of an API-format ZeCon prompt with the demo's image, models and settings.

    ``present_files``: file names in the models folder; a loader label
    ``"<file> (download on first use)"`` whose file is there becomes the plain
    file name (ComfyUI lists only one of the two). ``tiny``: the miniature
    world's models, settings (``bench.world.demo.SETTINGS``) and captions; the
    source prompt becomes the world picture's caption.
    """
    from zecon_core.files import registry

    p = copy.deepcopy(prompt)
    settings = dict(world.SETTINGS) if tiny else {}
    for key, value in (("respacing", respacing), ("skip", skip), ("size", size), ("n_patch", n_patch)):
        if value is not None:
            settings[key] = value
    if tiny and prompt_text is None:
        prompt_text = world.TARGET_CAPTION
    class_types = {n["class_type"] for n in p.values()}
    if "ZeconGuider" in class_types:
        raise DemoError(EXIT_SETUP, "this is a latent-mode workflow: it runs your own model (a Stable Diffusion "
                                    "checkpoint, or a rectified-flow model such as Flux.1 or Z-Image), which the demo "
                                    "cannot download; open it in ComfyUI (Browse Templates -> ZeCon) and pick your "
                                    "model files in its loader nodes")
    if not class_types & {"ZeconStyleTransfer", "ZeconSampler"}:
        raise DemoError(EXIT_SETUP, "the workflow has no ZeconStyleTransfer or ZeconSampler node")
    first_style = True
    for node_id in sorted(p, key=lambda k: int(k) if str(k).isdigit() else 0):
        node = p[node_id]
        ct, inputs = node["class_type"], node["inputs"]
        if ct == "LoadImage":
            inputs["image"] = image_name
        elif ct == "ZeconDiffusionLoader":
            if tiny:
                inputs["model_name"] = world.UNET_FILE
            else:
                entry = registry.parse_display_name(inputs["model_name"])
                if entry is not None:
                    local = next((n for n in (entry.filename, *entry.aliases) if n in present_files), None)
                    if local is not None:
                        inputs["model_name"] = local
        elif ct == "ZeconClipLoader":
            if tiny:
                inputs["local_file"] = world.CLIP_FILE
            elif inputs.get("local_file", "none") == "none" and _hand_placed_clip(inputs, present_files):
                inputs["local_file"] = _hand_placed_clip(inputs, present_files)
        if ct in ("ZeconInversion", "ZeconStyleTransfer"):
            for k in ("respacing", "skip", "size", "size_policy"):
                if k in settings:
                    inputs[k] = settings[k]
        if ct in ("ZeconGuidance", "ZeconStyleTransfer"):
            for k in ("n_patch", "vgg"):
                if k in settings:
                    inputs[k] = settings[k]
        if ct in ("ZeconSampler", "ZeconStyleTransfer") and seed is not None:
            inputs["seed"] = seed
        if ct == "ZeconStyleTransfer" or (ct == "ZeconStylePrompt" and first_style):
            if prompt_text is not None:
                inputs["target_prompt"] = prompt_text
            if tiny:
                inputs["source_prompt"] = world.caption(world.SOURCE)
            first_style = first_style and ct != "ZeconStylePrompt"
    return p


def _hand_placed_clip(inputs: dict, present_files) -> str | None:
    """The registry's CLIP file, if placed by hand in the models folder, for a loader asking for that CLIP."""
    from zecon_core.files import registry

    entry = registry.KNOWN_MODELS["clip_vit_b16_openai"]
    wanted = (inputs.get("clip_name"), inputs.get("pretrained"))
    if wanted == (entry.open_clip_model, entry.open_clip_pretrained) and entry.filename in present_files:
        return entry.filename
    return None


def models_needed(prompt: dict, present_files=frozenset()) -> dict:
    """{"unet": [registry entries], "clip": [(name, tag)], "vgg": bool} that the workflow will ask for."""
    from zecon_core.files import registry

    unets, clips, vgg = [], [], False
    for node in prompt.values():
        ct, inputs = node["class_type"], node["inputs"]
        if ct == "ZeconDiffusionLoader":
            entry = registry.get_known(inputs.get("model_name", ""))
            if entry is not None and entry not in unets:
                unets.append(entry)
        elif (ct == "ZeconClipLoader" and inputs.get("local_file", "none") == "none"
              and not _hand_placed_clip(inputs, present_files)):
            pair = (inputs.get("clip_name", "ViT-B-16"), inputs.get("pretrained", "openai"))
            if pair not in clips:
                clips.append(pair)
        elif ct in ("ZeconStyleTransfer",) or (ct == "ZeconGuidance" and inputs.get("vgg_file", "auto") == "auto"):
            vgg = vgg or float(inputs.get("vgg", 100) or 0) > 0
    return {"unet": unets, "clip": clips, "vgg": vgg}


# --------------------------------------------------------------------------- models
def _bar(desc: str):
    from tqdm import tqdm

    state = {}

    def progress(done, total):
        if "bar" not in state:
            state["bar"] = tqdm(total=total, initial=done, unit="B", unit_scale=True, unit_divisor=1024,
                                desc=desc, file=sys.stderr, dynamic_ncols=True)
            return
        state["bar"].update(done - state["bar"].n)

    def close():
        if "bar" in state:
            state["bar"].close()
    return progress, close


def download_models(needed: dict, folder: Path) -> None:
    """Fetch and verify what the workflow needs. Raises DemoError(EXIT_DOWNLOAD) with a plain message."""
    from zecon_core.files import registry
    from zecon_core.files.download import DownloadError, ManualDownloadRequired, ensure_known_model

    failures = []
    folder.mkdir(parents=True, exist_ok=True)
    for entry in needed["unet"]:
        say(f"[demo] model {entry.filename} -> {folder}")
        progress, close = _bar(entry.filename)
        try:
            ensure_known_model(entry, folder, progress=progress)
        except ManualDownloadRequired as e:
            raise DemoError(EXIT_SETUP, str(e)) from None
        except DownloadError as e:
            failures.append((entry.filename, str(e)))
        finally:
            close()
    if needed["vgg"]:
        from zecon_core.guidance.vgg import LAYERS_FILE, ensure_vgg
        say(f"[demo] VGG19 layers ({LAYERS_FILE}) -> {folder}")
        progress, close = _bar("vgg19-dcbb9e9d.pth")
        try:
            ensure_vgg(folder, progress=progress)
        except DownloadError as e:
            failures.append(("vgg19-dcbb9e9d.pth", str(e)))
        finally:
            close()
    clip_entry = registry.KNOWN_MODELS["clip_vit_b16_openai"]
    for name, tag in needed["clip"]:
        say(f"[demo] CLIP {name}/{tag} through open_clip (Hugging Face cache)")
        try:
            from zecon_core.guidance.clip_model import load_clip
            load_clip(name, tag)
        except Exception as e:  # noqa: BLE001 - open_clip/huggingface raise many types
            hint = clip_entry.manual_text(folder) if (name, tag) == ("ViT-B-16", "openai") else ""
            failures.append((f"CLIP {name}/{tag}",
                             f"{e}\nFrom https://huggingface.co/{clip_entry.hf_repo_id}. {hint}"))
    if failures:
        lines = ["could not download the models the demo needs (is this machine offline?)", ""]
        for what, msg in failures:
            lines += [f"* {what}:", *("    " + ln for ln in msg.splitlines()), ""]
        lines += [f"Put the files by hand in {folder} (the names and URLs are above), then run `make demo` again.",
                  "To see the whole machinery work offline now, run:   make demo TINY=1",
                  "(the miniature world: small models trained on pictures of one shape, committed "
                  "with the pack; it restyles a picture of that world)."]
        raise DemoError(EXIT_DOWNLOAD, "\n".join(lines))


# --------------------------------------------------------------------------- ComfyUI
class DemoServer(harness.ComfyServer):
    """The harness server, on the GPU when asked (the harness always passes --cpu)."""

    use_gpu: bool = False

    def command(self) -> list[str]:
        cmd = super().command()
        if self.use_gpu:
            cmd.remove("--cpu")
        return cmd


def run_prompt(server, prompt: dict, timeout: float) -> dict:
    from tqdm import tqdm

    client = server.client
    with client.listen() as events:
        try:
            prompt_id = client.queue_prompt(prompt)
        except harness.PromptRejected as e:
            raise DemoError(EXIT_SETUP, f"ComfyUI refused the workflow: {json.dumps(e.body, indent=1)[:3000]}")
        bar = tqdm(total=1, desc="[demo] ComfyUI", unit="step", file=sys.stderr, dynamic_ncols=True)
        deadline = time.monotonic() + timeout
        try:
            while True:
                entry = client.history(prompt_id)
                progress = [e for e in events.of_type("progress") if e.get("prompt_id") in (None, prompt_id)]
                if progress:
                    last = progress[-1]
                    node = prompt.get(str(last.get("node")), {}).get("class_type", "")
                    if bar.total != last["max"]:
                        bar.reset(total=last["max"])
                    bar.set_description(f"[demo] {node or 'ComfyUI'}", refresh=False)
                    bar.n = last["value"]
                    bar.refresh()
                if entry is not None and (entry.get("status") or {}).get("completed") is not None:
                    status = entry.get("status") or {}
                    if status.get("status_str") in ("success", "error"):
                        break
                if time.monotonic() > deadline:
                    client.interrupt(prompt_id)
                    raise DemoError(EXIT_RUN, f"the workflow did not finish within {timeout:.0f}s")
                time.sleep(0.5)
        except KeyboardInterrupt:
            client.interrupt(prompt_id)
            raise
        finally:
            bar.close()
    if (entry.get("status") or {}).get("status_str") != "success":
        failed = harness.PromptFailed(prompt_id, entry)
        err = failed.message("execution_error") or {}
        raise DemoError(EXIT_RUN, "the workflow failed in ComfyUI: "
                        + (f"{err.get('node_type')}: {err.get('exception_message')}" if err else str(failed)))
    return entry


# --------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true",
                    help="the miniature world, offline: its committed 32-px models restyle one of its pictures "
                         "(bench/world/demo.py); --prompt then takes a world caption")
    ap.add_argument("--workflow", type=Path, default=DEFAULT_WORKFLOW,
                    help="API-format workflow (default: %(default)s)")
    ap.add_argument("--image", type=Path, default=None,
                    help="image to restyle (default: the sample; with --tiny the world's own picture, no other)")
    ap.add_argument("--prompt", default=None, help="target style (default: the workflow's)")
    ap.add_argument("--steps", default=None, help="respacing, e.g. 50 or ddim25 (default: the workflow's)")
    ap.add_argument("--skip", type=int, default=None)
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--n-patch", type=int, default=None)
    ap.add_argument("--models-dir", type=Path, default=None,
                    help="models folder (default: $ZECON_MODELS_DIR or ~/.cache/zecon/models; --tiny: "
                         "~/.cache/zecon/demo/world-models)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the result goes (default: %(default)s)")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="ComfyUI's throw-away folders (default: ~/.cache/zecon/demo/run)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds to wait for the workflow (default: 900 with --tiny, 6 h otherwise)")
    ap.add_argument("--cpu", action="store_true", help="run ComfyUI on the CPU even if CUDA is available")
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    t0 = time.monotonic()
    server = None
    try:
        if not args.workflow.is_file():
            raise DemoError(EXIT_USAGE, f"no workflow file {args.workflow}")
        target = None
        if args.tiny:
            if args.image is not None:
                raise DemoError(EXIT_USAGE, "--image: the miniature world's models know only the world's own "
                                            "pictures; --tiny draws one (leave --image out)")
            try:
                target = world.target_scene(args.prompt or world.TARGET_CAPTION)
            except ValueError as e:
                raise DemoError(EXIT_USAGE, f"--prompt: {e}") from None
        else:
            args.image = args.image or DEFAULT_IMAGE
            if not args.image.is_file():
                raise DemoError(EXIT_USAGE, f"no image file {args.image}")
        if not harness.comfyui_available():
            raise DemoError(EXIT_SETUP, f"ComfyUI is not at {harness.default_comfyui_dir()}: run "
                                        "`bash scripts/setup_env.sh` first (`make demo` does)")
        prompt = json.loads(args.workflow.read_text())
        cache = Path(os.environ.get("ZECON_CACHE") or Path.home() / ".cache" / "zecon")
        if args.tiny:
            say(f"[demo] --tiny: {world.NOTE}")
            models = (args.models_dir or cache / "demo" / "world-models").expanduser()
            try:
                world.prepare_models(models)
            except RuntimeError as e:
                raise DemoError(EXIT_SETUP, str(e)) from None
        else:
            from zecon_core.files.registry import default_cache_dir
            models = (args.models_dir or default_cache_dir()).expanduser()
            present = {p.name for p in models.iterdir()} if models.is_dir() else set()
            download_models(models_needed(prompt, present), models)
        present = {p.name for p in models.iterdir()} if models.is_dir() else set()
        api = patch_workflow(prompt, image_name=INPUT_NAME, tiny=args.tiny, present_files=present,
                             prompt_text=args.prompt, respacing=args.steps, skip=args.skip, size=args.size,
                             seed=args.seed, n_patch=args.n_patch)

        import torch
        use_gpu = (not args.tiny) and (not args.cpu) and torch.cuda.is_available()
        workdir = (args.workdir or cache / "demo" / "run").expanduser()
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"} if args.tiny else {}
        server = DemoServer(workdir, custom_node_packs={PACK_NAME: REPO}, model_folders={"zecon": models}, env=env)
        server.use_gpu = use_gpu
        say(f"[demo] starting ComfyUI {harness.COMFYUI_VERSION} ({'GPU' if use_gpu else 'CPU'}) with the pack "
            f"linked as custom_nodes/{PACK_NAME}; log: {server.log_path}")
        if not use_gpu and not args.tiny:
            say("[demo] no GPU: on a CPU the full-size run takes a long time (see the README's Performance "
                "section); `make demo TINY=1` shows the machinery in a minute.")
        try:
            server.start()
        except harness.ComfyStartupError as e:
            raise DemoError(EXIT_SETUP, f"ComfyUI did not start: {e}") from None
        server.input_dir.mkdir(parents=True, exist_ok=True)
        if args.tiny:
            world.save_source(server.input_dir / INPUT_NAME)
            say(f"[demo] the world's picture \"{world.caption(world.SOURCE)}\" -> \"{world.caption(target)}\"")
        else:
            shutil.copyfile(args.image, server.input_dir / INPUT_NAME)
        timeout = args.timeout or (900.0 if args.tiny else 6 * 3600.0)
        say(f"[demo] queueing {args.workflow.relative_to(REPO) if args.workflow.is_relative_to(REPO) else args.workflow}")
        entry = run_prompt(server, api, timeout)
        saved = server.client.output_paths(entry)
        if not saved:
            raise DemoError(EXIT_RUN, "the workflow ran but saved no image")
        args.out.mkdir(parents=True, exist_ok=True)
        results = []
        if args.tiny:
            paths, verdict = world.report(Path(saved[0]), world.SOURCE, target, args.out)
            say(f"[demo] {verdict.line()}")
            say(f"[demo] source {paths['source']}, ground truth {paths['ground_truth']}, "
                f"result {paths['result']}")
            results.append(paths["sheet"].resolve())
        else:
            for i, src in enumerate(saved):
                dst = args.out / f"{args.workflow.stem}{f'_{i + 1}' if len(saved) > 1 else ''}.png"
                shutil.copyfile(src, dst)
                results.append(dst.resolve())
    except DemoError as e:
        say(f"[demo] ERROR: {e}")
        if server is not None and server.log_path.is_file() and e.code in (EXIT_SETUP, EXIT_RUN):
            say(f"[demo] ComfyUI log: {server.log_path}")
        return e.code
    except KeyboardInterrupt:
        say("[demo] interrupted")
        return EXIT_INTERRUPTED
    finally:
        if server is not None:
            server.stop()
    say(f"[demo] done in {time.monotonic() - t0:.0f}s")
    for r in results:
        say(f"[demo] result: {r}" + ("   (source | result | ground truth, the miniature world)" if args.tiny else ""))
        print(r)
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
