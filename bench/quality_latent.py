"""The latent half of the quality benchmark: the ZeCon Guider on the miniature SD1.5-config model.

    python -m bench.quality_latent [--sources 24] [--seeds 0,1,2] [--settings all|NAME;NAME...] [--out DIR] [--grid PNG]
    python -m bench.quality_latent --merge DIR1/latent.json DIR2/latent.json ... --out DIR --plot PNG
    python -m bench.quality_latent --world flow ...   # the same on the miniature flow model (flow.json)

The edits are bench.quality's (``bench.world.metrics.make_edits``: alternately a texture and a colour
change of a world picture, the shape kept, with its ground truth), scored by ``bench.world.metrics.score``
through ``bench.quality.run_setting`` (the grader never guides), at 64 px. A run does what the
latent workflow does, in-process on ComfyUI's own objects (``tests/comfy/comfy_inprocess.py``):
VAE Encode (the KL VAE) -> ZeconLatentInversion (empty prompt, cfg 1) -> ZeconGuider (positive: the
target caption, negative: the empty prompt; CLIP style: target caption vs source caption) ->
SamplerCustomAdvanced (euler, DisableNoise) -> VAE Decode. The ComfyUI nodes' own ``execute`` run.

Loss weights: GuidanceConfig(vgg=0) (the guider's defaults: the paper's weights, VGG off) with the
latent guider's N / N_REF scale; ``SETTINGS`` change one thing each. Differences to the reference
setting (ZeCon weight 0) are paired over sources with bootstrap intervals (``bench.quality.table``).

``--world flow``: the same benchmark on the miniature rectified-flow model (``bench.world.flow_model``: ComfyUI's
SD3 config class, an MMDiT, its 16-channel KL VAE; CONDITIONING with the pooled output SD3 needs); results in
``flow.json`` / ``flow_table.md`` instead of ``latent.json`` / ``latent_table.md``.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "comfy"))

from bench.world import flow_model as fm                                  # noqa: E402
from bench.world import latent_model as lm                                # noqa: E402
from bench.world.metrics import METRICS, make_edits                       # noqa: E402
from bench.world.world import render                                      # noqa: E402

EDIT_SEED = 2024           # bench.quality's edits (the pixel half uses the same)


@dataclass(frozen=True)
class Setting:
    """One guider configuration. ``weights``: GuidanceConfig overrides; ``strength`` the node's."""
    mode: str = "shortcut"
    strength: float = 1.0
    weights: dict = field(default_factory=dict)
    layers: str = "auto"
    guided: bool = True
    clip: bool = True
    ceiling: bool = False    # no restyle: the ground truth through the VAE (what the latent model can show at best)


SETTINGS = {
    "ceiling: VAE round trip of the ground truth": Setting(guided=False, ceiling=True),
    "no guidance": Setting(guided=False, clip=False),
    "CLIP, ZeCon 0": Setting(weights={"zecon": 0.0}),
    "defaults (ZeCon 500)": Setting(),
    "ZeCon 125": Setting(weights={"zecon": 125.0}),
    "ZeCon 2000": Setting(weights={"zecon": 2000.0}),
    "ZeCon 8000": Setting(weights={"zecon": 8000.0}),
    "defaults, full mode": Setting(mode="full"),
    "strength 0.5": Setting(strength=0.5),
    "strength 2": Setting(strength=2.0),
    "strength 4": Setting(strength=4.0),
    "strength 10": Setting(strength=10.0),
    "strength 30": Setting(strength=30.0),
    "strength 10, ZeCon 0": Setting(strength=10.0, weights={"zecon": 0.0}),
    "strength 10, ZeCon 125": Setting(strength=10.0, weights={"zecon": 125.0}),
    "strength 10, ZeCon 2000": Setting(strength=10.0, weights={"zecon": 2000.0}),
    "strength 10, ZeCon 8000": Setting(strength=10.0, weights={"zecon": 8000.0}),
    "strength 10, layers 0": Setting(strength=10.0, layers="0"),
    "strength 2, ZeCon 2000": Setting(strength=2.0, weights={"zecon": 2000.0}),
    "strength 4, ZeCon 2000": Setting(strength=4.0, weights={"zecon": 2000.0}),
    "strength 4, ZeCon 8000": Setting(strength=4.0, weights={"zecon": 8000.0}),
    "full mode, ZeCon 2000": Setting(mode="full", weights={"zecon": 2000.0}),
    "strength 2, ZeCon 8000": Setting(strength=2.0, weights={"zecon": 8000.0}),
    "strength 4, ZeCon 4000": Setting(strength=4.0, weights={"zecon": 4000.0}),
    "strength 4, ZeCon 16000": Setting(strength=4.0, weights={"zecon": 16000.0}),
    "strength 6, ZeCon 8000": Setting(strength=6.0, weights={"zecon": 8000.0}),
    "full mode, strength 2": Setting(mode="full", strength=2.0),
    "strength 10, layers 0,1,3": Setting(strength=10.0, layers="0,1,3"),
    "layers 0": Setting(layers="0"),
    "layers 3": Setting(layers="3"),
    "layers 0,1,3": Setting(layers="0,1,3"),
    "no MSE": Setting(weights={"mse": 0.0}),
    # the prompt carries the edit, ZeCon + MSE (+ range) keep the content: no ZeCon CLIP connected
    "prompt only, zecon=0": Setting(clip=False, weights={"zecon": 0.0}),
    "prompt only (defaults)": Setting(clip=False),
    "prompt only, zecon=2000": Setting(clip=False, weights={"zecon": 2000.0}),
    "prompt only, zecon=8000": Setting(clip=False, weights={"zecon": 8000.0}),
    "prompt only, full mode": Setting(clip=False, mode="full"),
    "prompt only, strength 4": Setting(clip=False, strength=4.0),
    "prompt only, strength 4, zecon=8000": Setting(clip=False, strength=4.0, weights={"zecon": 8000.0}),
    "prompt only, strength 10": Setting(clip=False, strength=10.0),
    "prompt only, strength 30": Setting(clip=False, strength=30.0),
    "prompt only, strength 100": Setting(clip=False, strength=100.0),
    "prompt only, strength 30, zecon=0": Setting(clip=False, strength=30.0, weights={"zecon": 0.0}),
}
REFERENCE = "CLIP, ZeCon 0"
#: The settings the trade-off plot shows (all of them do not fit one legend).
PLOTTED = ("ceiling: VAE round trip of the ground truth", "no guidance", "CLIP, ZeCon 0", "defaults (ZeCon 500)",
           "ZeCon 8000", "defaults, full mode", "strength 2", "strength 4", "strength 4, ZeCon 8000", "strength 10",
           "strength 10, ZeCon 0", "strength 10, ZeCon 8000", "layers 0", "prompt only (defaults)",
           "prompt only, zecon=8000", "prompt only, strength 30")
