"""ComfyUI 0.3.75 imported into the test process, with the pack imported as the package ``zecon_pack``.

For tests of the latent backbone's ComfyUI wiring that need ComfyUI's own objects
(ModelPatcher, CFGGuider, samplers) without a server: ComfyUI on the CPU, its input
folder in a temporary directory (the pack copies its sample image there at import),
and the progress hook the server installs (so ``ProgressBar`` updates check the
interrupt flag as they do in the server).
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import types
from pathlib import Path

import harness

REPO = Path(__file__).resolve().parents[2]
PACK = "zecon_pack"


class _NoAv(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``av`` (PyAV) is needed only by ComfyUI's video nodes: an empty module where it is missing."""

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


def progress_hook(value, total, preview, prompt_id=None, node_id=None):
    """What the server's progress hook does first: stop here when an interrupt was requested."""
    import comfy.model_management as mm
    mm.throw_exception_if_processing_interrupted()


def load(input_dir: Path):
    """Import ComfyUI (CPU) and the pack once per process; returns the pack's module ``zecon_pack``."""
    if PACK in sys.modules:
        return sys.modules[PACK]
    comfy_dir = harness.default_comfyui_dir()
    if not harness.comfyui_available(comfy_dir):
        raise RuntimeError(f"ComfyUI not found at {comfy_dir}; run scripts/setup_env.sh")
    sys.path.insert(0, str(comfy_dir))
    from comfy.cli_args import args
    args.cpu = True
    try:
        import av  # noqa: F401
    except ImportError:
        sys.meta_path.insert(0, _NoAv())
    import folder_paths
    folder_paths.set_input_directory(str(input_dir))
    import comfy.utils
    comfy.utils.set_progress_bar_global_hook(progress_hook)
    pack = types.ModuleType(PACK)
    pack.__path__ = [str(REPO)]
    sys.modules[PACK] = pack
    import zecon_pack.nodes  # noqa: F401  (registers the pack's model folder, as ComfyUI's import would)
    return pack
