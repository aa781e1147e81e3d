"""Styles from images, blends and weighted prompts: embeddings, losses, validation, batches."""

import pytest
import torch

from zecon_core.guidance.clip_model import load_clip
from zecon_core.guidance.draws import Draws
from zecon_core.guidance.core import CLIP_LOSSES, LOSS_NAMES, GuidanceConfig, GuidanceInputs
from zecon_core.pixel.guidance import PixelGuidance
from zecon_core.files.images import from_bhwc
from zecon_core.pixel.pipeline import invert, sample_guided
from zecon_core.guidance.prompt_weights import parse_weighted
from zecon_core.pixel.schedule import Schedule
from zecon_core.guidance.style import (SOURCE_PICTURE, StylePrompt, blend_styles, encode_style, encode_style_images,
                              style_embeddings)
from zecon_core.apps.tiny import tiny_clip_state_dict

from tiny_models import source_image, tiny_models, tiny_paths

OFF = {k: 0.0 for k in LOSS_NAMES}


@pytest.fixture(scope="module")
def clip():
    return tiny_models()[1]


def refs(n=2, size=48, seed=1):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ------------------------------------------------------------------ image styles
def test_the_embedding_is_clips_image_embedding_of_the_reference(clip):
    ref = refs(1)
    style = encode_style_images(clip, ref)
    with torch.no_grad():
        expected = clip.encode_image(ref)
    assert torch.equal(style.target_embeds, expected)
    assert torch.equal(style.source_embeds, torch.zeros_like(expected))
    assert style.source_image_weight.tolist() == [1.0] and style.source == (SOURCE_PICTURE,)
    assert len(style) == 1 and style.clip_name == clip.name


def test_several_images_average_or_give_one_style_each(clip):
    ref = refs(3)
    with torch.no_grad():
        each = clip.encode_image(ref)
    mean = encode_style_images(clip, ref)
    torch.testing.assert_close(mean.target_embeds, each.mean(0, keepdim=True))
    per = encode_style_images(clip, ref, per_image=True)
    assert len(per) == 3 and per.target == ("style image 1 of 3", "style image 2 of 3", "style image 3 of 3")
    torch.testing.assert_close(per.target_embeds, each)


def test_augmented_crops_are_averaged_in_and_seeded(clip):
    ref = refs(1)
    whole = encode_style_images(clip, ref).target_embeds
    a = encode_style_images(clip, ref, crops=4, seed=0).target_embeds
    assert torch.equal(a, encode_style_images(clip, ref, crops=4, seed=0).target_embeds)
    assert not torch.allclose(a, whole) and not torch.allclose(a, encode_style_images(clip, ref, crops=4,
                                                                                        seed=1).target_embeds)
    with pytest.raises(ValueError, match="crops"):
        encode_style_images(clip, ref, crops=-1)


def test_grey_rgba_and_odd_sizes_are_converted_or_refused(clip):
    rgb = torch.rand(1, 40, 72, 3, generator=torch.Generator().manual_seed(2))   # ComfyUI IMAGE, not square
    rgba = torch.cat([rgb, torch.rand(1, 40, 72, 1)], dim=-1)
    grey = rgb[..., :1]
    base = encode_style_images(clip, from_bhwc(rgb)).target_embeds
    assert torch.equal(encode_style_images(clip, from_bhwc(rgba)).target_embeds, base)   # alpha ignored
    g = encode_style_images(clip, from_bhwc(grey)).target_embeds
    with torch.no_grad():
        assert torch.equal(g, clip.encode_image(grey.permute(0, 3, 1, 2).expand(1, 3, 40, 72) * 2 - 1))
    with pytest.raises(ValueError, match="RGB"):
        encode_style_images(clip, from_bhwc(rgba).new_zeros(1, 4, 40, 72))
    with pytest.raises(ValueError, match="16x20: too small"):
        encode_style_images(clip, torch.zeros(1, 3, 20, 16))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        encode_style_images(clip, torch.full((1, 3, 40, 40), 3.0))
    with pytest.raises(ValueError, match="NaN"):
        encode_style_images(clip, torch.full((1, 3, 40, 40), float("nan")))
    with pytest.raises(ValueError, match="non-empty"):
        encode_style_images(clip, torch.zeros(0, 3, 40, 40))


