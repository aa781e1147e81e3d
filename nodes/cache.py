"""Loaded models, kept at module level between runs and graphs.

Keys are the resolved file path + mtime + size + the load settings, so a
file replaced on disk is loaded again, and the same file loaded with other
settings (precision, head layout) is a separate entry. Node classes are
locked clones while ComfyUI runs them, hence module-level state.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Hashable

import torch


class ModelCache:
    """A small LRU of loaded models (``max_entries`` per kind)."""

    def __init__(self, max_entries: int = 2):
        self.max_entries = max_entries
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_load(self, key: Hashable, load: Callable[[], Any]) -> Any:
        """The cached value for ``key`` (see :func:`file_key`), else ``load()``."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        # loaded outside ComfyUI's inference mode: these weights take part in autograd later
        with torch.inference_mode(False):
            value = load()
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


def file_key(path: str | Path, *settings) -> tuple:
    """Cache key of a weight file: resolved path, mtime, size, plus the load settings."""
    path = Path(path).resolve()
    st = path.stat()
    return (str(path), st.st_mtime_ns, st.st_size, tuple(settings))


DIFFUSION = ModelCache(2)
CLIP = ModelCache(2)
VGG = ModelCache(2)
