"""Train the miniature latent models (``bench.world.latent_model``, ``bench.world.flow_model``) on the world,
on one CPU thread.

    python -m bench.world.train_latent vae    # KL VAE (8 min)
    python -m bench.world.train_latent clip   # the frozen seeded text encoder (seconds)
    python -m bench.world.train_latent unet   # SD15-config UNet on the VAE's latents (30 min)
    python -m bench.world.train_latent taesd  # TAESD decoder + encoder on the VAE's latents (25 min)
    python -m bench.world.train_latent flow_vae  # 16-channel KL VAE for the flow model, warm-started from vae (4 min)
    python -m bench.world.train_latent flow      # SD3-config MMDiT (rectified flow) on its latents (7 min)

(times on one thread of a 2-core machine at load average 5-14; the flow stages at about 3.) Every stage is seeded (``--seed``) and pins
the thread count, so a rerun should give the same file (checked for flow_vae and flow: rerun into another
--out, same SHA256; the SD stages were not re-run); the weights go to
``bench/world/weights/`` (``--out`` elsewhere) as fp16 safetensors, recorded in its manifest.json.
"""
from __future__ import annotations

import argparse
import functools
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.world import flow_model as fm
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


def rescale_latents_(vae, x: torch.Tensor, scale: float = lm.SCALE_FACTOR, shift: float = 0.0) -> dict:
    """Fold a per-channel shift m and one scale k into quant_conv / post_quant_conv so the latent means
    of ``x`` have mean ``shift`` and std 1 / ``scale`` (the family's latent format (z - shift) * scale then
    makes them about unit variance, as for the real VAEs). The decoder sees the same input:
    z' = k (z - m) + shift, post_quant_conv(z') with weights W / k and bias b + W (m - shift / k)."""
    with torch.no_grad():
        mean, _ = kl_moments(vae, x)
        m = mean.mean(dim=(0, 2, 3))
        k = (1 / scale) / float((mean - m.view(1, -1, 1, 1)).std())
        q, p = vae.quant_conv, vae.post_quant_conv
        c = m.numel()
        q.weight[:c] *= k
        q.bias[:c] = (q.bias[:c] - m) * k + shift
        q.bias[c:] += 2 * math.log(k)
        w = p.weight.clone()                     # [out, in, 1, 1]
        p.bias += (w[:, :, 0, 0] @ (m - shift / k))
        p.weight.copy_(w / k)
    return {"shift": m.tolist(), "scale": k}


@dataclass(frozen=True)
class Space:
    """A latent model's VAE: its parameters, file and the family's latent format (model = (z - shift) * scale)."""
    params: dict
    file: str
    scale: float
    shift: float = 0.0


SD = Space(lm.VAE_PARAMS, lm.FILES["vae"], lm.SCALE_FACTOR)
FLOW = Space(fm.VAE_PARAMS, fm.FILES["flow_vae"], fm.SCALE_FACTOR, fm.SHIFT_FACTOR)


def warm_start_(module, folder, file: str) -> int:
    """Copy every tensor of the trained ``file`` whose name and shape ``module`` shares; their count."""
    path = Path(folder) / file
    if not path.exists():
        raise FileNotFoundError(f"{path}: the warm start needs it (train that stage first, or copy it to --out)")
    sd, _ = lm.read(path)
    own = module.state_dict()
    same = {k: v for k, v in sd.items() if k in own and own[k].shape == v.shape}
    module.load_state_dict(same, strict=False)
    return len(same)


def train_vae(args, space: Space = SD) -> dict:
    vae = lm.fill_random_(lm.vae_module(space.params), args.seed)
    if space is not SD:      # the SD VAE's trunk (same widths; only the 4 <-> 16 channel ends differ)
        log(f"warm start: {warm_start_(vae, args.out, SD.file)} tensors of {SD.file}")
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
    stats = rescale_latents_(vae, held, space.scale, space.shift)
    with torch.no_grad():
        mean, _ = kl_moments(vae, held)
        rec = vae.decoder(vae.post_quant_conv(mean))
    stats["held_out_psnr"] = psnr(rec, held)
    log(f"vae held-out psnr {stats['held_out_psnr']:.2f} dB, latent rescale {stats}")
    lm.save(vae.state_dict(), Path(args.out) / space.file, space.params)
    return stats


