"""Train the grader (``bench.world.grader.Grader``) on world pictures.

    python -m bench.world.train_grader [--steps 600] [--batch 64] [--seed 0]

Made robust to what diffusion outputs look like: pictures rendered at 32 or 64 px, then Gaussian
noise (sd up to 0.15), a blur (probability 1/2), a brightness/contrast jitter of up to 10 % and
a shift of the background grey. Cross-entropy summed over the three heads; one CPU thread.
"""
from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from bench.world import manifest
from bench.world.grader import HEADS, Grader
from bench.world.world import labels, render, sample_scenes


def degrade(pictures: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    b = pictures.shape[0]
    rand = lambda *shape: torch.rand(*shape, generator=gen)  # noqa: E731
    blur = F.avg_pool2d(F.pad(pictures, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    pictures = torch.where(rand(b, 1, 1, 1) < 0.5, 0.5 * pictures + 0.5 * blur, pictures)
    pictures = pictures * (1 + 0.2 * (rand(b, 1, 1, 1) - 0.5)) + 0.2 * (rand(b, 1, 1, 1) - 0.5)
    pictures = pictures + 0.15 * rand(b, 1, 1, 1) * torch.randn(pictures.shape, generator=gen)
    return pictures.clamp(-1, 1)


def accuracy(model: Grader, n: int = 1000, seed: int = 321) -> dict[str, float]:
    scenes = sample_scenes(n, seed)
    truth = labels(scenes)
    with torch.no_grad():
        logits = model(render(scenes, 32))
    return {name: float((logits[name].argmax(1) == truth[name]).float().mean()) for name in HEADS}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(manifest.GRADER))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    model = Grader().train()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5 * (1 + math.cos(math.pi * k / args.steps)))
    gen = torch.Generator().manual_seed(args.seed)
    start, running = time.time(), None
    print(f"grader {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters", flush=True)
    for step in range(args.steps):
        scenes = sample_scenes(args.batch, seed=args.seed * 1_000_003 + 9_000_000 + step)
        pictures = render(scenes, 64 if step % 2 else 32)
        logits = model(degrade(pictures, gen))
        truth = labels(scenes)
        loss = sum(F.cross_entropy(logits[name], truth[name]) for name in HEADS)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step} loss {running:.4f} {time.time() - start:.0f}s", flush=True)
    model.eval()
    print("accuracy on clean 32-px pictures", accuracy(model), flush=True)
    save_file({k: v.detach().half().contiguous() for k, v in model.state_dict().items()}, args.out)
    if args.out == str(manifest.GRADER):
        manifest.record([manifest.GRADER], manifest.command_line("bench.world.train_grader", argv))
    print(f"saved {args.out} after {time.time() - start:.0f}s", flush=True)


if __name__ == "__main__":
    main()
