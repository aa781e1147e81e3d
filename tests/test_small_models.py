"""Small models through the pack's loaders (issue 19): the engine follows the model's own sizes.

* the smallest picture follows the UNet's downsampling (16 px for an 8x UNet, 64 px for 32x);
* a local CLIP with its open_clip config beside it (any widths, heads, context) loads exactly;
* patch crops are rendered at a small CLIP's input side instead of 128 px then pooled;
* on the CPU, a small CLIP takes all its views in one pass, with the same gradient.
"""
import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import zecon_core as zc
from zecon_core.guidance.augment import CROP_SIZE, crop_resize, render_views, sample_view_params
from zecon_core.guidance.core import CPU_CLIP_BATCH, GuidanceInputs
from zecon_core.guidance.draws import Draws
from zecon_core.pixel.guidance import PixelGuidance

SMALL_CLIP = {
    "embed_dim": 16, "quick_gelu": False,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "head_width": 16},
    "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 1},
}


def _small_unet(tmp_path):
    cfg = zc.ADMConfig(model_channels=32, num_res_blocks=1, channel_mult=(1, 2, 2, 2), attention_ds=(8,),
                       num_head_channels=64)
    torch.manual_seed(0)
    path = tmp_path / "unet8x.safetensors"
    save_file({k: v.contiguous() for k, v in zc.UNetModel(cfg).state_dict().items()}, str(path))
    return zc.load_diffusion_model(path)


@pytest.fixture(scope="module")
def small_clip_files(tmp_path_factory):
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    folder = tmp_path_factory.mktemp("clip")
    torch.manual_seed(1)
    cfg = json.loads(json.dumps(SMALL_CLIP))
    model = CLIP(cfg.pop("embed_dim"), CLIPVisionCfg(**cfg.pop("vision_cfg")), CLIPTextCfg(**cfg.pop("text_cfg")),
                 **cfg).eval()
    path = folder / "small_clip.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    (folder / "small_clip.json").write_text(json.dumps({"model_cfg": SMALL_CLIP,
                                                        "preprocess_cfg": {"mean": [0.5] * 3, "std": [0.25] * 3}}))
    return model, path


def test_min_image_size_follows_the_unet(tmp_path):
    model = _small_unet(tmp_path)
    assert model.config.downsample_factor == 8 and model.min_image_size == 16
    model.check_image_size(32, 32)
    model.check_image_size(16, 24)
    with pytest.raises(ValueError, match=r"at least 16x16 \(it downsamples 8x\)"):
        model.check_image_size(8, 32)
    inv = zc.invert(model, torch.zeros(1, 3, 32, 32), respacing="4", skip=2)   # the pipeline takes 32 px
    assert inv.latent.shape == (1, 3, 32, 32)