# ------------------------------------------------------------------ latents of the world
def model_latents(vae, x: torch.Tensor, g: torch.Generator | None = None) -> torch.Tensor:
    """Model-space latents (SCALE_FACTOR x the KL latent; a posterior sample with ``g``, else the mean)."""
    with torch.no_grad():
        mean, logvar = kl_moments(vae, x)
        z = mean if g is None else mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=g)
    return z * lm.SCALE_FACTOR


def world_latents(vae, n: int, seed: int, chunk: int = 128, space: Space = SD):
    """(scenes, pictures, mean latents, posterior std) of ``n`` world pictures (model space of ``space``)."""
    scenes, x = pictures(n, seed)
    means, stds = [], []
    with torch.no_grad():
        for i in range(0, n, chunk):
            mean, logvar = kl_moments(vae, x[i:i + chunk])
            means.append((mean - space.shift) * space.scale)
            stds.append(torch.exp(0.5 * logvar) * space.scale)
    return scenes, x, torch.cat(means), torch.cat(stds)


def load_vae_module(folder, file: str = lm.FILES["vae"]):
    sd, config = lm.read(Path(folder) / file)
    vae = lm.vae_module(config)
    vae.load_state_dict(sd)
    return vae.requires_grad_(False)


# ------------------------------------------------------------------ CLIP
def write_clip(args) -> dict:
    clip = lm.clip_object(seed=args.seed)
    sd = clip.cond_stage_model.clip_l.transformer.state_dict()    # "text_model.*", as a CLIP-L file
    lm.save(sd, Path(args.out) / lm.FILES["clip"], lm.CLIP_CONFIG)
    return {}


def caption_table(clip_path, pooled: bool = False) -> tuple[dict, torch.Tensor]:
    """{caption: cond [77, 64]} for every caption of the world, and the empty prompt's cond; with
    ``pooled`` each entry is (cond, pooled_output [64])."""
    from bench.world.world import COLOURS, SHAPES, TEXTURES
    clip = lm.load_clip(clip_path)
    texts = [f"a {t} {c} {s}" for t in TEXTURES for c in COLOURS for s in SHAPES]
    if not pooled:
        conds = lm.encode_captions(clip, texts + [""])
        return dict(zip(texts, conds[:-1])), conds[-1]
    conds, pools = lm.encode_captions(clip, texts + [""], pooled=True)
    entries = list(zip(conds, pools))
    return dict(zip(texts, entries[:-1])), entries[-1]


def descend_(opt, loss: torch.Tensor, module, ema: dict, step: int, decay: float) -> None:
    """One clipped optimiser step on ``loss`` (gradient norm <= 1), then the EMA of ``module``'s weights."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
    opt.step()
    ema_update_(ema, module, step, decay)


def ema_update_(ema: dict, module, step: int, decay: float) -> None:
    """EMA of ``module``'s weights with warm-up (decay min(decay, (1 + step) / (10 + step)))."""
    with torch.no_grad():
        d = min(decay, (1 + step) / (10 + step))
        for k, v in module.state_dict().items():
            ema[k].mul_(d).add_(v.detach(), alpha=1 - d)


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
        descend_(opt, loss, unet, ema, step, args.ema)
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


# ------------------------------------------------------------------ flow MMDiT
def flow_times(n: int, g: torch.Generator, shift: float = 3.0) -> torch.Tensor:
    """Training times t in (0, 1): half uniform, half through SD3's shift (t' = s t / (1 + (s - 1) t), the
    time shift of ComfyUI's CONST sampling with shift 3), which puts the sampler's high-noise steps denser."""
    u = torch.rand(n, generator=g).clamp(1e-3, 1 - 1e-3)
    shifted = shift * u / (1 + (shift - 1) * u)
    return torch.where(torch.arange(n) % 2 == 0, u, shifted)