DEFAULTS = "defaults (ZeCon 500)"


@dataclass
class Run:
    """Sampling settings shared by every setting (the latent workflow's, scaled down for the CPU)."""
    steps: int = 10
    denoise: float = 0.6
    cfg: float = 5.0
    n_patch: int = 16
    batch: int = 24
    decoder: str = "vae"     # inside the guidance: the KL VAE's decoder (here cheaper than TAESD's 64 channels)


# ------------------------------------------------------------------ the world's models
class World:
    """ComfyUI (in-process), the pack, the miniature latent model (``flow``: the flow model), the world CLIP
    and the grader."""

    def __init__(self, weights=None, clip_path=None, flow: bool = False):
        import comfy_inprocess
        import tempfile
        self.pack = comfy_inprocess.load(Path(tempfile.mkdtemp(prefix="zecon_quality_latent_")))
        import folder_paths
        from bench.world import manifest
        folder = Path(weights or lm.WEIGHTS)
        self.flow = flow
        if not flow and (folder / lm.FILES["taesd_decoder"]).exists():
            approx = Path(tempfile.mkdtemp(prefix="vae_approx_"))
            (approx / "taesd_decoder_world.safetensors").symlink_to(folder / lm.FILES["taesd_decoder"])
            folder_paths.add_model_folder_path("vae_approx", str(approx), is_default=True)
        if flow:
            self.model = fm.load_model(folder / fm.FILES["flow_dit"])
            self.vae = fm.load_vae(folder / fm.FILES["flow_vae"])
        else:
            self.model = lm.load_model(folder / lm.FILES["unet"])
            self.vae = lm.load_vae(folder / lm.FILES["vae"])
        self.text = lm.load_clip(folder / lm.FILES["clip"])
        self.clip_path = clip_path or manifest.CLIP
        self._conds: dict = {}

    @functools.cached_property
    def grader(self):
        from bench.world.grader import load_grader
        return load_grader()

    @functools.cached_property
    def clip(self):
        """The world's open_clip CLIP through the pack's loader (ZeCon CLIP Loader's local file path)."""
        import zecon_pack.zecon_core as zc
        return zc.load_clip(path=self.clip_path)

    def cond(self, texts) -> list:
        """CONDITIONING of a batch of prompts (CLIPTextEncode per prompt, concatenated)."""
        key = tuple(texts)
        if key not in self._conds:
            self._conds[key] = (fm.conditioning(self.text, texts) if self.flow
                                else [[lm.encode_captions(self.text, texts), {}]])
        return self._conds[key]

    def encode(self, pictures: torch.Tensor) -> torch.Tensor:
        """VAE Encode: pictures [B, 3, H, W] in [-1, 1] -> LATENT samples."""
        return self.vae.encode(((pictures + 1) / 2).permute(0, 2, 3, 1))

    def decode(self, samples: torch.Tensor) -> torch.Tensor:
        """VAE Decode -> [B, 3, H, W] in [-1, 1]."""
        return self.vae.decode(samples).permute(0, 3, 1, 2).float() * 2 - 1