def test_local_clip_is_built_from_the_config_beside_it(small_clip_files):
    reference, path = small_clip_files
    clip = zc.load_clip(path=path)
    assert (clip.image_size, clip.context_length) == (32, 12)
    assert clip.mean == (0.5,) * 3 and clip.std == (0.25,) * 3
    assert clip.tokenizer("a dots blue square").shape == (1, 12)
    texts = ["a dots blue square", "a stripes red circle"]
    from open_clip.tokenizer import SimpleTokenizer
    with torch.no_grad():
        want_text = reference.encode_text(SimpleTokenizer(context_length=12)(texts))
        pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
        want_image = reference.encode_image(pixels)
    torch.testing.assert_close(clip.encode_text(texts), want_text, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(clip.embed(pixels), want_image, rtol=1e-5, atol=1e-5)


def test_a_config_that_does_not_fit_the_weights_is_named(small_clip_files, tmp_path):
    _, path = small_clip_files
    other = tmp_path / path.name
    other.write_bytes(path.read_bytes())
    wrong = json.loads(json.dumps(SMALL_CLIP))
    wrong["vision_cfg"]["layers"] = 3
    (tmp_path / "small_clip.json").write_text(json.dumps(wrong))   # a bare model config is read too
    with pytest.raises(zc.CheckpointError, match="small_clip.safetensors does not fit its config small_clip.json"):
        zc.load_clip(path=other)
    (tmp_path / "small_clip.json").write_text("{not json")
    with pytest.raises(zc.CheckpointError, match="small_clip.json .* not readable JSON"):
        zc.load_clip(path=other)


def test_crops_are_rendered_at_crop_size():
    g = torch.Generator().manual_seed(3)
    images = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    item = torch.tensor([0, 1, 1])
    params = sample_view_params(3, 32, 32, crop=True, aug_prob=0.0, generator=torch.Generator().manual_seed(4),
                                crop_size=32)
    views = render_views(images, params, item)
    assert views.shape == (3, 3, 32, 32)
    for k, (x0, y0, x1, y1) in enumerate(params.crop_boxes.tolist()):
        crop = images[item[k]:item[k] + 1, :, y0:y1 + 1, x0:x1 + 1]
        want = F.interpolate(crop, size=(32, 32), mode="bilinear", align_corners=True)
        torch.testing.assert_close(views[k:k + 1], want, rtol=1e-5, atol=1e-5)
    # the draws do not depend on the size the crops are rendered at
    big = sample_view_params(3, 32, 32, crop=True, aug_prob=0.0, generator=torch.Generator().manual_seed(4))
    assert torch.equal(big.crop_boxes, params.crop_boxes) and big.crop_size == CROP_SIZE


def _guidance(clip, clip_batch="auto"):
    cfg = zc.GuidanceConfig(zecon=0.0, mse=0.0, vgg=0.0, range=0.0, n_patch=8)
    x0 = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5)) * 2 - 1
    style = zc.encode_style(clip, ["a stripes blue square", "a solid red circle"], ["a dots blue square"] * 2)
    inputs = GuidanceInputs(x0, style.target_embeds, style.source_embeds)
    return PixelGuidance(cfg, zc.Schedule.create("10"), inputs, Draws([0, 1]), clip=clip, clip_batch=clip_batch), x0


def test_small_clip_gets_small_crops_and_one_pass_with_the_same_gradient(small_clip_files):
    _, path = small_clip_files
    clip = zc.load_clip(path=path)
    auto, x0 = _guidance(clip)
    assert auto.crop_size == 32
    assert auto._clip_chunk(x0) >= 2 * 2 * 8                       # every view with a gradient in one pass
    x = (x0 * 0.5).requires_grad_()
    g_auto, losses_auto = auto(x, 5, x * 0.9)
    one, _ = _guidance(clip, clip_batch=1)
    g_one, losses_one = one(x, 5, x * 0.9)
    assert g_auto.abs().sum() > 0
    # the same sum of per-view gradients, added in another order: equal to float rounding
    assert float((g_auto - g_one).norm() / g_one.norm()) < 1e-5
    assert losses_auto.keys() == losses_one.keys()


def test_vit_b16_keeps_128_px_crops_and_4_views_a_pass_on_the_cpu():
    import open_clip

    with torch.device("meta"):   # the real architecture, no weights
        model = open_clip.create_model("ViT-B-16", pretrained=None, device="meta")
    clip = zc.ClipModel(model, None, "ViT-B-16 (meta)", 224)
    guidance = PixelGuidance(zc.GuidanceConfig(vgg=0.0), zc.Schedule.create("10"),
                             GuidanceInputs(torch.zeros(1, 3, 64, 64), torch.zeros(1, 512), torch.zeros(1, 512)),
                             Draws(0), clip=clip, features=lambda *a: None)
    assert guidance.crop_size == CROP_SIZE == 128
    assert guidance._clip_chunk(torch.zeros(1)) == CPU_CLIP_BATCH == 4


def test_resolution_normalisation_scales_the_pixel_gradient(small_clip_files):
    """Off (the original): the paper's weights as they are; on: times N / N_REF = 3·32·32 / (3·256·256)."""
    _, path = small_clip_files
    clip = zc.load_clip(path=path)
    plain, x0 = _guidance(clip)
    normalised, _ = _guidance(clip)
    normalised.cfg = plain.cfg.replace(normalise_resolution=True)
    assert not zc.GuidanceConfig().normalise_resolution
    x = (x0 * 0.5).requires_grad_()
    g_plain, _ = plain(x, 5, x * 0.9)
    g_norm, _ = normalised(x, 5, x * 0.9)
    torch.testing.assert_close(g_norm, g_plain / 64, rtol=1e-6, atol=0)
