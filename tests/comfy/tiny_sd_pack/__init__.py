"""Test-only ComfyUI node pack: tiny random-weight SD models of every family in a real graph.

Load it with the harness: ``comfy_server_factory(packs={"zecon_tiny_sd": TINY_SD_PACK})``.

  ZeconTestTinySD   (arch, seed) -> MODEL, CLIP, VAE   in place of CheckpointLoaderSimple
  ZeconTestTinyCLIP (arch, seed) -> CLIP               e.g. for a UNETLoader'd tiny SD15 file
                                                       (arch sd15_file: 768-wide, as its UNet)
  ZeconTestWorldSD  ()           -> MODEL, CLIP, VAE   the miniature world's trained SD1.5-config model
                                                       (bench/world/weights, bench/world/latent_model.py)
  ZeconTestWorldFlow ()          -> MODEL, CLIP, VAE   the miniature world's trained SD3-config MMDiT
                                                       (rectified flow; bench/world/flow_model.py)

The models come from tests/comfy/tiny_sd.py (loaded from this folder's parent under a
private module name, so nothing else of tests/comfy lands on the server's sys.path).
"""
import importlib.util
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent


def _load(name: str, path: Path):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


tiny_sd = _load("zecon_tests_tiny_sd", _HERE.parent / "tiny_sd.py")
latent_model = _load("zecon_tests_world_latent_model", _HERE.parents[2] / "bench" / "world" / "latent_model.py")
flow_model = _load("zecon_tests_world_flow_model", _HERE.parents[2] / "bench" / "world" / "flow_model.py")

_SEED = ("INT", {"default": 0, "min": 0, "max": 2**31 - 1,
                 "tooltip": "Weights are drawn from this seed: same seed, same model."})
_ARCH = (list(tiny_sd.ARCHS), {"default": "sd15",
                               "tooltip": "sd15 / sd2v (v-prediction) / sdxl / flow (SD3 MMDiT) tiny "
                                          "models; sd15_file: the UNet UNETLoader detects as SD15."})


class ZeconTestTinySD:
    DESCRIPTION = "Tiny random-weight Stable Diffusion model of one family (tests only)."
    CATEGORY = "zecon_tests"
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    RETURN_NAMES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"arch": _ARCH, "seed": _SEED}}

    def build(self, arch, seed):
        return tiny_sd.tiny_sd(arch, seed)


class ZeconTestTinyCLIP:
    DESCRIPTION = "The tiny text encoder of one family alone (tests only)."
    CATEGORY = "zecon_tests"
    RETURN_TYPES = ("CLIP",)
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"arch": _ARCH, "seed": _SEED}}

    def build(self, arch, seed):
        # the same CLIP seed as ZeconTestTinySD's (seed + 1)
        return (tiny_sd.tiny_clip(arch, seed + 1),)


class ZeconTestWorldSD:
    DESCRIPTION = ("The miniature world's trained SD1.5-config model (bench/world/weights): ComfyUI's SD15 "
                   "config class, SD1.5 text encoder and AutoencoderKL at toy width (tests only).")
    CATEGORY = "zecon_tests"
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    RETURN_NAMES = ("MODEL", "CLIP", "VAE")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def load(self):
        return latent_model.load_model(), latent_model.load_clip(), latent_model.load_vae()


class ZeconTestWorldFlow(ZeconTestWorldSD):
    DESCRIPTION = ("The miniature world's trained rectified-flow model (bench/world/weights): ComfyUI's SD3 config "
                   "class (MMDiT, CONST sampling), the world's SD1.5-type text encoder and a 16-channel "
                   "AutoencoderKL at toy width (tests only).")

    def load(self):
        return flow_model.load_model(), flow_model.load_clip(), flow_model.load_vae()


NODE_CLASS_MAPPINGS = {"ZeconTestTinySD": ZeconTestTinySD, "ZeconTestTinyCLIP": ZeconTestTinyCLIP,
                       "ZeconTestWorldSD": ZeconTestWorldSD, "ZeconTestWorldFlow": ZeconTestWorldFlow}
NODE_DISPLAY_NAME_MAPPINGS = {"ZeconTestTinySD": "ZeCon test: tiny SD model",
                              "ZeconTestTinyCLIP": "ZeCon test: tiny CLIP",
                              "ZeconTestWorldSD": "ZeCon test: miniature world SD model",
                              "ZeconTestWorldFlow": "ZeCon test: miniature world flow model (SD3 MMDiT)"}
