"""Fixtures of the pack's ComfyUI tests: the shared server with the pack and the tiny models
(zecon_testing.start_server; one per session, the harness caches it) and its HTTP client.
A module that needs another server defines its own ``server`` fixture (test_harness_smoke.py)."""
from __future__ import annotations

import pytest

import zecon_testing as zt


@pytest.fixture(scope="module")
def server(comfy_server_factory, tmp_path_factory):
    return zt.start_server(comfy_server_factory, tmp_path_factory)


@pytest.fixture(scope="module")
def client(server):
    return server.client
