"""Training noise-level samplers: one registry for EDM (σ), DDPM (timesteps) and flow matching (t).

Every sampler is a distribution of the equivalent VE noise level σ ∈ (0, ∞) — the axis the
regularizer and :mod:`specreg.metrics.probe` use — with its CDF and density as functions
(float64). A formulation turns σ into its own variable: EDM uses σ; flow matching
t = σ/(1 + σ); DDPM the timestep whose σ_t = √((1 − ᾱ_t)/ᾱ_t) is nearest in ln σ (so DDPM
trains on the discretised distribution).

Registry (``name`` and its keys; every entry also takes ``shift`` s > 0, σ → s·σ):

=================  ===================================================================
``lognormal``      ln σ ~ N(P_mean, P_std²) (EDM's default, P_mean −1.2, P_std 1.2)
``logit_normal``   flow t = shift(sigmoid(n)), n ~ N(mean, std²) (SD3); SD3's shift
                   t' = s·t/(1 + (s − 1)·t) is σ' = s·σ, so ln σ ~ N(mean + ln s, std²)
``resolution``     logit_normal with s = shift·√(n/n_base), n pixels or latent tokens
``uniform``        flow t ~ U(t_min, t_max), σ = t/(1 − t) (flow matching's default)
``vp``             t ~ U(ε_t, 1), σ = √(exp(½β_d t² + β_min t) − 1) (EDM's VP default)
``loguniform``     ln σ ~ U(ln sigma_min, ln sigma_max) (EDM's VE default)
``mixture``        (1 − q)·base + q·low: "uniform + a fraction q from a low-noise density"
``adaptive``       bins of equal base mass drawn ∝ the running RMS loss per bin (below)
=================  ===================================================================

The adaptive sampler. Bin k of K holds base mass 1/K; it is drawn with probability
Q_k = (1 − floor)·r_k/Σr + floor/K, r_k = √(EMA of the per-sample loss² in bin k), and σ
within the bin from the base density. With ``weighting: importance`` (default) each
sample's loss is multiplied by w = (1/K)/Q_k = p_base/q, so E_q[w·ℓ] = E_p[ℓ]: the
objective (and its expected gradient) is the base sampler's, only its variance changes.
r ∝ √E[ℓ²] is the proposal that minimises that variance (Nichol & Dhariwal 2021 use it for
L_vlb); the floor bounds w ≤ 1/floor. ``weighting: none`` is what loss-following trainers
do: the objective itself moves toward the bins with large loss.

One module on purpose (over 400 lines): the registry is one concept, its eight entries share
the base class's shift, CDF and density conventions and are about 30 lines each.

An empty config (``diffusion.timesteps_sampler: {}``) keeps each formulation's own draw,
so runs without the key are unchanged draw for draw; :func:`default_sampler` gives the
registry entry with the same distribution (checked by a KS test).

Example:
    >>> s = build_timestep_sampler({"name": "logit_normal", "mean": 0.0, "std": 1.0, "shift": 3.0})
    >>> sigma = s.sample(4, torch.Generator().manual_seed(0))
    >>> bool((s.cdf(sigma) > 0).all())
    True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from specreg.diffusion.base import DiffusionLoss, _draw_device, rand, randn

WEIGHTINGS = ("importance", "none")


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
    def _sample(self, batch: int, generator: torch.Generator | None, device: torch.device | str) -> torch.Tensor:
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
               device: torch.device | str = "cpu") -> torch.Tensor:
        """σ (batch,), float64, on ``device``; drawn from ``generator`` only (reproducible)."""
        sigma = self._sample(batch, generator, device)
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

    def _sample(self, batch: int, generator: torch.Generator | None, device: torch.device | str) -> torch.Tensor:
        return (randn((batch,), generator, device, torch.float64) * self.P_std + self.P_mean).exp()

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

    def _sample(self, batch: int, generator: torch.Generator | None, device: torch.device | str) -> torch.Tensor:
        t = self.t_min + rand(batch, generator, device, torch.float64) * (self.t_max - self.t_min)
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

    def _sample(self, batch: int, generator: torch.Generator | None, device: torch.device | str) -> torch.Tensor:
        return self._sigma(1 + rand(batch, generator, device, torch.float64) * (self.epsilon_t - 1))

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

    def _sample(self, batch: int, generator: torch.Generator | None, device: torch.device | str) -> torch.Tensor:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** rand(batch, generator, device, torch.float64)

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

    def _sample(self, batch: int, generator: torch.Generator | None, device: torch.device | str) -> torch.Tensor:
        draw = _draw_device(generator, device)
        i = torch.randint(0, self.sigmas.numel(), (batch,), generator=generator, device=draw)
        return self.sigmas.to(draw)[i].to(device)

    def _cdf(self, sigma: torch.Tensor) -> torch.Tensor:
        return torch.searchsorted(self.sigmas, sigma.contiguous(), right=True).to(torch.float64) / self.sigmas.numel()

    def _pdf(self, sigma: torch.Tensor) -> torch.Tensor:
        raise ValueError("a discrete sampler has no density; use its cdf (masses)")


class Mixture(TimestepSampler):
    """(1 − q)·base + q·low: each sample from ``low`` with probability q."""

    name = "mixture"
    has_icdf = False

    def __init__(self, q: float = 0.1, base: Mapping[str, Any] | None = None, low: Mapping[str, Any] | None = None,
                 shift: float = 1.0) -> None:
        super().__init__(shift)
        self.q = _num("q", q, lo=0.0, hi=1.0, open_lo=False, open_hi=False)
        self.base = build_timestep_sampler(dict(base or {"name": "uniform"}), where="timesteps_sampler.base")
        self.low = build_timestep_sampler(dict(low or {"name": "lognormal", "P_mean": -3.0, "P_std": 0.5}),
                                          where="timesteps_sampler.low")

    def options(self) -> dict[str, Any]:
        return {"q": self.q, "base": self.base.config(), "low": self.low.config()}

    def _sample(self, batch: int, generator: torch.Generator | None, device: torch.device | str) -> torch.Tensor:
        a = self.base.sample(batch, generator, device)
        b = self.low.sample(batch, generator, device)
        pick = rand(batch, generator, device, torch.float64) < self.q
        return torch.where(pick, b, a)

    def _cdf(self, sigma: torch.Tensor) -> torch.Tensor:
        return (1 - self.q) * self.base.cdf(sigma) + self.q * self.low.cdf(sigma)

    def _pdf(self, sigma: torch.Tensor) -> torch.Tensor:
        return (1 - self.q) * self.base.pdf(sigma) + self.q * self.low.pdf(sigma)


class Adaptive(TimestepSampler):
    """Bins of equal base mass drawn ∝ the running RMS loss (module doc); state in buffers.

    Buffers ``m2`` (K,) the EMA of ℓ² per bin and ``seen`` (K,) the samples seen per bin
    go into the run's checkpoints, so a resumed run draws as an uninterrupted one. With
    several processes (DDP) each keeps the statistics of its own micro-batches and the
    checkpoint holds process 0's: a resumed multi-process run is exact on process 0 only.
    """

    name = "adaptive"
    has_icdf = False

    m2: torch.Tensor
    seen: torch.Tensor

    def __init__(self, base: Mapping[str, Any] | None = None, bins: int = 32, floor: float = 0.1,
                 decay: float = 0.99, weighting: str = "importance", shift: float = 1.0) -> None:
        super().__init__(shift)
        self.base = build_timestep_sampler(dict(base or {"name": "lognormal"}), where="timesteps_sampler.base")
        if not self.base.has_icdf:
            raise ValueError(f"timesteps_sampler.base.name={self.base.name!r} is not accepted for adaptive; expected "
                             f"one with a quantile function: {[k for k, c in REGISTRY.items() if c.has_icdf]}")
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2:
            raise ValueError(f"timesteps_sampler.bins={bins!r} is not accepted; expected an integer >= 2")
        self.bins = bins
        self.floor = _num("floor", floor, lo=0.0, hi=1.0, open_hi=False)
        self.decay = _num("decay", decay, lo=0.0, open_lo=False, hi=1.0)
        if weighting not in WEIGHTINGS:
            raise ValueError(f"timesteps_sampler.weighting={weighting!r} is not accepted; expected one of "
                             f"{list(WEIGHTINGS)}")
        self.weighting = weighting
        self.register_buffer("m2", torch.zeros(bins, dtype=torch.float64))
        self.register_buffer("seen", torch.zeros(bins, dtype=torch.float64))

    def options(self) -> dict[str, Any]:
        return {"base": self.base.config(), "bins": self.bins, "floor": self.floor, "decay": self.decay,
                "weighting": self.weighting}

    def probs(self) -> torch.Tensor:
        """Q_k (K,): the probability of drawing bin k now."""
        r, seen = self.m2.detach().cpu().sqrt(), self.seen.detach().cpu()
        fill = r[seen > 0].max() if bool((seen > 0).any()) else r.new_tensor(1.0)
        r = torch.where(seen > 0, r, fill)  # an unseen bin counts as the largest seen
        total = r.sum()
        share = r / total if bool(total > 0) else torch.full_like(r, 1 / self.bins)
        return (1 - self.floor) * share + self.floor / self.bins

    def _bin(self, sigma: torch.Tensor) -> torch.Tensor:
        u = self.base.cdf(sigma.detach().to("cpu", torch.float64))
        return (u * self.bins).floor().long().clamp(0, self.bins - 1)

    def _sample(self, batch: int, generator: torch.Generator | None, device: torch.device | str) -> torch.Tensor:
        draw = _draw_device(generator, device)
        k = torch.multinomial(self.probs().to(draw), batch, replacement=True, generator=generator)
        u = (k.to(torch.float64) + rand(batch, generator, draw, torch.float64)) / self.bins
        return self.base.icdf(u.clamp(1e-12, 1 - 1e-12)).to(device)

    def _cdf(self, sigma: torch.Tensor) -> torch.Tensor:
        v = self.base.cdf(sigma) * self.bins
        k = v.floor().long().clamp(0, self.bins - 1)
        q = self.probs()
        before = torch.cat([q.new_zeros(1), q.cumsum(0)])
        return before[k] + q[k] * (v - k)

    def _pdf(self, sigma: torch.Tensor) -> torch.Tensor:
        return self.base.pdf(sigma) * self.bins * self.probs()[self._bin(sigma)]

    def objective_cdf(self, sigma: torch.Tensor) -> torch.Tensor:
        return self.base.cdf(torch.as_tensor(sigma, dtype=torch.float64) / self.shift) if \
            self.weighting == "importance" else self.cdf(sigma)

    def importance(self, sigma: torch.Tensor) -> torch.Tensor | None:
        if self.weighting == "none":
            return None
        w = (1 / self.bins) / self.probs()[self._bin(sigma / self.shift)]
        return w.to(sigma.device)

    @torch.no_grad()
    def observe(self, sigma: torch.Tensor, loss: torch.Tensor) -> None:
        k = self._bin(sigma / self.shift)
        sq = loss.detach().to("cpu", torch.float64).square()
        ok = torch.isfinite(sq)
        k, sq = k[ok], sq[ok]
        count = torch.bincount(k, minlength=self.bins).to(torch.float64)
        mean = torch.bincount(k, weights=sq, minlength=self.bins) / count.clamp_min(1)
        m2, seen = self.m2.cpu(), self.seen.cpu()
        hit = count > 0
        new = torch.where(hit & (seen == 0), mean, self.decay * m2 + (1 - self.decay) * mean)
        self.m2.copy_(torch.where(hit, new, m2))
        self.seen.copy_(seen + count)


REGISTRY: dict[str, type[TimestepSampler]] = {
    c.name: c for c in (LogNormal, LogitNormal, Resolution, Uniform, VP, LogUniform, Mixture, Adaptive)}


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
    import inspect

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


def default_sampler(formulation: Any) -> TimestepSampler:
    """The registry entry with the distribution of ``formulation``'s training σ (its configured
    sampler, or the entry equal to its own built-in draw)."""
    own = getattr(formulation, "time_sampler", None)
    if own is not None:
        return own
    kind = type(formulation).__name__
    if kind == "EDM":
        if formulation.precond == "edm":
            return LogNormal(formulation.P_mean, formulation.P_std)
        if formulation.precond == "vp":
            return VP(formulation.beta_d, formulation.beta_min, formulation.epsilon_t)
        return LogUniform(formulation.ve_sigma_min, formulation.ve_sigma_max)
    if kind == "FlowMatching":
        if formulation.time_sampling == "uniform":
            return Uniform(shift=formulation.shift)
        return LogitNormal(formulation.logit_mean, formulation.logit_std, shift=formulation.shift)
    if kind == "DDPM":
        return Discrete(formulation.sigma(torch.arange(formulation.num_timesteps)))
    raise ValueError(f"formulation {formulation!r} is not accepted; expected EDM, DDPM or FlowMatching")


def nearest_timestep(sigma: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Index of the entry of the increasing table ``sigmas`` nearest to each σ in ln σ (DDPM)."""
    log_table = sigmas.to(torch.float64).clamp_min(1e-300).log()
    mid = (log_table[1:] + log_table[:-1]) / 2
    return torch.searchsorted(mid.to(sigma.device), sigma.to(torch.float64).clamp_min(1e-300).log().contiguous())


def weigh(out: DiffusionLoss, sampler: TimestepSampler | None, sigma: torch.Tensor) -> DiffusionLoss:
    """Let ``sampler`` see the step's losses, then apply its importance weights (if any) to
    ``loss`` and ``diffusion`` (the raw spectral term and λ stay as they are, for logging)."""
    if sampler is None:
        return out
    w = sampler.importance(sigma.detach())
    sampler.observe(sigma.detach(), out.loss.detach())
    if w is None:
        return out
    w = w.to(out.loss.device, out.loss.dtype)
    return DiffusionLoss(loss=out.loss * w, diffusion=out.diffusion * w, spectral=out.spectral, lam=out.lam,
                         sigma=out.sigma)


__all__ = ["REGISTRY", "Adaptive", "Discrete", "LogNormal", "LogUniform", "LogitNormal", "Mixture", "Resolution",
           "TimestepSampler", "Uniform", "VP", "build_timestep_sampler", "default_sampler", "nearest_timestep",
           "resolution_shift", "sampler_names", "weigh"]
