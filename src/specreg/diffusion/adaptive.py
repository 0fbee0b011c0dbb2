"""The composite entries of the noise-level registry: ``mixture`` (two entries mixed) and
``adaptive`` (bins of equal base mass drawn by the running loss; see
:mod:`specreg.diffusion.timesteps` for the importance weighting). Both build their parts
from the registry, so they register themselves after the closed-form entries."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from specreg.diffusion.base import _draw_device, rand
from specreg.diffusion.noise_levels import REGISTRY, TimestepSampler, _num, build_timestep_sampler, register

WEIGHTINGS = ("importance", "none")


@register
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

    def _sample(self, batch: int, generator: torch.Generator | None, device: torch.device | str,
                dtype: torch.dtype = torch.float64) -> torch.Tensor:
        a = self.base.sample(batch, generator, device)
        b = self.low.sample(batch, generator, device)
        pick = rand(batch, generator, device, torch.float64) < self.q
        return torch.where(pick, b, a).to(dtype)

    def _cdf(self, sigma: torch.Tensor) -> torch.Tensor:
        return (1 - self.q) * self.base.cdf(sigma) + self.q * self.low.cdf(sigma)

    def _pdf(self, sigma: torch.Tensor) -> torch.Tensor:
        return (1 - self.q) * self.base.pdf(sigma) + self.q * self.low.pdf(sigma)


@register
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

    def _sample(self, batch: int, generator: torch.Generator | None, device: torch.device | str,
                dtype: torch.dtype = torch.float64) -> torch.Tensor:
        draw = _draw_device(generator, device)
        k = torch.multinomial(self.probs().to(draw), batch, replacement=True, generator=generator)
        u = (k.to(torch.float64) + rand(batch, generator, draw, torch.float64)) / self.bins
        return self.base.icdf(u.clamp(1e-12, 1 - 1e-12)).to(device, dtype)

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
