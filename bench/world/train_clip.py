"""Train the miniature CLIP: open_clip's ``CLIP`` classes at a custom size, on world pictures.

    python -m bench.world.train_clip [--steps 400] [--batch 32] [--seed 0]

ViT at 32 px (patch 8, width 128, 4 layers, 2 heads), text transformer width 64, 2 layers,
context 16, open_clip's BPE tokenizer, QuickGELU (the OpenAI layout the pack loads), 64-d
embeddings. Each step shows every picture three times, as the guidance will show them: whole,
as a global view (random rotation, scale, shift) and as a patch view (a random crop of 1-30 % of
the area, as the guidance's patch views), pooled to 32 px as ``ClipModel`` pools;
the loss is the image-to-caption cross-entropy over all 72 captions of the world (CLIP's
contrastive loss with every caption as a negative, Radford et al. 2021). Saved as fp16
safetensors (OpenAI key layout) with the model config JSON beside it; one CPU thread.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import time

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from bench.world import manifest
from bench.world.world import COLOURS, SHAPES, TEXTURES, Scene, caption, render, sample_scenes
from zecon_core.guidance.clip_model import OPENAI_MEAN, OPENAI_STD, pool_matrix

IMAGE_SIZE = 32
MODEL_CONFIG = {
    "embed_dim": 64,
    "quick_gelu": True,
    "vision_cfg": {"image_size": IMAGE_SIZE, "patch_size": 8, "width": 128, "layers": 4, "head_width": 64},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2},
}
ALL_CAPTIONS = [caption(Scene(s, t, c, 0.5, 0.5, 0.5, 0.5))
                for s, t, c in itertools.product(SHAPES, TEXTURES, COLOURS)]


def build_model():
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
    cfg = MODEL_CONFIG
    return CLIP(cfg["embed_dim"], CLIPVisionCfg(**cfg["vision_cfg"]), CLIPTextCfg(**cfg["text_cfg"]),
                quick_gelu=cfg["quick_gelu"])


def tokenizer():
    from open_clip.tokenizer import SimpleTokenizer
    return SimpleTokenizer(context_length=MODEL_CONFIG["text_cfg"]["context_length"])


def clip_input(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images of any size -> normalised 32-px CLIP input (as ``ClipModel.preprocess``)."""
    ph = pool_matrix(images.shape[-2], IMAGE_SIZE)
    pw = pool_matrix(images.shape[-1], IMAGE_SIZE)
    x = torch.einsum("ih,nchw,jw->ncij", ph, images, pw).add(1).div(2)
    return (x - torch.tensor(OPENAI_MEAN).view(3, 1, 1)) / torch.tensor(OPENAI_STD).view(3, 1, 1)


def _affine_views(pictures, scale, angle_deg, shift, gen) -> torch.Tensor:
    """32-px views by ``grid_sample``: output pixel u maps to input scale * R(angle) u + shift (border padding)."""
    b = pictures.shape[0]
    angle = (torch.rand(b, generator=gen) * 2 - 1) * math.radians(angle_deg)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, (b, 3, IMAGE_SIZE, IMAGE_SIZE), align_corners=False)
    return F.grid_sample(pictures, grid, mode="bilinear", padding_mode="border", align_corners=False)


def views(pictures: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each picture whole, as a global view and as a patch view: [3B, 3, 32, 32] CLIP input.

    Cheap stand-ins for the guidance's views (``zecon_core`` renders them at 128 px with
    perspective, too slow to train with on one thread): global = rotation up to 15 degrees,
    scale 0.85-1.1, shift up to 0.1; patch = a square crop of 1-30 % of the area, anywhere.
    """
    b = pictures.shape[0]
    glob = _affine_views(pictures, 0.85 + 0.25 * torch.rand(b, generator=gen), 15.0,
                         (torch.rand(b, 2, generator=gen) * 2 - 1) * 0.2, gen)
    side = torch.sqrt(0.01 + 0.29 * torch.rand(b, generator=gen))
    centre = (torch.rand(b, 2, generator=gen) * 2 - 1) * (1 - side)[:, None]
    patch = _affine_views(pictures, side, 0.0, centre, gen)
    return torch.cat([clip_input(pictures), clip_input(glob), clip_input(patch)])


def zero_shot(model, tokens, n=600, seed=123) -> dict[str, float]:
    """Zero-shot attribute accuracy on whole pictures: the best caption's attributes."""
    scenes = sample_scenes(n, seed)
    with torch.no_grad():
        text = F.normalize(model.encode_text(tokens), dim=-1)
        image = F.normalize(model.encode_image(clip_input(render(scenes, IMAGE_SIZE))), dim=-1)
    best = [ALL_CAPTIONS[k].split()[1:] for k in (image @ text.T).argmax(1).tolist()]
    return {name: sum(b[pos] == getattr(s, name) for b, s in zip(best, scenes)) / n
            for pos, name in ((0, "texture"), (1, "colour"), (2, "shape"))}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(manifest.CLIP))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    model = build_model().train()
    tokens = tokenizer()(ALL_CAPTIONS)
    index = {c: k for k, c in enumerate(ALL_CAPTIONS)}
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    warmup = max(1, args.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: min(1.0, (k + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * k / args.steps)))
    gen = torch.Generator().manual_seed(args.seed)
    start, running = time.time(), None
    print(f"CLIP {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters", flush=True)
    for step in range(args.steps):
        scenes = sample_scenes(args.batch, seed=args.seed * 1_000_003 + 7_000_000 + step)
        target = torch.tensor([index[caption(s)] for s in scenes]).repeat(3)
        image = F.normalize(model.encode_image(views(render(scenes, IMAGE_SIZE), gen)), dim=-1)
        text = F.normalize(model.encode_text(tokens), dim=-1)
        loss = F.cross_entropy(model.logit_scale.exp() * image @ text.T, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step} loss {running:.4f} {time.time() - start:.0f}s", flush=True)
    model.eval()
    print("zero-shot accuracy", zero_shot(model, tokens), flush=True)
    sd = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    save_file(sd, args.out, metadata={"format": "open_clip CLIP, OpenAI key layout"})
    config_path = manifest.CLIP_CONFIG if args.out == str(manifest.CLIP) else args.out.rsplit(".", 1)[0] + ".json"
    with open(config_path, "w") as f:
        json.dump({"model_cfg": MODEL_CONFIG, "preprocess_cfg": {"mean": OPENAI_MEAN, "std": OPENAI_STD}}, f, indent=2)
        f.write("\n")
    if args.out == str(manifest.CLIP):
        manifest.record([manifest.CLIP, manifest.CLIP_CONFIG], manifest.command_line("bench.world.train_clip", argv))
    print(f"saved {args.out} after {time.time() - start:.0f}s", flush=True)


if __name__ == "__main__":
    main()
