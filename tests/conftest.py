"""Shared pytest fixtures.

Generic ComfyUI fixtures (no pack-specific logic): tests/comfy/harness.py runs
a real ComfyUI 0.3.75 server, tests/comfy/browser.py drives its real frontend.

    def test_x(comfy_server_factory):
        server = comfy_server_factory(packs=[PACK_DIR],
                                      model_folders={"zecon": MODELS_DIR})
        server.client.run(api_prompt)

One server per distinct (packs, model_folders, extra_args) per test session;
all are stopped at session end. ComfyUI missing (scripts/setup_env.sh not run)
-> tests skip, unless CI or ZECON_REQUIRE_COMFY=1 is set, then they fail.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

_COMFY_TESTS = Path(__file__).resolve().parent / "comfy"
if str(_COMFY_TESTS) not in sys.path:
    sys.path.insert(0, str(_COMFY_TESTS))

import browser as comfy_browser  # noqa: E402  (tests/comfy/browser.py)
import harness as comfy_harness  # noqa: E402  (tests/comfy/harness.py)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "comfy: needs a real ComfyUI server (scripts/setup_env.sh)")
    config.addinivalue_line(
        "markers", "browser: needs chromium + playwright (real ComfyUI frontend)")


def pytest_unconfigure(config):
    """After the summary: ModelPatchers still alive at interpreter shutdown (tiny models kept by test modules)
    would run ComfyUI's ``__del__``, which detaches through module globals Python has already torn down and
    prints an ignored AttributeError per patcher below pytest's summary line; nothing needs detaching then."""
    patcher = sys.modules.get("comfy.model_patcher")
    if patcher is not None:
        patcher.ModelPatcher.__del__ = lambda self: None


def _require() -> bool:
    return bool(os.environ.get("ZECON_REQUIRE_COMFY") or os.environ.get("CI"))


def _skip_or_fail(reason: str):
    if _require():
        pytest.fail(reason + " (required: CI / ZECON_REQUIRE_COMFY is set)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def comfy_server_factory(tmp_path_factory):
    """factory(packs=[dir, ...] or {name: dir}, model_folders={name: dir},
    extra_args=(), **ComfyServer kwargs) -> started harness.ComfyServer."""
    servers: dict = {}

    def factory(packs=(), model_folders=None, extra_args=(), **kwargs):
        if not comfy_harness.comfyui_available():
            _skip_or_fail(f"ComfyUI not found at {comfy_harness.default_comfyui_dir()}; "
                          "run scripts/setup_env.sh")
        model_folders = dict(model_folders or {})
        if isinstance(packs, dict):
            pack_key = tuple(sorted((k, str(Path(v).resolve())) for k, v in packs.items()))
        else:
            pack_key = tuple(str(Path(p).resolve()) for p in packs)
        key = (pack_key,
               tuple(sorted((k, str(v)) for k, v in model_folders.items())),
               tuple(extra_args), tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
        if key not in servers:
            workdir = tmp_path_factory.mktemp("comfyui")
            server = comfy_harness.ComfyServer(
                workdir, custom_node_packs=packs, model_folders=model_folders,
                extra_args=tuple(extra_args), **kwargs)
            servers[key] = server  # registered first: stopped even if start fails
            server.start()
        return servers[key]

    yield factory
    for server in servers.values():
        server.stop()


@pytest.fixture(scope="session")
def comfy_server(comfy_server_factory):
    """A server with ComfyUI core nodes only."""
    return comfy_server_factory()


@pytest.fixture(scope="session")
def comfy_frontend_factory():
    """factory(server, settings=None) -> opened browser.ComfyFrontend (one page
    per server per session, closed at session end)."""
    pages: dict = {}

    def factory(server, settings=None):
        ok, reason = comfy_browser.browser_available()
        if not ok:
            _skip_or_fail(reason)
        if id(server) not in pages:
            fe = comfy_browser.ComfyFrontend(server, settings=settings)
            pages[id(server)] = fe
            fe.open()
        return pages[id(server)]

    yield factory
    for fe in pages.values():
        fe.close()
