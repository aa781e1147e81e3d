"""The latent backbone inside ComfyUI's own sampling machinery (in-process ComfyUI, tiny SD models).

ZeCon Guider against CFGGuider, the losses along their gradients, shortcut vs full,
seeds, interrupts, and the inversion round trip.
"""
from __future__ import annotations

import pytest
import torch

import comfy_inprocess
import latent_fixtures
import tiny_sd
from latent_fixtures import cfg_reference, run_node, sample

pytestmark = pytest.mark.comfy


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    return comfy_inprocess.load(tmp_path_factory.mktemp("comfy_input"))


@pytest.fixture(scope="module")
def sd15(pack):
    return latent_fixtures.bundle("sd15")


@pytest.fixture(scope="module")
def taesd(pack, tmp_path_factory):
    import folder_paths
    folder = tmp_path_factory.mktemp("vae_approx")
    paths = tiny_sd.write_taesd_decoders(folder)
    folder_paths.add_model_folder_path("vae_approx", str(folder))
    return paths


def guider_inputs(bundle, **changes):
    inputs = dict(model=bundle.model, positive=bundle.positive, negative=bundle.negative, cfg=3.0,
                  source={"samples": bundle.source}, mode="shortcut", decoder="taesd", start_percent=0.0,
                  end_percent=1.0, strength=1.0, seed=0, zecon_layers="auto")
    inputs.update(changes)
    return inputs


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m", "ddpm"])
def test_zero_weights_give_cfg_guider_bit_for_bit(pack, sd15, taesd, sampler):
    from zecon_pack.nodes.latent.guider_node import ZeconGuider
    from zecon_pack.nodes.types import GuidanceBundle
    from zecon_pack.zecon_core.guidance.core import LOSS_NAMES, GuidanceConfig

    zero = GuidanceBundle(GuidanceConfig(**{k: 0.0 for k in LOSS_NAMES}))
    (guider,) = run_node(ZeconGuider, **guider_inputs(sd15, guidance=zero))
    (off,) = run_node(ZeconGuider, **guider_inputs(sd15, strength=0.0))
    noise = torch.randn(sd15.source.shape, generator=torch.Generator().manual_seed(1))
    ref = sample(cfg_reference(sd15), sd15.source, sd15.sigmas, sampler, noise=noise)
    assert torch.equal(sample(guider, sd15.source, sd15.sigmas, sampler, noise=noise), ref)
    assert torch.equal(sample(off, sd15.source, sd15.sigmas, sampler, noise=noise), ref)


@pytest.fixture(scope="module")
def clip_style(pack, tmp_path_factory):
    return latent_fixtures.clip_and_style(tmp_path_factory.mktemp("clip"))


def all_losses(**changes):
    """Every loss on, small settings (2 views, 16 ZeCon positions)."""
    from zecon_pack.nodes.types import GuidanceBundle
    from zecon_pack.zecon_core.guidance.core import GuidanceConfig
    config = GuidanceConfig(clip_global=300.0, clip_dir=300.0, n_patch=2, zecon_patches=16)
    return GuidanceBundle(config.replace(**changes), latent_fixtures.tiny_vgg(), "tiny")


def test_seeded_runs_repeat_and_seeds_differ(pack, sd15, taesd, clip_style):
    from zecon_pack.nodes.latent.guider_node import ZeconGuider
    clip, style = clip_style
    runs = {}
    for seed in (0, 0, 1):
        (guider,) = run_node(ZeconGuider, **guider_inputs(sd15, clip=clip, style=style, seed=seed,
                                                          guidance=all_losses()))
        runs.setdefault(seed, []).append(sample(guider, sd15.source, sd15.sigmas))
    assert torch.equal(runs[0][0], runs[0][1])
    assert not torch.equal(runs[0][0], runs[1][0])


def test_interrupt_stops_within_one_step(pack, sd15, taesd, clip_style):
    import comfy.model_management as mm
    import latent_preview
    from zecon_pack.nodes.latent.guider_node import ZeconGuider
    clip, style = clip_style
    (guider,) = run_node(ZeconGuider, **guider_inputs(sd15, clip=clip, style=style, guidance=all_losses()))
    preview = latent_preview.prepare_callback(sd15.model, sd15.sigmas.shape[0] - 1)
    steps = []

    def callback(i, x0, x, total):
        steps.append(i)
        if i == 0:
            mm.interrupt_current_processing(True)   # what the server's /interrupt sets
        preview(i, x0, x, total)

    try:
        with pytest.raises(mm.InterruptProcessingException):
            sample(guider, sd15.source, sd15.sigmas, callback=callback)
    finally:
        mm.interrupt_current_processing(False)
    assert steps == [0]


def _guidance_for(pack, sd15, plan, x):
    """The guidance of one run, built as the guider builds it at its first guided call."""
    from zecon_pack.nodes.latent.guider import start_run
    return start_run(plan, sd15.model.model, sd15.negative[0][0], None, x)


def _plan(sd15, guider_bundle, clip_style=None, seed=0, mode="shortcut"):
    from zecon_pack.nodes.latent.guider_node import ZeconGuider
    extra = {} if clip_style is None else dict(clip=clip_style[0], style=clip_style[1])
    (guider,) = run_node(ZeconGuider, **guider_inputs(sd15, guidance=guider_bundle, seed=seed, mode=mode, **extra))
    return guider.plan


@pytest.mark.parametrize("loss", ["clip_global", "clip_global_patch", "clip_dir", "clip_dir_patch", "zecon", "mse",
                                  "vgg", "range"])
