"""End-to-end tests of the headless CLI (``python -m zecon_core``) with tiny models.

Most run the CLI in a subprocess, as a script would, and check the documented
exit codes, the files written and the messages. Settings are tiny (64 px,
10 steps, skip 5, 2 patches) so that each run takes seconds on a CPU.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import zecon_core as zc
from zecon_core.apps import cli
from zecon_core.apps.tiny import write_tiny_models

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--size", "64", "--steps", "6", "--skip", "3", "--n-patch", "2"]


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    """A models folder with the tiny models already in tiny/ (what --tiny writes)."""
    d = tmp_path_factory.mktemp("models")
    write_tiny_models(d / cli.TINY_SUBDIR)
    return d


@pytest.fixture(scope="module")
def tiny_paths(models_dir) -> dict:
    from zecon_core.apps.tiny import TINY_FILES
    return {k: models_dir / cli.TINY_SUBDIR / v for k, v in TINY_FILES.items()}


@pytest.fixture(scope="module")
def source_png(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("in") / "source.png"
    Image.open(ROOT / "assets" / "sample.png").resize((96, 80)).save(p)
    return p


def run_cli(*args, env=None, timeout=300, **kw) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join([str(ROOT), full_env.get("PYTHONPATH", "")])
    full_env.setdefault("HF_HUB_OFFLINE", "1")
    full_env.setdefault("OMP_NUM_THREADS", "1")   # two spinning OpenMP threads per process crawl on a shared CPU
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "zecon_core", *map(str, args)], capture_output=True,
                          text=True, env=full_env, timeout=timeout, cwd=kw.pop("cwd", ROOT), **kw)


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connections are refused
    return port


# --------------------------------------------------------------------------- success
def test_tiny_end_to_end_writes_labelled_output_and_grid(tmp_path, models_dir, source_png):
    out, grid = tmp_path / "sub" / "out.png", tmp_path / "grid.png"
    r = run_cli("stylize", source_png, "--prompt", "a sketch with crayon", "--tiny", "--models-dir", models_dir,
                "--n-patch", "2", "-o", out, "--save-steps", grid)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(out)
    im = Image.open(out)
    assert im.size == (64, 64)                      # --tiny defaults: 64 px
    assert "NOISE" in im.text["zecon_note"]
    settings = json.loads(im.text["zecon"])
    assert settings["prompt"] == "a sketch with crayon" and settings["tiny"] is True
    assert settings["respacing"] == "10" and settings["skip"] == 5 and settings["guidance"]["n_patch"] == 2
    # the visible label: the top-left corner is the red banner
    assert im.convert("RGB").getpixel((1, 1)) == (200, 0, 0)
    # progress: both phases, with loss values
    assert "invert" in r.stderr and "stylize" in r.stderr and "loss=" in r.stderr and "zecon=" in r.stderr
    assert "NOISE" in r.stderr
    g = Image.open(grid)
    assert g.width > 128 and g.height > 128
    assert "NOISE" in g.text["zecon_note"]


def test_cli_matches_python_api(tmp_path, tiny_paths, source_png):
    """The CLI (a subprocess, explicit model files, --json) computes exactly what
    zecon_core.stylize computes with the same settings; --checkpointing (recompute UNet
    blocks in the backward) changes no bit."""
    out = tmp_path / "cli.png"
    r = run_cli("stylize", source_png, "--prompt", "an oil painting", "--source-prompt", "Photo",
                "--model", tiny_paths["unet"], "--clip-model", tiny_paths["clip"], "--vgg-model", tiny_paths["vgg"],
                "--seed", "3", "--device", "cpu", "--size-policy", "fit_short_side", "--size", "64",
                "--respacing", "ddim6", "--skip", "3", "--sampler", "ddim", "--n-patch", "2", "--zecon", "250",
                "--checkpointing", "--json", "--quiet", "-o", out)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""  # --quiet
    summary = json.loads(r.stdout)
    assert summary["output"] == str(out) and summary["noise"] is False
    assert summary["respacing"] == "ddim6" and summary["sampler"] == "ddim" and summary["skip"] == 3
    assert summary["guidance"]["zecon"] == 250 and summary["guidance"]["n_patch"] == 2
    assert "zecon_note" not in Image.open(out).text   # not --tiny: no noise label

    model = zc.load_diffusion_model(tiny_paths["unet"])
    clip = zc.load_clip(path=tiny_paths["clip"])
    vgg = zc.load_vgg(tiny_paths["vgg"])
    image = zc.prepare_source(zc.load_image(source_png), "fit_short_side", 64)
    assert image.shape[-2:] == (64, 64)  # 96x80 -> short side 64, long side 76.8 -> 64
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # as in the subprocess (OMP_NUM_THREADS=1): same summation order, same bits
    try:
        ref = zc.stylize(image, "an oil painting", "Photo", model=model, clip=clip, vgg_model=vgg,
                         respacing="ddim6", skip=3, sampler="ddim", seed=3, n_patch=2, zecon=250)
    finally:
        torch.set_num_threads(threads)
    got = np.asarray(Image.open(out).convert("RGB"))
    want = np.asarray(zc.tensor_to_pil(ref)[0])
    assert got.shape == want.shape == (64, 64, 3)
    assert np.array_equal(got, want)


# --------------------------------------------------------------------------- exit code 2
@pytest.mark.parametrize("extra, needle", [
    (["--size", "100"], "multiple of 32"),
    (["--steps", "10", "--skip", "10"], "--skip 10"),
    (["--input-missing"], "input image not found"),
    (["--respacing", "ddimX"], "respacing"),
    (["--patch-min", "0.5", "--patch-max", "0.2"], "patch_min"),
    (["--size-policy", "as_is"], "multiples of 32"),
])
def test_bad_settings_exit_2(tmp_path, source_png, models_dir, extra, needle, capsys):
    src = str(source_png)
    if extra == ["--input-missing"]:
        src, extra = str(tmp_path / "missing.png"), []
    code = cli.main(["stylize", src, "--prompt", "x", "--tiny", "--models-dir", str(models_dir),
                     "--quiet", "-o", str(tmp_path / "o.png"), *extra])
    assert code == cli.EXIT_USAGE
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_bad_input_exit_2_subprocess(tmp_path, models_dir):
    not_image = tmp_path / "notes.png"
    not_image.write_text("not an image")
    r = run_cli("stylize", not_image, "--prompt", "x", "--tiny", "--models-dir", models_dir, "-o",
                tmp_path / "o.png")
    assert r.returncode == 2
    assert f"cannot read {not_image} as an image" in r.stderr

    r = run_cli("stylize", not_image, "--prompt", "x", "--zecon", "-1", "-o", tmp_path / "o.png")
    assert r.returncode == 2 and "--zecon" in r.stderr          # argparse usage error


def test_usage_errors_exit_2_in_process(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["stylize", "x.png", "-o", str(tmp_path / "o.png")])
    assert e.value.code == 2 and "--prompt" in capsys.readouterr().err   # required option missing
    with pytest.raises(SystemExit) as e:
        cli.main(["stylize", "x.png", "--prompt", "p", "--steps", "10", "--respacing", "20", "-o", "o.png"])
    assert e.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_empty_prompt_and_bad_extension_exit_2(tmp_path, source_png, models_dir):
    base = ["stylize", str(source_png), "--tiny", "--models-dir", str(models_dir), "--quiet"]
    assert cli.main(base + ["--prompt", "  ", "-o", str(tmp_path / "o.png")]) == 2
    assert cli.main(base + ["--prompt", "x", "-o", str(tmp_path / "o.nope")]) == 2


# --------------------------------------------------------------------------- exit code 3
def test_missing_model_file_exit_3_with_folder_hint(tmp_path, source_png):
    empty = tmp_path / "models"
    r = run_cli("stylize", source_png, "--prompt", "x", "--model", tmp_path / "nope" / "adm.safetensors",
                "--models-dir", empty, *FAST, "-o", tmp_path / "o.png")
    assert r.returncode == 3, r.stderr
    assert "model file not found" in r.stderr and f"Put the file in {empty}" in r.stderr


def test_hand_placed_model_missing_exit_3(tmp_path, source_png):
    empty = tmp_path / "models"
    code = cli.main(["stylize", str(source_png), "--prompt", "x", "--model", "ffhq_baseline",
                     "--models-dir", str(empty), "--quiet", *FAST, "-o", str(tmp_path / "o.png")])
    assert code == cli.EXIT_MODEL


def test_no_download_exit_3(tmp_path, source_png, capsys):
    empty = tmp_path / "models"
    code = cli.main(["stylize", str(source_png), "--prompt", "x", "--model", "imagenet", "--no-download",
                     "--models-dir", str(empty), "--quiet", *FAST, "-o", str(tmp_path / "o.png")])
    assert code == cli.EXIT_MODEL
    err = capsys.readouterr().err
    assert "--no-download" in err and str(empty) in err and "256x256_diffusion_uncond.pt" in err


def test_corrupt_model_exit_3(tmp_path, source_png):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x00" * 100)
    code = cli.main(["stylize", str(source_png), "--prompt", "x", "--model", str(bad), "--quiet", *FAST,
                     "-o", str(tmp_path / "o.png")])
    assert code == cli.EXIT_MODEL


# --------------------------------------------------------------------------- exit code 4
def test_download_failure_exit_4(tmp_path, source_png):
    port = closed_port()
    env = {"ZECON_DOWNLOAD_URL_OVERRIDE": f"http://127.0.0.1:{port}/models"}
    r = run_cli("stylize", source_png, "--prompt", "x", "--model", "imagenet", "--models-dir", tmp_path / "m",
                *FAST, "-o", tmp_path / "o.png", env=env)
    assert r.returncode == 4, r.stderr
    assert f"127.0.0.1:{port}" in r.stderr
    assert "Download it by hand from" in r.stderr and str(tmp_path / "m") in r.stderr
    assert not (tmp_path / "o.png").exists()

    r = run_cli("download", "vgg19", "--models-dir", tmp_path / "m", env=env)
    assert r.returncode == 4 and f"127.0.0.1:{port}" in r.stderr


# --------------------------------------------------------------------------- exit code 5
def test_numerical_failure_exit_5(tmp_path, source_png, models_dir, capsys):
    code = cli.main(["stylize", str(source_png), "--prompt", "x", "--tiny", "--models-dir", str(models_dir),
                     "--quiet", "--steps", "4", "--skip", "2", "--n-patch", "1", "--mse", "1e308",
                     "-o", str(tmp_path / "o.png")])
    assert code == cli.EXIT_NUMERICAL
    assert "numerical failure" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


# --------------------------------------------------------------------------- exit code 130
def test_interrupt_exit_130(tmp_path, models_dir, source_png):
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "zecon_core", "stylize", str(source_png), "--prompt", "x", "--tiny",
         "--models-dir", str(models_dir), "--steps", "400", "--skip", "10", "-o", str(tmp_path / "o.png")],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        seen = ""
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            seen += line
            if "invert" in line or not line:
                break
        assert "invert" in seen, seen
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert not (tmp_path / "o.png").exists()


# --------------------------------------------------------------------------- other subcommands
def test_convert_subcommand(tmp_path):
    src = tmp_path / "w.pt"
    torch.save({"a": torch.arange(4.0)}, src)
    assert cli.main(["convert", str(src)]) == 0
    from safetensors.torch import load_file
    assert torch.equal(load_file(str(tmp_path / "w.safetensors"))["a"], torch.arange(4.0))
    assert cli.main(["convert", str(src)]) == cli.EXIT_MODEL            # exists, no --force
    assert cli.main(["convert", str(src), "--force"]) == 0
    assert cli.main(["convert", str(tmp_path / "missing.pt")]) == cli.EXIT_MODEL


def test_download_list_and_unknown_key(tmp_path, capsys):
    assert cli.main(["download", "--list", "--models-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for key in ("imagenet", "ffhq", "ffhq_baseline", "vgg19", "clip_vit_b16_openai"):
        assert key in out
    assert cli.main(["download", "nonsense", "--models-dir", str(tmp_path)]) == cli.EXIT_USAGE
    assert cli.main(["download", "ffhq_baseline", "--models-dir", str(tmp_path)]) == cli.EXIT_MODEL
    assert "by hand" in capsys.readouterr().err


def test_help_documents_exit_codes():
    r = run_cli("stylize", "--help")
    assert r.returncode == 0
    for code in ("0", "2", "3", "4", "5", "130"):
        assert f"\n  {code} " in r.stdout
    for opt in ("--save-steps", "--tiny", "--clip-dir-patch", "--zecon", "--n-patch", "--respacing",
                "--size-policy", "--models-dir", "--precision", "--eta"):
        assert opt in r.stdout
    assert cli.main([]) == cli.EXIT_USAGE


def test_pick_steps():
    assert cli.pick_steps(5, 16) == [0, 1, 2, 3, 4]
    picked = cli.pick_steps(25, 6)
    assert picked[0] == 0 and picked[-1] == 24 and len(picked) == 6


# --------------------------------------------------------------------------- files: never destroyed, checked first
def _stylize_args(src, models, *extra):
    return ["stylize", str(src), "--prompt", "x", "--tiny", "--models-dir", str(models), "--quiet", *FAST,
            *map(str, extra)]


@pytest.mark.parametrize("case", ["output_is_input", "output_is_input_via_dotdot", "output_is_input_via_symlink",
                                  "grid_is_output", "grid_is_input", "output_is_input_hardlink"])
def test_outputs_never_replace_the_input_or_each_other(tmp_path, source_png, case, capsys):
    """Refused with exit 2 before anything is loaded: the (empty) models folder stays untouched."""
    photo_dir = tmp_path / "dir"
    photo_dir.mkdir()
    photo = photo_dir / "photo.png"
    photo.write_bytes(source_png.read_bytes())
    before = photo.read_bytes()
    models = tmp_path / "models"
    out = tmp_path / "out.png"
    extra = {
        "output_is_input": ["-o", photo],
        "output_is_input_via_dotdot": ["-o", photo_dir / ".." / "dir" / "photo.png"],
        "output_is_input_via_symlink": ["-o", tmp_path / "link" / "photo.png"],
        "grid_is_output": ["-o", out, "--save-steps", tmp_path / "." / "out.png"],
        "grid_is_input": ["-o", out, "--save-steps", photo],
        "output_is_input_hardlink": ["-o", tmp_path / "hard.png"],
    }[case]
    if case == "output_is_input_via_symlink":
        (tmp_path / "link").symlink_to(photo_dir)
    if case == "output_is_input_hardlink":
        os.link(photo, tmp_path / "hard.png")
    # --overwrite does not make any of these allowed
    code = cli.main(_stylize_args(photo, models, *extra, "--overwrite"))
    err = capsys.readouterr().err
    assert code == cli.EXIT_USAGE, err
    assert "input image" in err or "would replace the result" in err
    assert photo.read_bytes() == before
    assert not out.exists() and not models.exists()   # no work was done: not even the tiny models written


def test_existing_output_is_replaced_only_with_overwrite(tmp_path, source_png, models_dir, capsys):
    out, grid = tmp_path / "out.png", tmp_path / "grid.png"
    out.write_bytes(b"keep me")
    code = cli.main(_stylize_args(source_png, models_dir, "-o", out))
    assert code == cli.EXIT_USAGE
    assert out.read_bytes() == b"keep me"
    grid.write_bytes(b"keep the grid")
    out.unlink()
    code = cli.main(_stylize_args(source_png, models_dir, "-o", out, "--save-steps", grid))
    assert code == cli.EXIT_USAGE and not out.exists() and grid.read_bytes() == b"keep the grid"
    out.write_bytes(b"old")
    assert cli.main(_stylize_args(source_png, models_dir, "-o", out, "--save-steps", grid, "--overwrite")) == 0
    assert Image.open(out).size == (64, 64) and Image.open(grid).width > 64


def test_existing_output_message_names_overwrite(tmp_path, source_png, models_dir, capsys):
    out = tmp_path / "out.png"
    out.write_bytes(b"keep me")
    assert cli.main(_stylize_args(source_png, models_dir, "-o", out)) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
@pytest.mark.parametrize("target", ["/proc/x.png", "/proc/zecon-no-such-dir/x.png"])
def test_unwritable_output_is_exit_3_before_models_load(tmp_path, source_png, target, capsys):
    models = tmp_path / "models"
    t = time.monotonic()
    code = cli.main(_stylize_args(source_png, models, "-o", target))
    err = capsys.readouterr().err
    assert code == cli.EXIT_MODEL, err
    assert f"cannot write the output {target}" in err
    assert not models.exists()          # checked before the tiny models were written or anything loaded
    assert time.monotonic() - t < 30


def test_unwritable_grid_is_exit_3_before_models_load(tmp_path, source_png, capsys):
    models = tmp_path / "models"
    ro = tmp_path / "file_not_folder"
    ro.write_text("x")
    code = cli.main(_stylize_args(source_png, models, "-o", tmp_path / "o.png", "--save-steps", ro / "grid.png"))
    err = capsys.readouterr().err
    assert code == cli.EXIT_MODEL and "is not a folder" in err, err
    assert not models.exists() and not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("respacing", ["", "  "])
def test_empty_respacing_is_refused(tmp_path, source_png, respacing, capsys):
    models = tmp_path / "models"
    code = cli.main(["stylize", str(source_png), "--prompt", "x", "--tiny", "--models-dir", str(models), "--quiet",
                     "--respacing", respacing, "-o", str(tmp_path / "o.png")])
    assert code == cli.EXIT_USAGE
    assert "respacing is empty" in capsys.readouterr().err
    assert not models.exists()


def test_sixteen_bit_grey_input_is_not_white(tmp_path):
    """PIL's convert("RGB") clips 16-bit grey at 255: a mid-grey 16-bit PNG read as 98% white."""
    grey = np.full((40, 56), 30000, dtype=np.uint16)
    grey[:, :28] = 10000
    p = tmp_path / "grey16.png"
    Image.fromarray(grey).save(p)
    assert Image.open(p).mode == "I;16"
    x = cli._load_input(str(p))
    assert x.shape == (1, 3, 40, 56)
    want_right, want_left = 30000 / 65535 * 2 - 1, 10000 / 65535 * 2 - 1
    assert abs(float(x[0, :, :, 28:].mean()) - want_right) < 1e-4
    assert abs(float(x[0, :, :, :28].mean()) - want_left) < 1e-4


