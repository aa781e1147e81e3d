"""The VGG term of the guidance gradient equals the original's cond_fn formula in float64, on a non-square image.

The original (ZeCon ``ImageEditor.cond_fn`` with only ``l_vgg``): x̂ = x̂0 f + x (1 - f), ŷ = x0 f + q_sample(x0, ε) (1 - f),
torchvision's ``vgg19().features`` run layer by layer on ``Normalize(ImageNet)(image)`` (the [-1, 1] image as it
is; its in-place ReLUs make the kept conv1_1 / conv2_1 outputs post-ReLU), L = mean((φ1(ŷ) - φ1(x̂))²) +
mean((φ2(ŷ) - φ2(x̂))²), and -∇_x L through the blend and the UNet in one backward. It is written out below with
torchvision's modules and compared with ours in float64, where rounding is ~1e-16: any difference in the
normalisation, the resize, the blend or the layers shows up many orders above the bound. (In float32 the two
agree bit for bit on this machine, yet both move by up to 1 % against float64 on a 64x96 image: the VGG
max-pool sees 2x2 windows whose two largest values tie within float32 rounding, and each such tie routes the
gradient to another pixel; README, "Faithfulness".)
"""

from __future__ import annotations

import pytest
import torch
import torchvision

from zecon_core.guidance.core import GuidanceConfig, GuidanceInputs
from zecon_core.guidance.vgg import load_vgg
from zecon_core.pixel import diffusion as D
from zecon_core.pixel.guidance import PixelGuidance
from zecon_core.pixel.model import load_diffusion_model
from zecon_core.pixel.schedule import Schedule
from safetensors.torch import load_file

from golden import RecordedDraws
from tiny_models import tiny_paths

I = 20  # respaced index of a 40-step schedule (MSE/VGG cut-offs do not apply)


def original_vgg_gradient(unet, vgg_file, s, x, source, noise):
    """-∇_x of the original's VGG loss, with torchvision's VGG19 features and Normalize (float64)."""
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["E"])  # vgg19().features
    sd = {k[len("features."):]: v for k, v in load_file(str(vgg_file)).items()}
    features.load_state_dict(sd, strict=False)   # layers 0, 2, 5: the only ones the loss depends on
    features = features.double().eval().requires_grad_(False)
    normalize = torchvision.transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])

    def get_features(image):  # every layer, keeping the outputs of 0 (conv1_1) and 5 (conv2_1)
        kept, h = {}, image
        for name, layer in features._modules.items():
            h = layer(h)
            if name in ("0", "5"):
                kept[name] = h
        return kept

    def coef(name):  # _extract_into_tensor: the float64 schedule value cast to float32
        return s.arrays[name][I].float()

    x = x.detach().requires_grad_()
    eps = unet(x, s.model_timesteps(I, 1, "cpu"))[:, :3]
    pred_xstart = coef("sqrt_recip_alphas_cumprod") * x - coef("sqrt_recipm1_alphas_cumprod") * eps
    fac = s.arrays["sqrt_one_minus_alphas_cumprod"][I].item()
    x_in = pred_xstart * fac + x * (1 - fac)
    y_t = coef("sqrt_alphas_cumprod") * source + coef("sqrt_one_minus_alphas_cumprod") * noise
    y_in = source * fac + y_t * (1 - fac)
    content, target = get_features(normalize(x_in)), get_features(normalize(y_in))
    loss = torch.mean((target["0"] - content["0"]) ** 2) + torch.mean((target["5"] - content["5"]) ** 2)
    return -torch.autograd.grad(loss, x)[0], loss.item()


