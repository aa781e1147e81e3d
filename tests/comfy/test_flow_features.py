"""ZeCon features of the flow DiTs (nodes/flow/features.py) on the tiny models of every family, in-process.

The features are checked against ComfyUI's own blocks: the tokens they return are the tensors
the blocks' own forwards feed their attention projections (modulated) or their first norm
(residual), and the out-of-place Flux block forwards give the blocks' own outputs exactly, so a
ComfyUI update that changes a block fails here.
"""
from __future__ import annotations

import pytest
import torch

import comfy_inprocess
import tiny_flow
import tiny_sd

pytestmark = pytest.mark.comfy

FLUX_TYPE = ("flux_dev", "flux_schnell", "flux2", "chroma")
FAMILY = {"flux_dev": "flux", "flux_schnell": "flux", "flux2": "flux2", "chroma": "chroma", "sd3": "sd3",
          "sd35": "sd3", "qwen_image": "qwen_image", "lumina2": "lumina2", "zimage": "lumina2",
          "hidream": "hidream"}


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    yield from comfy_inprocess.single_threaded(tmp_path_factory)


@pytest.fixture(scope="module")
def F(pack):
    from zecon_pack.nodes.flow import features
    return features


def all_layers(F, model):
    return tuple(range(F.block_count(model)))


def model_inputs(model, family, x, seed=7):
    """The diffusion model's inputs for the tiny (negative) conditioning, as ComfyUI's sampler builds them."""
    import comfy.sampler_helpers
    import comfy.samplers
    entries = comfy.sampler_helpers.convert_cond(tiny_flow.conditioning(family, seed))
    conds = comfy.samplers.encode_model_conds(model.model.extra_conds, entries, x, torch.device("cpu"), "negative")
    return {k: c.process_cond(batch_size=x.shape[0], area=None).concat([]) for k, c in conds[0]["model_conds"].items()}


def blocks_in_order(F, model, family):
    dm = model.model.diffusion_model
    return [(kind, block) for name, kind in F.BLOCK_LISTS[FAMILY[family]] for block in getattr(dm, name)]


# Where each block's own forward uses the feature tokens: (sub-module whose INPUT is the modulated
# token, sub-module whose input is the residual stream); the image tokens are sliced as features.py does.
PROBES = {"double": ("img_attn.qkv", "img_norm1"), "single": ("linear1", "pre_norm"),
          "joint": ("x_block.attn.qkv", "x_block.norm1"), "qwen": ("attn.to_q", "img_norm1"),
          "lumina": ("attention.qkv", "attention_norm1"), "hidream": ("block.attn1", "block.norm1_i")}


def image_slice(kind, tokens, n, txt, pad):
    if kind == "single":
        return tokens[:, txt:txt + n]
    if kind == "lumina":
        start = tokens.shape[1] - n - pad
        return tokens[:, start:start + n]
    return tokens[:, :n]


