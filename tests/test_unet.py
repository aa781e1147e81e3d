"""UNet building blocks where no golden vector exists: convolutions with frozen weights."""

import pytest
import torch

from zecon_core.pixel.unet import Conv1d, Conv2d


def saved_tensor_count(fn) -> int:
    count = [0]

    def pack(t):
        count[0] += 1
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return count[0]


@pytest.mark.parametrize("make, shape", [
    (lambda: Conv2d(8, 16, 3, padding=1), (2, 8, 12, 10)),
    (lambda: Conv2d(8, 8, 3, stride=2, padding=1), (1, 8, 12, 12)),
    (lambda: Conv1d(8, 24, 1), (2, 8, 30)),
])
@pytest.mark.parametrize("autocast", [False, True])
def test_frozen_conv_saves_nothing_and_gives_torchs_values(make, shape, autocast):
    torch.manual_seed(0)
    ours = make().requires_grad_(False)
    plain = (torch.nn.Conv2d if isinstance(ours, Conv2d) else torch.nn.Conv1d)(
        ours.in_channels, ours.out_channels, ours.kernel_size, stride=ours.stride, padding=ours.padding)
    plain.load_state_dict(ours.state_dict())
    plain.requires_grad_(False)
    x = torch.randn(shape)
    results = {}
    for name, conv in (("ours", ours), ("plain", plain)):
        xx = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            y = conv(xx)
            results[name] = (y, torch.autograd.grad(y.float().square().sum(), xx)[0])
    assert torch.equal(results["ours"][0], results["plain"][0])
    assert torch.equal(results["ours"][1], results["plain"][1])
    assert results["ours"][1].dtype == x.dtype
    assert saved_tensor_count(lambda: ours(x.clone().requires_grad_())) == 0
    assert saved_tensor_count(lambda: plain(x.clone().requires_grad_())) > 0


def test_conv_with_trainable_weight_still_gets_its_gradient():
    conv = Conv2d(4, 4, 3, padding=1)
    x = torch.randn(1, 4, 8, 8, requires_grad=True)
    gx, gw = torch.autograd.grad(conv(x).square().sum(), (x, conv.weight))
    assert gx.shape == x.shape and gw.abs().sum() > 0