def run_node(node_cls, **inputs):
    """A V3 node's execute as ComfyUI's executor runs it (class clone, hidden inputs, inference mode)."""
    clone = node_cls.PREPARE_CLASS_CLONE({"UNIQUE_ID": "1"})
    with torch.inference_mode():
        return clone.EXECUTE_NORMALIZED(**inputs).args


def restyle_batch(world: World, edits, setting: Setting, run: Run, seed: int) -> torch.Tensor:
    """The restyled pictures [B, 3, 64, 64] in [-1, 1] of ``edits`` (bench.world.metrics.Edit) under ``setting``."""
    import comfy.samplers
    from zecon_pack.nodes.latent.guider_node import ZeconGuider
    from zecon_pack.nodes.latent.inversion_node import ZeconLatentInversion
    from zecon_pack.nodes.types import GuidanceBundle
    from zecon_pack.zecon_core import GuidanceConfig, encode_style

    if setting.ceiling:
        with torch.inference_mode():
            return world.decode(world.encode(render([e.target for e in edits], lm.IMAGE_SIZE)))
    sources = render([e.source for e in edits], lm.IMAGE_SIZE)
    empty = world.cond([""] * len(edits))
    latent = {"samples": world.encode(sources)}
    inverted, sigmas = run_node(ZeconLatentInversion, model=world.model, latent=latent, conditioning=empty,
                                cfg=1.0, steps=run.steps, denoise=run.denoise, scheduler="normal")
    config = GuidanceConfig(vgg=0.0, n_patch=run.n_patch, **setting.weights)
    extra = {}
    if setting.clip:
        extra = {"clip": world.clip, "style": encode_style(world.clip, [e.target_caption for e in edits],
                                                           [e.source_caption for e in edits])}
    (guider,) = run_node(ZeconGuider, model=world.model, positive=world.cond([e.target_caption for e in edits]),
                         negative=empty, cfg=run.cfg, source=latent, mode=setting.mode, decoder=run.decoder,
                         start_percent=0.0, end_percent=1.0, strength=setting.strength if setting.guided else 0.0,
                         seed=seed, zecon_layers=setting.layers, guidance=GuidanceBundle(config, None, "none"),
                         vae=world.vae, **extra)
    with torch.inference_mode():
        x = inverted["samples"]
        out = guider.sample(torch.zeros_like(x), x, comfy.samplers.sampler_object("euler"), sigmas,
                            disable_pbar=True, seed=seed)
        return world.decode(out)


# ------------------------------------------------------------------ settings x edits
def restyler(world: World, setting: Setting, run: Run):
    """``restyle(edits, seed) -> pictures`` for bench.quality.run_setting (batches of ``run.batch``)."""
    def restyle(edits, seed):
        out = []
        for i in range(0, len(edits), run.batch):
            out.append(restyle_batch(world, edits[i:i + run.batch], setting, run, seed))
        return torch.cat(out)
    return restyle


def run_pair(names, n_edits: int, flow: bool = False) -> dict:
    """The quality floors' runs: each setting of ``names`` on the first ``n_edits`` edits, seed 0, one thread."""
    from bench.quality import run_setting
    torch.set_num_threads(1)
    world = World(flow=flow)
    edits = make_edits(n_edits, EDIT_SEED)
    run = Run(batch=n_edits)
    return {name: run_setting(name, restyler(world, SETTINGS[name], run), edits, [0], world.grader) for name in names}


