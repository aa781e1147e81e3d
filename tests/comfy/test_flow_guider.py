"""The ZeCon Guider and Latent Inversion on rectified-flow models (in-process ComfyUI, tiny models of every family).

Every family of tests/comfy/tiny_flow.py through ComfyUI's own CFGGuider / samplers: strength 0 and
all weights 0 are CFGGuider bit for bit; both modes guide (fp8 weights too); each loss decreases
along its gradient; full and shortcut share the gradient at the prediction; inversion -> sampling
reconstructs the source for a constant-velocity model; interrupts, seeds and bad inputs.
"""
from __future__ import annotations

import copy

import pytest
import torch

import comfy_inprocess
import latent_fixtures
import tiny_flow
import tiny_sd
from latent_fixtures import cfg_reference, run_node, sample

pytestmark = pytest.mark.comfy

FAMILIES = tiny_flow.FAMILIES
# families without a TAESD decoder in ComfyUI 0.3.75 (Flux.2: none; Qwen-Image: a video TAE): decoder 'vae'
VAE_ONLY = ("flux2", "qwen_image")
# the output projection of each family's DiT: zeroed, the model predicts one constant velocity
OUTPUT = {"flux_dev": "final_layer.linear", "flux_schnell": "final_layer.linear", "flux2": "final_layer.linear",
          "chroma": "final_layer.linear", "sd3": "final_layer.linear", "sd35": "final_layer.linear",
          "qwen_image": "proj_out", "lumina2": "final_layer.linear", "zimage": "final_layer.linear",
          "hidream": "final_layer.linear"}


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    yield from comfy_inprocess.single_threaded(tmp_path_factory)


@pytest.fixture(scope="module")
def taesd(pack, tmp_path_factory):
    """Tiny taef1 (Flux latent format: Flux, Chroma, Lumina 2 / Z-Image) and taesd3 decoders in vae_approx."""
    import folder_paths
    folder = tmp_path_factory.mktemp("vae_approx")
    for i, name in enumerate(("taef1", "taesd3")):
        tiny_sd._save(tiny_sd.taesd_half("decoder", 16, 40 + i), folder / f"{name}_decoder.safetensors")
    folder_paths.add_model_folder_path("vae_approx", str(folder))
    return folder


@pytest.fixture(scope="module")
def clip_style(pack, tmp_path_factory):
    return latent_fixtures.clip_and_style(tmp_path_factory.mktemp("clip"))


_bundles = {}


def bundle(family, size=8):
    """A tiny model of ``family``, its conditionings, a source latent and a schedule from the middle of the flow."""
    from types import SimpleNamespace
    import comfy.samplers
    if family not in _bundles:
        with torch.inference_mode():     # as a loader node makes it in the server: inference-tensor weights
            model = tiny_flow.tiny_model(family, 0)
            source = tiny_flow.latent(family, 5, height=size, width=size)
            sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", 6)[3:]
        _bundles[family] = SimpleNamespace(family=family, model=model, positive=tiny_flow.conditioning(family, 1),
                                           negative=tiny_flow.conditioning(family, 2), source=source, sigmas=sigmas)
    return _bundles[family]


def family_vae(family):
    with torch.inference_mode():     # as VAELoader makes it
        return tiny_flow.tiny_vae(family)


def losses(clip=True, vgg_net=None, **changes):
    """Small settings (2 CLIP views, 16 ZeCon positions); without ``clip`` only ZeCon and MSE; ``vgg_net``: the
    VGG feature net for the VGG loss (its weight is 0 unless changed)."""
    from zecon_pack.nodes.types import GuidanceBundle
    from zecon_pack.zecon_core.guidance.core import GuidanceConfig
    config = GuidanceConfig(clip_global=300.0, clip_dir=300.0, n_patch=2, zecon_patches=16, vgg=0.0)
    if not clip:
        config = config.replace(clip_global=0.0, clip_global_patch=0.0, clip_dir=0.0, clip_dir_patch=0.0, range=0.0)
    return GuidanceBundle(config.replace(**changes), vgg_net, "tiny")


