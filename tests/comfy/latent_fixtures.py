"""Tiny SD models and inputs for the latent-backbone tests (in-process ComfyUI)."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch


def _sd15_model(seed: int):
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models as sm
    cfg = dict(sm.SD15.unet_config)
    cfg.update(model_channels=32, in_channels=4, out_channels=4, num_res_blocks=[1, 1], channel_mult=[1, 2],
               transformer_depth=[1, 1], transformer_depth_output=[1, 1, 1, 1], transformer_depth_middle=1,
               context_dim=64, num_head_channels=-1, num_heads=2, image_size=32, use_spatial_transformer=True,
               legacy=False, dims=2, adm_in_channels=None, num_classes=None, use_temporal_resblock=False)
    g = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        m = sm.SD15(cfg).get_model({})
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
        return comfy.model_patcher.ModelPatcher(m, load_device=mm.get_torch_device(),
                                                offload_device=mm.unet_offload_device())


def sd15_bundle(seed: int = 0, size: int = 16, batch: int = 1):
    import comfy.samplers
    g = torch.Generator().manual_seed(seed + 100)
    model = _sd15_model(seed)
    with torch.inference_mode():
        pos = [[torch.randn(1, 77, 64, generator=g), {}]]
        neg = [[torch.randn(1, 77, 64, generator=g), {}]]
        source = torch.randn(batch, 4, size, size, generator=g)
        sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", 6)[3:]
    return SimpleNamespace(model=model, positive=pos, negative=neg, source=source, sigmas=sigmas)


def write_taesd_decoders(folder: Path) -> dict[str, Path]:
    from comfy.taesd.taesd import Decoder
    from safetensors.torch import save_file
    out = {}
    for i, name in enumerate(("taesd_decoder", "taesdxl_decoder")):
        g = torch.Generator().manual_seed(i)
        dec = Decoder(4)
        sd = {k: (torch.randn(v.shape, generator=g) * 0.05).contiguous() for k, v in dec.state_dict().items()}
        path = Path(folder) / f"{name}.safetensors"
        save_file(sd, str(path))
        out[name] = path
    return out
