"""Train the pixel miniature model: the pack's ADM ``UNetModel`` on 32-px world pictures.

    python -m bench.world.train_unet [--steps 300] [--batch 24] [--t-max 520] [--seed 0]

Unconditional, the original's linear 1000-step schedule (``zc.Schedule``), learned variance
(output [eps, v]) trained with improved DDPM's hybrid loss L_simple + L_vlb (Nichol & Dhariwal
2021, eq. 16; the variance gets its gradient through L_vlb only, the mean through L_simple).
Timesteps are drawn from [0, t_max): restyling with respacing 50 and skip 25 only ever uses
t < 500 (the inversion climbs to index 24, t = 489), so the training is spent there; the model
cannot generate from pure noise. Fresh pictures every step (``sample_scenes(batch, seed + step)``); an EMA of the weights is
saved as fp16 safetensors and recorded in the manifest. One CPU thread (pinned: training is
bitwise reproducible for a fixed seed and thread count).
"""
from __future__ import annotations

import argparse
import copy
import math
import time

import torch
from safetensors.torch import load_file, save_file

import zecon_core as zc
from bench.world import manifest
from bench.world.world import render, sample_scenes

CONFIG = zc.ADMConfig(model_channels=32, num_res_blocks=2, channel_mult=(1, 2, 2, 2), attention_ds=(8,),
                      num_head_channels=64, out_channels=6)
IMAGE_SIZE = 32


def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) elementwise, in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _std_normal_cdf(x):
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def discretized_gaussian_nll(x, mean, log_scale):
    """-log p(x) of 8-bit pixels x in [-1, 1] under a discretised Gaussian (DDPM's decoder L_0)."""
    centred = x - mean
    inv_std = torch.exp(-log_scale)
    cdf_plus = _std_normal_cdf(inv_std * (centred + 1.0 / 255))
    cdf_min = _std_normal_cdf(inv_std * (centred - 1.0 / 255))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    log_probs = torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))
    return -log_probs


def hybrid_loss(schedule: zc.Schedule, output: torch.Tensor, x0, xt, t, noise) -> torch.Tensor:
    """L_simple (eps MSE) + L_vlb (bits per dim, mean detached), per item averaged."""
    c = x0.shape[1]
    eps, v = output[:, :c], output[:, c:]
    mse = ((eps - noise) ** 2).mean(dim=(1, 2, 3))
    frozen = torch.cat([eps.detach(), v], dim=1)
    coef = lambda name: schedule.coef(name, t, x0)  # noqa: E731
    true_mean = coef("posterior_mean_coef1") * x0 + coef("posterior_mean_coef2") * xt
    true_logvar = coef("posterior_log_variance_clipped")
    frac = (frozen[:, c:] + 1) / 2
    logvar = frac * coef("log_betas") + (1 - frac) * true_logvar
    pred_x0 = coef("sqrt_recip_alphas_cumprod") * xt - coef("sqrt_recipm1_alphas_cumprod") * frozen[:, :c]
    mean = coef("posterior_mean_coef1") * pred_x0 + coef("posterior_mean_coef2") * xt
    kl = normal_kl(true_mean, true_logvar, mean, logvar).mean(dim=(1, 2, 3)) / math.log(2.0)
    nll = discretized_gaussian_nll(x0, mean, 0.5 * logvar).mean(dim=(1, 2, 3)) / math.log(2.0)
    vb = torch.where(t == 0, nll, kl)
    return (mse + vb).mean()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=24)
    parser.add_argument("--t-max", type=int, default=520, help="timesteps drawn from [0, t_max) of 1000")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--ema", type=float, default=0.99)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(manifest.UNET))
    parser.add_argument("--init", help="continue from these weights (safetensors) instead of a fresh model")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    schedule = zc.Schedule.create("1000")
    model = zc.UNetModel(CONFIG).train()
    if args.init:
        model.load_state_dict({k: v.float() for k, v in load_file(args.init).items()})
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    warmup = max(1, args.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: min(1.0, (k + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * k / args.steps)))
    gen = torch.Generator().manual_seed(args.seed)
    start, running = time.time(), None
    print(f"UNet {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters", flush=True)
    for step in range(args.steps):
        x0 = render(sample_scenes(args.batch, seed=args.seed * 1_000_003 + step), IMAGE_SIZE)
        t = torch.randint(0, min(args.t_max, schedule.num_steps), (args.batch,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        xt = schedule.coef("sqrt_alphas_cumprod", t, x0) * x0 + schedule.coef("sqrt_one_minus_alphas_cumprod", t, x0) * noise
        loss = hybrid_loss(schedule, model(xt, schedule.model_timesteps(t, args.batch, "cpu")), x0, xt, t, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - args.ema)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step} loss {running:.4f} {time.time() - start:.0f}s", flush=True)
    sd = {k: v.detach().half().contiguous() for k, v in ema.state_dict().items()}
    save_file(sd, args.out, metadata={"format": "guided-diffusion ADM UNet", "image_size": str(IMAGE_SIZE),
                                      "trained_timesteps": f"0..{args.t_max - 1} of 1000"})
    if args.out == str(manifest.UNET):
        manifest.record([manifest.UNET], manifest.command_line("bench.world.train_unet", argv))
    print(f"saved {args.out} after {time.time() - start:.0f}s", flush=True)


if __name__ == "__main__":
    main()