# --------------------------------------------------------------------------- --mask / --style-image
def _picture(path: Path, array) -> Path:
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return path


def test_mask_and_style_images_match_python_api(tmp_path, tiny_paths, source_png):
    """--mask (white = restyle) with --feather and two --style-image pictures of different sizes compute
    exactly what the Python API computes with the same mask and the mean image style; outside the
    feathered mask the result is the unguided (DDIM) reconstruction, inside it is not."""
    from zecon_core.guidance.style import blend_styles, encode_style_images

    mask = np.zeros((80, 96), np.uint8)
    mask[:, 48:] = 255                                          # restyle the right half of the 96x80 input
    mask_png = _picture(tmp_path / "mask.png", mask)
    rng = np.random.default_rng(0)
    styles = [_picture(tmp_path / "s1.png", rng.integers(0, 256, (40, 56, 3))),
              _picture(tmp_path / "s2.jpg", rng.integers(0, 256, (72, 48, 3)))]
    out = tmp_path / "cli.png"
    common = ["--model", tiny_paths["unet"], "--clip-model", tiny_paths["clip"], "--vgg-model", tiny_paths["vgg"],
              "--seed", "2", "--device", "cpu", "--size", "64", "--steps", "6", "--skip", "3", "--n-patch", "2",
              "--style-crops", "1", "--mask", mask_png, "--feather", "4", "--sampler", "ddim", "--json", "--quiet"]
    r = run_cli("stylize", source_png, "--style-image", *styles, *common, "-o", out)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["style_images"] == ["s1.png", "s2.jpg"] and summary["mask"] == "mask.png"
    assert summary["feather"] == 4 and summary["prompt"] is None and summary["source_prompt"] is None

    model = zc.load_diffusion_model(tiny_paths["unet"])
    clip = zc.load_clip(path=tiny_paths["clip"])
    vgg = zc.load_vgg(tiny_paths["vgg"])
    image = zc.prepare_source(zc.load_image(source_png), "resize", 64)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # as in the subprocess
    try:
        style = blend_styles([(encode_style_images(clip, zc.load_image(p), crops=1, seed=2 + k), 1.0)
                              for k, p in enumerate(styles)])
        inv = zc.invert(model, image, respacing="6", skip=3)
        cfg = zc.GuidanceConfig(n_patch=2)
        region = torch.zeros(1, 80, 96)
        region[:, :, 48:] = 1
        ref = zc.sample_guided(model, inv, style, clip, cfg, vgg_model=vgg, sampler="ddim", seed=2, mask=region,
                               feather=4)
        with pytest.warns(UserWarning, match="plain reconstruction"):   # DDIM: no step noise, so it is comparable
            plain = zc.sample_guided(model, inv, None, None, cfg.replace(**{k: 0.0 for k in cfg.weights}),
                                     sampler="ddim", seed=2)
    finally:
        torch.set_num_threads(threads)
    got = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert np.array_equal(got, np.asarray(zc.tensor_to_pil(ref)[0]))
    unguided = np.asarray(zc.tensor_to_pil(plain)[0]).astype(int)
    left, right = slice(0, 32 - 4 - 2), slice(32 + 4 + 2, 64)   # beyond the feather (and the resize) on either side
    assert np.array_equal(got[:, left], unguided[:, left])
    assert np.abs(got[:, right] - unguided[:, right]).max() > 0


