"""Packaging: pyproject metadata (PyPI + Comfy Registry), requirements.txt, and a real
``pip install .`` into a fresh virtual environment without ComfyUI.

The install test takes about a minute: it creates a new venv, installs this
repository with pip (build isolation on, dependencies from the package index),
then imports ``zecon_core`` and runs the ``zecon`` command from outside the
source tree. torch and torchvision are made visible to the fresh venv through
a ``.pth`` file that points at a folder of symlinks to *only* torch,
torchvision and their own dependencies, taken from the running interpreter;
copying a 5 GB CUDA build of torch into every throw-away venv would take
minutes. Set ``ZECON_PACKAGING_REAL_TORCH=1`` to instead ``pip install
torch==2.14.1 torchvision==0.29.1`` into the venv (slow), and
``ZECON_SKIP_PACKAGING=1`` to skip the install test.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
ISSUE_DEPS = {"torch", "torchvision", "open_clip_torch", "safetensors", "numpy"}
EXPLAINED_EXTRA_DEPS = {"pillow", "tqdm"}   # README "Dependencies" says why
PINNED_TORCH = ("torch==2.14.1", "torchvision==0.29.1")


def _req_name(req: str) -> str:
    return re.split(r"[<>=!~;\[ ]", req.strip(), maxsplit=1)[0].lower().replace("-", "_")


# --------------------------------------------------------------------------- metadata
def test_project_metadata():
    p = PYPROJECT["project"]
    name = p["name"]
    assert "comfy" not in name.lower()                                   # Registry: no "ComfyUI" in the name
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9]*([._-][A-Za-z0-9]+)*", name) and len(name) < 100
    assert re.fullmatch(r"\d+\.\d+\.\d+", p["version"])                  # semver X.Y.Z
    assert p["license"] == "MIT" and p["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert "ZeCon for ComfyUI contributors" in (ROOT / "LICENSE").read_text()
    assert p["requires-python"] == ">=3.10"
    assert (ROOT / p["readme"]).is_file()
    assert p["urls"]["Repository"].startswith("https://")
    from zecon_core import __version__
    assert __version__ == p["version"]


def test_dependencies_have_no_torch_pin_and_match_requirements_txt():
    deps = PYPROJECT["project"]["dependencies"]
    names = {_req_name(d) for d in deps}
    assert names == ISSUE_DEPS | EXPLAINED_EXTRA_DEPS
    for d in deps:
        if _req_name(d) in ("torch", "torchvision"):
            assert _req_name(d) == d.strip().lower(), f"{d!r}: torch must not be pinned (ComfyUI owns it)"
    reqs = [ln.split("#")[0].strip() for ln in (ROOT / "requirements.txt").read_text().splitlines()]
    reqs = [r for r in reqs if r]
    assert sorted(_req_name(r) for r in reqs) == sorted(_req_name(d) for d in deps)
    assert all(_req_name(r) == r.lower().replace("-", "_") for r in reqs if _req_name(r).startswith("torch"))
    readme = (ROOT / "README.md").read_text()
    for extra in EXPLAINED_EXTRA_DEPS:
        assert extra in readme.lower()


def test_only_the_engine_is_installed_and_comfy_table_is_complete():
    assert PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"] == ["zecon_core", "zecon_core.*"]
    assert PYPROJECT["project"]["scripts"] == {"zecon": "zecon_core.apps.cli:main"}
    comfy = PYPROJECT["tool"]["comfy"]
    assert comfy["DisplayName"] == "ZeCon"
    assert comfy["PublisherId"]
    assert comfy["Icon"].startswith("https://") and comfy["Icon"].endswith("assets/icon.png")
    assert (ROOT / "assets" / "icon.png").is_file()
    # the pytest configuration stays
    ini = PYPROJECT["tool"]["pytest"]["ini_options"]
    assert "--import-mode=importlib" in ini["addopts"] and ini["pythonpath"] == [".", "tests"]


# --------------------------------------------------------------------------- pip install .
def _torch_closure() -> list[metadata.Distribution]:
    """torch, torchvision and the distributions they require here (markers evaluated)."""
    try:
        from packaging.requirements import Requirement
    except ImportError:  # pragma: no cover
        from pip._vendor.packaging.requirements import Requirement
    todo, seen, out = ["torch", "torchvision"], set(), []
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        out.append(dist)
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return out


def _make_torch_shim(folder: Path) -> list[str]:
    """Symlinks to the top-level files of torch's closure; returns the distribution names."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for dist in _torch_closure():
        names.append(dist.metadata["Name"])
        base = Path(dist.locate_file(""))
        tops = {Path(f).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            if top.endswith(".pth") or top == "__pycache__":
                continue
            src, dst = base / top, folder / top
            if src.exists() and not dst.exists():
                dst.symlink_to(src, target_is_directory=src.is_dir())
    return names


def _run(cmd, **kw):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{cmd} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    return r


@pytest.mark.packaging
@pytest.mark.skipif(bool(os.environ.get("ZECON_SKIP_PACKAGING")), reason="ZECON_SKIP_PACKAGING is set")
def test_pip_install_in_clean_venv_then_import_without_comfyui(tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv])
    py = venv / "bin" / "python"
    purelib = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    if os.environ.get("ZECON_PACKAGING_REAL_TORCH"):
        _run([py, "-m", "pip", "install", "--quiet", *PINNED_TORCH], env=env, timeout=1800)
    else:
        shim = tmp_path / "torch-only"
        shim_names = _make_torch_shim(shim)
        assert {"torch", "torchvision"} <= {n.lower() for n in shim_names}
        assert not any(n.lower().replace("-", "_") == "open_clip_torch" for n in shim_names)
        (purelib / "_zecon_test_torch_shim.pth").write_text(str(shim) + "\n")

    # torch/torchvision satisfied, everything else comes from the index
    before = _run([py, "-m", "pip", "list", "--format=freeze"], env=env).stdout.lower()
    assert "open-clip-torch" not in before and "open_clip_torch" not in before and "safetensors" not in before

    _run([py, "-m", "pip", "install", "--quiet", ROOT], env=env, timeout=900)

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    check = (
        "import importlib.util, sys, zecon_core, torch\n"
        "from pathlib import Path\n"
        f"assert Path(zecon_core.__file__).resolve().is_relative_to(Path({str(venv)!r}).resolve()), zecon_core.__file__\n"
        "assert importlib.util.find_spec('comfy') is None and importlib.util.find_spec('comfy_api') is None\n"
        "assert importlib.util.find_spec('nodes') is None, 'the ComfyUI node package must not be installed'\n"
        "assert importlib.util.find_spec('folder_paths') is None\n"
        "import pkgutil\n"
        f"want = {sorted(p.relative_to(ROOT).parent.as_posix().replace('/', '.') for p in (ROOT / 'zecon_core').rglob('__init__.py'))!r}\n"
        "have = sorted(['zecon_core'] + [m.name for m in pkgutil.walk_packages(zecon_core.__path__, 'zecon_core.') if m.ispkg])\n"
        "assert have == want, (have, want)  # every subpackage of the engine is installed\n"
        "import zecon_core.apps.cli, zecon_core.apps.tiny, zecon_core.files.download\n"
        "print(zecon_core.__version__, torch.__version__)\n"
    )
    r = _run([py, "-c", check], cwd=outside, env=env)
    assert r.stdout.split()[0] == PYPROJECT["project"]["version"]

    # the distribution holds only zecon_core (+ its metadata and the console script)
    record = next(purelib.glob("zecon-*.dist-info")) / "RECORD"
    tops = {line.split(",")[0].split("/")[0] for line in record.read_text().splitlines() if line}
    assert tops <= {"zecon_core", record.parent.name, ".."}, tops  # ".." = bin/zecon

    # the console script, end to end with tiny models (offline, noise)
    zecon = venv / "bin" / "zecon"
    r = subprocess.run([zecon, "stylize", ROOT / "assets" / "sample.png", "--prompt", "a sketch with crayon",
                        "--tiny", "--models-dir", tmp_path / "models", "--steps", "4", "--skip", "2",
                        "--n-patch", "1", "--quiet", "-o", tmp_path / "out.png"],
                       capture_output=True, text=True, cwd=outside, timeout=600,
                       env={**env, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out.png").is_file()
    r = subprocess.run([zecon, "exit-codes"], capture_output=True, text=True, cwd=outside, env=env)
    assert r.returncode == 0 and "130" in r.stdout