def flow_loss(dit, z0: torch.Tensor, cond, pooled, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Rectified flow as ComfyUI's CONST model_sampling reads the model: x_t = (1 - t) x0 + t noise at
    timestep 1000 t, target v = noise - x0 (denoised = x_t - t v)."""
    tt = t.view(-1, 1, 1, 1)
    xt = (1 - tt) * z0 + tt * noise
    return F.mse_loss(dit(xt, timesteps=t * 1000, context=cond, y=pooled), noise - z0)


def train_flow(args) -> dict:
    vae = load_vae_module(args.out, FLOW.file)
    table, (empty, empty_pool) = caption_table(Path(args.out) / lm.FILES["clip"], pooled=True)
    log(f"encoding {args.n_data} world pictures")
    scenes, _, means, stds = world_latents(vae, args.n_data, DATA_SEED + 300_000, space=FLOW)
    log(f"model-space latents: mean {float(means.mean()):.3f} std {float(means.std()):.3f}")
    conds = torch.stack([table[caption(s)][0] for s in scenes])
    pools = torch.stack([table[caption(s)][1] for s in scenes])
    del vae
    base = fm.dit_model_config().get_model({})
    dit = lm.fill_random_(base.diffusion_model, args.seed)
    log(f"MMDiT: {sum(p.numel() for p in dit.parameters()) / 1e6:.2f} M parameters")
    opt = torch.optim.AdamW(dit.parameters(), lr=args.lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(args.seed)
    ema = {k: v.detach().clone() for k, v in dit.state_dict().items()}
    t0 = time.time()
    for step in range(args.steps):
        idx = torch.randint(0, args.n_data, (args.batch,), generator=g)
        z0 = means[idx] + stds[idx] * torch.randn(means[idx].shape, generator=g)
        cond, pooled = conds[idx].clone(), pools[idx].clone()
        drop = torch.rand(args.batch, generator=g) < args.uncond
        cond[drop], pooled[drop] = empty, empty_pool
        t = flow_times(args.batch, g)
        cosine_lr(opt, step, args.steps, args.lr)
        loss = flow_loss(dit, z0, cond, pooled, t, torch.randn(z0.shape, generator=g))
        descend_(opt, loss, dit, ema, step, args.ema)
        if step % 50 == 0 or step == args.steps - 1:
            log(f"flow step {step} loss {loss.item():.4f} ({time.time() - t0:.0f} s)")
    lm.save(ema, Path(args.out) / fm.FILES["flow_dit"], fm.DIT_CONFIG)
    return {"final_loss": loss.item()}


STAGES = {
    "vae": (train_vae, {"steps": 360, "batch": 16, "lr": 2e-3, "kl": 1e-6}),
    "clip": (write_clip, {}),
    "unet": (train_unet, {"steps": 900, "batch": 32, "lr": 1e-3, "n_data": 4096, "uncond": 0.1, "ema": 0.995}),
    "taesd": (train_taesd, {"steps": 300, "batch": 16, "lr": 1e-3, "crop": 4}),
    "flow_vae": (functools.partial(train_vae, space=FLOW), {"steps": 300, "batch": 16, "lr": 1e-3, "kl": 1e-6}),
    "flow": (train_flow, {"steps": 3000, "batch": 32, "lr": 1e-3, "n_data": 4096, "uncond": 0.1, "ema": 0.998}),
}

STAGE_FILES = {"vae": ("vae",), "clip": ("clip",), "unet": ("unet",), "taesd": ("taesd_decoder", "taesd_vae"),
               "flow_vae": ("flow_vae",), "flow": ("flow_dit",)}


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
        made = [manifest.WEIGHTS_DIR / {**lm.FILES, **fm.FILES}[part] for part in STAGE_FILES[args.stage]]
        manifest.record(made, manifest.command_line("bench.world.train_latent", argv))


if __name__ == "__main__":
    main()