def test_style_embeddings_resolve_the_source_direction(clip):
    x0 = source_image(64, batch=2)
    text = encode_style(clip, "a watercolor painting")
    tgt, src = style_embeddings(text, clip, x0)
    assert torch.equal(tgt, text.target_embeds) and torch.equal(src, text.source_embeds)
    image = encode_style_images(clip, refs(1))
    tgt, src = style_embeddings(image, clip, x0)
    with torch.no_grad():
        torch.testing.assert_close(src, clip.encode_image(x0))
    assert torch.equal(tgt, image.target_embeds) and src.shape == (2, tgt.shape[1])


@pytest.mark.parametrize("loss", CLIP_LOSSES)
def test_image_and_text_styles_are_interchangeable_in_every_loss(clip, loss):
    """An image style gives each CLIP loss exactly what a text style with the same embeddings gives."""
    model = tiny_models()[0]
    s, x0 = Schedule.create("10"), source_image(64)
    image = encode_style_images(clip, refs(1))
    with torch.no_grad():
        picture = clip.encode_image(x0)
    as_text = StylePrompt(("t",), ("s",), image.target_embeds.clone(), picture, clip.name)
    cfg = GuidanceConfig(**{**OFF, loss: 1.0}, n_patch=2)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    results = []
    for style in (image, as_text):
        tgt, src = style_embeddings(style, clip, x0)
        g = PixelGuidance(cfg, s, GuidanceInputs(x0, tgt, src), Draws([0]), features=model.features, clip=clip)
        xx = x.clone().requires_grad_()
        term = g.terms(xx, 4, xx * 0.9, only=loss)[loss]
        results.append((term.detach(), torch.autograd.grad(term, xx)[0]))
    (va, ga), (vb, gb) = results
    torch.testing.assert_close(va, vb, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ga, gb, atol=1e-6, rtol=1e-5)
    assert torch.isfinite(va) and ga.abs().max() > 0


# ------------------------------------------------------------------ blends
def test_blends_are_linear_in_the_weights(clip):
    a, b = encode_style(clip, "a watercolor painting"), encode_style_images(clip, refs(1))
    for w in (0.0, 0.25, 0.5, 1.0):
        mix = blend_styles([(a, 1 - w), (b, w)])
        torch.testing.assert_close(mix.target_embeds, (1 - w) * a.target_embeds + w * b.target_embeds)
        torch.testing.assert_close(mix.source_embeds, (1 - w) * a.source_embeds)
        assert mix.source_image_weight is None if w == 0 else mix.source_image_weight.tolist() == [w]
        x0 = source_image(64)
        _, src = style_embeddings(mix, clip, x0)
        with torch.no_grad():
            torch.testing.assert_close(src, (1 - w) * a.source_embeds + w * clip.encode_image(x0))
    # normalised: only the ratio of the weights counts
    torch.testing.assert_close(blend_styles([(a, 2), (b, 6)]).target_embeds,
                               blend_styles([(a, 0.25), (b, 0.75)]).target_embeds)
    one = blend_styles([(a, 3.0)])
    assert torch.equal(one.target_embeds, a.target_embeds) and one.source_image_weight is None


def test_blend_broadcasts_one_style_over_a_batch_of_styles(clip):
    per = encode_style(clip, ["an oil painting", "a pencil sketch"])
    one = encode_style_images(clip, refs(1))
    mix = blend_styles([(per, 1), (one, 1)])
    assert len(mix) == 2 and mix.source_image_weight.tolist() == [0.5, 0.5]
    torch.testing.assert_close(mix.target_embeds[1], 0.5 * per.target_embeds[1] + 0.5 * one.target_embeds[0])
    assert "0.5*(a pencil sketch)" in mix.target[1]
    with pytest.raises(ValueError, match=r"\[2, 3\] entries"):
        blend_styles([(per, 1), (encode_style(clip, ["a", "b", "c"]), 1)])