@pytest.mark.parametrize("height,width", [(64, 96), (96, 64)])
def test_vgg_gradient_matches_the_original_in_float64(height, width):
    paths = tiny_paths()
    model = load_diffusion_model(paths["unet"])   # ImageNet layout (6 levels), random weights
    unet = model.unet.double()
    vgg = load_vgg(paths["vgg"]).double()
    s = Schedule.create("40")
    g = torch.Generator().manual_seed(height * 1000 + width)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
    source = torch.stack([xx * 0.8, yy * 0.8, torch.sin(3 * xx) * torch.cos(2 * yy)])[None].double()
    noise = torch.randn(1, 3, height, width, generator=g, dtype=torch.float64)
    x = D.q_sample(s, source, I, torch.randn(1, 3, height, width, generator=g, dtype=torch.float64))

    expected, expected_loss = original_vgg_gradient(unet, paths["vgg"], s, x, source, noise)

    cfg = GuidanceConfig(clip_global=0, clip_global_patch=0, clip_dir=0, clip_dir_patch=0, zecon=0, mse=0,
                         vgg=1.0, range=0)
    guidance = PixelGuidance(cfg, s, GuidanceInputs(source, None, None), RecordedDraws(source_noises={"vgg": noise}),
                             vgg=vgg)
    xg = x.detach().requires_grad_()
    out = D.p_mean_variance(s, unet(xg, s.model_timesteps(I, 1, "cpu")), xg, I)
    grad, losses = guidance(xg, I, out.pred_x0)

    assert grad.dtype == torch.float64 and grad.shape == (1, 3, height, width)
    scale = expected.abs().max().item()
    assert scale > 0
    assert (grad - expected).abs().max().item() <= 1e-12 * scale
    assert losses["vgg"] == pytest.approx(expected_loss, rel=1e-13)


def test_a_max_pool_tie_moves_the_gradient_and_a_forced_winner_reproduces_it():
    """The parity check's tie variants (tests/vgg_ties.py): the window whose top two values are closest is found,
    forcing its runner-up to win changes the VGG gradient only around that window, by a jump far above rounding
    (a routing change), while the loss moves by no more than the gap allows; no forced window changes nothing."""
    from vgg_ties import forced_winners, near_ties
    from zecon_core.guidance import losses as L

    vgg = load_vgg(tiny_paths()["vgg"])
    g = torch.Generator().manual_seed(3)
    image = torch.rand(1, 3, 48, 80, generator=g) * 2 - 1
    target = vgg(torch.rand(1, 3, 48, 80, generator=g) * 2 - 1)

    def grad_and_loss():
        x = image.clone().requires_grad_()
        loss = L.vgg_perceptual(vgg(x), target).sum()
        return torch.autograd.grad(loss, x)[0], loss.item()

    # the closest pair in the whole layer: rel just above its gap
    everything = near_ties(vgg, image, rel=1.0)
    assert len(everything) > 1000
    with torch.no_grad():
        seen = {}
        h = vgg.features[4].register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0]))
        vgg(image)
        h.remove()
    act = seen["x"]
    ties = near_ties(vgg, image, rel=1e-4)
    assert 0 < len(ties) < len(everything)
    b, c, y, x = ties[0]
    window = act[b, c, y // 2 * 2:y // 2 * 2 + 2, x // 2 * 2:x // 2 * 2 + 2]
    gap = (window.max() - act[b, c, y, x]).item()
    assert 0 <= gap <= 1e-4 * act.abs().max().item()

    plain, plain_loss = grad_and_loss()
    with forced_winners(vgg, [(b, c, y, x)]):
        flipped, flipped_loss = grad_and_loss()
    diff = (flipped - plain).abs()[0].amax(0)
    assert diff.max() > 1e-4 * plain.abs().max()            # a routing jump, far above float32 rounding
    ys, xs = diff.nonzero(as_tuple=True)
    y0, x0 = y // 2 * 2, x // 2 * 2
    assert ys.min() >= y0 - 2 and ys.max() <= y0 + 3 and xs.min() >= x0 - 2 and xs.max() <= x0 + 3
    assert abs(flipped_loss - plain_loss) <= 10 * gap * act.abs().max().item() + 1e-6 * abs(plain_loss)
    with forced_winners(vgg, []):
        assert torch.equal(grad_and_loss()[0], plain)