@pytest.mark.parametrize("feature", ["modulated", "residual"])
@pytest.mark.parametrize("family", tiny_flow.FAMILIES)
def test_features_are_the_tokens_the_blocks_own_forwards_use(F, family, feature):
    """Each layer's feature = what ComfyUI's own forward (σ = 0, same context) feeds that block's
    attention projection (modulated) / first norm (residual), image tokens only. Exact (max |diff| 0)."""
    model = tiny_flow.tiny_model(family, seed=1)
    x = tiny_flow.latent(family, seed=2, height=8, width=6)
    layers = all_layers(F, model)
    feats = F.build_features(model, tiny_flow.conditioning(family, 7), layers=layers, feature=feature, latent=x)
    with torch.no_grad():
        got = feats(x, layers)

    inputs = model_inputs(model, family, x)
    captured, handles = {}, []

    def record(i, kind):
        def hook(module, args):
            captured.setdefault(i, (kind, args[0].detach().clone()))   # a pre-hook returning None keeps the args
        return hook
    for i, (kind, block) in enumerate(blocks_in_order(F, model, family)):
        probe = block.get_submodule(PROBES[kind][0 if feature == "modulated" else 1])
        handles.append(probe.register_forward_pre_hook(record(i, kind)))
    try:
        with torch.no_grad():
            model.model.apply_model(x, torch.zeros(1), **inputs)
    finally:
        for h in handles:
            h.remove()
    dm = model.model.diffusion_model
    h, w = -(-x.shape[-2] // dm.patch_size), -(-x.shape[-1] // dm.patch_size)
    pad = (-(h * w)) % dm.pad_tokens_multiple if getattr(dm, "pad_tokens_multiple", None) else 0
    for i, f in zip(layers, got):
        kind, tokens = captured[i]
        ref = image_slice(kind, tokens, h * w, inputs["c_crossattn"].shape[1], pad)
        assert f.shape == (1, ref.shape[-1], h, w)
        assert torch.equal(f.flatten(2).transpose(1, 2), ref.float()), (family, i, kind)


@pytest.mark.parametrize("family", FLUX_TYPE)
def test_flux_block_forwards_equal_comfyui(F, family):
    """The out-of-place forwards give ComfyUI's DoubleStreamBlock / SingleStreamBlock outputs exactly
    (max |diff| 0), on every block, with the inputs a real forward gives them."""
    from zecon_pack.nodes.flow.flux_blocks import double_block_forward, single_block_forward
    model = tiny_flow.tiny_model(family, seed=3)
    x = tiny_flow.latent(family, seed=4)
    inputs = model_inputs(model, family, x)
    seen, handles = [], []

    def record(kind):
        def hook(module, args, kwargs):
            seen.append((kind, module, args, kwargs))
        return hook
    for kind, block in blocks_in_order(F, model, family):
        handles.append(block.register_forward_pre_hook(record(kind), with_kwargs=True))
    try:
        with torch.no_grad():
            model.model.apply_model(x, torch.tensor([0.7]), **inputs)   # the hooks record the inputs
    finally:
        for h in handles:
            h.remove()
    assert [k for k, *_ in seen] == ["double", "double", "single", "single"]

    def fresh(args, kwargs):   # the blocks modify their inputs in place: each run gets its own copies
        clone = lambda v: v.clone() if torch.is_tensor(v) else v
        return [clone(a) for a in args], {k: clone(v) for k, v in kwargs.items()}

    for kind, block, args, kwargs in seen:
        mine = {"double": double_block_forward, "single": single_block_forward}[kind]
        with torch.no_grad():
            own = block(*fresh(args, kwargs)[0], **fresh(args, kwargs)[1])
            a, k = fresh(args, kwargs)
            ours = mine(block, *a, **k)
        own, ours = (own, ours) if kind == "double" else ((own,), (ours,))
        for o, m in zip(own, ours):
            assert torch.equal(o, m), (family, kind)


@pytest.mark.parametrize("family", tiny_flow.FAMILIES)
def test_features_differentiable_deterministic_and_batched(F, family):
    model = tiny_flow.tiny_model(family, seed=5)
    x = tiny_flow.latent(family, seed=6, batch=2)
    feats = F.build_features(model, tiny_flow.conditioning(family, 7))
    assert feats.layers == tuple(i for i in F.default_layers(FAMILY[family]) if i < F.block_count(model))
    grads, values = [], []
    for _ in range(2):
        xg = x.clone().requires_grad_()
        out = feats(xg, feats.layers)
        sum(o.pow(2).mean() for o in out).backward()
        grads.append(xg.grad)
        values.append(out)
    assert all(torch.isfinite(g).all() and g.abs().max() > 0 for g in grads)
    assert torch.equal(grads[0], grads[1])
    assert all(torch.equal(a, b) for a, b in zip(*values))
    with torch.no_grad():
        one = feats(x[1:], feats.layers)
        again = feats(x[1:], feats.layers)
    assert all(torch.equal(a, b) for a, b in zip(one, again))
    # the batch of two gives each latent its own features (the context is repeated per latent)
    assert all(torch.allclose(a[1:], b, atol=1e-5) for a, b in zip(values[0], one))


@pytest.mark.parametrize("family", ["flux_dev", "qwen_image"])
def test_every_form_of_the_conditioning_gives_the_same_features(F, family):
    """CONDITIONING, a guider's processed entry (dict with model_conds) and a model_conds dict."""
    import comfy.sampler_helpers
    import comfy.samplers
    model = tiny_flow.tiny_model(family, seed=22)
    x = tiny_flow.latent(family, seed=23)
    cond = tiny_flow.conditioning(family, 7)
    entry = comfy.samplers.encode_model_conds(model.model.extra_conds, comfy.sampler_helpers.convert_cond(cond), x,
                                              torch.device("cpu"), "negative")[0]
    with torch.no_grad():
        results = [F.build_features(model, c, layers=(0, 1))(x) for c in (cond, entry, entry["model_conds"])]
        other = F.build_features(model, tiny_flow.conditioning(family, 8), layers=(0, 1))(x)
    assert all(torch.equal(a, b) for r in results[1:] for a, b in zip(results[0], r))
    assert not torch.allclose(results[0][1], other[1])      # the context matters from block 1 on


@pytest.mark.parametrize("family", ["flux_dev", "sd35", "lumina2"])
def test_zecons_patchnce_takes_the_features_unchanged_and_decreases_along_its_gradient(F, family):
    """zecon_core's ZeCon loss (eq. 7) on the DiT features of a prediction against the source's."""
    from zecon_pack.zecon_core.guidance.losses import zecon_loss
    model = tiny_flow.tiny_model(family, seed=24)
    source = tiny_flow.latent(family, seed=25, height=8, width=8)
    feats = F.build_features(model, tiny_flow.conditioning(family, 7), layers=(0, 1))
    with torch.no_grad():
        keys = feats(source)
    ids = [torch.randperm(k.shape[-2] * k.shape[-1], generator=torch.Generator().manual_seed(i))[:8]
           for i, k in enumerate(keys)]

    def loss(z):
        return zecon_loss([f[0] for f in feats(z)], [k[0] for k in keys], ids)
    z = (source + torch.randn(source.shape, generator=torch.Generator().manual_seed(26))).requires_grad_()
    before = loss(z)
    before.backward()
    with torch.no_grad():
        after = loss(z - z.grad / z.grad.norm() * 1e-2 * z.norm())
    assert torch.isfinite(before) and after < before


def test_source_features_are_reused_only_for_the_same_unchanged_memory(F, monkeypatch):
    model = tiny_flow.tiny_model("sd3", seed=20)
    feats = F.build_features(model, tiny_flow.conditioning("sd3", 7), layers=(0, 1))
    source = tiny_flow.latent("sd3", seed=21)
    runs = []
    apply_model = feats.model.apply_model
    monkeypatch.setattr(feats.model, "apply_model", lambda *a, **k: (runs.append(1), apply_model(*a, **k))[1])
    with torch.no_grad():
        first = feats(source)
        assert feats(source) is first and len(runs) == 1
        assert feats(source.unsqueeze(0)[0]) is first and len(runs) == 1    # a fresh view of it: the same
        assert feats(source, (0,)) is not first and len(runs) == 2          # other layers: computed
        same_values = source.clone()
        assert all(torch.equal(a, b) for a, b in zip(feats(same_values), first)) and len(runs) == 3
        again = feats(source)
        source.mul_(0.5)                                                     # changed in place: computed again
        changed = feats(source)
    assert len(runs) == 5 and not torch.equal(changed[0], again[0])
    xg = source.clone().requires_grad_()
    feats(xg)
    feats(xg)
    assert len(runs) == 7                                                    # differentiated calls: never reused


def test_features_are_built_on_copies_and_see_weight_patches(F):
    import comfy.model_management as mm
    model = tiny_flow.tiny_model("flux_dev", seed=8)
    before = {k: v.clone() for k, v in model.model.diffusion_model.state_dict().items()}
    x = tiny_flow.latent("flux_dev", seed=9)
    cond = tiny_flow.conditioning("flux_dev", 7)
    feats = F.build_features(model, cond, layers=(0, 2))
    own = {p.data_ptr() for p in model.model.parameters()}
    assert not own & {p.data_ptr() for p in feats.diffusion_model.parameters()}
    assert not any(p.requires_grad for p in feats.diffusion_model.parameters())
    xg = x.clone().requires_grad_()
    sum(f.sum() for f in feats(xg)).backward()
    after = model.model.diffusion_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    plain = feats(x)

    delta = torch.randn(before["img_in.weight"].shape, generator=torch.Generator().manual_seed(10)) * 0.05
    patched = model.clone()
    patched.add_patches({"diffusion_model.img_in.weight": (delta,)}, 1.0)
    with_patch = F.build_features(patched, cond, layers=(0, 2))(x)
    mm.unload_all_models()

    reference = tiny_flow.tiny_model("flux_dev", seed=8)          # the same weights, the patch baked in by hand
    with torch.no_grad():
        reference.model.diffusion_model.img_in.weight += delta
    expected = F.build_features(reference, cond, layers=(0, 2))(x)
    assert not torch.allclose(with_patch[0], plain[0])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(with_patch, expected))
    after_unload = model.model.diffusion_model.state_dict()
    assert all(torch.equal(before[k], after_unload[k]) for k in before)