def evaluate(world: World, names, edits, seeds, run: Run, log=print) -> list:
    """One ``bench.quality.SettingResult`` per setting name (an unguided setting runs one seed: it is
    deterministic, so the other seeds repeat its pictures)."""
    from bench.quality import run_setting
    results = []
    for name in names:
        setting = SETTINGS[name]
        used = seeds if setting.guided else seeds[:1]
        r = run_setting(name, restyler(world, setting, run), edits, used, world.grader)
        if len(used) < len(seeds):
            r.metrics = {m: v.expand(len(seeds), -1).clone() for m, v in r.metrics.items()}
        results.append(r)
        log(f"{name:28s} " + " ".join(f"{m} {r.mean(m):.3f}" for m in METRICS) + f" {r.seconds_per_image:.2f} s/img")
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sources", type=int, default=24)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--settings", default="all", help="names of SETTINGS separated by ';', or all")
    parser.add_argument("--reference", default=REFERENCE)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "quality"))
    parser.add_argument("--world", choices=("sd", "flow"), default="sd",
                        help="sd: the SD1.5-config latent model (latent.json); flow: the SD3-config MMDiT (flow.json)")
    for f in dataclasses.fields(Run):
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=type(f.default), default=f.default)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--grid", help="also draw the first seed's pictures of every setting as a grid PNG here")
    parser.add_argument("--plot", help="with --merge: the trade-off plot (target reached vs IoU) PNG here")
    parser.add_argument("--merge", nargs="+", metavar="JSON",
                        help="only combine the latent.json files of runs split over processes into --out")
    args = parser.parse_args(argv)
    if args.merge:
        return merge(args.merge, Path(args.out), args.reference, args.plot, args.world)
    torch.set_num_threads(args.threads)
    run = Run(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Run)})
    names = list(SETTINGS) if args.settings == "all" else [s.strip() for s in args.settings.split(";")]
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        raise SystemExit(f"--settings: unknown {unknown}; known: {list(SETTINGS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    from bench.quality import machine, table
    world = World(flow=args.world == "flow")
    edits = make_edits(args.sources, EDIT_SEED)
    results = evaluate(world, names, edits, seeds, run)
    md = table(results, baseline=args.reference)
    print(md)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "flow" if args.world == "flow" else "latent"
    (out / f"{stem}.json").write_text(json.dumps({
        "command": "python -m bench.quality_latent " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine(), "run": dataclasses.asdict(run), "sources": args.sources, "seeds": seeds,
        "settings": {n: dataclasses.asdict(SETTINGS[n]) for n in names},
        "edits": [{"source": e.source_caption, "target": e.target_caption, "task": e.task} for e in edits],
        "results": [r.to_json() for r in results]}, indent=1) + "\n")
    (out / f"{stem}_table.md").write_text(md)
    if args.grid:
        from bench.world.figures import grid
        grid(edits, results, Path(args.grid), columns=names)


def merge(paths, out: Path, reference: str = REFERENCE, plot: str | None = None, world: str = "sd") -> None:
    """One latent.json (``world`` flow: flow.json) and table of several runs (same edits and run settings).

    Runs may hold different settings, or the same setting with other seeds: a setting's seeds are
    stacked (metrics [seeds, sources], time per picture averaged over all its pictures). Every
    setting ends with the seeds of the whole merge; an unguided setting (deterministic, run once)
    has its one seed's results repeated."""
    import torch
    from bench.quality import SettingResult, table
    runs = [json.loads(Path(p).read_text()) for p in paths]
    first = runs[0]
    for r in runs[1:]:
        if r["edits"] != first["edits"] or r["run"] != first["run"]:
            raise SystemExit(f"--merge: the runs differ in edits or run settings: {paths}")
    seeds = sorted({s for r in runs for s in r["seeds"]})
    by_name: dict[str, list[tuple[list[int], dict]]] = {}
    for r in runs:
        for res in r["results"]:
            by_name.setdefault(res["name"], []).append((r["seeds"], res))
    results = []
    for name, parts in by_name.items():
        rows: dict[int, dict] = {}
        seconds, pictures = 0.0, 0
        for run_seeds, res in parts:
            n = len(res["metrics"][METRICS[0]])
            for k, seed in enumerate(run_seeds[:n]):
                rows.setdefault(seed, {m: res["metrics"][m][k] for m in METRICS})
            seconds += res["seconds_per_image"] * n
            pictures += n
        have = sorted(rows)
        guided = SETTINGS[name].guided if name in SETTINGS else True
        if have != seeds and not (not guided and have):
            raise SystemExit(f"--merge: setting {name!r} has seeds {have}, the merge has {seeds}")
        metrics = {m: torch.tensor([rows[s if s in rows else have[0]][m] for s in seeds]) for m in METRICS}
        results.append(SettingResult(name, metrics, seconds / pictures))
    order = [n for n in SETTINGS if n in by_name]
    results.sort(key=lambda r: order.index(r.name))
    def flat(key):
        return [v for r in runs for v in (r[key] if isinstance(r[key], list) else [r[key]])]

    combined = {**first, "command": flat("command"), "machine": flat("machine"),
                "seeds": seeds, "settings": {k: v for r in runs for k, v in r["settings"].items()},
                "results": [r.to_json() for r in results]}
    md = table(results, baseline=reference)
    print(md)
    out.mkdir(parents=True, exist_ok=True)
    stem = "flow" if world == "flow" else "latent"
    (out / f"{stem}.json").write_text(json.dumps(combined, indent=1) + "\n")
    (out / f"{stem}_table.md").write_text(md)
    if plot:
        from bench.world.figures import tradeoff_plot
        tradeoff_plot([r for r in results if r.name in PLOTTED], Path(plot), sweep_line=False,
                      title="Style reached vs content kept (latent guider, miniature world)")


if __name__ == "__main__":
    main()
