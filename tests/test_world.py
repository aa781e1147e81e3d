"""The miniature world (bench/world/world.py): seeded, exact ground truth, captions."""
import pytest
import torch

from bench.world import world as W


def test_sampling_is_seeded():
    assert W.sample_scenes(20, seed=3) == W.sample_scenes(20, seed=3)
    assert W.sample_scenes(20, seed=3) != W.sample_scenes(20, seed=4)
    assert torch.equal(W.render(W.sample_scenes(8, 1), 32), W.render(W.sample_scenes(8, 1), 32))


def test_scenes_cover_the_attributes_and_stay_inside():
    scenes = W.sample_scenes(400, seed=0)
    assert {s.shape for s in scenes} == set(W.SHAPES)
    assert {s.texture for s in scenes} == set(W.TEXTURES)
    assert {s.colour for s in scenes} == set(W.COLOURS)
    mask = W.object_mask(scenes, 32)
    assert mask.flatten(1).any(1).all()
    border = mask[:, 0].any(1) | mask[:, -1].any(1) | mask[:, :, 0].any(1) | mask[:, :, -1].any(1)
    assert not border.any()


def test_caption_names_the_attributes():
    scene = W.Scene("square", "dots", "blue", 0.5, 0.5, 0.5, 0.7)
    assert W.caption(scene) == "a dots blue square"
    assert W.caption(W.restyle(scene, texture="stripes")) == "a stripes blue square"


@pytest.mark.parametrize("size", [32, 64])
def test_restyle_keeps_geometry_and_mask_exactly(size):
    for scene in W.sample_scenes(30, seed=5):
        for texture in W.TEXTURES:
            for colour in W.COLOURS:
                edited = W.restyle(scene, texture=texture, colour=colour)
                assert (edited.shape, edited.cx, edited.cy, edited.size, edited.background) == (
                    scene.shape, scene.cx, scene.cy, scene.size, scene.background)
                assert torch.equal(W.object_mask([edited], size), W.object_mask([scene], size))
    # the render differs only inside the mask, and the segmentation finds the mask exactly
    scenes = W.sample_scenes(30, seed=5)
    edited = [W.restyle(s, texture="checker", colour="red") for s in scenes]
    a, b = W.render(scenes, size), W.render(edited, size)
    mask = W.object_mask(scenes, size)
    assert torch.equal((a != b).any(1) & ~mask, torch.zeros_like(mask))
    background = [s.background for s in scenes]
    assert torch.equal(W.segment(a, background), mask)
    assert torch.equal(W.segment(b, background), mask)
    assert torch.allclose(W.iou(W.segment(b, background), mask), torch.ones(len(scenes)))


def test_render_range_and_patterns_visible_at_32px():
    scenes = [W.Scene("square", t, "green", 0.5, 0.5, 0.6, 0.7) for t in W.TEXTURES]
    pictures = W.render(scenes, 32)
    assert pictures.shape == (4, 3, 32, 32) and pictures.dtype == torch.float32
    assert pictures.min() >= -1 and pictures.max() <= 1
    inside = W.object_mask(scenes, 32)[0]
    tones = [len(torch.unique(p[:, inside], dim=1).T) for p in pictures]
    assert tones[0] == 1 and all(t == 2 for t in tones[1:])
    # each patterned texture darkens a visible share of the object, and the textures differ
    dark = [(p[:, inside].mean(0) < pictures[0][:, inside].mean(0) - 0.1).float().mean() for p in pictures[1:]]
    assert all(0.15 < float(d) < 0.85 for d in dark)
    assert not torch.equal(pictures[1], pictures[2]) and not torch.equal(pictures[2], pictures[3])


def test_bad_scene_is_refused_by_name():
    with pytest.raises(ValueError, match="texture='plaid'"):
        W.Scene("square", "plaid", "blue", 0.5, 0.5, 0.5, 0.7)
    with pytest.raises(ValueError, match="cx=1.5"):
        W.Scene("square", "dots", "blue", 1.5, 0.5, 0.5, 0.7)