def test_fp8_file_model_gives_dequantised_features_and_gradients(F, tmp_path):
    """An fp8 (e4m3) SD3.5 from ComfyUI's loader: the features are those of the same weights in float32."""
    import comfy.model_management as mm
    path = tiny_flow.write_sd35_unet(tmp_path / "fp8.safetensors", seed=11)
    fp8 = tiny_flow.load_file_model(path, weight_dtype=torch.float8_e4m3fn)
    dm = fp8.model.diffusion_model
    assert dm.joint_blocks[0].x_block.attn.qkv.weight.dtype == torch.float8_e4m3fn
    rounded = {k: (v.to(torch.float8_e4m3fn).float() if v.is_floating_point() and v.ndim else v)
               for k, v in tiny_flow.unet_state_dict("sd35", seed=11).items()}
    ref_path = tiny_sd._save(rounded, tmp_path / "fp8_as_fp32.safetensors")
    ref = tiny_flow.load_file_model(ref_path)

    x = tiny_flow.latent("sd35", seed=12)
    cond = tiny_flow.conditioning("sd35", 7)
    feats = F.build_features(fp8, cond, layers=(0, 1))
    assert all(p.dtype == torch.float32 for p in feats.diffusion_model.parameters())
    xg = x.clone().requires_grad_()
    got = feats(xg)
    sum(f.pow(2).mean() for f in got).backward()
    assert torch.isfinite(xg.grad).all() and xg.grad.abs().max() > 0
    expected = F.build_features(ref, cond, layers=(0, 1))(x)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(got, expected))
    assert dm.joint_blocks[0].x_block.attn.qkv.weight.dtype == torch.float8_e4m3fn   # the model is untouched
    mm.unload_all_models()