def guider_inputs(b, clip_style=None, **changes):
    inputs = dict(model=b.model, positive=b.positive, negative=b.negative, cfg=3.0, source={"samples": b.source},
                  mode="shortcut", decoder="taesd", start_percent=0.0, end_percent=1.0, strength=1.0, seed=0,
                  zecon_layers="auto")
    if clip_style is not None:
        inputs.update(clip=clip_style[0], style=clip_style[1])
    inputs.update(changes)
    return inputs


def guider(b, clip_style=None, **changes):
    from zecon_pack.nodes.latent.guider_node import ZeconGuider
    if "guidance" not in changes:
        changes["guidance"] = losses(clip=clip_style is not None)
    return run_node(ZeconGuider, **guider_inputs(b, clip_style, **changes))[0]


@pytest.mark.parametrize("family", FAMILIES)
def test_zero_weights_and_zero_strength_are_cfg_guider_bit_for_bit(pack, family):
    from zecon_pack.nodes.types import GuidanceBundle
    from zecon_pack.zecon_core.guidance.core import LOSS_NAMES, GuidanceConfig
    b = bundle(family)
    zero = GuidanceBundle(GuidanceConfig(**{k: 0.0 for k in LOSS_NAMES}))
    noise = torch.randn(b.source.shape, generator=torch.Generator().manual_seed(1))
    ref = sample(cfg_reference(b), b.source, b.sigmas, noise=noise)
    assert torch.equal(sample(guider(b, guidance=zero), b.source, b.sigmas, noise=noise), ref)
    assert torch.equal(sample(guider(b, strength=0.0), b.source, b.sigmas, noise=noise), ref)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("mode", ["shortcut", "full"])
def test_every_family_guides_in_both_modes_and_seeded_runs_repeat(pack, taesd, clip_style, family, mode):
    """With the CLIP losses on: TAESD where the family has one, else the family's own VAE (Flux.2's
    batch-norm latents, Qwen-Image's Wan 2.1 video VAE on one frame)."""
    b = bundle(family)
    decoder = dict(decoder="vae", vae=family_vae(family)) if family in VAE_ONLY else {}
    runs = [sample(guider(b, clip_style, mode=mode, seed=s, **decoder), b.source, b.sigmas) for s in (0, 0)]
    assert torch.isfinite(runs[0]).all()
    assert torch.equal(runs[0], runs[1])
    assert (runs[0] - sample(cfg_reference(b), b.source, b.sigmas)).abs().max() > 1e-4


