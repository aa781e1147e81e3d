"""The bad-input catalogue at the engine level: every case ends in a clear error or a documented fallback."""

import math
import pickle
import struct
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from zecon_core.files.checkpoints import CheckpointError, load_state_dict, resolve_in_folder
from zecon_core.guidance.clip_model import PromptTooLongWarning
from zecon_core.guidance.core import LOSS_NAMES, GuidanceConfig
from zecon_core.files.images import from_bhwc, prepare_source, target_size
from zecon_core.pixel.model import DiffusionModel, load_diffusion_model
from zecon_core.pixel.pipeline import encode_style, invert, sample_guided, stylize
from zecon_core.pixel.schedule import Schedule
from zecon_core.pixel.unet import ADMConfig, UNetModel
from zecon_core.guidance.vgg import load_vgg

from tiny_models import FAST, source_image, tiny_models, tiny_paths

OFF = {k: 0.0 for k in LOSS_NAMES}


# -- 1. image batches -------------------------------------------------------------------------

def test_empty_batch_is_refused():
    with pytest.raises(ValueError, match="empty"):
        from_bhwc(torch.zeros(0, 64, 64, 3))
    with pytest.raises(ValueError, match="non-empty"):
        prepare_source(torch.zeros(0, 3, 64, 64))


@pytest.mark.parametrize("channels", [1, 2, 4])
def test_grey_grey_alpha_and_rgba_become_rgb(channels):
    img = torch.rand(2, 64, 64, channels)
    x = from_bhwc(img)
    assert x.shape == (2, 3, 64, 64)
    torch.testing.assert_close(x[:, 0], img[..., 0] * 2 - 1)
    if channels < 3:
        torch.testing.assert_close(x[:, 1], x[:, 0])


def test_five_channels_are_refused():
    with pytest.raises(ValueError, match="1, 2, 3 or 4 channels"):
        from_bhwc(torch.rand(1, 64, 64, 5))


def test_values_outside_the_range_are_clamped_with_a_warning():
    x = from_bhwc(torch.full((1, 64, 64, 3), 1.5))
    with pytest.warns(UserWarning, match="clamped"):
        y = prepare_source(x, "as_is")
    assert y.max() == 1


def test_nan_images_are_refused():
    x = source_image()
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        prepare_source(x, "as_is")
    model, _, _ = tiny_models()
    with pytest.raises(ValueError, match="NaN"):
        invert(model, x, respacing="10", skip=5)


# -- 2. sizes ---------------------------------------------------------------------------------

def test_images_smaller_than_64_px_are_refused():
    model, _, _ = tiny_models()
    with pytest.raises(ValueError, match="at least 64x64"):
        invert(model, source_image(32), respacing="10", skip=5)


def test_as_is_needs_multiples_of_32():
    with pytest.raises(ValueError, match="multiples of 32"):
        target_size(100, 96, "as_is")
    model, _, _ = tiny_models()
    with pytest.raises(ValueError, match="multiples of 32"):
        invert(model, torch.zeros(1, 3, 96, 80), respacing="10", skip=5)


@pytest.mark.parametrize("h,w,expect", [(480, 640, (256, 352)), (640, 480, (352, 256)), (256, 256, (256, 256)),
                                        (100, 1000, (256, 2560))])
def test_fit_short_side_keeps_the_aspect_ratio(h, w, expect):
    assert target_size(h, w, "fit_short_side", 256) == expect
    assert target_size(h, w, "resize", 256) == (256, 256)


def test_non_square_images_follow_the_policy():
    x = torch.rand(1, 3, 120, 200) * 2 - 1
    assert prepare_source(x, "fit_short_side", 64).shape[-2:] == (64, 96)
    assert prepare_source(x, "resize", 64).shape[-2:] == (64, 64)


def test_huge_images_are_refused_before_starting_with_the_estimate():
    model, clip, vgg = tiny_models()
    huge = torch.zeros(1, 3, 1, 1).expand(1, 3, 4096, 4096)
    with pytest.raises(MemoryError, match=r"4096x4096.*needs about [\d.]+ GiB.*smaller size"):
        stylize(huge, "a sketch", model=model, clip=clip, vgg_model=vgg, **FAST)