def _scaled_fp8_files(folder, seed):
    """The SD3.5 weights as a "scaled fp8" file (fp8 Linear weights + per-layer scale_weight, ComfyUI's
    scaled_fp8_ops) and the float32 file of exactly the weights it represents."""
    weights = tiny_flow.unet_state_dict("sd35", seed)
    net = tiny_flow.model_config("sd35").get_model({}).diffusion_model
    linear = {name + ".weight" for name, m in net.named_modules() if isinstance(m, torch.nn.Linear)}
    scaled, exact = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}, {}
    for key, v in weights.items():
        if not (v.is_floating_point() and v.ndim):
            scaled[key] = exact[key] = v
        elif key in linear:
            scale = v.abs().max() / 448
            scaled[key] = (v / scale).to(torch.float8_e4m3fn)
            scaled[key[:-len("weight")] + "scale_weight"] = scale.reshape(())
            exact[key] = scaled[key].float() * scale
        else:
            scaled[key] = v.to(torch.float8_e4m3fn)
            exact[key] = scaled[key].float()
    return tiny_sd._save(scaled, folder / "scaled.safetensors"), tiny_sd._save(exact, folder / "exact.safetensors")


def test_scaled_fp8_file_model_gives_the_features_of_its_dequantised_weights(F, tmp_path):
    import comfy.model_management as mm
    scaled_path, exact_path = _scaled_fp8_files(tmp_path, seed=15)
    scaled = tiny_flow.load_file_model(scaled_path)
    qkv = scaled.model.diffusion_model.joint_blocks[0].x_block.attn.qkv
    assert qkv.weight.dtype == torch.float8_e4m3fn and float(qkv.scale_weight) != 1.0
    x = tiny_flow.latent("sd35", seed=16)
    cond = tiny_flow.conditioning("sd35", 7)
    xg = x.clone().requires_grad_()
    got = F.build_features(scaled, cond, layers=(0, 1))(xg)
    sum(f.pow(2).mean() for f in got).backward()
    assert torch.isfinite(xg.grad).all() and xg.grad.abs().max() > 0
    expected = F.build_features(tiny_flow.load_file_model(exact_path), cond, layers=(0, 1))(x)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(got, expected))
    mm.unload_all_models()


