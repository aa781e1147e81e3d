"""ComfyUI 0.3.75 imported into the test process, with the pack imported as the package ``zecon_pack``.

For tests of the latent backbone's ComfyUI wiring that need ComfyUI's own objects
(ModelPatcher, CFGGuider, samplers) without a server: ComfyUI on the CPU, its input
folder in a temporary directory (the pack copies its sample image there at import),
and the progress hook the server installs (so ``ProgressBar`` updates check the
interrupt flag as they do in the server).
"""
from __future__ import annotations

import sys
import types
from pathlib import Path

import tiny_sd

REPO = Path(__file__).resolve().parents[2]
PACK = "zecon_pack"


def progress_hook(value, total, preview, prompt_id=None, node_id=None):
    """What the server's progress hook does first: stop here when an interrupt was requested."""
    import comfy.model_management as mm
    mm.throw_exception_if_processing_interrupted()


def load(input_dir: Path):
    """Import ComfyUI (CPU) and the pack once per process; returns the pack's module ``zecon_pack``."""
    if PACK in sys.modules:
        return sys.modules[PACK]
    tiny_sd.setup_comfy(cpu=True)
    import folder_paths
    folder_paths.set_input_directory(str(input_dir))
    import comfy.utils
    comfy.utils.set_progress_bar_global_hook(progress_hook)
    pack = types.ModuleType(PACK)
    pack.__path__ = [str(REPO)]
    sys.modules[PACK] = pack
    import zecon_pack.nodes  # noqa: F401  (registers the pack's model folder, as ComfyUI's import would)
    return pack


def single_threaded(tmp_path_factory):
    """:func:`load` with torch on one thread while a test module runs (``yield from`` it in a module fixture)."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load(tmp_path_factory.mktemp("comfy_input"))
    torch.set_num_threads(threads)
