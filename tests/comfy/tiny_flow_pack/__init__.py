"""Test-only ComfyUI node pack: the tiny rectified-flow models of every family in a real graph.

Load it with the harness: ``comfy_server_factory(packs={"zecon_tiny_flow": TINY_FLOW_PACK})``.

  ZeconTestTinyFlow (family, seed, width, height) -> MODEL, positive, negative, LATENT
      MODEL: tiny_flow.tiny_model(family, seed); conditionings without a text encoder
      (seeds seed + 1, seed + 2); a standard-normal LATENT of width/8 x height/8 (seed + 3)
  ZeconTestTinyFlowVAE (family, seed) -> VAE  (tiny_flow.tiny_vae: the family's latents)
  ZeconTestTinyRefusedModel (kind, seed) -> MODEL  (tiny_flow.refused_model: a video / audio model)

The models come from tests/comfy/tiny_flow.py and tiny_sd.py, loaded from this folder's parent
under private module names (tiny_sd's is the one tests/comfy/tiny_sd_pack uses), so nothing else
of tests/comfy lands on the server's sys.path.
"""
import importlib.util
import sys
from pathlib import Path


def _load(name: str, file: str):
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent.parent / file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_load("zecon_tests_tiny_sd", "tiny_sd.py")
tiny_flow = _load("zecon_tests_tiny_flow", "tiny_flow.py")


class ZeconTestTinyFlow:
    DESCRIPTION = "Tiny random-weight rectified-flow model of one family, its conditioning and a latent (tests only)."
    CATEGORY = "zecon_tests"
    RETURN_TYPES = ("MODEL", "CONDITIONING", "CONDITIONING", "LATENT")
    RETURN_NAMES = ("MODEL", "positive", "negative", "LATENT")
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        size = {"default": 64, "min": 16, "max": 512, "step": 16,
                "tooltip": "Pixel size the latent stands for (the latent is 1/8 of it)."}
        return {"required": {
            "family": (list(tiny_flow.FAMILIES), {"default": "flux_dev",
                                                  "tooltip": "Which flow family (see tests/comfy/tiny_flow.py)."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1,
                             "tooltip": "Weights, conditionings and latent are drawn from this seed."}),
            "width": ("INT", size), "height": ("INT", size)}}

    def build(self, family, seed, width, height):
        latent = tiny_flow.latent(family, seed + 3, height=height // 8, width=width // 8)
        return (tiny_flow.tiny_model(family, seed), tiny_flow.conditioning(family, seed + 1),
                tiny_flow.conditioning(family, seed + 2), {"samples": latent})


class ZeconTestTinyFlowVAE:
    DESCRIPTION = "Tiny random-weight VAE whose latents are one flow family's (tests only)."
    CATEGORY = "zecon_tests"
    RETURN_TYPES = ("VAE",)
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "family": (list(tiny_flow.FAMILIES), {"default": "flux_dev",
                                                  "tooltip": "The flow family whose latents the VAE makes."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1,
                             "tooltip": "Weights are drawn from this seed: same seed, same VAE."})}}

    def build(self, family, seed):
        return (tiny_flow.tiny_vae(family, seed),)


class ZeconTestTinyRefusedModel:
    DESCRIPTION = "Tiny random-weight video or audio model that ZeCon cannot guide (tests only)."
    CATEGORY = "zecon_tests"
    RETURN_TYPES = ("MODEL",)
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "kind": (list(tiny_flow.REFUSED), {"default": "wan21",
                                               "tooltip": "Which model: wan21 (video), stable_audio or ace_step "
                                                          "(audio); see tests/comfy/tiny_flow.py."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1,
                             "tooltip": "Weights are drawn from this seed: same seed, same model."})}}

    def build(self, kind, seed):
        return (tiny_flow.refused_model(kind, seed),)


NODE_CLASS_MAPPINGS = {"ZeconTestTinyFlow": ZeconTestTinyFlow, "ZeconTestTinyFlowVAE": ZeconTestTinyFlowVAE,
                       "ZeconTestTinyRefusedModel": ZeconTestTinyRefusedModel}
NODE_DISPLAY_NAME_MAPPINGS = {"ZeconTestTinyFlow": "ZeCon test: tiny flow model",
                              "ZeconTestTinyFlowVAE": "ZeCon test: tiny flow VAE",
                              "ZeconTestTinyRefusedModel": "ZeCon test: tiny video / audio model"}
