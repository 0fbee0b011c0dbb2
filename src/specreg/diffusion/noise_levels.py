"""The σ distributions of the training noise-level registry (:mod:`specreg.diffusion.timesteps`):
the base class and the closed-form entries, plus the registry itself and its builder.

Every entry is a distribution of the equivalent VE noise level σ with its CDF and density
(float64); subclasses implement them for shift s = 1 and the base class applies σ → s·σ.
The composite entries (``mixture``, ``adaptive``) live in :mod:`specreg.diffusion.adaptive`
and register themselves, so the registry lists them after these six.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from specreg.diffusion.base import _draw_device, rand, randn


def _num(name: str, value: Any, *, lo: float | None = None, hi: float | None = None, open_lo: bool = True,
         open_hi: bool = True) -> float:
    """A finite number, optionally in (lo, hi); the error names ``timesteps_sampler.<name>``."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and lo is not None:
        ok = value > lo if open_lo else value >= lo
    if ok and hi is not None:
        ok = value < hi if open_hi else value <= hi
    if not ok:
        rng = "" if lo is None else (f" > {lo:g}" if open_lo else f" >= {lo:g}")
        rng += "" if hi is None else (f" and < {hi:g}" if open_hi else f" and <= {hi:g}")
        raise ValueError(f"timesteps_sampler.{name}={value!r} is not accepted; expected a finite number{rng}")
    return float(value)


def _phi(z: torch.Tensor) -> torch.Tensor:
    return 0.5 * torch.erfc(-z / math.sqrt(2.0))