@pytest.mark.parametrize("make, extra, needle", [
    (lambda d: _picture(d / "m.png", np.full((40, 40), 255)), ["--mask", "{}"], "is 40x40 but the input is 96x80"),
    (lambda d: _picture(d / "m.png", np.zeros((80, 96))), ["--mask", "{}"], "mask is empty"),
    (lambda d: (d / "m.png").write_text("no picture") and d / "m.png", ["--mask", "{}"], "cannot read it as an image"),
    (lambda d: d / "missing.png", ["--mask", "{}"], "file not found"),
    (lambda d: d, ["--mask", "{}"], "not a file"),
    (lambda d: None, ["--feather", "3"], "--feather is only used with --mask"),
    (lambda d: _picture(d / "s.png", np.zeros((20, 64, 3))), ["--style-image", "{}"], "too small to carry a style"),
    (lambda d: (d / "s.png").write_text("no picture") and d / "s.png", ["--style-image", "{}"],
     "cannot read it as an image"),
    (lambda d: d / "missing.png", ["--style-image", "{}"], "--style-image"),
    (lambda d: None, ["--prompt", "x", "--style-crops", "2"], "--style-crops is only used with --style-image"),
    (lambda d: _picture(d / "s.png", np.zeros((64, 64, 3))),
     ["--style-image", "{}", "--clip-global-patch", "0", "--clip-dir-patch", "0"], "needs a CLIP loss"),
])
def test_bad_mask_or_style_image_exit_2_naming_the_option(tmp_path, source_png, models_dir, make, extra, needle,
                                                          capsys):
    made = make(tmp_path)
    args = [a.format(made) for a in extra]
    if "--prompt" not in args and "--style-image" not in args:
        args = ["--prompt", "x", *args]
    code = cli.main(["stylize", str(source_png), "--tiny", "--models-dir", str(models_dir), "--quiet",
                     "-o", str(tmp_path / "o.png"), *args])
    err = capsys.readouterr().err
    assert code == cli.EXIT_USAGE, err
    assert needle in err
    option = next(a for a in extra if a.startswith("--") and a != "--prompt")
    assert option in err
    assert not (tmp_path / "o.png").exists()


def test_prompt_and_style_image_are_exclusive(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["stylize", "x.png", "--prompt", "p", "--style-image", "s.png", "-o", str(tmp_path / "o.png")])
    assert e.value.code == 2 and "not allowed with" in capsys.readouterr().err