def test_each_latent_loss_decreases_along_its_gradient(pack, sd15, taesd, clip_style, loss):
    from zecon_pack.zecon_core.guidance.core import LOSS_NAMES
    bundle = all_losses(**{k: (1.0 if k == loss else 0.0) for k in LOSS_NAMES})
    plan = _plan(sd15, bundle, clip_style)
    g = torch.Generator().manual_seed(3)
    z0 = sd15.model.model.process_latent_in(sd15.source) * 0.5 + torch.randn(sd15.source.shape, generator=g) * 3
    with torch.inference_mode(False):
        guidance = _guidance_for(pack, sd15, plan, z0)
        grad, values = guidance.prediction_gradient(z0, 0)
        before = values[loss]
        assert before > 0 and grad.abs().max() > 0
        step = grad / grad.norm() * 1e-2 * z0.norm()
        again = _guidance_for(pack, sd15, plan, z0)   # the same draws (same seed, fresh generators)
        after = float(again.losses.view_terms(again.view(z0 + step), again.on, 0)[loss])
    assert after < before


def test_full_and_shortcut_share_the_prediction_gradient(pack, sd15, taesd, clip_style):
    """Both modes take ∇L at the prediction first; full mode then carries it through the UNet's Jacobian."""
    from zecon_pack.nodes.latent.guider_node import differentiable_clone
    import comfy.model_management as mm
    plan = _plan(sd15, all_losses(), clip_style)
    model = differentiable_clone(sd15.model)
    mm.load_models_gpu([model])
    base = model.model
    ctx = sd15.positive[0][0]
    sigma = sd15.sigmas[:1]
    x = sd15.model.model.process_latent_in(sd15.source) + sigma * torch.randn(sd15.source.shape)

    with torch.inference_mode(False):
        ctx, sigma = ctx.clone(), sigma.clone()   # made under inference mode; ComfyUI's cond batching copies likewise

        def denoise(xx):
            return base.apply_model(xx, sigma, c_crossattn=ctx)
        with torch.no_grad():
            den = denoise(x)
        g_short, v_short = _guidance_for(pack, sd15, plan, x).prediction_gradient(den, 0)
        with torch.enable_grad():
            xg = x.clone().requires_grad_()
            den_g = denoise(xg)
            g_pred, v_full = _guidance_for(pack, sd15, plan, x).prediction_gradient(den_g, 0)
            direct = _guidance_for(pack, sd15, plan, x)
            total = sum(direct.losses.view_terms(direct.view(den_g), direct.on, 0).values())
            g_x_direct = -torch.autograd.grad(total, xg)[0]
        full = _guidance_for(pack, sd15, plan, x)
        out_full, _ = full(denoise, x, sigma, 0, "full")
        g_x_full = (out_full - den) / full.shift_scale(sigma, den)
        short = _guidance_for(pack, sd15, plan, x)
        out_short, _ = short(denoise, x, sigma, 0, "shortcut")
    torch.testing.assert_close(g_pred, g_short, rtol=1e-5, atol=1e-7)
    # shortcut: the ideal unit-variance denoiser's Jacobian 1 / (1 + σ²) in place of the UNet's
    torch.testing.assert_close(out_short, den + short.shift_scale(sigma, den) * g_short / (1 + sigma ** 2),
                               rtol=1e-5, atol=1e-7)
    assert v_full == v_short
    torch.testing.assert_close(g_x_full, g_x_direct, rtol=1e-3, atol=1e-5 * float(g_x_direct.abs().max()))
    assert not torch.allclose(g_x_full, g_short, rtol=1e-2, atol=0)   # the Jacobian is not the identity


def constant_eps_model(bundle, value=0.3):
    """The tiny SD1.5 with its last convolution zeroed: the UNet predicts the same ε for every input."""
    model = bundle.model.clone()
    with torch.inference_mode():
        import copy
        base = copy.deepcopy(model.model)
        out = base.diffusion_model.out[-1]
        out.weight.zero_()
        out.bias.fill_(value)
    model.model = base
    return model


def test_inversion_node_then_sampling_reconstructs_the_source(pack, sd15):
    """ZeCon Latent Inversion -> SamplerCustomAdvanced's path (zero noise, euler) gives the source back."""
    import comfy.samplers
    from zecon_pack.nodes.latent.inversion_node import ZeconLatentInversion
    model = constant_eps_model(sd15)
    latent = {"samples": sd15.source}
    inverted, sigmas = run_node(ZeconLatentInversion, model=model, latent=latent, conditioning=sd15.positive,
                                cfg=1.0, steps=4, denoise=0.6, scheduler="normal")
    assert sigmas.shape == (5,) and float(sigmas[-1]) == 0.0 and (sigmas[1:] < sigmas[:-1]).all()
    assert not torch.allclose(inverted["samples"], sd15.source)
    g = comfy.samplers.CFGGuider(model)
    g.set_conds(sd15.positive, sd15.positive)
    g.set_cfg(1.0)
    back = sample(g, inverted["samples"], sigmas)
    torch.testing.assert_close(back, sd15.source, rtol=0, atol=1e-5)


def test_inversion_node_takes_a_sigma_schedule_and_refuses_a_bad_one(pack, sd15):
    from zecon_pack.nodes.latent.inversion_node import ZeconLatentInversion
    latent = {"samples": sd15.source}
    inputs = dict(model=sd15.model, latent=latent, conditioning=sd15.positive, cfg=1.0, steps=4, denoise=0.6,
                  scheduler="normal")
    inverted, sigmas = run_node(ZeconLatentInversion, **inputs, sigmas=sd15.sigmas)
    assert torch.equal(sigmas, sd15.sigmas) and torch.isfinite(inverted["samples"]).all()
    with pytest.raises(ValueError, match="sigmas: expected a descending"):
        run_node(ZeconLatentInversion, **inputs, sigmas=sd15.sigmas.flip(0))
    with pytest.raises(ValueError, match="must end at 0"):
        run_node(ZeconLatentInversion, **inputs, sigmas=sd15.sigmas[:-1])