def test_released_models_refuse_images_far_below_their_resolution():
    with torch.device("meta"):
        unet = UNetModel(ADMConfig(model_channels=128, num_res_blocks=1, attention_ds=(16,)))
    ffhq = DiffusionModel(unet, "ffhq_10m.pt")
    with pytest.raises(ValueError, match="trained on 256x256.*at least 128 px"):
        invert(ffhq, torch.zeros(1, 3, 64, 64), respacing="10", skip=5)


# -- 3. batch mismatches ----------------------------------------------------------------------

def test_batch_mismatches_are_refused():
    model, clip, vgg = tiny_models()
    inv = invert(model, source_image(batch=2), respacing="10", skip=8)
    three = encode_style(clip, ["a", "b", "c"], "Photo")
    with pytest.raises(ValueError, match="3 style prompts for a batch of 2"):
        sample_guided(model, inv, three, clip, GuidanceConfig(n_patch=2), vgg_model=vgg)
    one = encode_style(clip, "a sketch")
    with pytest.raises(ValueError, match="3 seeds given for a batch of 2"):
        sample_guided(model, inv, one, clip, GuidanceConfig(n_patch=2), vgg_model=vgg, seed=[1, 2, 3])
    with pytest.raises(ValueError, match="2 target prompts but 3 source prompts"):
        encode_style(clip, ["a", "b"], ["x", "y", "z"])


# -- 4. prompts -------------------------------------------------------------------------------

def test_empty_target_prompt_is_an_error_unless_clip_losses_are_off():
    model, clip, vgg = tiny_models()
    x0 = source_image()
    with pytest.raises(ValueError, match="target prompt is empty"):
        stylize(x0, "  ", model=model, clip=clip, vgg_model=vgg, **FAST)
    content_only = {**{k: 0.0 for k in LOSS_NAMES[:4]}}
    out = stylize(x0, "", model=model, clip=None, vgg_model=vgg, **FAST, **content_only)
    assert torch.isfinite(out).all()


def test_long_prompts_are_cut_with_a_warning_and_non_ascii_prompts_work():
    _, clip, _ = tiny_models()
    with pytest.warns(PromptTooLongWarning, match="it was cut"):
        long = encode_style(clip, "a very long description of a painting " * 20)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        other = encode_style(clip, "水彩画, Gemälde im Stil von Ōkami — ñandú 🎨")
    assert torch.isfinite(long.target_embeds).all() and torch.isfinite(other.target_embeds).all()
    assert not torch.allclose(other.target_embeds, encode_style(clip, "Photo").target_embeds)


# -- 5. weights -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", LOSS_NAMES)
@pytest.mark.parametrize("value", [-1.0, math.nan, math.inf])
def test_bad_weights_name_the_input(name, value):
    with pytest.raises(ValueError, match=f"loss weight {name} must be a finite number >= 0"):
        GuidanceConfig(**{name: value})


def test_all_weights_zero_is_a_plain_reconstruction_with_a_warning():
    model, clip, vgg = tiny_models()
    with pytest.warns(UserWarning, match="plain reconstruction"):
        out = stylize(source_image(), "ignored", model=model, clip=clip, **FAST, **OFF)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("field,value,message", [
    ("n_patch", 0, "n_patch"), ("patch_min", 0.0, "patch_min"), ("patch_max", 1.5, "patch_max"),
    ("aug_prob", 1.2, "aug_prob"), ("zecon_layers", (), "zecon_layers"), ("zecon_patches", 0, "zecon_patches"),
    ("nce_temperature", 0.0, "nce_temperature")])
def test_bad_settings_name_the_input(field, value, message):
    with pytest.raises(ValueError, match=message):
        GuidanceConfig(**{field: value})


def test_zecon_layers_beyond_the_encoder_are_refused():
    model, clip, vgg = tiny_models()
    with pytest.raises(ValueError, match="encoder blocks must lie in 0..11"):
        stylize(source_image(), "a sketch", model=model, clip=clip, vgg_model=vgg, zecon_layers=(0, 40), **FAST)


# -- 6. steps ---------------------------------------------------------------------------------

@pytest.mark.parametrize("respacing", ["abc", "0", "1001", "ddim", "ddim600", "10,,5", "-5"])
def test_respacings_guided_diffusion_rejects(respacing):
    with pytest.raises(ValueError, match="respacing"):
        Schedule.create(respacing)