def test_low_vram_weight_patches_are_baked_into_the_copy(F):
    """A model loaded in low-VRAM mode applies LoRA-like patches per call (weight functions); the copy
    holds the patched weights (without loading the model again: load=False, as during sampling)."""
    import comfy.model_management as mm
    model = tiny_flow.tiny_model("flux_dev", seed=17)
    delta = torch.randn(model.model.diffusion_model.img_in.weight.shape, generator=torch.Generator().manual_seed(18))
    patched = model.clone()
    patched.add_patches({"diffusion_model.img_in.weight": (0.05 * delta,)}, 1.0)
    patched.patch_model(device_to=torch.device("cpu"), lowvram_model_memory=1, load_weights=True,
                        force_patch_weights=False)
    try:
        img_in = patched.model.diffusion_model.img_in
        assert img_in.comfy_cast_weights and img_in.weight_function
        x = tiny_flow.latent("flux_dev", seed=19)
        cond = tiny_flow.conditioning("flux_dev", 7)
        got = F.build_features(patched, cond, layers=(0, 1), load=False)(x)
    finally:
        patched.unpatch_model(torch.device("cpu"))
    reference = tiny_flow.tiny_model("flux_dev", seed=17)
    with torch.no_grad():
        reference.model.diffusion_model.img_in.weight += 0.05 * delta
    expected = F.build_features(reference, cond, layers=(0, 1))(x)
    mm.unload_all_models()
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(got, expected))


def test_fp8_flux_gives_features_and_gradients(F):
    model = tiny_flow.tiny_model("flux_dev", seed=13, weight_dtype=torch.float8_e4m3fn)
    assert model.model.diffusion_model.double_blocks[0].img_attn.qkv.weight.dtype == torch.float8_e4m3fn
    feats = F.build_features(model, tiny_flow.conditioning("flux_dev", 7), layers=(1, 3))
    xg = tiny_flow.latent("flux_dev", seed=14).requires_grad_()
    sum(f.pow(2).mean() for f in feats(xg)).backward()
    assert torch.isfinite(xg.grad).all() and xg.grad.abs().max() > 0


