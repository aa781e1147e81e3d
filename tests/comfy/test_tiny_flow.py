"""The tiny rectified-flow models (tests/comfy/tiny_flow.py) in ComfyUI 0.3.75's own classes, in-process."""
from __future__ import annotations

import pytest
import torch

import comfy_inprocess
import tiny_flow

pytestmark = pytest.mark.comfy

# family -> (comfy.model_base class, diffusion model class) the tiny model must be
CLASSES = {"flux_dev": ("Flux", "Flux"), "flux_schnell": ("Flux", "Flux"), "flux2": ("Flux2", "Flux"),
           "chroma": ("Chroma", "Chroma"), "sd3": ("SD3", "OpenAISignatureMMDITWrapper"),
           "sd35": ("SD3", "OpenAISignatureMMDITWrapper"), "qwen_image": ("QwenImage", "QwenImageTransformer2DModel"),
           "lumina2": ("Lumina2", "NextDiT"), "zimage": ("Lumina2", "NextDiT")}


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield comfy_inprocess.load(tmp_path_factory.mktemp("comfy_input"))
    torch.set_num_threads(threads)


def model_inputs(model, family, seed=0):
    """The diffusion model's keyword inputs for the tiny conditioning, as ComfyUI's sampler builds them."""
    import comfy.sampler_helpers
    import comfy.samplers
    x = tiny_flow.latent(family, seed)
    entries = comfy.sampler_helpers.convert_cond(tiny_flow.conditioning(family, seed))
    conds = comfy.samplers.encode_model_conds(model.model.extra_conds, entries, x, torch.device("cpu"), "positive")
    return x, {k: c.process_cond(batch_size=1, area=None).concat([]) for k, c in conds[0]["model_conds"].items()}


@pytest.mark.parametrize("family", tiny_flow.FAMILIES)
def test_each_family_is_its_comfyui_class_with_flow_sampling(pack, family):
    import comfy.model_sampling
    model = tiny_flow.tiny_model(family)
    assert (type(model.model).__name__, type(model.model.diffusion_model).__name__) == CLASSES[family]
    assert isinstance(model.get_model_object("model_sampling"), comfy.model_sampling.CONST)
    assert type(model.model.model_config).__name__ == tiny_flow.CONFIGS[family][0]
    x, inputs = model_inputs(model, family)
    with torch.no_grad():
        out = model.model.apply_model(x, torch.tensor([0.6]), **inputs)
    assert out.shape == x.shape and torch.isfinite(out).all() and out.std() > 0.1


@pytest.mark.parametrize("family", ["flux_dev", "sd3", "zimage"])
def test_tiny_models_are_seeded_bit_for_bit(pack, family):
    a, b, c = (tiny_flow.tiny_model(family, s).model.diffusion_model.state_dict() for s in (3, 3, 4))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert torch.equal(tiny_flow.latent(family, 3), tiny_flow.latent(family, 3))
    assert torch.equal(tiny_flow.conditioning(family, 3)[0][0], tiny_flow.conditioning(family, 3)[0][0])


def test_sd35_file_loads_through_comfyuis_loader_detected_as_sd3(pack, tmp_path):
    path = tiny_flow.write_sd35_unet(tmp_path / tiny_flow.SD35_FILE, seed=2)
    model = tiny_flow.load_file_model(path)
    assert type(model.model.model_config).__name__ == "SD3"
    dm = model.model.diffusion_model
    assert dm.joint_blocks[0].x_block.x_block_self_attn and not dm.joint_blocks[1].x_block.x_block_self_attn
    expected = tiny_flow.unet_state_dict("sd35", seed=2)
    loaded = dm.state_dict()
    assert set(expected) <= set(loaded)
    assert all(torch.equal(loaded[k].float(), v.float()) for k, v in expected.items())
