"""The committed miniature models (``bench/world/weights/``) and their manifest.

``manifest.json`` maps each weights file to its SHA256, its size in bytes and the exact command
that made it (run from the repository root). CI checks the files against it; nothing retrains.
"""
from __future__ import annotations

import hashlib
import json
import shlex
import sys
from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MANIFEST = WEIGHTS_DIR / "manifest.json"
UNET = WEIGHTS_DIR / "unet_world32.safetensors"
CLIP = WEIGHTS_DIR / "clip_world32.safetensors"
CLIP_CONFIG = WEIGHTS_DIR / "clip_world32.json"
GRADER = WEIGHTS_DIR / "grader_world.safetensors"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read() -> dict:
    return json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {}


def command_line(module: str, argv: list[str] | None = None) -> str:
    """The command that runs ``module`` with this process's arguments (threads pinned by the script)."""
    args = sys.argv[1:] if argv is None else argv
    return " ".join(["python", "-m", module, *map(shlex.quote, args)])


def record(paths: list[Path], command: str) -> None:
    """Write (or replace) the manifest entries of ``paths``, made by ``command``."""
    entries = read()
    for path in paths:
        entries[path.name] = {"sha256": sha256(path), "bytes": path.stat().st_size, "command": command}
    MANIFEST.write_text(json.dumps(dict(sorted(entries.items())), indent=2) + "\n")


def check() -> list[str]:
    """Problems with the committed files (missing, other size or hash); empty when all match."""
    problems = []
    for name, entry in read().items():
        path = WEIGHTS_DIR / name
        if not path.exists():
            problems.append(f"{name}: missing")
        elif path.stat().st_size != entry["bytes"] or sha256(path) != entry["sha256"]:
            problems.append(f"{name}: does not match manifest.json (size or SHA256)")
    return problems
