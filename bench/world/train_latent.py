"""Train the miniature latent model (``bench.world.latent_model``) on the world, on one CPU thread.

    python -m bench.world.train_latent vae    # KL VAE (8 min)
    python -m bench.world.train_latent clip   # the frozen seeded text encoder (seconds)
    python -m bench.world.train_latent unet   # SD15-config UNet on the VAE's latents (30 min)
    python -m bench.world.train_latent taesd  # TAESD decoder + encoder on the VAE's latents (25 min)

(times on one thread of a 2-core machine at load average 5-14.) Every stage is seeded (``--seed``) and pins
the thread count, so a rerun should give the same file (not re-run to check here); the weights go to
``bench/world/weights/`` (``--out`` elsewhere) as fp16 safetensors, recorded in its manifest.json.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.world import latent_model as lm
from bench.world import manifest
from bench.world.world import caption, render, sample_scenes

DATA_SEED = 1000          # world pictures of the training sets: sample_scenes(n, DATA_SEED + stage offset)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def pictures(n: int, seed: int):
    scenes = sample_scenes(n, seed)
    return scenes, render(scenes, lm.IMAGE_SIZE)


def cosine_lr(opt, step: int, steps: int, lr: float, warmup: int = 50) -> None:
    f = min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / steps))
    for group in opt.param_groups:
        group["lr"] = lr * f


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of pictures in [-1, 1] (peak 2)."""
    return float(10 * torch.log10(4 / (a - b).pow(2).mean()))


# ------------------------------------------------------------------ VAE
def kl_moments(vae, x):
    mean, logvar = vae.quant_conv(vae.encoder(x)).chunk(2, dim=1)
    return mean, logvar.clamp(-30, 20)


def rescale_latents_(vae, x: torch.Tensor) -> dict:
    """Fold a per-channel shift m and one scale k into quant_conv / post_quant_conv so the latent means
    of ``x`` have mean 0 and std 1 / SCALE_FACTOR (SD1.5 latents are about unit variance after the scale).
    The decoder sees the same input: post_quant_conv(k (z - m)) with weights W / k and bias b + W m."""
    with torch.no_grad():
        mean, _ = kl_moments(vae, x)
        m = mean.mean(dim=(0, 2, 3))
        k = (1 / lm.SCALE_FACTOR) / float((mean - m.view(1, -1, 1, 1)).std())
        q, p = vae.quant_conv, vae.post_quant_conv
        c = m.numel()
        q.weight[:c] *= k
        q.bias[:c] = (q.bias[:c] - m) * k
        q.bias[c:] += 2 * math.log(k)
        w = p.weight.clone()                     # [out, in, 1, 1]
        p.bias += (w[:, :, 0, 0] @ m)
        p.weight.copy_(w / k)
    return {"shift": m.tolist(), "scale": k}


def train_vae(args) -> dict:
    vae = lm.fill_random_(lm.vae_module(), args.seed)
    opt = torch.optim.Adam(vae.parameters(), lr=args.lr)
    g = torch.Generator().manual_seed(args.seed)
    for step in range(args.steps):
        _, x = pictures(args.batch, DATA_SEED + step)
        cosine_lr(opt, step, args.steps, args.lr)
        mean, logvar = kl_moments(vae, x)
        z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=g)
        rec = vae.decoder(vae.post_quant_conv(z))
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()
        loss = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x) + args.kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 25 == 0 or step == args.steps - 1:
            log(f"vae step {step} loss {loss.item():.4f} kl {kl.item():.3f} psnr(sampled) {psnr(rec.detach(), x):.2f}")
    _, held = pictures(256, DATA_SEED - 1)
    stats = rescale_latents_(vae, held)
    with torch.no_grad():
        mean, _ = kl_moments(vae, held)
        rec = vae.decoder(vae.post_quant_conv(mean))
    stats["held_out_psnr"] = psnr(rec, held)
    log(f"vae held-out psnr {stats['held_out_psnr']:.2f} dB, latent rescale {stats}")
    lm.save(vae.state_dict(), Path(args.out) / lm.FILES["vae"], lm.VAE_PARAMS)
    return stats


# ------------------------------------------------------------------ latents of the world
def model_latents(vae, x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
    """Model-space latents (SCALE_FACTOR x the KL latent; a posterior sample with ``g``, else the mean)."""
    with torch.no_grad():
        mean, logvar = kl_moments(vae, x)
        z = mean if g is None else mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=g)
    return z * lm.SCALE_FACTOR


