"""The two VGG19 layers of ZeCon's perceptual loss: conv1_1 and conv2_1, after ReLU.

The original runs all of torchvision's ``vgg19().features`` and keeps the
outputs of indices 0 and 5, which torchvision's in-place ReLUs overwrite with
their rectified values; here the network stops right after conv2_1's ReLU
and only layers 0, 2 and 5 are loaded (a 548 MB file yields 0.45 MB of weights).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from ..files.checkpoints import CheckpointError, load_state_dict

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_LAYERS = ("features.0", "features.2", "features.5")


class VGGFeatures(nn.Module):
    """VGG19 ``features[0:7]``; returns (relu(conv1_1), relu(conv2_1)) of an image in [-1, 1].

    The ImageNet normalisation is applied to the [-1, 1] input directly, without
    mapping it to [0, 1] first, as the original does.
    """

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2, 2),
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(),
        )

    def forward(self, x):
        f = self.features
        # the constants in x's own dtype, as torchvision's Normalize makes them: float32 constants
        # would put a 5e-8 relative error into a float64 evaluation
        mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device)[:, None, None]
        std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device)[:, None, None]
        x = (x - mean) / std
        conv1_1 = F.relu(f[0](x))
        conv2_1 = F.relu(f[5](f[4](F.relu(f[2](conv1_1)))))
        return conv1_1, conv2_1


def load_vgg(path: str | os.PathLike) -> VGGFeatures:
    """VGG layers from a torchvision ``vgg19`` state dict (full or only ``features.{0,2,5}``)."""
    sd = load_state_dict(path)
    wanted = {k: v for k, v in sd.items() if k.rsplit(".", 1)[0] in _LAYERS}
    missing = [f"{layer}.{p}" for layer in _LAYERS for p in ("weight", "bias") if f"{layer}.{p}" not in wanted]
    if missing:
        raise CheckpointError(
            f"{os.path.basename(path)} is not a torchvision VGG19 state dict (missing {', '.join(missing)})"
        )
    model = VGGFeatures()
    try:
        model.load_state_dict({k: v.float() for k, v in wanted.items()}, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{os.path.basename(path)}: VGG layer shapes do not match VGG19: {e}") from e
    return model.train(False).requires_grad_(False)


LAYERS_FILE = "vgg19_zecon_layers.safetensors"


def ensure_vgg(folder: str | os.PathLike, progress=None) -> VGGFeatures:
    """The VGG layers from ``folder``, fetching torchvision's VGG19 there on first use.

    After the first load the three layers are kept as ``vgg19_zecon_layers.safetensors``
    (450 KB), so later runs do not read the 548 MB file again.
    """
    from pathlib import Path

    from safetensors.torch import save_file

    from ..files.download import ensure_known_model

    folder = Path(folder)
    small = folder / LAYERS_FILE
    if small.is_file():
        return load_vgg(small)
    model = load_vgg(ensure_known_model("vgg19", folder, progress=progress))
    tmp = small.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp),
              metadata={"format": "pt", "source": "vgg19-dcbb9e9d.pth features.0/2/5"})
    os.replace(tmp, small)
    return model
