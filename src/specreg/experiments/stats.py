"""Statistics of a study: mean ± std over seeds, and whether a difference is resolved.

A difference between two rows is *resolved* (marked † in reports) when it exceeds both
twice the metric's real-vs-real noise floor (for distances, :attr:`Key.distance`) and the
95 % half-width of the difference over seeds:

* paired by seed where both rows share at least two seeds (a seed fixes the data order,
  the diffusion noise and the sampling noise of every variant, so the per-seed
  differences d_s = a_s − b_s carry far less noise than either mean): mean(d) and
  t₀.₉₇₅(n−1)·sd(d)/√n;
* otherwise unpaired: the difference of the means with Welch's half-width.

A single seed resolves nothing (its seed noise is unknown).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Stat:
    """One row's values of one result key over seeds."""

    mean: float
    std: float | None
    n: int
    by_seed: dict[int, float] = field(default_factory=dict)

    @classmethod
    def of(cls, by_seed: Mapping[int, float]) -> Stat:
        mean, std = mean_std(list(by_seed.values()))
        return cls(mean, std, len(by_seed), dict(by_seed))

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Stat:
        mean = raw.get("mean")
        return cls(math.nan if mean is None else float(mean), raw.get("std"), int(raw.get("n", 0)),
                   {int(k): float(v) for k, v in (raw.get("by_seed") or {}).items()})

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "n": self.n,
                "by_seed": {str(k): v for k, v in self.by_seed.items()}}


def mean_std(values: Sequence[float | None]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n − 1) of the finite values (std None for one)."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return math.nan, None
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))


def t975(df: float) -> float:
    """Two-sided 95 % quantile of Student's t with ``df`` degrees of freedom."""
    from scipy.stats import t

    return float(t.ppf(0.975, df))


def difference(key: str, a: Stat, b: Stat, floor: float | None) -> tuple[float, float | None]:
    """``a − b`` for ``key`` and the smallest size of it that the study resolves (module
    docstring); ``None``: not measurable (fewer than two seeds)."""
    from specreg.metrics.registry import find_key

    spec = find_key(key)
    distance = spec is not None and spec.distance
    common = sorted(set(a.by_seed) & set(b.by_seed))
    parts = [2 * abs(floor)] if distance and floor is not None and math.isfinite(floor) else []
    if len(common) >= 2:
        d = [a.by_seed[s] - b.by_seed[s] for s in common]
        parts.append(t975(len(d) - 1) * statistics.stdev(d) / math.sqrt(len(d)))
        return statistics.fmean(d), max(parts)
    diff = a.mean - b.mean
    if a.std is None or b.std is None:  # a single seed: its seed noise is unknown
        return diff, None
    va, vb = a.std ** 2 / a.n, b.std ** 2 / b.n
    if va + vb > 0:
        df = (va + vb) ** 2 / (va**2 / (a.n - 1) + vb**2 / (b.n - 1))
        parts.append(t975(df) * math.sqrt(va + vb))
    return diff, max(parts, default=0.0)


def resolved(diff: float, res: float | None) -> bool:
    """Whether a :func:`difference` result is resolved (†)."""
    return res is not None and math.isfinite(diff) and abs(diff) > res


__all__ = ["Stat", "difference", "mean_std", "resolved", "t975"]