class TimestepSampler(nn.Module):
    """A distribution of σ: :meth:`sample`, :meth:`cdf`, :meth:`pdf` (and :meth:`icdf` where closed).

    Subclasses implement the ``_base`` methods for s = 1; ``shift`` s maps σ → s·σ.
    """

    name: ClassVar[str] = ""
    has_icdf: ClassVar[bool] = True

    def __init__(self, shift: float = 1.0) -> None:
        super().__init__()
        self.shift = _num("shift", shift, lo=0.0)

    # --- to implement ---------------------------------------------------------------
    def _sample(self, batch: int, generator: torch.Generator | None, device: torch.device | str,
                dtype: torch.dtype = torch.float64) -> torch.Tensor:
        raise NotImplementedError

    def _cdf(self, sigma: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _pdf(self, sigma: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _icdf(self, u: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def options(self) -> dict[str, Any]:
        """The keys of this entry (without ``name`` and ``shift``)."""
        return {}

    # --- public -----------------------------------------------------------------------
    def sample(self, batch: int, generator: torch.Generator | None = None,
               device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """σ (batch,) on ``device``, drawn from ``generator`` only (reproducible) in ``dtype``
        (float64; EDM's built-in draws are float32, kept so for unchanged numbers)."""
        sigma = self._sample(batch, generator, device, dtype)
        return sigma if self.shift == 1.0 else sigma * self.shift

    def cdf(self, sigma: torch.Tensor) -> torch.Tensor:
        """P(σ' ≤ σ), float64."""
        sigma = torch.as_tensor(sigma, dtype=torch.float64)
        return self._cdf(sigma / self.shift).clamp(0.0, 1.0)

    def pdf(self, sigma: torch.Tensor) -> torch.Tensor:
        """The density p(σ) in 1/σ units, float64 (0 outside the support)."""
        sigma = torch.as_tensor(sigma, dtype=torch.float64)
        return self._pdf(sigma / self.shift) / self.shift

    def icdf(self, u: torch.Tensor) -> torch.Tensor:
        """The quantile function (float64) where it has a closed form."""
        return self._icdf(torch.as_tensor(u, dtype=torch.float64)) * self.shift

    def objective_cdf(self, sigma: torch.Tensor) -> torch.Tensor:
        """CDF of the σ density the *objective* integrates over (draws × importance weights)."""
        return self.cdf(sigma)

    def importance(self, sigma: torch.Tensor) -> torch.Tensor | None:
        """Per-sample weights that keep the objective's meaning (None: all 1)."""
        return None

    def observe(self, sigma: torch.Tensor, loss: torch.Tensor) -> None:
        """See the per-sample losses of a step (only stateful samplers use it)."""

    def config(self) -> dict[str, Any]:
        """The YAML mapping that builds this sampler."""
        out: dict[str, Any] = {"name": self.name, **self.options()}
        if self.shift != 1.0:
            out["shift"] = self.shift
        return out

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")


class LogNormal(TimestepSampler):
    """ln σ ~ N(P_mean, P_std²) (Karras et al. 2022)."""

    name = "lognormal"

    def __init__(self, P_mean: float = -1.2, P_std: float = 1.2, shift: float = 1.0) -> None:
        super().__init__(shift)
        self.P_mean = _num("P_mean", P_mean)
        self.P_std = _num("P_std", P_std, lo=0.0)

    def options(self) -> dict[str, Any]:
        return {"P_mean": self.P_mean, "P_std": self.P_std}

    def _sample(self, batch: int, generator: torch.Generator | None, device: torch.device | str,
                dtype: torch.dtype = torch.float64) -> torch.Tensor:
        return (randn((batch,), generator, device, dtype) * self.P_std + self.P_mean).exp()

    def _z(self, sigma: torch.Tensor) -> torch.Tensor:
        return (sigma.clamp_min(1e-300).log() - self.P_mean) / self.P_std

    def _cdf(self, sigma: torch.Tensor) -> torch.Tensor:
        return torch.where(sigma > 0, _phi(self._z(sigma)), torch.zeros_like(sigma))

    def _pdf(self, sigma: torch.Tensor) -> torch.Tensor:
        z = self._z(sigma)
        p = torch.exp(-0.5 * z**2) / (math.sqrt(2 * math.pi) * self.P_std * sigma.clamp_min(1e-300))
        return torch.where(sigma > 0, p, torch.zeros_like(sigma))

    def _icdf(self, u: torch.Tensor) -> torch.Tensor:
        return (torch.special.ndtri(u) * self.P_std + self.P_mean).exp()


class LogitNormal(LogNormal):
    """Flow time t = sigmoid(n), n ~ N(mean, std²), then SD3's shift (σ → s·σ).

    σ = t/(1 − t) = e^n, so this is :class:`LogNormal` in SD3's parameters.
    """

    name = "logit_normal"

    def __init__(self, mean: float = 0.0, std: float = 1.0, shift: float = 1.0) -> None:
        super().__init__(P_mean=_num("mean", mean), P_std=_num("std", std, lo=0.0), shift=shift)

    def options(self) -> dict[str, Any]:
        return {"mean": self.P_mean, "std": self.P_std}


def resolution_shift(n: float, n_base: float, shift: float = 1.0) -> float:
    """s = shift·√(n/n_base): SD3's resolution-dependent shift for n pixels or latent tokens."""
    return _num("shift", shift, lo=0.0) * math.sqrt(_num("n", n, lo=0.0) / _num("n_base", n_base, lo=0.0))


class Resolution(LogitNormal):
    """:class:`LogitNormal` with the shift s = shift·√(n/n_base) (:func:`resolution_shift`)."""

    name = "resolution"

    def __init__(self, n: float, n_base: float = 1024.0, mean: float = 0.0, std: float = 1.0,
                 shift: float = 1.0) -> None:
        super().__init__(mean, std, shift=resolution_shift(n, n_base, shift))
        self.n, self.n_base, self.base_shift = float(n), float(n_base), float(shift)

    def config(self) -> dict[str, Any]:
        out = {"name": self.name, "n": self.n, "n_base": self.n_base, "mean": self.P_mean, "std": self.P_std}
        if self.base_shift != 1.0:
            out["shift"] = self.base_shift
        return out


class Uniform(TimestepSampler):
    """Flow time t ~ U(t_min, t_max), σ = t/(1 − t); density 1/((t_max − t_min)(1 + σ)²)."""

    name = "uniform"

    def __init__(self, t_min: float = 0.0, t_max: float = 1.0, shift: float = 1.0) -> None:
        super().__init__(shift)
        self.t_min = _num("t_min", t_min, lo=0.0, open_lo=False, hi=1.0)
        self.t_max = _num("t_max", t_max, lo=self.t_min, hi=1.0, open_hi=False)

    def options(self) -> dict[str, Any]:
        return {"t_min": self.t_min, "t_max": self.t_max}

    def _sample(self, batch: int, generator: torch.Generator | None, device: torch.device | str,
                dtype: torch.dtype = torch.float64) -> torch.Tensor:
        t = self.t_min + rand(batch, generator, device, dtype) * (self.t_max - self.t_min)
        return t / (1 - t)

    def _cdf(self, sigma: torch.Tensor) -> torch.Tensor:
        t = sigma / (1 + sigma)
        t = torch.where(torch.isinf(sigma), torch.ones_like(t), t)
        return (t - self.t_min) / (self.t_max - self.t_min)

    def _pdf(self, sigma: torch.Tensor) -> torch.Tensor:
        t = sigma / (1 + sigma)
        inside = (t >= self.t_min) & (t <= self.t_max) & (sigma >= 0)
        return torch.where(inside, 1 / ((self.t_max - self.t_min) * (1 + sigma) ** 2), torch.zeros_like(sigma))

    def _icdf(self, u: torch.Tensor) -> torch.Tensor:
        t = self.t_min + u * (self.t_max - self.t_min)
        return t / (1 - t)


class VP(TimestepSampler):
    """t ~ U(ε_t, 1), σ = σ_vp(t) (EDM's VP training distribution)."""

    name = "vp"

    def __init__(self, beta_d: float = 19.9, beta_min: float = 0.1, epsilon_t: float = 1e-5,
                 shift: float = 1.0) -> None:
        super().__init__(shift)
        self.beta_d = _num("beta_d", beta_d, lo=0.0)
        self.beta_min = _num("beta_min", beta_min, lo=0.0, open_lo=False)
        self.epsilon_t = _num("epsilon_t", epsilon_t, lo=0.0, hi=1.0)

    def options(self) -> dict[str, Any]:
        return {"beta_d": self.beta_d, "beta_min": self.beta_min, "epsilon_t": self.epsilon_t}

    def _sigma(self, t: torch.Tensor) -> torch.Tensor:
        return torch.expm1(0.5 * self.beta_d * t**2 + self.beta_min * t).sqrt()

    def _t(self, sigma: torch.Tensor) -> torch.Tensor:
        return ((self.beta_min**2 + 2 * self.beta_d * torch.log1p(sigma**2)).sqrt() - self.beta_min) / self.beta_d

    def _sample(self, batch: int, generator: torch.Generator | None, device: torch.device | str,
                dtype: torch.dtype = torch.float64) -> torch.Tensor:
        return self._sigma(1 + rand(batch, generator, device, dtype) * (self.epsilon_t - 1))

    def _cdf(self, sigma: torch.Tensor) -> torch.Tensor:
        return (self._t(sigma) - self.epsilon_t) / (1 - self.epsilon_t)

    def _pdf(self, sigma: torch.Tensor) -> torch.Tensor:
        t = self._t(sigma)
        dt = 2 * sigma / ((1 + sigma**2) * (self.beta_min**2 + 2 * self.beta_d * torch.log1p(sigma**2)).sqrt())
        inside = (t >= self.epsilon_t) & (t <= 1)
        return torch.where(inside, dt / (1 - self.epsilon_t), torch.zeros_like(sigma))

    def _icdf(self, u: torch.Tensor) -> torch.Tensor:
        return self._sigma(self.epsilon_t + u * (1 - self.epsilon_t))


class LogUniform(TimestepSampler):
    """ln σ ~ U(ln sigma_min, ln sigma_max) (EDM's VE training distribution)."""

    name = "loguniform"

    def __init__(self, sigma_min: float = 0.02, sigma_max: float = 100.0, shift: float = 1.0) -> None:
        super().__init__(shift)
        self.sigma_min = _num("sigma_min", sigma_min, lo=0.0)
        self.sigma_max = _num("sigma_max", sigma_max, lo=self.sigma_min)

    def options(self) -> dict[str, Any]:
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max}

    @property
    def _width(self) -> float:
        return math.log(self.sigma_max / self.sigma_min)

    def _sample(self, batch: int, generator: torch.Generator | None, device: torch.device | str,
                dtype: torch.dtype = torch.float64) -> torch.Tensor:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** rand(batch, generator, device, dtype)

    def _cdf(self, sigma: torch.Tensor) -> torch.Tensor:
        return (sigma.clamp_min(1e-300) / self.sigma_min).log() / self._width

    def _pdf(self, sigma: torch.Tensor) -> torch.Tensor:
        inside = (sigma >= self.sigma_min) & (sigma <= self.sigma_max)
        return torch.where(inside, 1 / (sigma * self._width), torch.zeros_like(sigma))

    def _icdf(self, u: torch.Tensor) -> torch.Tensor:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** u


class Discrete(TimestepSampler):
    """σ uniform over a table of noise levels (DDPM's U{0, …, T−1}); not a YAML entry."""

    name = "discrete"
    has_icdf = False
    sigmas: torch.Tensor

    def __init__(self, sigmas: torch.Tensor) -> None:
        super().__init__(1.0)
        self.register_buffer("sigmas", torch.as_tensor(sigmas, dtype=torch.float64).sort().values)

    def _sample(self, batch: int, generator: torch.Generator | None, device: torch.device | str,
                dtype: torch.dtype = torch.float64) -> torch.Tensor:
        draw = _draw_device(generator, device)
        i = torch.randint(0, self.sigmas.numel(), (batch,), generator=generator, device=draw)
        return self.sigmas.to(draw)[i].to(device, dtype)

    def _cdf(self, sigma: torch.Tensor) -> torch.Tensor:
        return torch.searchsorted(self.sigmas, sigma.contiguous(), right=True).to(torch.float64) / self.sigmas.numel()

    def _pdf(self, sigma: torch.Tensor) -> torch.Tensor:
        raise ValueError("a discrete sampler has no density; use its cdf (masses)")


REGISTRY: dict[str, type[TimestepSampler]] = {}


def register(cls: type[TimestepSampler]) -> type[TimestepSampler]:
    """Add an entry under ``cls.name`` (in the order of definition: the order error messages list)."""
    REGISTRY[cls.name] = cls
    return cls


for _entry in (LogNormal, LogitNormal, Resolution, Uniform, VP, LogUniform):
    register(_entry)


def sampler_names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def build_timestep_sampler(spec: Mapping[str, Any] | None, *, where: str = "timesteps_sampler"
                           ) -> TimestepSampler:
    """A sampler from its YAML mapping ``{name: ..., key: value, ...}``; one-line ``ValueError``
    naming the key for a bad name, key or value."""
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise ValueError(f"{where}={spec!r} is not accepted; expected a mapping with a name, one of "
                         f"{list(REGISTRY)}")
    kwargs = dict(spec)
    name = kwargs.pop("name")
    if name not in REGISTRY:
        raise ValueError(f"{where}.name={name!r} is not accepted; expected one of {list(REGISTRY)}")
    cls = REGISTRY[name]
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    for key in kwargs:
        if key not in accepted:
            raise ValueError(f"unknown key {where}.{key}; accepted keys for {name}: {accepted}")
    try:
        return cls(**kwargs)
    except ValueError as err:
        msg = str(err)
        if where != "timesteps_sampler":
            msg = msg.replace("timesteps_sampler.", f"{where}.", 1)
        raise ValueError(msg) from None
    except TypeError as err:
        raise ValueError(f"{where}: {err}") from None