def world_latents(vae, n: int, seed: int, chunk: int = 128):
    """(scenes, pictures, mean latents, posterior std) of ``n`` world pictures (model space)."""
    scenes, x = pictures(n, seed)
    means, stds = [], []
    with torch.no_grad():
        for i in range(0, n, chunk):
            mean, logvar = kl_moments(vae, x[i:i + chunk])
            means.append(mean * lm.SCALE_FACTOR)
            stds.append(torch.exp(0.5 * logvar) * lm.SCALE_FACTOR)
    return scenes, x, torch.cat(means), torch.cat(stds)


def load_vae_module(folder):
    sd, config = lm.read(Path(folder) / lm.FILES["vae"])
    vae = lm.vae_module(config)
    vae.load_state_dict(sd)
    return vae.requires_grad_(False)


# ------------------------------------------------------------------ CLIP
def write_clip(args) -> dict:
    clip = lm.clip_object(seed=args.seed)
    sd = clip.cond_stage_model.clip_l.transformer.state_dict()    # "text_model.*", as a CLIP-L file
    lm.save(sd, Path(args.out) / lm.FILES["clip"], lm.CLIP_CONFIG)
    return {}


def caption_table(clip_path) -> tuple[dict, torch.Tensor]:
    """{caption: cond [77, 64]} for every caption of the world, and the empty prompt's cond."""
    from bench.world.world import COLOURS, SHAPES, TEXTURES
    clip = lm.load_clip(clip_path)
    texts = [f"a {t} {c} {s}" for t in TEXTURES for c in COLOURS for s in SHAPES]
    conds = lm.encode_captions(clip, texts + [""])
    return dict(zip(texts, conds[:-1])), conds[-1]


# ------------------------------------------------------------------ UNet
def alphas_cumprod():
    """SD1.5's discrete schedule as ComfyUI's model_sampling holds it (linear 0.00085..0.012, 1000 steps)."""
    mc = lm.unet_model_config()
    sigmas = mc.get_model({}).model_sampling.sigmas.float()     # sigma_t = sqrt((1 - abar) / abar)
    return 1 / (1 + sigmas ** 2)