def test_skip_must_leave_steps_and_eta_must_be_non_negative():
    model, clip, vgg = tiny_models()
    with pytest.raises(ValueError, match="skip_timesteps must lie in 0..9"):
        invert(model, source_image(), respacing="10", skip=10)
    inv = invert(model, source_image(), respacing="10", skip=8)
    with pytest.raises(ValueError, match="eta must be a finite number >= 0"):
        sample_guided(model, inv, None, None, GuidanceConfig(**{**OFF, "mse": 1.0}), sampler="ddim", eta=-0.1)


# -- 7. checkpoints ---------------------------------------------------------------------------

def _save(tmp_path, name, sd):
    path = tmp_path / name
    save_file(sd, str(path))
    return path


def test_stable_diffusion_checkpoint_is_named_as_such(tmp_path):
    sd = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(320, 4, 3, 3),
          "first_stage_model.encoder.conv_in.weight": torch.zeros(128, 3, 3, 3),
          "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": torch.zeros(10, 8)}
    with pytest.raises(CheckpointError, match="Stable Diffusion.*missing keys: time_embed.0.weight"):
        load_diffusion_model(_save(tmp_path, "sd15.safetensors", sd))


def test_clip_and_vgg_files_given_as_unet_are_named_as_such():
    with pytest.raises(CheckpointError, match="looks like a CLIP model"):
        load_diffusion_model(tiny_paths()["clip"])
    with pytest.raises(CheckpointError, match="VGG"):
        load_diffusion_model(tiny_paths()["vgg"])
    with pytest.raises(CheckpointError, match="not a torchvision VGG19"):
        load_vgg(tiny_paths()["unet"])


def test_truncated_and_corrupted_files_are_refused(tmp_path):
    data = tiny_paths()["unet"].read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_diffusion_model(cut)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 40)
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_diffusion_model(junk)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError):
        load_state_dict(empty)


def test_safetensors_header_that_lies_about_sizes_is_refused(tmp_path):
    path = _save(tmp_path, "lie.safetensors", {"w": torch.zeros(4, 4)})
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = raw[8:8 + n].replace(b"[4,4]", b"[64,64]")
    path.write_bytes(struct.pack("<Q", len(header)) + header + raw[8 + n:])
    with pytest.raises(CheckpointError, match="not a valid .safetensors"):
        load_state_dict(path)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_with_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(1), "x": _Payload(str(marker))}, path)
    with pytest.raises(CheckpointError, match="refused.*could run code"):
        load_diffusion_model(path)
    assert not marker.exists()
    raw = tmp_path / "evil_raw.pt"
    raw.write_bytes(pickle.dumps({"x": _Payload(str(marker))}))
    with pytest.raises(CheckpointError):
        load_state_dict(raw)
    assert not marker.exists()


