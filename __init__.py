"""ZeCon for ComfyUI: zero-shot contrastive text-guided style transfer (Yang, Hwang & Ye, ICCV 2023).

ComfyUI loads this folder as a custom node pack; the nodes live in ``nodes/``,
the engine in ``zecon_core/``. Outside ComfyUI (pytest imports this file as the
package root) there is no ``comfy_api`` and nothing is registered.
"""

import importlib.util

if importlib.util.find_spec("comfy_api") is not None:
    from .nodes import comfy_entrypoint

    __all__ = ["comfy_entrypoint"]
