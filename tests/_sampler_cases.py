"""Sampler cases whose outputs were saved from the three sampling APIs before they became one
integrator family (tests/data/sampler_reference.npz, written by
``python tests/_sampler_cases.py`` at commit 9584404); tests/test_diffusion_samplers.py
reruns every case and compares.

Each case is a deterministic tiny model (a smooth nonlinear function of x and the noise
level, so every step's output depends on the previous one), fixed seeds, and one public call
(``formulation.sample`` or a sampler function) for each formulation × sampler × step count.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from specreg.diffusion import (
    DDPM,
    EDM,
    FlowMatching,
    karras_sigmas,
    sample_dpmpp_2m,
    sample_euler,
    sample_flow,
    sample_heun,
)

REFERENCE = Path(__file__).parent / "data" / "sampler_reference.npz"
SHAPE = (2, 2, 3, 3)


def _edm_net(x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
    c = c_noise.reshape(-1, *([1] * (x.dim() - 1)))
    return torch.tanh(x) * 0.7 + 0.05 * torch.sin(c) * x.flip(-1) + 0.01 * c


def _sigma_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    s = sigma.reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype)
    return torch.tanh(x / (1 + s)) * 0.8 + 0.02 * x.roll(1, -1)


def _velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    tb = t.reshape(-1, *([1] * (x.dim() - 1)))
    return x * (0.9 + 0.1 * tb) - torch.tanh(x.roll(1, -1)) * (1 - 0.5 * tb)


def _ddpm_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    tb = t.reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype)
    return torch.tanh(x) * 0.6 + 0.3 * torch.sin(x.roll(1, -1) + tb / 7)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _start(seed: int, sigma: float = 1.0) -> torch.Tensor:
    return torch.randn(SHAPE, generator=_gen(seed), dtype=torch.float64) * sigma


def cases() -> dict[str, Callable[[], torch.Tensor]]:
    """name → a call returning the sampler's output (the case's tolerance is chosen by the test)."""
    out: dict[str, Callable[[], torch.Tensor]] = {}
    for precond in ("edm", "vp", "ve"):
        edm = EDM(precond)
        den = edm.precondition(_edm_net)
        for sampler in ("euler", "heun", "dpmpp_2m"):
            for steps in (1, 2, 7):
                for disc in ("edm", "vp", "ve"):
                    out[f"edm/{precond}/{sampler}/{steps}/{disc}"] = (
                        lambda e=edm, d=den, s=sampler, n=steps, g=disc: e.sample(
                            d, SHAPE, s, n, generator=_gen(n), discretization=g))
        for sampler in ("euler", "heun"):
            out[f"edm/{precond}/{sampler}/6/churn"] = (
                lambda e=edm, d=den, s=sampler: e.sample(d, SHAPE, s, 6, churn=30.0, S_min=0.05, S_max=50.0,
                                                         S_noise=1.003, generator=_gen(11)))
    for name, fn in (("euler", sample_euler), ("heun", sample_heun), ("dpmpp_2m", sample_dpmpp_2m)):
        for steps in (2, 9):
            out[f"sigma/{name}/{steps}"] = (lambda f=fn, n=steps: f(
                _sigma_denoiser, _start(n, 20.0), karras_sigmas(n, 0.01, 20.0)))
        out[f"sigma/{name}/32bit"] = lambda f=fn: f(
            _sigma_denoiser, _start(5, 20.0).float(), karras_sigmas(5, 0.01, 20.0))
    for name in ("euler", "heun"):
        out[f"sigma/{name}/churn"] = lambda f={"euler": sample_euler, "heun": sample_heun}[name]: f(
            _sigma_denoiser, _start(3, 20.0), karras_sigmas(6, 0.01, 20.0), churn=5.0, S_min=0.1, S_max=10.0,
            S_noise=1.01, generator=_gen(4))
        out[f"sigma/{name}/listgrid"] = lambda f={"euler": sample_euler, "heun": sample_heun}[name]: f(
            _sigma_denoiser, _start(6, 3.0), [3.0, 1.5, 0.5, 0.1])
    for shift in (1.0, 3.0):
        fm = FlowMatching("logit_normal", shift=shift)
        for sampler in ("euler", "heun"):
            for steps in (1, 2, 8):
                out[f"flow/{shift}/{sampler}/{steps}"] = (lambda f=fm, s=sampler, n=steps: f.sample(
                    _velocity, SHAPE, s, n, generator=_gen(n)))
    for sampler in ("euler", "heun"):
        out[f"flow/fn/{sampler}/64bit"] = lambda s=sampler: sample_flow(
            _velocity, _start(2), torch.tensor([0.9, 0.6, 0.25, 0.05]), method=s, dtype=torch.float64)
        out[f"flow/fn/{sampler}/endsat0"] = lambda s=sampler: sample_flow(
            _velocity, _start(3), [1.0, 0.5, 0.0], method=s)
    ddpm_setups = {
        "eps-linear": dict(schedule="linear", timesteps=40, prediction="eps"),
        "v-cosine": dict(schedule="cosine", timesteps=40, prediction="v"),
        "x0-scaled": dict(schedule="scaled_linear", timesteps=40, prediction="x0", beta_start=0.001, beta_end=0.03),
        "v-zsnr-trailing": dict(schedule="linear", timesteps=40, prediction="v", zero_terminal_snr=True,
                                timestep_spacing="trailing"),
        "eps-clip-linspace": dict(schedule="linear", timesteps=40, prediction="eps", clip_sample=True,
                                  clip_sample_range=0.5, timestep_spacing="linspace", set_alpha_to_one=False),
        "x0-offset": dict(schedule="cosine", timesteps=40, prediction="x0", steps_offset=1),
    }
    for setup, kw in ddpm_setups.items():
        ddpm = DDPM(**kw)  # type: ignore[arg-type]
        for steps in (3, 7, 40) if setup == "eps-linear" else (3, 7):
            out[f"ddpm/{setup}/ddpm/{steps}"] = lambda d=ddpm, n=steps: d.sample(
                _ddpm_model, SHAPE, "ddpm", n, generator=_gen(n))
            for eta in (0.0, 0.5, 1.0):
                out[f"ddpm/{setup}/ddim/{steps}/{eta}"] = lambda d=ddpm, n=steps, e=eta: d.sample(
                    _ddpm_model, SHAPE, "ddim", n, e, generator=_gen(n + 100))
        # two chunks from one generator: the second depends on how many draws the first made
        out[f"ddpm/{setup}/ddpm/two-chunks"] = lambda d=ddpm: torch.cat([d.sample(
            _ddpm_model, SHAPE, "ddpm", 5, generator=g) for g in [_gen(9)] * 2])
        out[f"ddpm/{setup}/ddim/two-chunks"] = lambda d=ddpm: torch.cat([d.sample(
            _ddpm_model, SHAPE, "ddim", 5, 0.7, generator=g) for g in [_gen(9)] * 2])
    for precond in ("edm",):
        edm = EDM(precond)
        den = edm.precondition(_edm_net)
        out["edm/edm/heun/two-chunks"] = lambda e=edm, d=den: torch.cat([e.sample(
            d, SHAPE, "heun", 4, churn=10.0, generator=g) for g in [_gen(9)] * 2])
    out["flow/euler/two-chunks"] = lambda: torch.cat([FlowMatching().sample(
        _velocity, SHAPE, "euler", 4, generator=g) for g in [_gen(9)] * 2])
    return out


def callbacks() -> dict[str, Callable[[], list[tuple[int, float, torch.Tensor, torch.Tensor]]]]:
    """The callback arguments (i, level, x_next, x0_hat) of one run per API."""

    def record(run: Callable[[Callable[..., None]], object]) -> list[tuple[int, float, torch.Tensor, torch.Tensor]]:
        seen: list[tuple[int, float, torch.Tensor, torch.Tensor]] = []
        run(lambda i, level, x, x0: seen.append((i, float(level), x.clone(), x0.clone())))
        return seen

    edm = EDM("edm")
    den = edm.precondition(_edm_net)
    return {
        "edm/heun": lambda: record(lambda cb: edm.sample(den, SHAPE, "heun", 4, generator=_gen(1), callback=cb)),
        "edm/dpmpp_2m": lambda: record(lambda cb: edm.sample(den, SHAPE, "dpmpp_2m", 4, generator=_gen(1),
                                                             callback=cb)),
        "flow/heun": lambda: record(lambda cb: FlowMatching().sample(_velocity, SHAPE, "heun", 4,
                                                                     generator=_gen(1), callback=cb)),
        "ddpm/ddim": lambda: record(lambda cb: DDPM("linear", 40, clip_sample=True).sample(
            _ddpm_model, SHAPE, "ddim", 4, 0.3, generator=_gen(1), callback=cb)),
        "ddpm/ddpm": lambda: record(lambda cb: DDPM("linear", 40, "v").sample(
            _ddpm_model, SHAPE, "ddpm", 4, generator=_gen(1), callback=cb)),
    }


def compute() -> dict[str, np.ndarray]:
    arrays = {name: fn().detach().to(torch.float64).numpy() for name, fn in cases().items()}
    for name, fn in callbacks().items():
        seen = fn()
        arrays[f"callback/{name}/level"] = np.array([s[1] for s in seen])
        arrays[f"callback/{name}/index"] = np.array([s[0] for s in seen], dtype=np.float64)
        arrays[f"callback/{name}/x"] = np.stack([s[2].to(torch.float64).numpy() for s in seen])
        arrays[f"callback/{name}/x0_hat"] = np.stack([s[3].to(torch.float64).numpy() for s in seen])
    return arrays


if __name__ == "__main__":
    REFERENCE.parent.mkdir(parents=True, exist_ok=True)
    data = compute()
    np.savez_compressed(REFERENCE, **data)
    print(f"wrote {len(data)} arrays to {REFERENCE}")
