"""nodes/latent/taesd.py against ComfyUI 0.3.75's own folder_paths, in-process.

ComfyUI's modules (folder_paths, comfy.utils for the progress bar) are imported
into this process by the module fixture below, the way
tests/comfy/device_check_nodes.py sets them up; nothing else of ComfyUI and no
other part of the pack (nodes/__init__.py registers nodes) is loaded. The pack's
files are imported under a private package name so that ComfyUI's top-level
``nodes.py`` and the pack's ``nodes/`` never meet. Downloads come from the
127.0.0.1 server of tests/test_download.py; the vae_approx folders are
temporary directories.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import sys
import types
from pathlib import Path

import pytest

import harness  # tests/comfy/harness.py
from test_download import _clean_env, closed_port_url, leftovers, server  # noqa: F401  (fixtures)
from zecon_core.files import download as dl

REPO = Path(__file__).resolve().parents[2]
PKG = "zecon_taesd_testpack"
DATA = os.urandom(120_000)
DATA_BLOB = hashlib.sha1(b"blob %d\0" % len(DATA) + DATA).hexdigest()


@pytest.fixture(scope="module")
def comfy():
    """(folder_paths, comfy.utils, the taesd module)."""
    comfy_dir = harness.default_comfyui_dir()
    if not harness.comfyui_available(comfy_dir):
        if os.environ.get("ZECON_REQUIRE_COMFY") or os.environ.get("CI"):
            pytest.fail(f"ComfyUI not found at {comfy_dir} (required: CI / ZECON_REQUIRE_COMFY is set)")
        pytest.skip(f"ComfyUI not found at {comfy_dir}; run scripts/setup_env.sh")
    added = str(comfy_dir) not in sys.path
    if added:
        sys.path.insert(0, str(comfy_dir))
    try:
        from comfy.cli_args import args

        args.cpu = True
        import comfy.utils
        import folder_paths

        for name, path in ((PKG, REPO), (f"{PKG}.nodes", REPO / "nodes")):
            pkg = types.ModuleType(name)
            pkg.__path__ = [str(path)]
            sys.modules[name] = pkg
        taesd = importlib.import_module(f"{PKG}.nodes.latent.taesd")
        yield folder_paths, comfy.utils, taesd
    finally:
        for name in [m for m in sys.modules if m == PKG or m.startswith(PKG + ".")]:
            del sys.modules[name]
        if added:
            sys.path.remove(str(comfy_dir))


@pytest.fixture
def vae_approx(comfy, tmp_path, monkeypatch):
    """Two temporary vae_approx folders (the first is where downloads go)."""
    folder_paths = comfy[0]
    first, second = tmp_path / "vae_approx", tmp_path / "more_vae_approx"
    first.mkdir()
    second.mkdir()
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "vae_approx",
                        ([str(first), str(second)], set(folder_paths.supported_pt_extensions)))
    monkeypatch.setattr(folder_paths, "filename_list_cache", {})
    return first, second


@pytest.fixture
def hook(comfy, monkeypatch):
    calls = []
    monkeypatch.setattr(comfy[1], "PROGRESS_BAR_HOOK",
                        lambda value, total, preview, node_id=None: calls.append((value, total, node_id)))
    return calls


def test_existing_file_is_found_by_prefix(comfy, vae_approx, server, monkeypatch):
    taesd = comfy[2]
    first, second = vae_approx
    (first / "taesdxl_decoder.pth").write_bytes(b"xl")          # another prefix: not taken
    (second / "taesd_decoder.safetensors").write_bytes(b"user's file")
    monkeypatch.setenv(dl.URL_OVERRIDE_ENV, server.base)
    assert taesd.resolve_taesd("taesd_decoder") == str(second / "taesd_decoder.safetensors")
    assert taesd.resolve_taesd("taesdxl_decoder") == str(first / "taesdxl_decoder.pth")
    assert server.requests == []  # a file that is there is taken as it is, as ComfyUI does


def test_missing_file_is_downloaded_into_the_first_folder(comfy, vae_approx, server, monkeypatch, hook):
    taesd = comfy[2]
    first, second = vae_approx
    (first / "taesd_decoder.pth.part").write_bytes(DATA[:1000])  # not a .pth: ComfyUI's list skips it
    real = taesd.KNOWN_MODELS["taesd_decoder"]
    # the same entry, but expecting the test bytes (the real file cannot be served here)
    monkeypatch.setattr(taesd, "KNOWN_MODELS",
                        {**taesd.KNOWN_MODELS, "taesd_decoder": dataclasses.replace(real, git_blob=DATA_BLOB)})
    server.files["/mirror/taesd_decoder.pth"] = DATA
    monkeypatch.setenv(dl.URL_OVERRIDE_ENV, json.dumps({"taesd_decoder": f"{server.base}/mirror/taesd_decoder.pth"}))
    path = taesd.resolve_taesd("taesd_decoder", node_id="7")
    assert path == str(first / "taesd_decoder.pth")
    assert Path(path).read_bytes() == DATA and leftovers(first) == []
    assert [(r["path"], r["range"]) for r in server.requests] == [("/mirror/taesd_decoder.pth", "bytes=1000-")]
    assert hook and hook[-1] == (len(DATA), len(DATA), "7")  # progress reached the node's bar
    assert not list(second.iterdir())
    # found by the prefix lookup from now on (ComfyUI's previews find it too)
    server.files.clear()
    assert taesd.resolve_taesd("taesd_decoder") == path and len(server.requests) == 1


def test_wrong_bytes_from_the_server_are_refused(comfy, vae_approx, server, monkeypatch):
    taesd = comfy[2]
    first, _ = vae_approx
    server.files["/taesd_decoder.pth"] = DATA  # not the real file: its Git blob id differs
    monkeypatch.setenv(dl.URL_OVERRIDE_ENV, server.base)
    with pytest.raises(ValueError) as ei:
        taesd.resolve_taesd("taesd_decoder", input_name="decoder")
    msg = str(ei.value)
    assert msg.startswith("decoder: ")
    assert "Git blob id 5915a429fc08eba4adf62bf74f96705b8b0d5c1f" in msg
    assert not (first / "taesd_decoder.pth").exists()


def test_unreachable_server_gives_a_clear_error(comfy, vae_approx, monkeypatch):
    taesd = comfy[2]
    first, second = vae_approx
    entry = taesd.KNOWN_MODELS["taesdxl_decoder"]
    monkeypatch.setenv(dl.URL_OVERRIDE_ENV, closed_port_url("").rstrip("/"))
    with pytest.raises(ValueError) as ei:
        taesd.resolve_taesd("taesdxl_decoder", input_name="taesd_decoder")
    msg = str(ei.value)
    assert msg.startswith("taesd_decoder: ")
    assert "connection refused" in msg
    assert (f"Download it by hand from {entry.urls[0]} (or {entry.urls[1]}) and put it in {first} "
            f"as taesdxl_decoder.pth (expected Git blob id {entry.git_blob})") in msg
    assert str(second) in msg  # every folder that was searched is named
    assert not (first / "taesdxl_decoder.pth").exists()


def test_unknown_decoder_name(comfy, vae_approx):
    taesd = comfy[2]
    first, _ = vae_approx
    with pytest.raises(ValueError) as ei:
        taesd.resolve_taesd("taesd3_decoder")
    msg = str(ei.value)
    assert msg.startswith("decoder: ") and "taesd3_decoder.pth" in msg and str(first) in msg
    assert "https://github.com/madebyollin/taesd" in msg
    with pytest.raises(ValueError, match="^vae_decoder: .*no TAESD decoder"):
        taesd.resolve_taesd(None, input_name="vae_decoder")