@pytest.mark.parametrize("mode", ["shortcut", "full"])
def test_an_attention_kernel_without_backward_is_bypassed(pack, sd15, taesd, clip_style, monkeypatch, mode):
    """SageAttention (--use-sage-attention) has no backward: every pass that is differentiated (the encoder
    copy; in full mode the UNet too) runs PyTorch's attention instead; the shortcut's UNet pass keeps the
    user's kernel."""
    import comfy.ldm.modules.attention as attention
    from zecon_pack.nodes.latent.guider_node import ZeconGuider

    @attention.wrap_attn
    def forward_only_attention(q, k, v, heads, **kwargs):   # like SageAttention: no gradient flows through it
        with torch.no_grad():
            return attention.attention_pytorch(q, k, v, heads, **kwargs)

    inputs = guider_inputs(sd15, mode=mode, clip=clip_style[0], style=clip_style[1], guidance=all_losses())
    monkeypatch.setattr(attention, "optimized_attention", attention.attention_pytorch)   # the same forward
    (guider,) = run_node(ZeconGuider, **inputs)
    ref = sample(guider, sd15.source, sd15.sigmas)
    monkeypatch.setattr(attention, "optimized_attention", forward_only_attention)
    (guider,) = run_node(ZeconGuider, **inputs)
    torch.testing.assert_close(sample(guider, sd15.source, sd15.sigmas), ref, rtol=1e-5, atol=1e-6)


