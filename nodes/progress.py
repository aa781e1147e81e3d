"""zecon_core callbacks -> ComfyUI progress bar, previews and interrupts.

Every ``ProgressBar.update_absolute`` first checks ComfyUI's interrupt flag
(the server's progress hook calls ``throw_exception_if_processing_interrupted``),
so each reported step is a point where "Cancel" stops the run.
"""

from __future__ import annotations

import logging
import time

import comfy.utils

from ..zecon_core.files.images import tensor_to_pil

PREVIEW_MAX_SIZE = 512


def preview_of(pred_x0):
    """("JPEG", PIL image, max size) of the first item of a [B, 3, H, W] batch in [-1, 1]."""
    return ("JPEG", tensor_to_pil(pred_x0[:1].detach())[0], PREVIEW_MAX_SIZE)


class NodeProgress:
    """One progress bar for a node whose work has several phases (inversion, sampling).

    ``phase(steps)`` returns a zecon_core callback ``(step, total, x, pred_x0)``
    that advances the bar and sends a JPEG preview of ``pred_x0``.
    """

    def __init__(self, total: int, node_id: str | None = None, previews: bool = True):
        self.total = max(1, int(total))
        self.previews = previews
        self.offset = 0
        self.bar = comfy.utils.ProgressBar(self.total, node_id=node_id)

    def phase(self, steps: int):
        offset = self.offset
        self.offset += steps

        def callback(step, total, x, pred_x0):
            self.bar.update_absolute(offset + step, self.total, preview_of(pred_x0) if self.previews else None)

        return callback


def tell(text: str, node_id: str | None = None) -> None:
    """A warning on the console and, in the server, under the node (its progress text)."""
    logging.warning(text)
    try:
        from server import PromptServer
    except ImportError:
        return
    instance = getattr(PromptServer, "instance", None)
    if instance is not None and node_id is not None:
        instance.send_progress_text(text, node_id)


def download_progress(node_id: str | None = None, interval: float = 0.25):
    """A ``progress(done_bytes, total_bytes)`` callback for zecon_core downloads (throttled)."""
    bar = comfy.utils.ProgressBar(1, node_id=node_id)
    last = [0.0]

    def progress(done: int, total: int | None):
        now = time.monotonic()
        if now - last[0] < interval and not (total and done >= total):
            return
        last[0] = now
        total = total or max(done, 1)
        bar.update_absolute(min(done, total), total)

    return progress