def test_attention_is_pytorchs_only_in_differentiated_passes(F, monkeypatch):
    import comfy.ldm.modules.attention as attention
    calls = []
    pytorch = attention.REGISTERED_ATTENTION_FUNCTIONS["pytorch"]

    def recording(*args, **kwargs):
        calls.append(1)
        return pytorch(*args, **kwargs)
    monkeypatch.setitem(attention.REGISTERED_ATTENTION_FUNCTIONS, "pytorch", recording)
    for family in ("flux_dev", "sd3", "qwen_image", "zimage"):
        model = tiny_flow.tiny_model(family)
        feats = F.build_features(model, tiny_flow.conditioning(family, 7), layers=(0, 1))
        x = tiny_flow.latent(family)
        calls.clear()
        with torch.no_grad():
            feats(x)
        assert not calls, family
        feats(x.clone().requires_grad_())
        assert len(calls) >= 1, family      # every attention of blocks 0 (and the refiners / block 0 only)


def _chroma_radiance():
    import comfy.supported_models as sm
    cfg = {**tiny_flow.CONFIGS["chroma"][1], "image_model": "chroma_radiance", "in_channels": 3, "out_channels": 3,
           "patch_size": 16, "nerf_hidden_size": 16, "nerf_mlp_ratio": 2, "nerf_depth": 1, "nerf_max_freqs": 8,
           "nerf_tile_size": 512, "nerf_final_head_type": "linear", "nerf_embedder_dtype": torch.float32}
    mc = sm.ChromaRadiance(cfg)
    mc.set_inference_dtype(torch.float32, None)
    return tiny_sd._patcher(mc.get_model({}, device=torch.device("meta")))


@pytest.mark.parametrize("make, names", [
    (lambda: tiny_flow.refused_model("wan21"), ("WAN21", "WanModel")),                           # video
    (lambda: tiny_flow.refused_model("ace_step"), ("ACEStep", "ACEStepTransformer2DModel")),      # audio (flow)
    (lambda: tiny_flow.refused_model("stable_audio"), ("StableAudio1", "AudioDiffusionTransformer")),  # audio (v)
    (_chroma_radiance, ("ChromaRadiance", "ChromaRadiance")),            # pixel-space flow
    (lambda: tiny_sd.tiny_model("sd15"), ("BaseModel", "UNetModel")),     # ε-prediction UNet
])
def test_other_models_are_refused_naming_their_type(F, make, names):
    model = make()
    with pytest.raises(ValueError, match="model: " + names[0] + r" \(" + names[1]):
        F.family_of(model)
    with pytest.raises(ValueError, match=names[1]):
        F.build_features(model, tiny_sd.conditioning("sd15"))


@pytest.mark.parametrize("family", ["flux_dev", "sd3", "qwen_image", "zimage"])
def test_features_on_the_meta_device(F, family):
    """A meta-device model (FLOP counting at real sizes) gives meta features and a meta backward."""
    from torch.utils.flop_counter import FlopCounterMode
    model = tiny_sd._patcher(tiny_flow.model_config(family).get_model({}, device=torch.device("meta")))
    feats = F.build_features(model, tiny_flow.conditioning(family, 7), layers=(0, 1))
    x = tiny_flow.latent(family).to("meta").requires_grad_()
    with FlopCounterMode(display=False) as counter:
        out = feats(x)
        sum(o.sum() for o in out).backward()
    assert [o.device.type for o in out] == ["meta", "meta"] and x.grad.device.type == "meta"
    assert counter.get_total_flops() > 0


def test_bad_layers_and_feature_names_are_clear_errors(F):
    model = tiny_flow.tiny_model("sd3")
    cond = tiny_flow.conditioning("sd3", 7)
    with pytest.raises(ValueError, match=r"zecon_layers: \[0, 5\] - this sd3 model has 2 blocks"):
        F.build_features(model, cond, layers=(0, 5))
    with pytest.raises(ValueError, match="feature: 'raw'"):
        F.build_features(model, cond, feature="raw")
    feats = F.build_features(model, cond, layers=(0,))
    with pytest.raises(ValueError, match="zecon_layers: .* built with"):
        feats(tiny_flow.latent("sd3"), (0, 1))
