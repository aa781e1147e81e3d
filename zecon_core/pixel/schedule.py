"""The diffusion schedule: linear betas, respacing, and the arrays every step reads.

Built in float64 numpy exactly as guided-diffusion builds it; each lookup is
cast to float32 before it multiplies a tensor (``_extract_into_tensor``).
Indices ``i`` are *respaced* indices ``0..N-1``; the network is fed the
original timestep ``timestep_map[i] * 1000 / T`` (``rescale_timesteps``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

_ARRAYS = (
    "betas", "log_betas", "alphas_cumprod", "alphas_cumprod_prev", "alphas_cumprod_next",
    "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
    "posterior_mean_coef1", "posterior_mean_coef2",
)


def space_timesteps(num_timesteps: int, respacing: str) -> list[int]:
    """Base timesteps kept by a guided-diffusion respacing string.

    ``"50"`` keeps 50 evenly strided steps, ``"10,20"`` splits the base process
    into sections with 10 and 20 steps, ``"ddim25"`` uses DDIM's integer
    stride, ``""`` keeps every step. Raises ``ValueError`` where guided-diffusion does.
    """
    spec = str(respacing).strip().replace(" ", "")
    if spec == "":
        return list(range(num_timesteps))
    if spec.startswith("ddim"):
        try:
            desired = int(spec[4:])
        except ValueError:
            raise ValueError(f"invalid respacing {respacing!r}: 'ddim' must be followed by a step count") from None
        for stride in range(1, num_timesteps):
            if len(range(0, num_timesteps, stride)) == desired:
                return list(range(0, num_timesteps, stride))
        raise ValueError(f"invalid respacing {respacing!r}: cannot make exactly {desired} steps with an integer stride")
    try:
        counts = [int(c) for c in spec.split(",")]
    except ValueError:
        raise ValueError(
            f"invalid respacing {respacing!r}: use a step count like '50', sections like '10,20' or 'ddim25'"
        ) from None
    if any(c < 1 for c in counts):
        raise ValueError(f"invalid respacing {respacing!r}: every section needs at least one step")
    size_per, extra = divmod(num_timesteps, len(counts))
    start, steps = 0, []
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if size < count:
            raise ValueError(f"invalid respacing {respacing!r}: cannot divide a section of {size} steps into {count}")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        cur = 0.0
        for _ in range(count):
            steps.append(start + round(cur))
            cur += stride
        start += size
    return sorted(set(steps))


@dataclass(frozen=True, eq=False)
class Schedule:
    """A respaced linear-beta schedule. Arrays are float64 tensors of length ``num_steps``."""

    respacing: str
    base_steps: int
    timestep_map: torch.Tensor
    arrays: dict

    @classmethod
    def create(cls, respacing: str = "50", base_steps: int = 1000,
               beta_start: float = 1e-4, beta_end: float = 0.02) -> "Schedule":
        if not str(respacing).strip():
            # guided-diffusion reads "" as "every base step"; as a user's setting it is almost
            # certainly a cleared field, so it is refused instead of silently meaning 1000 steps
            raise ValueError(f"respacing is empty: give a step count like '50', sections like '10,20' or "
                             f"'ddim25' (write '{base_steps}' for every step)")
        scale = 1000 / base_steps
        base_betas = np.linspace(scale * beta_start, scale * beta_end, base_steps, dtype=np.float64)
        keep = space_timesteps(base_steps, respacing)
        base_ac = np.cumprod(1.0 - base_betas, axis=0)
        last, betas = 1.0, []
        for i in keep:
            betas.append(1 - base_ac[i] / last)
            last = base_ac[i]
        return cls(str(respacing), base_steps, torch.tensor(keep, dtype=torch.int64), _derive(np.array(betas)))

    @property
    def num_steps(self) -> int:
        return len(self.timestep_map)

    def coef(self, name: str, i: int | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``arrays[name][i]`` cast to float32 on ``like``'s device, broadcastable against ``like``.

        ``i`` is one index for the whole batch, or a [B] tensor of per-item indices.
        """
        a = self.arrays[name]
        if isinstance(i, torch.Tensor) and i.ndim == 1:
            return a[i.cpu()].to(like.device, torch.float32).view(-1, *([1] * (like.ndim - 1)))
        return a[int(i)].to(device=like.device, dtype=torch.float32)

    def model_timesteps(self, i: int | torch.Tensor, batch: int, device) -> torch.Tensor:
        """The float timesteps [batch] the network sees at respaced index ``i`` (or per-item indices)."""
        idx = i.cpu() if isinstance(i, torch.Tensor) else torch.tensor(int(i))
        t = self.timestep_map[idx].float() * (1000.0 / self.base_steps)
        return t.expand(batch).to(device)

    def guidance_index(self, i: int) -> int:
        """The index the original's ``cond_fn`` recovers from the network timestep.

        It floors ``t_scaled * N / 1000`` in float32; for the usual respacings
        this gives ``i`` back, for sectioned ones (``"250,10"``) it may not.
        """
        t = self.model_timesteps(i, 1, "cpu")
        return int((t * (self.num_steps / 1000)).long()[0])

    def check_skip(self, skip: int) -> None:
        if not 0 <= skip < self.num_steps:
            raise ValueError(
                f"skip_timesteps must lie in 0..{self.num_steps - 1} for respacing {self.respacing!r} "
                f"({self.num_steps} steps), got {skip}"
            )


def _derive(betas: np.ndarray) -> dict:
    a = {}
    a["betas"] = betas
    a["log_betas"] = np.log(betas)
    ac = np.cumprod(1.0 - betas, axis=0)
    a["alphas_cumprod"] = ac
    a["alphas_cumprod_prev"] = np.append(1.0, ac[:-1])
    a["alphas_cumprod_next"] = np.append(ac[1:], 0.0)
    a["sqrt_alphas_cumprod"] = np.sqrt(ac)
    a["sqrt_one_minus_alphas_cumprod"] = np.sqrt(1.0 - ac)
    a["sqrt_recip_alphas_cumprod"] = np.sqrt(1.0 / ac)
    a["sqrt_recipm1_alphas_cumprod"] = np.sqrt(1.0 / ac - 1)
    pv = betas * (1.0 - a["alphas_cumprod_prev"]) / (1.0 - ac)
    a["posterior_variance"] = pv
    a["posterior_log_variance_clipped"] = np.log(np.append(pv[1], pv[1:]))
    a["posterior_mean_coef1"] = betas * np.sqrt(a["alphas_cumprod_prev"]) / (1.0 - ac)
    a["posterior_mean_coef2"] = (1.0 - a["alphas_cumprod_prev"]) * np.sqrt(1.0 - betas) / (1.0 - ac)
    assert set(a) == set(_ARRAYS)
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in a.items()}