def test_bad_blends_are_clear_errors(clip, tmp_path):
    a = encode_style(clip, "a watercolor painting")
    other_path = tmp_path / "other_clip.safetensors"
    from safetensors.torch import save_file
    save_file(tiny_clip_state_dict(seed=1), str(other_path))
    other = encode_style(load_clip(path=other_path), "a watercolor painting")
    assert tiny_paths()["clip"] != other_path
    with pytest.raises(ValueError, match="different CLIP models"):
        blend_styles([(a, 1), (other, 1)])
    for weights, message in (([-1, 2], ">= 0"), ([0, 0], "all 0"), ([float("nan"), 1], ">= 0")):
        with pytest.raises(ValueError, match=message):
            blend_styles([(a, weights[0]), (a, weights[1])])
    with pytest.raises(ValueError, match="at least one"):
        blend_styles([])
    with pytest.raises(ValueError, match="empty target prompt"):
        blend_styles([(a, 1), (encode_style(clip, " "), 1)])


# ------------------------------------------------------------------ weighted prompts
def test_weighted_prompt_syntax():
    assert parse_weighted("a watercolor painting") is None
    assert parse_weighted("a photo (by Monet) of a lake") is None
    assert parse_weighted("(style: impressionism)") is None
    assert parse_weighted("(a watercolor painting:1.2) (a pencil sketch:0.8)") == [
        ("a watercolor painting", 1.2), ("a pencil sketch", 0.8)]
    assert parse_weighted(" (ink: 2), (crayon:.5) ") == [("ink", 2.0), ("crayon", 0.5)]
    for bad, message in (("(ink:1.2) on paper", "outside"), ("(ink:-1)", ">= 0"), ("(ink:1.2.3)", "not a number"),
                         ("(ink:0) (oil:0)", "all prompt weights are 0"), ("( :1)", "no text"),
                         ("(ink:1e999)", "finite")):
        with pytest.raises(ValueError, match=message):
            parse_weighted(bad)


def test_weighted_prompts_blend_their_parts(clip):
    plain = encode_style(clip, ["a watercolor painting", "ink"])
    assert torch.equal(plain.target_embeds, clip.encode_text(["a watercolor painting", "ink"]))
    weighted = encode_style(clip, ["(a watercolor painting:1) (ink:3)", "(ink:1.5)"])
    e = clip.encode_text(["a watercolor painting", "ink"])
    torch.testing.assert_close(weighted.target_embeds[0], 0.25 * e[0] + 0.75 * e[1])
    torch.testing.assert_close(weighted.target_embeds[1], e[1])
    assert weighted.target[0] == "(a watercolor painting:1) (ink:3)"
    with pytest.raises(ValueError, match="outside"):
        encode_style(clip, "(ink:1) and more")


# ------------------------------------------------------------------ the pipeline
def test_batch_with_one_image_style_each_and_masks_equals_each_image_alone(clip):
    """Item 3: a batch with one style per image (a blend of text and image styles) and one mask per
    image gives each image what it gets alone with its style, mask and seed."""
    model = tiny_models()[0]
    x0 = source_image(64, batch=2)
    inv = invert(model, x0, respacing="10", skip=7)
    styles = blend_styles([(encode_style_images(clip, refs(2), per_image=True), 2),
                           (encode_style(clip, "a watercolor painting"), 1)])
    masks = torch.zeros(2, 64, 64)
    masks[0, :32], masks[1, :, 32:] = 1, 1
    cfg = GuidanceConfig(**{**OFF, "clip_global_patch": 50.0, "clip_dir_patch": 50.0, "clip_dir": 20.0,
                            "mse": 20.0}, n_patch=2)
    both = sample_guided(model, inv, styles, clip, cfg, sampler="ddim", seed=[4, 9], mask=masks, feather=2)
    assert torch.isfinite(both).all()
    for b, seed in enumerate((4, 9)):
        inv_b = invert(model, x0[b:b + 1], respacing="10", skip=7)
        style_b = StylePrompt(styles.target[b:b + 1], styles.source[b:b + 1], styles.target_embeds[b:b + 1],
                              styles.source_embeds[b:b + 1], styles.clip_name, styles.source_image_weight[b:b + 1])
        alone = sample_guided(model, inv_b, style_b, clip, cfg, sampler="ddim", seed=seed, mask=masks[b],
                              feather=2)
        torch.testing.assert_close(both[b:b + 1], alone, atol=2e-4, rtol=1e-4)