@pytest.mark.parametrize("family", ["flux_dev", "sd3"])
@pytest.mark.parametrize("sampler", ["dpmpp_2m", "euler_ancestral", "dpmpp_sde"])
def test_other_samplers_guide_with_a_mask_and_the_vae_decoder(pack, clip_style, family, sampler):
    b = bundle(family)
    mask = torch.zeros(1, 64, 64)
    mask[:, :, :32] = 1
    g = guider(b, clip_style, decoder="vae", vae=tiny_sd.tiny_vae("flow"), mask=mask, feather=0)
    out = sample(g, b.source, b.sigmas, sampler, seed=3)
    ref = sample(cfg_reference(b), b.source, b.sigmas, sampler, seed=3)
    assert torch.isfinite(out).all()
    # the mask at the latent's size is 1 in columns 0-2, soft in 3-4 (a resized edge), 0 from column 5
    assert (out[..., :3] - ref[..., :3]).abs().max() > 1e-4
    # outside the mask the prediction is the source: the last step (to σ = 0) returns it
    torch.testing.assert_close(out[..., 5:], b.source[..., 5:], rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_zecon_and_mse_losses_decrease_along_their_gradients(pack, family):
    from zecon_pack.nodes.latent.guider import start_run
    from zecon_pack.nodes.flow import guidance as FG
    from zecon_pack.zecon_core.flow import FLOW_SHIFT
    from zecon_pack.zecon_core.guidance.core import LOSS_NAMES
    b = bundle(family)
    frame = FG.SingleFrame(b.source.ndim == 5)
    z0 = frame.down(b.model.model.process_latent_in(b.source)) * 0.5
    z0 = z0 + torch.randn(z0.shape, generator=torch.Generator().manual_seed(3)) * 3
    for loss in ("zecon", "mse"):
        g = guider(b, guidance=losses(clip=False, **{k: (1.0 if k == loss else 0.0) for k in LOSS_NAMES}))
        import comfy.model_management as mm
        mm.load_models_gpu([b.model])
        with torch.inference_mode(False):
            def run():
                feats = None
                if loss == "zecon":
                    feats = frame.features(FG.flow_features(b.model, {"negative": _entries(b)}, g.plan.config.zecon_layers,
                                                                 z0.device))
                return start_run(g.plan, b.model.model, None, None, z0, feats, FLOW_SHIFT)
            guidance = run()
            grad, values = guidance.prediction_gradient(z0, 0)
            before = values[loss]
            assert before > 0 and grad.abs().max() > 0
            step = grad / grad.norm() * 1e-2 * z0.norm()
            again = run()
            after = float(again.losses.view_terms(again.view(z0 + step), again.on, 0)[loss])
        assert after < before, loss


def _entries(b):
    """The negative conditioning as the guider's ``conds`` hold it (processed entries with model_conds)."""
    import comfy.sampler_helpers
    import comfy.samplers
    entries = comfy.sampler_helpers.convert_cond(b.negative)
    x = b.source.clone()
    return comfy.samplers.encode_model_conds(b.model.model.extra_conds, entries, x, torch.device("cpu"), "negative")


@pytest.mark.parametrize("family", ["flux_dev", "sd35"])
@pytest.mark.parametrize("loss", ["clip_global", "clip_global_patch", "clip_dir", "clip_dir_patch", "vgg", "range"])
def test_the_image_losses_decrease_along_their_gradients(pack, taesd, clip_style, family, loss):
    """Every loss read from the decoded picture (CLIP, VGG, range), through taef1 (Flux) and taesd3 (SD3.5)."""
    from zecon_pack.nodes.latent.guider import start_run
    from zecon_pack.zecon_core.flow import FLOW_SHIFT
    from zecon_pack.zecon_core.guidance.core import LOSS_NAMES
    b = bundle(family)
    vgg = latent_fixtures.tiny_vgg() if loss == "vgg" else None
    g = guider(b, clip_style, guidance=losses(vgg_net=vgg, **{k: (1.0 if k == loss else 0.0) for k in LOSS_NAMES}))
    z0 = b.model.model.process_latent_in(b.source) * 0.5
    z0 = z0 + torch.randn(z0.shape, generator=torch.Generator().manual_seed(3)) * 3
    with torch.inference_mode(False):
        guidance = start_run(g.plan, b.model.model, None, None, z0, None, FLOW_SHIFT)
        grad, values = guidance.prediction_gradient(z0, 0)
        before = values[loss]
        step = grad / grad.norm() * 1e-2 * z0.norm()
        again = start_run(g.plan, b.model.model, None, None, z0, None, FLOW_SHIFT)
        after = float(again.losses.view_terms(again.view(z0 + step), again.on, 0)[loss])
    assert before > 0 and after < before


def constant_velocity_model(b, value=0.3):
    """``b``'s model with its output projection zeroed: one constant velocity for every input (0 for Flux.2,
    whose projection has no bias; the inverted latent still differs: ComfyUI stores it as x / (1 − σ))."""
    model = b.model.clone()
    with torch.inference_mode():
        base = copy.deepcopy(model.model)
        out = base.diffusion_model.get_submodule(OUTPUT[b.family])
        out.weight.zero_()
        if out.bias is not None:
            out.bias.fill_(value)
    model.model = base
    return model


@pytest.mark.parametrize("family", FAMILIES)
def test_inversion_then_zero_strength_guided_sampling_reconstructs_the_source(pack, family):
    from zecon_pack.nodes.latent.guider_node import ZeconGuider
    from zecon_pack.nodes.latent.inversion_node import ZeconLatentInversion
    b = bundle(family)
    model = constant_velocity_model(b)
    inverted, sigmas = run_node(ZeconLatentInversion, model=model, latent={"samples": b.source},
                                conditioning=b.positive, cfg=1.0, steps=4, denoise=0.6, scheduler="simple")
    assert sigmas.shape == (5,) and float(sigmas[0]) < 1 and float(sigmas[-1]) == 0.0
    assert not torch.allclose(inverted["samples"], b.source)
    (g,) = run_node(ZeconGuider, **guider_inputs(b, model=model, strength=0.0, cfg=1.0))
    back = sample(g, inverted["samples"], sigmas)
    torch.testing.assert_close(back, b.source, rtol=0, atol=1e-5)


def test_full_and_shortcut_share_the_prediction_gradient(pack, taesd, clip_style):
    """Both modes take ∇L at the prediction; shortcut scales it by σ²/((1−σ)²+σ²), full carries it through the DiT."""
    from zecon_pack.nodes.latent.guider_node import differentiable_clone
    from zecon_pack.nodes.latent.guider import start_run
    from zecon_pack.nodes.flow import guidance as FG
    from zecon_pack.zecon_core.flow import FLOW_SHIFT
    import comfy.model_management as mm
    b = bundle("flux_dev")
    plan = guider(b, clip_style).plan
    model = differentiable_clone(b.model)
    mm.load_models_gpu([model])
    base = model.model
    sigma = b.sigmas[:1].clone()
    s = float(sigma)
    x = (1 - s) * base.process_latent_in(b.source) + s * torch.randn(b.source.shape)
    kwargs = {k: v for k, v in _model_kwargs(b, x).items()}

    def fresh():
        features = FG.flow_features(model, {"negative": _entries(b)}, plan.config.zecon_layers, x.device)
        return start_run(plan, base, None, None, x, features, FLOW_SHIFT)

    with torch.inference_mode(False):
        sigma = sigma.clone()

        def denoise(xx):
            return base.apply_model(xx, sigma, **kwargs)
        with torch.no_grad():
            den = denoise(x)
        g_short, _ = fresh().prediction_gradient(den, 0)
        with torch.enable_grad(), FG.out_of_place_blocks(base.diffusion_model, "flux"):
            xg = x.clone().requires_grad_()
            den_g = denoise(xg)
            g_pred, _ = fresh().prediction_gradient(den_g, 0)
            direct = fresh()
            total = sum(direct.losses.view_terms(direct.view(den_g), direct.on, 0).values())
            g_x_direct = -torch.autograd.grad(total, xg)[0]
        with FG.out_of_place_blocks(base.diffusion_model, "flux"):
            full = fresh()
            out_full, _ = full(denoise, x, sigma, 0, "full")
        short = fresh()
        out_short, _ = short(denoise, x, sigma, 0, "shortcut")
    scale = full.shift_scale(sigma, den)
    torch.testing.assert_close(g_pred, g_short, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out_short, den + scale * g_short / ((1 - s) ** 2 + s ** 2), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close((out_full - den) / scale * (1 - s), g_x_direct, rtol=1e-2,
                               atol=1e-3 * float(g_x_direct.abs().max()))


def _model_kwargs(b, x):
    return {k: c.process_cond(batch_size=x.shape[0], area=None).concat([]).clone()
            for k, c in _entries(b)[0]["model_conds"].items()}


def test_interrupt_stops_within_one_step(pack, taesd, clip_style):
    import comfy.model_management as mm
    b = bundle("flux_dev")
    g = guider(b, clip_style)
    steps = []

    def callback(i, x0, x, total):
        steps.append(i)
        if i == 0:
            mm.interrupt_current_processing(True)
        mm.throw_exception_if_processing_interrupted()

    try:
        with pytest.raises(mm.InterruptProcessingException):
            sample(g, b.source, b.sigmas, callback=callback)
    finally:
        mm.interrupt_current_processing(False)
    assert steps == [0]


@pytest.mark.parametrize("mode", ["shortcut", "full"])
def test_an_fp8_weight_model_guides(pack, mode):
    b = bundle("flux_dev")
    fp8 = copy.copy(b)
    fp8.model = tiny_flow.tiny_model("flux_dev", 0, weight_dtype=torch.float8_e4m3fn)
    out = sample(guider(fp8, mode=mode), b.source, b.sigmas)
    ref = sample(cfg_reference(fp8), b.source, b.sigmas)
    assert torch.isfinite(out).all() and (out - ref).abs().max() > 1e-4


# the module whose ``optimized_attention`` (imported by name) each family's attention calls
ATTENTION_USER = {"flux_dev": "comfy.ldm.flux.math", "sd3": "comfy.ldm.modules.diffusionmodules.mmdit"}


@pytest.mark.parametrize("family", list(ATTENTION_USER))
@pytest.mark.parametrize("mode", ["shortcut", "full"])
def test_an_attention_kernel_without_backward_is_bypassed(pack, taesd, clip_style, monkeypatch, family, mode):
    """SageAttention has no backward: the differentiated passes (the feature copy; in full mode the DiT too)
    run PyTorch's attention instead, so a forward-only kernel gives the same result as PyTorch's."""
    import importlib
    import comfy.ldm.modules.attention as attention
    user = importlib.import_module(ATTENTION_USER[family])

    @attention.wrap_attn
    def forward_only_attention(q, k, v, heads, **kwargs):
        with torch.no_grad():
            return attention.attention_pytorch(q, k, v, heads, **kwargs)

    b = bundle(family)
    monkeypatch.setattr(user, "optimized_attention", attention.attention_pytorch)
    ref = sample(guider(b, clip_style, mode=mode), b.source, b.sigmas)
    monkeypatch.setattr(user, "optimized_attention", forward_only_attention)
    torch.testing.assert_close(sample(guider(b, clip_style, mode=mode), b.source, b.sigmas), ref, rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_has_a_verified_taesd_download_or_needs_the_vae(pack, family):
    """ComfyUI's latent-format TAESD names: taef1 (Flux latents) and taesd3 are in the registry (Git blob id
    at the pinned commit); Flux.2 names none and Qwen-Image a video TAE, refused by the guider."""
    from zecon_pack.nodes.flow import guidance as FG
    from zecon_pack.nodes.latent import taesd
    name = bundle(family).model.model.latent_format.taesd_decoder_name
    if family in VAE_ONLY:
        assert name is None or name in FG.VIDEO_TAES
    else:
        entry = taesd._entry_for(name)
        assert entry is not None and entry.filename == f"{name}.pth" and entry.git_blob and entry.urls


# the refusal of each video / audio model: its model class, diffusion-model class and prediction type
REFUSALS = {"wan21": r"^model: WAN21 \(WanModel, prediction type FLOW\) is not a rectified-flow image model",
            "ace_step": r"^model: ACEStep \(ACEStepTransformer2DModel, prediction type FLOW\) is not a rectified-flow "
                        r"image model",
            "stable_audio": r"^model: StableAudio1 \(prediction type V_PREDICTION_CONTINUOUS\) is not supported"}


@pytest.mark.parametrize("kind", list(tiny_flow.REFUSED))
def test_video_and_audio_models_are_refused_naming_their_type(pack, kind):
    from zecon_pack.nodes.latent.guider_node import ZeconGuider
    from zecon_pack.nodes.latent.inversion_node import ZeconLatentInversion
    b = bundle("flux_dev")
    model = tiny_flow.refused_model(kind)
    with pytest.raises(ValueError, match=REFUSALS[kind]):
        run_node(ZeconGuider, **guider_inputs(b, model=model))
    with pytest.raises(ValueError, match=REFUSALS[kind]):
        run_node(ZeconLatentInversion, model=model, latent={"samples": b.source}, conditioning=b.positive,
                 cfg=1.0, steps=2, denoise=0.5, scheduler="simple")


def test_bad_inputs_are_refused_by_name(pack, taesd):
    from zecon_pack.nodes.latent.guider_node import ZeconGuider
    from zecon_pack.nodes.latent.inversion_node import ZeconLatentInversion
    import comfy.samplers
    b = bundle("flux_dev")
    with pytest.raises(ValueError, match=r"^vae: it makes 4-channel 4-D latents at 1/8 .* 16-channel 4-D"):
        run_node(ZeconGuider, **guider_inputs(b, vae=tiny_sd.tiny_vae("sd15")))
    sd_latent = {"samples": torch.zeros(1, 4, 8, 8)}
    with pytest.raises(ValueError, match=r"^source: a 4-channel 4-D latent, but Flux works on 16-channel"):
        run_node(ZeconGuider, **guider_inputs(b, source=sd_latent))
    with pytest.raises(ValueError, match=r"^latent: a 4-channel"):
        run_node(ZeconLatentInversion, model=b.model, latent=sd_latent, conditioning=b.positive, cfg=1.0, steps=2,
                 denoise=0.5, scheduler="simple")
    inversion = dict(model=b.model, latent={"samples": b.source}, conditioning=b.positive, cfg=1.0, steps=3,
                     scheduler="simple")
    full = comfy.samplers.calculate_sigmas(b.model.get_model_object("model_sampling"), "simple", 3)
    with pytest.raises(ValueError, match=r"^sigmas: the schedule reaches σ = 1"):
        run_node(ZeconLatentInversion, **inversion, denoise=0.5, sigmas=full)
    with pytest.raises(ValueError, match=r"^denoise: 1.0 starts the inversion at pure noise; sigmas: "):
        run_node(ZeconLatentInversion, **inversion, denoise=1.0)
    # full mode on a schedule that starts at pure noise: refused at the first guided step, naming the mode
    with pytest.raises(ValueError, match=r"^mode: full mode cannot guide at σ = 1"):
        sample(guider(b, mode="full"), b.source, full)
    with pytest.raises(ValueError, match=r"^decoder: this model's latent format names no TAESD decoder"):
        run_node(ZeconGuider, **guider_inputs(bundle("flux2"), guidance=losses(clip=False, range=50.0)))
    with pytest.raises(ValueError, match=r"^decoder: this model's TAESD \(lighttaew2_1\) is a video decoder"):
        run_node(ZeconGuider, **guider_inputs(bundle("qwen_image"), guidance=losses(clip=False, range=50.0)))
    with pytest.raises(ValueError, match=r"^vae: it makes 16-channel 4-D latents at 1/8 .*\(QwenImage\) works on "
                                         r"16-channel 5-D"):
        run_node(ZeconGuider, **guider_inputs(bundle("qwen_image"), vae=tiny_flow.tiny_vae("flux_dev")))
    with pytest.raises(ValueError, match=r"^source: a 16-channel 4-D latent, but QwenImage works on 16-channel 5-D"):
        run_node(ZeconGuider, **guider_inputs(bundle("qwen_image"), source={"samples": b.source}))
    with pytest.raises(ValueError, match=r"^zecon_layers: block 9 does not exist; this flux model has 4"):
        run_node(ZeconGuider, **guider_inputs(b, zecon_layers="0,9"))