def test_pt_files_load_like_safetensors(tmp_path):
    from safetensors.torch import load_file

    sd = load_file(str(tiny_paths()["unet"]))
    pt = tmp_path / "tiny.pt"
    torch.save({"state_dict": sd}, pt)
    a, b = load_diffusion_model(pt), load_diffusion_model(tiny_paths()["unet"])
    assert a.config == b.config
    for (ka, va), (kb, vb) in zip(a.unet.state_dict().items(), b.unet.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


# -- 8. names ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../secret.pt", "sub/../../x.pt", "/etc/passwd", "", "..\\x.pt"])
def test_names_leaving_the_folder_are_refused(tmp_path, name):
    with pytest.raises(CheckpointError, match="refused"):
        resolve_in_folder(tmp_path, name)


def test_links_a_user_placed_are_followed_to_regular_files_only(tmp_path):
    """The policy (README, Safety): a workflow's *name* never leaves the folder, but a symlink the
    user put in the folder is followed, as ComfyUI's own loaders do; only to a regular file."""
    import os

    models = tmp_path / "models"
    (models / "sub").mkdir(parents=True)
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(b"x")
    (models / "link.safetensors").symlink_to(outside)
    (models / "ok.safetensors").write_bytes(b"x")
    (models / "sub" / "ok.safetensors").write_bytes(b"x")
    (models / "zero.safetensors").symlink_to("/dev/zero")
    (models / "broken.safetensors").symlink_to(tmp_path / "gone.safetensors")
    (models / "dir.safetensors").mkdir()
    os.mkfifo(models / "fifo.safetensors")
    assert resolve_in_folder(models, "link.safetensors") == outside.resolve()
    assert resolve_in_folder(models, "ok.safetensors") == (models / "ok.safetensors").resolve()
    assert resolve_in_folder(models, "sub/ok.safetensors").name == "ok.safetensors"
    with pytest.raises(CheckpointError, match="a device"):
        resolve_in_folder(models, "zero.safetensors")
    with pytest.raises(CheckpointError, match="broken symlink"):
        resolve_in_folder(models, "broken.safetensors")
    with pytest.raises(CheckpointError, match="a folder"):
        resolve_in_folder(models, "dir.safetensors")
    with pytest.raises(CheckpointError, match="a FIFO"):
        resolve_in_folder(models, "fifo.safetensors")


@pytest.mark.parametrize("target", ["/dev/zero", "fifo"])
def test_weight_loading_refuses_devices_and_fifos_before_opening(tmp_path, target):
    """Reading /dev/zero (or a FIFO nobody writes) would never end: refused before open()."""
    import os

    link = tmp_path / "model.safetensors"
    if target == "fifo":
        os.mkfifo(link)
    else:
        link.symlink_to(target)
    with pytest.raises(CheckpointError, match="not a weight file"):
        load_state_dict(link)
    with pytest.raises(CheckpointError, match="not a weight file"):
        load_diffusion_model(link)


def test_memory_estimate_is_the_same_under_inference_mode():
    """ComfyUI runs every node under torch.inference_mode(); the estimate must not shrink there."""
    from zecon_core.pixel.memory import estimate_guided_step_bytes

    model, clip, _ = tiny_models()
    cfg = GuidanceConfig(n_patch=2)
    plain = estimate_guided_step_bytes(model, 128, 128, 1, cfg, clip)
    with torch.inference_mode():
        assert estimate_guided_step_bytes(model, 128, 128, 1, cfg, clip) == plain


# -- issue 13: hostile inputs ------------------------------------------------------------------

def test_pickle_refusal_has_no_terminal_codes(tmp_path):
    """torch colours part of its weights-only message (ESC[1m ... ESC[0m); the refusal is plain text
    and names the refused global."""
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(1), "x": _Payload(str(marker))}, path)
    with pytest.raises(CheckpointError) as ei:
        load_state_dict(path)
    text = str(ei.value)
    assert "\x1b" not in text and "[1m" not in text and "[0m" not in text, text
    assert "io.open" in text or "open" in text
    from zecon_core.files.convert import ConvertError, load_tensor_dict
    with pytest.raises(ConvertError) as ei:
        load_tensor_dict(path)
    assert "\x1b" not in str(ei.value)
    assert not marker.exists()


@pytest.mark.parametrize("respacing", ["", " ", "  \t"])
def test_empty_respacing_is_refused(respacing):
    with pytest.raises(ValueError, match="respacing is empty"):
        Schedule.create(respacing)
    with pytest.raises(ValueError, match="respacing is empty"):
        invert(tiny_models()[0], source_image(), respacing=respacing, skip=0)


@pytest.mark.parametrize("shape", [(64, 64, 3), (3, 64, 64), (2, 64, 64)])
def test_three_dimensional_image_is_refused_not_guessed(shape):
    """[H, W, 3] used to become H greyscale images of W x 3 pixels."""
    with pytest.raises(ValueError, match=r"\[B, H, W, C\]") as ei:
        from_bhwc(torch.rand(*shape))
    assert str(tuple(shape)) in str(ei.value)


@pytest.mark.parametrize("shape", [(1, 0, 0, 3), (1, 0, 64, 3), (2, 64, 0, 3)])
def test_zero_sized_images_are_refused(shape):
    with pytest.raises(ValueError, match="no pixels"):
        from_bhwc(torch.rand(*shape))
    with pytest.raises(ValueError, match="no pixels"):
        prepare_source(torch.rand(shape[0], 3, shape[1], shape[2]))


@pytest.mark.parametrize("heads", [0, -2, -64])
def test_num_head_channels_zero_or_negative_is_refused(heads):
    with pytest.raises(ValueError, match="num_head_channels must be -1"):
        load_diffusion_model(tiny_paths()["unet"], num_head_channels=heads)


def test_num_head_channels_not_dividing_is_refused():
    with pytest.raises(ValueError, match="num_head_channels"):
        load_diffusion_model(tiny_paths()["unet"], num_head_channels=48)
    assert load_diffusion_model(tiny_paths()["unet"], num_head_channels=-1) is not None
