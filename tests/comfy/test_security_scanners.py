"""External security and compatibility checks, run on what the pack ships.

* nodesafe (static malware scanner for custom nodes), layers 0,1,2,4, fails on a "malicious" verdict;
  its other layers flag ComfyUI's own code;
* comfy-import-guard: every ``comfy.*`` symbol the pack uses exists, with a matching signature, in the
  ComfyUI 0.3.75 tree the tests run (offline, against a local git repo of that tree tagged v0.3.75);
* comfy-lint: the API-format workflows validate against the running server's ``/object_info``.

"Shipped" is every tracked file but the tests, scripts, benchmark and CI folders: those are what
ComfyUI loads and users run.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import harness
import zecon_testing as zt

NOT_SHIPPED = ("tests/", "scripts/", "bench/", ".ci/", "docs/")
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = BIN / name
    assert path.is_file(), f"{name} is not installed in {BIN}; run scripts/setup_env.sh"
    return str(path)


def run(*cmd, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def shipped(tmp_path_factory) -> Path:
    """A copy of the shipped files, as a pack folder named like the one the tests install."""
    files = run("git", "ls-files", cwd=zt.REPO).stdout.split()
    assert files, "not a git checkout"
    pack = tmp_path_factory.mktemp("shipped") / zt.PACK_NAME
    for name in files:
        if name.startswith(NOT_SHIPPED):
            continue
        target = pack / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(zt.REPO / name, target)
    return pack


def test_nodesafe_finds_nothing_malicious(shipped):
    r = run(tool("nodesafe"), "scan", str(shipped), "--layers", "0,1,2,4", "--fail-on", "malicious",
            "--format", "markdown")
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]


def test_comfy_import_guard_finds_nothing_that_breaks_on_0_3_75(shipped, tmp_path):
    comfy = Path(os.environ.get("ZECON_COMFYUI_DIR") or harness.default_comfyui_dir())
    clone = tmp_path / "cache" / "ComfyUI"
    shutil.copytree(comfy, clone, ignore=shutil.ignore_patterns("__pycache__", "custom_nodes", "*.pyc"))
    git = ["git", "-c", "user.name=ci", "-c", "user.email=ci@localhost"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "ComfyUI 0.3.75"], ["tag", "v0.3.75"]):
        assert run(*git, *cmd, cwd=clone).returncode == 0
    install = tmp_path / "install"
    (install / "custom_nodes").mkdir(parents=True)
    shutil.copytree(shipped, install / "custom_nodes" / shipped.name)
    r = run(tool("comfy-import-guard"), "check", "--cache-dir", str(tmp_path / "cache"), "--offline",
            "--no-update", "--target", "v0.3.75", "--comfy-dir", str(install), "--strict")
    assert r.returncode == 0 and "SAFE" in r.stdout, r.stdout + r.stderr


def test_comfy_lint_accepts_the_api_workflows(comfy_server_factory, tmp_path_factory, tmp_path):
    """The API twins against the server's /object_info. The latent ones name the user's checkpoint
    (a placeholder no test server has), so they are linted as the tests run them: on the tiny SD / flow models."""
    server = zt.start_server(comfy_server_factory, tmp_path_factory)
    workflows = []
    for name in zt.api_names():
        prompt = zt.load_api(name)
        if any(node["class_type"] == "ZeconGuider" for node in prompt.values()):   # SD or flow latent twin
            path = tmp_path / f"{name}.json"
            path.write_text(json.dumps(zt.tiny(prompt)))
            workflows.append(str(path))
        else:
            workflows.append(str(zt.API_DIR / f"{name}.json"))
    assert workflows
    r = run(tool("comfy-lint"), "--server", server.url, "--strict", *workflows)
    assert r.returncode == 0, r.stdout + r.stderr