def _half_mask(size=16, scale=8):
    m = torch.zeros(size * scale, size * scale)
    m[:, : size * scale // 2] = 1.0    # restyle the left half of the picture
    return m


def test_mask_keeps_the_source_outside_and_a_full_mask_is_no_mask(pack, sd15, taesd, clip_style):
    from zecon_pack.nodes.latent.guider_node import ZeconGuider
    clip, style = clip_style
    base = guider_inputs(sd15, clip=clip, style=style, guidance=all_losses())
    x = sd15.source + sd15.sigmas[0] * torch.randn(sd15.source.shape, generator=torch.Generator().manual_seed(5))
    (masked,) = run_node(ZeconGuider, **base, mask=_half_mask(), feather=8)
    out = sample(masked, x, sd15.sigmas)
    z_src = sd15.model.model.process_latent_in(sd15.source)
    src_out = sd15.model.model.process_latent_out(z_src)
    # right half beyond the feather (8 px = 1 latent px): exactly the source latent (euler's last step returns D)
    torch.testing.assert_close(out[..., 10:], src_out[..., 10:], rtol=0, atol=1e-6)
    (plain_guider,) = run_node(ZeconGuider, **base)
    unmasked = sample(plain_guider, x, sd15.sigmas)
    assert (out[..., :6] - src_out[..., :6]).abs().max() > 1e-3          # the left half is restyled
    (full,) = run_node(ZeconGuider, **base, mask=torch.ones(40, 40), feather=8)
    assert torch.equal(sample(full, x, sd15.sigmas), unmasked)


def test_guided_prediction_outside_the_mask_is_the_source(pack, sd15, taesd, clip_style):
    plan = _plan(sd15, all_losses(), clip_style)
    plan.mask, plan.feather = _half_mask(), 0.0
    z0 = sd15.model.model.process_latent_in(sd15.source) + torch.randn(sd15.source.shape)
    with torch.inference_mode(False):
        guidance = _guidance_for(pack, sd15, plan, z0)
        out, _ = guidance(lambda xx: z0, z0, sd15.sigmas[:1].clone(), 0, "shortcut")
    z_src = guidance.source.latent
    assert torch.equal(out[..., 9:], z_src[..., 9:])   # column 8 straddles the edge after the resize
    assert not torch.equal(out[..., :7], z0[..., :7])


@pytest.mark.parametrize("mask, message", [
    (torch.zeros(3, 64, 64), "mask: 3 masks for a batch of 2"),
    (torch.zeros(64, 64), "mask: .*empty"),
    (torch.full((64, 64), 2.0), r"mask: mask values must lie in \[0, 1\]"),
])
def test_bad_masks_are_refused_when_the_guider_is_made(pack, sd15, taesd, mask, message):
    """(A source of two pictures: the mask count is checked against it; one source picture serves any
    batch, so there the count is checked when the sampled batch is known, see below.)"""
    from zecon_pack.nodes.latent.guider_node import ZeconGuider
    with pytest.raises(ValueError, match=message):
        run_node(ZeconGuider, **guider_inputs(sd15, mask=mask, source={"samples": sd15.source.repeat(2, 1, 1, 1)}))


def test_gradient_checkpointing_recomputes_the_blocks_and_changes_nothing(pack, sd15, taesd, clip_style,
                                                                           monkeypatch):
    from comfy.ldm.modules.diffusionmodules.openaimodel import ResBlock
    from zecon_pack.nodes.latent.guider_node import ZeconGuider
    inputs = guider_inputs(sd15, mode="full", clip=clip_style[0], style=clip_style[1], guidance=all_losses())
    calls = []
    run_block = ResBlock._forward

    def counted(self, *args):
        calls.append(1)
        return run_block(self, *args)

    monkeypatch.setattr(ResBlock, "_forward", counted)
    runs = {}
    for flag in (False, True):
        calls.clear()
        (guider,) = run_node(ZeconGuider, **inputs, gradient_checkpointing=flag)
        runs[flag] = (sample(guider, sd15.source, sd15.sigmas), len(calls))
    torch.testing.assert_close(runs[True][0], runs[False][0], rtol=1e-5, atol=1e-6)
    assert runs[True][1] > runs[False][1]           # the blocks ran again in the backward
    blocks = [m for m in sd15.model.model.diffusion_model.modules() if isinstance(m, ResBlock)]
    assert all("forward" not in b.__dict__ for b in blocks)   # the model is left as it was


@pytest.mark.parametrize("arch", ["sd15", "sd2v", "sdxl"])
@pytest.mark.parametrize("mode", ["shortcut", "full"])
def test_every_family_guides_and_is_cfg_without_guidance(pack, taesd, clip_style, arch, mode):
    """SD1.5, SD2.x (v-prediction) and SDXL (label embedding with y): guided runs are finite and move the
    result; with the guidance off the guider is CFGGuider."""
    from zecon_pack.nodes.latent.guider_node import ZeconGuider
    bundle = latent_fixtures.bundle(arch)
    clip, style = clip_style
    (guider,) = run_node(ZeconGuider, **guider_inputs(bundle, mode=mode, clip=clip, style=style,
                                                      guidance=all_losses()))
    out = sample(guider, bundle.source, bundle.sigmas)
    ref = sample(cfg_reference(bundle), bundle.source, bundle.sigmas)
    assert out.shape == ref.shape and torch.isfinite(out).all()
    assert (out - ref).abs().max() > 1e-4
    (off,) = run_node(ZeconGuider, **guider_inputs(bundle, mode=mode, strength=0.0))
    assert torch.equal(sample(off, bundle.source, bundle.sigmas), ref)


def test_sdxl_features_use_the_label_embedding(pack):
    """SDXL's encoder copy adds label_emb(y) to the time embedding, as the UNet's own forward does."""
    from zecon_pack.nodes.latent import backbone as B
    bundle = latent_fixtures.bundle("sdxl")
    base = bundle.model.model
    unet = base.diffusion_model
    layers = B.default_layers(unet)
    ctx = bundle.negative[0][0]
    y = torch.randn(1, tiny_sd.SDXL_TINY_UNET["adm_in_channels"])
    with torch.inference_mode(False):
        enc = B.EncoderFeatures(base, layers, ctx.clone(), y, torch.device("cpu"))
        z = torch.randn(bundle.source.shape)
        a = enc(z, layers)
        enc.y = torch.zeros_like(y)
        b = enc(z, layers)
    assert len(a) == len(layers) and all(torch.isfinite(f).all() for f in a)
    assert any(not torch.allclose(fa, fb) for fa, fb in zip(a, b))


def test_features_equal_the_unets_own_input_blocks(pack, sd15):
    """The encoder copy gives the UNet's own input-block outputs at t = 0 (captured by ComfyUI's input_block_patch)."""
    from zecon_pack.nodes.latent import backbone as B
    base = sd15.model.model
    layers = B.default_layers(base.diffusion_model)
    ctx = sd15.negative[0][0]
    z = torch.randn(sd15.source.shape, generator=torch.Generator().manual_seed(4))
    seen = {}

    def capture(h, transformer_options):
        seen[transformer_options["block"][1]] = h.clone()
        return h

    with torch.inference_mode():
        base.diffusion_model(z, torch.zeros(1), context=ctx,
                             transformer_options={"patches": {"input_block_patch": [capture]}})
    with torch.inference_mode(False):
        feats = B.EncoderFeatures(base, layers, ctx.clone(), None, torch.device("cpu"))(z, layers)
    for layer, f in zip(sorted(set(layers)), feats):
        torch.testing.assert_close(f, seen[layer].float(), rtol=1e-5, atol=1e-6)


def test_sd_latents_into_a_flow_model_and_foreign_vaes_are_refused_by_name(pack, sd15, taesd):
    from zecon_pack.nodes.latent.guider_node import ZeconGuider
    from zecon_pack.nodes.latent.inversion_node import ZeconLatentInversion
    flow = tiny_sd.tiny_model("flow")   # an SD3 (rectified flow): guided, but not on SD's 4-channel latents
    with pytest.raises(ValueError, match=r"^source: a 4-channel 4-D latent, but SD3 works on 16-channel"):
        run_node(ZeconGuider, **guider_inputs(sd15, model=flow, positive=tiny_sd.conditioning("flow"),
                                              negative=tiny_sd.conditioning("flow")))
    with pytest.raises(ValueError, match=r"^latent: a 4-channel 4-D latent, but SD3"):
        run_node(ZeconLatentInversion, model=flow, latent={"samples": sd15.source},
                 conditioning=tiny_sd.conditioning("flow"), cfg=1.0, steps=2, denoise=0.5, scheduler="normal")
    with pytest.raises(ValueError, match="vae: it makes 16-channel latents .* 4-channel latents"):
        run_node(ZeconGuider, **guider_inputs(sd15, vae=tiny_sd.tiny_vae("flow")))
    with pytest.raises(ValueError, match="vae: decoder 'vae' needs the model's VAE"):
        run_node(ZeconGuider, **guider_inputs(sd15, decoder="vae"))
    flux_latent = {"samples": torch.zeros(1, 16, 16, 16)}
    with pytest.raises(ValueError, match=r"^source: a 16-channel 4-D latent, but BaseModel works on 4-channel"):
        run_node(ZeconGuider, **guider_inputs(sd15, source=flux_latent))
    with pytest.raises(ValueError, match=r"^latent: a 16-channel 4-D latent, but BaseModel"):
        run_node(ZeconLatentInversion, model=sd15.model, latent=flux_latent, conditioning=sd15.positive, cfg=1.0,
                 steps=2, denoise=0.5, scheduler="normal")


@pytest.mark.parametrize("mode", ["shortcut", "full"])
def test_the_real_vae_decoder_can_guide(pack, sd15, clip_style, mode):
    """decoder 'vae': a copy of the VAE's KL decoder inside the guidance (differentiable, weights untouched)."""
    from zecon_pack.nodes.latent.guider_node import ZeconGuider
    vae = tiny_sd.tiny_vae("sd15")
    before = {k: v.clone() for k, v in vae.first_stage_model.decoder.state_dict().items()}
    (guider,) = run_node(ZeconGuider, **guider_inputs(sd15, mode=mode, decoder="vae", vae=vae, clip=clip_style[0],
                                                      style=clip_style[1], guidance=all_losses()))
    out = sample(guider, sd15.source, sd15.sigmas)
    assert torch.isfinite(out).all()
    assert (out - sample(cfg_reference(sd15), sd15.source, sd15.sigmas)).abs().max() > 1e-4
    after = vae.first_stage_model.decoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_patchnce_on_identical_features_equals_the_pixel_implementation(pack, sd15, taesd):
    """At ẑ0 = the source latent both sides have the same features: the latent ZeCon term equals the pixel
    backbone's ZeCon loss on those features (one implementation) and the PatchNCE formula written out."""
    from zecon_pack.zecon_core.guidance.draws import Draws
    from zecon_pack.zecon_core.guidance.core import LOSS_NAMES, GuidanceInputs
    from zecon_pack.zecon_core.pixel.guidance import PixelGuidance
    from zecon_pack.zecon_core.pixel.schedule import Schedule
    bundle = all_losses(**{k: (2.0 if k == "zecon" else 0.0) for k in LOSS_NAMES})
    plan = _plan(sd15, bundle)
    z_src = sd15.model.model.process_latent_in(sd15.source)
    with torch.inference_mode(False):
        guidance = _guidance_for(pack, sd15, plan, z_src)
        z = guidance.source.latent
        latent_value = float(guidance.losses.view_terms(guidance.view(z), guidance.on, 3)["zecon"]) / 2.0
        features = guidance.losses.features
        pixel = PixelGuidance(plan.config, Schedule.create("10"), GuidanceInputs(z, torch.zeros(1, 1),
                              torch.zeros(1, 1)), Draws(plan.seed), features=features)
        pixel_value = float(pixel._zecon(z, z, 3).sum())
        feats = features(z, plan.config.zecon_layers)
        draws = Draws(plan.seed)
        written_out = 0.0
        for layer, f in zip(sorted(set(plan.config.zecon_layers)), feats):
            n = f.shape[-2] * f.shape[-1]
            pick = draws.patch_ids(3, layer, n, plan.config.zecon_patches, 1)[0]
            q = f[0].flatten(1).t()[pick]
            q = q / (q.pow(2).sum(-1, keepdim=True).sqrt() + 1e-7)
            sim = q @ q.t() / plan.config.nce_temperature
            pos = sim.diagonal()
            neg = sim.masked_fill(torch.eye(len(pick), dtype=torch.bool), -10.0 / plan.config.nce_temperature)
            logits = torch.cat([pos[:, None], neg], dim=1)
            written_out += float((torch.logsumexp(logits, dim=1) - pos).mean())
    assert latent_value == pytest.approx(pixel_value, rel=1e-6)
    assert latent_value == pytest.approx(written_out, rel=1e-4, abs=1e-7)


def test_the_run_state_is_built_once_per_run(pack, sd15, taesd, clip_style, monkeypatch):
    """Copies of the encoder and decoder, the decoded source and the seeded draws are made at the first
    guided call of a run and reused by its later steps; the next run starts afresh."""
    from zecon_pack.nodes.latent import guider as G
    from zecon_pack.nodes.latent.guider_node import ZeconGuider
    built = []
    start_run = G.start_run

    def counted(*args):
        built.append(1)
        return start_run(*args)

    monkeypatch.setattr(G, "start_run", counted)
    (guider,) = run_node(ZeconGuider, **guider_inputs(sd15, clip=clip_style[0], style=clip_style[1],
                                                      guidance=all_losses()))
    for runs in (1, 2):
        sample(guider, sd15.source, sd15.sigmas, "dpmpp_2m")
        assert len(built) == runs


def test_every_node_schema_is_valid(pack):
    """What ComfyUI checks when it registers the pack (unique ids, types): a bad schema fails the whole pack."""
    from zecon_pack.nodes import NODES
    for node in NODES:
        node.GET_SCHEMA()


def test_high_part_of_split_sigmas_is_refused_with_the_right_advice(pack, sd15):
    """SplitSigmas' high_sigmas do not end at 0: the refusal points to the low part (which works)."""
    from zecon_pack.nodes.latent.inversion_node import ZeconLatentInversion
    inputs = dict(model=sd15.model, latent={"samples": sd15.source}, conditioning=sd15.positive, cfg=1.0, steps=4,
                  denoise=0.6, scheduler="normal")
    high, low = sd15.sigmas[:3], sd15.sigmas[2:]
    with pytest.raises(ValueError, match="sigmas: .*must end at 0") as e:
        run_node(ZeconLatentInversion, **inputs, sigmas=high)
    assert "low part" in str(e.value) and "high part" not in str(e.value)
    inverted, _ = run_node(ZeconLatentInversion, **inputs, sigmas=low)
    assert torch.isfinite(inverted["samples"]).all()


def test_nan_sigmas_and_numbers_are_refused_naming_the_input(pack, sd15, taesd):
    """A NaN noise level (kl_optimal at 1 step gives one) or a NaN number that reaches execute through a
    link: refused before any sampling, naming the input."""
    import comfy.samplers
    from zecon_pack.nodes.latent.guider_node import ZeconGuider
    from zecon_pack.nodes.latent.inversion_node import ZeconLatentInversion
    inputs = dict(model=sd15.model, latent={"samples": sd15.source}, conditioning=sd15.positive, cfg=1.0, steps=1,
                  denoise=1.0, scheduler="kl_optimal")
    ms = sd15.model.get_model_object("model_sampling")
    assert torch.isnan(comfy.samplers.calculate_sigmas(ms, "kl_optimal", 1)).any()   # the case of the issue
    with pytest.raises(ValueError, match=r"scheduler: .*kl_optimal.* NaN"):
        run_node(ZeconLatentInversion, **inputs)
    bad = sd15.sigmas.clone()
    bad[1] = float("nan")
    with pytest.raises(ValueError, match=r"sigmas: .*NaN"):
        run_node(ZeconLatentInversion, **inputs, sigmas=bad)
    with pytest.raises(ValueError, match="denoise: must be a finite number"):
        run_node(ZeconLatentInversion, **{**inputs, "scheduler": "normal", "denoise": float("nan")})
    for name in ("cfg", "strength", "start_percent", "end_percent"):
        with pytest.raises(ValueError, match=f"{name}: must be a finite number"):
            run_node(ZeconGuider, **guider_inputs(sd15, **{name: float("nan")}))


def _alone(loss):
    """all_losses' weights with every other loss off."""
    from zecon_pack.zecon_core.guidance.core import LOSS_NAMES
    return all_losses(**{k: 0.0 for k in LOSS_NAMES if k != loss})


@pytest.mark.parametrize("loss", ["clip_global", "clip_global_patch", "clip_dir", "clip_dir_patch", "zecon", "mse",
                                  "vgg", "range"])
def test_one_source_picture_serves_every_image_of_the_batch(pack, sd15, taesd, clip_style, loss):
    """VAE Encode of one picture -> inversion -> RepeatLatentBatch: the guider's source (batch 1) serves each
    sampled image, with every loss, exactly as a source batch of copies of that picture would."""
    from zecon_pack.nodes.latent.guider_node import ZeconGuider
    clip, style = clip_style
    x = sd15.source.repeat(2, 1, 1, 1) + sd15.sigmas[0] * torch.randn((2, *sd15.source.shape[1:]),
                                                                       generator=torch.Generator().manual_seed(7))
    extra = dict(clip=clip, style=style, guidance=_alone(loss))
    (one,) = run_node(ZeconGuider, **guider_inputs(sd15, **extra))
    (copies,) = run_node(ZeconGuider, **guider_inputs(sd15, source={"samples": sd15.source.repeat(2, 1, 1, 1)},
                                                      **extra))
    out = sample(one, x, sd15.sigmas)
    assert out.shape == x.shape and torch.isfinite(out).all()
    torch.testing.assert_close(out, sample(copies, x, sd15.sigmas), rtol=1e-5, atol=1e-6)
    assert (out - sample(cfg_reference(sd15), x, sd15.sigmas)).abs().amax(dim=(1, 2, 3)).min() > 1e-5


def test_one_source_picture_takes_one_mask_per_sampled_image(pack, sd15, taesd):
    """With one source picture, masks are counted against the sampled batch (known when sampling starts)."""
    from zecon_pack.nodes.latent.guider_node import ZeconGuider
    x = sd15.source.repeat(2, 1, 1, 1)
    left, right = _half_mask(), _half_mask().flip(-1)
    (guider,) = run_node(ZeconGuider, **guider_inputs(sd15, mask=torch.stack([left, right]), feather=0))
    out = sample(guider, x, sd15.sigmas)
    src = sd15.model.model.process_latent_out(sd15.model.model.process_latent_in(sd15.source))[0]
    torch.testing.assert_close(out[0, ..., 10:], src[..., 10:], rtol=0, atol=1e-6)   # image 0: left restyled
    torch.testing.assert_close(out[1, ..., :6], src[..., :6], rtol=0, atol=1e-6)     # image 1: right restyled
    assert (out[0, ..., :6] - src[..., :6]).abs().max() > 1e-3
    (three,) = run_node(ZeconGuider, **guider_inputs(sd15, mask=torch.ones(3, 64, 64) * 0.5))
    with pytest.raises(ValueError, match="mask: 3 masks for a batch of 2"):
        sample(three, x, sd15.sigmas)
    (two_sources,) = run_node(ZeconGuider, **guider_inputs(sd15, source={"samples": x}))
    with pytest.raises(ValueError, match="source: 2 source latents for a batch of 3"):
        sample(two_sources, sd15.source.repeat(3, 1, 1, 1), sd15.sigmas)


def _patch_model(model, name):
    """``model`` through ComfyUI's own patch nodes (comfy_extras): FreeU, FreeU_V2, PAG, SAG, RescaleCFG, or a
    '+'-joined stack of them."""
    from comfy_extras.nodes_freelunch import FreeU, FreeU_V2
    from comfy_extras.nodes_model_advanced import RescaleCFG
    from comfy_extras.nodes_pag import PerturbedAttentionGuidance
    from comfy_extras.nodes_sag import SelfAttentionGuidance
    for part in name.split("+"):
        if part == "FreeU":
            (model,) = FreeU().patch(model, 1.1, 1.2, 0.9, 0.2)
        elif part == "FreeU_V2":
            (model,) = FreeU_V2().patch(model, 1.3, 1.4, 0.9, 0.2)
        elif part == "RescaleCFG":
            (model,) = RescaleCFG().patch(model, 0.7)
        elif part == "PAG":
            (model,) = run_node(PerturbedAttentionGuidance, model=model, scale=3.0)
        elif part == "SAG":
            (model,) = run_node(SelfAttentionGuidance, model=model, scale=0.5, blur_sigma=2.0)
        else:
            raise ValueError(part)
    return model


PATCHES = ["FreeU", "FreeU_V2", "PAG", "SAG", "RescaleCFG", "FreeU_V2+PAG+RescaleCFG"]


@pytest.mark.parametrize("mode", ["shortcut", "full"])
@pytest.mark.parametrize("patches", PATCHES)
def test_model_patches_users_stack_guide_in_both_modes(pack, sd15, taesd, clip_style, patches, mode):
    """Model -> FreeU_V2 (in-place output-block patch) / PAG / SAG / RescaleCFG -> ZeCon Guider: both modes run,
    the patch acts (another result than without it) and so does the guidance."""
    from zecon_pack.nodes.latent.guider_node import ZeconGuider
    clip, style = clip_style
    model = _patch_model(sd15.model, patches)
    x = sd15.source + sd15.sigmas[0] * torch.randn(sd15.source.shape, generator=torch.Generator().manual_seed(9))
    inputs = guider_inputs(sd15, mode=mode, clip=clip, style=style, guidance=all_losses())
    (guider,) = run_node(ZeconGuider, **{**inputs, "model": model})
    out = sample(guider, x, sd15.sigmas)
    assert torch.isfinite(out).all()
    (unpatched,) = run_node(ZeconGuider, **inputs)
    assert (out - sample(unpatched, x, sd15.sigmas)).abs().max() > 1e-5
    (off,) = run_node(ZeconGuider, **{**inputs, "model": model, "strength": 0.0})
    assert (out - sample(off, x, sd15.sigmas)).abs().max() > 1e-5


def test_full_mode_under_freeu_v2_with_gradient_checkpointing(pack, sd15, taesd, clip_style):
    from zecon_pack.nodes.latent.guider_node import ZeconGuider
    inputs = guider_inputs(sd15, model=_patch_model(sd15.model, "FreeU_V2"), mode="full", clip=clip_style[0],
                           style=clip_style[1], guidance=all_losses())
    runs = [sample(run_node(ZeconGuider, **inputs, gradient_checkpointing=flag)[0], sd15.source, sd15.sigmas)
            for flag in (False, True)]
    torch.testing.assert_close(runs[1], runs[0], rtol=1e-5, atol=1e-6)


def test_an_in_place_patch_gets_the_gradient_of_its_out_of_place_twin(pack):
    """FreeU_V2's output-block patch writes into h after keeping h for the backward; wrapped for a differentiated
    pass it gives the same values and gradients as the same arithmetic written out of place."""
    from zecon_pack.nodes.latent import backbone as B
    model = _patch_model(latent_fixtures.bundle("sd15").model, "FreeU_V2")
    [patch] = model.model_options["transformer_options"]["patches"]["output_block_patch"]
    channels = 64 * 4   # model_channels * 4: a level FreeU_V2 scales
    g = torch.Generator().manual_seed(2)
    h0, hsp0 = torch.randn(2, channels, 4, 4, generator=g), torch.randn(2, channels, 4, 4, generator=g)
    w = torch.randn(2, 2 * channels, 4, 4, generator=g)

    def twin(h, hsp):
        m = h.mean(1, keepdim=True)
        lo, hi = m.amin(dim=(2, 3), keepdim=True), m.amax(dim=(2, 3), keepdim=True)
        scale = (1.3 - 1) * (m - lo) / (hi - lo) + 1
        half = channels // 2
        return torch.cat([h[:, :half] * scale, h[:, half:]], 1), patch(h.detach().clone(), hsp, {})[1]

    grads = []
    for fn in (B.differentiable_patch(patch), twin):
        h = h0.clone().requires_grad_()
        hsp = hsp0.clone().requires_grad_()
        a, b = fn(h * 1.0, hsp * 1.0, {}) if fn is not twin else fn(h * 1.0, hsp * 1.0)
        (torch.cat([a, b], 1) * w).sum().backward()
        grads.append((torch.cat([a, b], 1).detach(), h.grad, hsp.grad))
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        h = h0.clone().requires_grad_()
        a, _ = patch(h * 1.0, hsp0, {})
        (a * w[:, :channels]).sum().backward()


def _with_lora(model, seed=5, rank=4):
    """``model`` with a random LoRA on every linear weight of its UNet, through ComfyUI's LoRA loader
    (``comfy.sd.load_lora_for_models``, what LoraLoaderModelOnly runs)."""
    import comfy.lora
    import comfy.sd
    weights = model.model.state_dict()
    g = torch.Generator().manual_seed(seed)
    lora = {}
    for key, target in comfy.lora.model_lora_keys_unet(model.model, {}).items():
        w = weights.get(target) if key.startswith("lora_unet_") and isinstance(target, str) else None
        if w is None or w.ndim != 2:
            continue
        lora[f"{key}.lora_up.weight"] = torch.randn(w.shape[0], rank, generator=g) * 0.2
        lora[f"{key}.lora_down.weight"] = torch.randn(rank, w.shape[1], generator=g) * 0.2
        lora[f"{key}.alpha"] = torch.tensor(float(rank))
    assert len(lora) > 30
    patched, _ = comfy.sd.load_lora_for_models(model, None, lora, 1.0, 0)
    return patched


@pytest.mark.parametrize("mode", ["shortcut", "full"])
@pytest.mark.parametrize("weights", ["lora", "fp8", "fp8+lora+FreeU_V2"])
def test_lora_and_fp8_weights_guide_in_both_modes(pack, taesd, clip_style, weights, mode):
    """The SD1.5-detected tiny UNet loaded as UNETLoader loads it (fp8_e4m3fn weights: manual cast), with a
    LoRA through ComfyUI's loader: the guided run is finite and the guidance acts."""
    import comfy.sd
    from zecon_pack.nodes.latent.guider_node import ZeconGuider
    bundle = latent_fixtures.bundle("sd15_file")
    model = bundle.model
    if "fp8" in weights:
        model = comfy.sd.load_diffusion_model_state_dict(tiny_sd.unet_state_dict("sd15_file"),
                                                         model_options={"dtype": torch.float8_e4m3fn})
        assert model.model.diffusion_model.input_blocks[0][0].weight.dtype == torch.float8_e4m3fn
    if "lora" in weights:
        model = _with_lora(model)
    if "FreeU_V2" in weights:
        model = _patch_model(model, "FreeU_V2")
    clip, style = clip_style
    inputs = guider_inputs(bundle, model=model, mode=mode, clip=clip, style=style, guidance=all_losses())
    (guider,) = run_node(ZeconGuider, **inputs)
    out = sample(guider, bundle.source, bundle.sigmas)
    assert torch.isfinite(out).all()
    (off,) = run_node(ZeconGuider, **{**inputs, "strength": 0.0})
    assert (out - sample(off, bundle.source, bundle.sigmas)).abs().max() > 1e-5
    if weights == "lora":   # the LoRA acts
        (no_lora,) = run_node(ZeconGuider, **{**inputs, "model": bundle.model, "strength": 0.0})
        ref = sample(off, bundle.source, bundle.sigmas)
        assert (ref - sample(no_lora, bundle.source, bundle.sigmas)).abs().max() > 1e-4


def test_a_noise_mask_on_the_source_is_the_region(pack, sd15, taesd, clip_style):
    """SetLatentNoiseMask on the source LATENT: the guider restyles only there, as with that mask connected."""
    from zecon_pack.nodes.latent.guider_node import ZeconGuider
    clip, style = clip_style
    base = guider_inputs(sd15, clip=clip, style=style, guidance=all_losses(), feather=8)
    mask = _half_mask()
    x = sd15.source + sd15.sigmas[0] * torch.randn(sd15.source.shape, generator=torch.Generator().manual_seed(5))
    (with_mask,) = run_node(ZeconGuider, **base, mask=mask)
    noise_masked = {"samples": sd15.source, "noise_mask": mask.reshape(1, 1, *mask.shape)}
    (from_latent,) = run_node(ZeconGuider, **{**base, "source": noise_masked})
    assert torch.equal(sample(from_latent, x, sd15.sigmas), sample(with_mask, x, sd15.sigmas))


def test_the_inversion_says_that_it_inverts_the_whole_picture_of_a_noise_masked_latent(pack, sd15, caplog):
    from zecon_pack.nodes.latent.inversion_node import ZeconLatentInversion
    latent = {"samples": sd15.source, "noise_mask": _half_mask().reshape(1, 1, 128, 128)}
    with caplog.at_level("WARNING"):
        inverted, _ = run_node(ZeconLatentInversion, model=sd15.model, latent=latent, conditioning=sd15.positive,
                               cfg=1.0, steps=2, denoise=0.5, scheduler="normal")
    assert "noise_mask" not in inverted
    said = [r.getMessage() for r in caplog.records if "noise mask" in r.getMessage()]
    assert said and said[0].startswith("latent:") and "ZeCon Guider" in said[0], said


def test_a_shift_that_dwarfs_the_prediction_is_reported(pack, sd15, taesd, caplog):
    """strength 100 x an MSE weight of 1e7: the shift is orders of magnitude above the latent; the guider says so
    once per run (console; the node's progress text in the server), a normal run says nothing."""
    from zecon_pack.nodes.latent.guider_node import ZeconGuider
    from zecon_pack.zecon_core.guidance.core import LOSS_NAMES
    x = sd15.source + sd15.sigmas[0] * torch.randn(sd15.source.shape, generator=torch.Generator().manual_seed(5))
    mse_only = {k: 0.0 for k in LOSS_NAMES if k != "mse"}
    for strength, mse, warned in ((1.0, 5000.0, False), (100.0, 1e7, True)):
        caplog.clear()
        (guider,) = run_node(ZeconGuider, **guider_inputs(sd15, strength=strength,
                                                          guidance=all_losses(mse=mse, **mse_only)))
        with caplog.at_level("WARNING"):
            sample(guider, x, sd15.sigmas)
        said = [r.getMessage() for r in caplog.records if "shift" in r.getMessage()]
        assert len(said) == (1 if warned else 0), said
        if warned:
            assert "strength" in said[0] and "weights" in said[0], said


def test_default_weights_are_the_benchmarks(pack, sd15):
    """Without a ZeCon Guidance node: ZeCon 8000 on SD UNets and flow DiTs (bench/RESULTS.md, the miniature
    world's benchmarks), the other weights the original's; VGG off, CLIP off without a style."""
    import tiny_flow
    from zecon_pack.nodes.flow import guidance as FG
    from zecon_pack.nodes.latent.guider_node import resolve_config
    from zecon_pack.zecon_core import GuidanceConfig

    sd = resolve_config(None, sd15.model, FG.SD, "auto", has_style=True)
    assert (sd.zecon, sd.vgg, sd.mse, sd.clip_dir_patch) == (8000.0, 0.0, 5000.0, 20000.0)
    assert resolve_config(None, sd15.model, FG.SD, "auto", has_style=False).clip_dir_patch == 0.0
    flux = tiny_flow.tiny_model("flux_dev")
    flow = resolve_config(None, flux, FG.guided_family(flux), "auto", has_style=True)
    assert (flow.zecon, flow.vgg, flow.clip_global_patch) == (8000.0, 0.0, 10000.0)
    from zecon_pack.nodes.types import GuidanceBundle
    chosen = resolve_config(GuidanceBundle(GuidanceConfig(zecon=123.0), None, "none"), sd15.model, FG.SD, "auto", True)
    assert chosen.zecon == 123.0                 # a connected ZeCon Guidance node's weights win