def train_unet(args) -> dict:
    vae = load_vae_module(args.out)
    table, empty = caption_table(Path(args.out) / lm.FILES["clip"])
    log(f"encoding {args.n_data} world pictures")
    scenes, _, means, stds = world_latents(vae, args.n_data, DATA_SEED + 100_000)
    conds = torch.stack([table[caption(s)] for s in scenes])
    del vae
    base = lm.unet_model_config().get_model({})
    unet = lm.fill_random_(base.diffusion_model, args.seed)
    ac = alphas_cumprod()
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(args.seed)
    ema = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    t0 = time.time()
    for step in range(args.steps):
        idx = torch.randint(0, args.n_data, (args.batch,), generator=g)
        z0 = means[idx] + stds[idx] * torch.randn(means[idx].shape, generator=g)
        cond = conds[idx].clone()
        drop = torch.rand(args.batch, generator=g) < args.uncond
        cond[drop] = empty
        t = torch.randint(0, ac.numel(), (args.batch,), generator=g)
        eps = torch.randn(z0.shape, generator=g)
        a = ac[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * z0 + (1 - a).sqrt() * eps
        cosine_lr(opt, step, args.steps, args.lr)
        loss = F.mse_loss(unet(xt, timesteps=t.float(), context=cond), eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            d = min(args.ema, (1 + step) / (10 + step))
            for k, v in unet.state_dict().items():
                ema[k].mul_(d).add_(v.detach(), alpha=1 - d)
        if step % 50 == 0 or step == args.steps - 1:
            log(f"unet step {step} loss {loss.item():.4f} ({time.time() - t0:.0f} s)")
    lm.save(ema, Path(args.out) / lm.FILES["unet"], lm.UNET_CONFIG)
    return {"final_loss": loss.item()}


# ------------------------------------------------------------------ TAESD
def crops(x: torch.Tensor, z: torch.Tensor, size: int, g: torch.Generator):
    """The same random window of every picture and its latent: ``size`` x ``size`` latents (8x the pixels)."""
    n = z.shape[-1] - size + 1
    i, j = (int(v) for v in torch.randint(0, n, (2,), generator=g))
    return x[..., 8 * i:8 * (i + size), 8 * j:8 * (j + size)], z[..., i:i + size, j:j + size]


def train_taesd(args) -> dict:
    """TAESD decoder: model-space latent -> picture in [0, 1] (trained on the world's ground truth, from
    posterior samples); TAESD encoder: picture in [0, 1] -> the VAE's mean latent (model space). Both
    fully convolutional, trained on ``--crop`` x ``--crop`` latent windows (8x the pixels) to save CPU."""
    vae = load_vae_module(args.out)
    enc, dec = lm.taesd_parts()
    lm.fill_random_(enc, args.seed)
    lm.fill_random_(dec, args.seed + 1)
    opt = torch.optim.Adam(list(enc.parameters()) + list(dec.parameters()), lr=args.lr)
    g = torch.Generator().manual_seed(args.seed)
    for step in range(args.steps):
        _, x = pictures(args.batch, DATA_SEED + 200_000 + step)
        z, z_mean = model_latents(vae, x, g), model_latents(vae, x)
        xc, zc = crops(x, torch.cat([z, z_mean], 1), args.crop, g)
        z, z_mean = zc.chunk(2, 1)
        cosine_lr(opt, step, args.steps, args.lr)
        rec = dec(z).sub(0.5).mul(2)
        loss_dec = F.mse_loss(rec, xc) + 0.5 * F.l1_loss(rec, xc)
        loss_enc = F.mse_loss(enc(xc * 0.5 + 0.5), z_mean)
        opt.zero_grad(set_to_none=True)
        (loss_dec + loss_enc).backward()
        opt.step()
        if step % 25 == 0 or step == args.steps - 1:
            log(f"taesd step {step} dec {loss_dec.item():.4f} (psnr {psnr(rec.detach(), xc):.2f}) "
                f"enc {loss_enc.item():.4f}")
    _, held = pictures(32, DATA_SEED - 2)
    with torch.no_grad():
        zh = model_latents(vae, held)
        stats = {"decoder_psnr": psnr(dec(zh).sub(0.5).mul(2), held),
                 "encoder_latent_mse": float(F.mse_loss(enc(held * 0.5 + 0.5), zh)),
                 "roundtrip_psnr": psnr(dec(enc(held * 0.5 + 0.5)).sub(0.5).mul(2), held)}
    log(f"taesd held-out {stats}")
    out = Path(args.out)
    lm.save(dec.state_dict(), out / lm.FILES["taesd_decoder"])
    vae_sd = {"taesd_encoder." + k: v for k, v in enc.state_dict().items()}
    vae_sd.update({"taesd_decoder." + k: v for k, v in dec.state_dict().items()})
    vae_sd["vae_scale"] = torch.tensor(lm.SCALE_FACTOR)
    vae_sd["vae_shift"] = torch.tensor(0.0)
    lm.save(vae_sd, out / lm.FILES["taesd_vae"])
    return stats


STAGES = {
    "vae": (train_vae, {"steps": 360, "batch": 16, "lr": 2e-3, "kl": 1e-6}),
    "clip": (write_clip, {}),
    "unet": (train_unet, {"steps": 900, "batch": 32, "lr": 1e-3, "n_data": 4096, "uncond": 0.1, "ema": 0.995}),
    "taesd": (train_taesd, {"steps": 300, "batch": 16, "lr": 1e-3, "crop": 4}),
}

STAGE_FILES = {"vae": ("vae",), "clip": ("clip",), "unet": ("unet",), "taesd": ("taesd_decoder", "taesd_vae")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=sorted(STAGES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(lm.WEIGHTS))
    parser.add_argument("--threads", type=int, default=1)
    for key in ("steps", "batch", "n_data", "crop"):
        parser.add_argument(f"--{key.replace('_', '-')}", dest=key, type=int, default=None)
    for key in ("lr", "kl", "uncond", "ema"):
        parser.add_argument(f"--{key}", type=float, default=None)
    args = parser.parse_args(argv)
    fn, defaults = STAGES[args.stage]
    for k, v in defaults.items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    torch.set_num_threads(args.threads)
    lm.setup_comfy()
    t0 = time.time()
    stats = fn(args)
    log(f"{args.stage} done in {time.time() - t0:.0f} s: {stats}")
    if Path(args.out).resolve() == manifest.WEIGHTS_DIR.resolve():
        made = [manifest.WEIGHTS_DIR / lm.FILES[part] for part in STAGE_FILES[args.stage]]
        manifest.record(made, manifest.command_line("bench.world.train_latent", argv))


if __name__ == "__main__":
    main()
