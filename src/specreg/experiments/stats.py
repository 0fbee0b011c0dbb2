"""Statistics of a study: mean ± std over seeds, and which differences are marked.

Each *cell* — a variant's difference to its baseline on one metric key — gets a
two-sided test of "no difference":

* paired by seed where both rows share at least two seeds (a seed fixes the data order,
  the diffusion noise and the sampling noise of every variant, so the per-seed
  differences d_s = a_s − b_s carry far less noise than either mean): Δ = mean(d),
  95 % half-width t₀.₉₇₅(n−1)·sd(d)/√n, p from t = Δ/(sd(d)/√n) with n − 1 degrees of
  freedom (scipy's ``ttest_rel``);
* otherwise unpaired: the difference of the means with Welch's half-width and p
  (``ttest_ind(equal_var=False)``).

A single seed gives no test (its seed noise is unknown). A cell is *marked* (†) when
both hold:

1. it survives Benjamini–Hochberg false-discovery control at q = :data:`FDR_Q` over its
   family (every tested cell of the study's results table; the automatic-λ comparisons
   are a second family): its BH-adjusted p-value p_BH ≤ q, which keeps the expected share
   of false marks among the marks at most q;
2. |Δ| exceeds the key's *practical floor* (:func:`practical_floor`): for distances twice
   the real-vs-real noise floor; for signed keys (direction "zero", the ``*_bias`` keys)
   the real-vs-real spread of the key at the study's sample counts; none for the others.

The BH step is scipy's ``false_discovery_control`` (a well-kept implementation of the
step-up rule).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

FDR_Q = 0.05  # Benjamini–Hochberg level of every study family


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


@dataclass(frozen=True)
class Difference:
    """``a − b`` of one key over seeds (module docstring): ``half_width`` (95 %) and the
    two-sided ``p`` are None with a single seed; ``paired``: over ``n`` common seeds."""

    diff: float
    half_width: float | None
    p: float | None
    n: int
    paired: bool


def p_from_t(t: float, df: float) -> float:
    """Two-sided p of Student's t statistic ``t`` with ``df`` degrees of freedom."""
    from scipy.stats import t as student

    return float(2 * student.sf(abs(t), df))


def difference(a: Stat, b: Stat) -> Difference:
    """The test of ``a − b`` (module docstring)."""
    common = sorted(set(a.by_seed) & set(b.by_seed))
    if len(common) >= 2:
        d = [a.by_seed[s] - b.by_seed[s] for s in common]
        n, mean, sd = len(d), statistics.fmean(d), statistics.stdev(d)
        se = sd / math.sqrt(n)
        # identical per-seed differences: no seed noise at all, so any shift is certain
        p = (1.0 if mean == 0 else 0.0) if se == 0 else p_from_t(mean / se, n - 1)
        return Difference(mean, t975(n - 1) * se, p, n, True)
    diff = a.mean - b.mean
    if a.std is None or b.std is None:  # a single seed: its seed noise is unknown
        return Difference(diff, None, None, min(a.n, b.n), False)
    va, vb = a.std ** 2 / a.n, b.std ** 2 / b.n
    if va + vb == 0:
        return Difference(diff, 0.0, 1.0 if diff == 0 else 0.0, min(a.n, b.n), False)
    df = (va + vb) ** 2 / (va**2 / (a.n - 1) + vb**2 / (b.n - 1))
    se = math.sqrt(va + vb)
    return Difference(diff, t975(df) * se, p_from_t(diff / se, df), min(a.n, b.n), False)


@dataclass(frozen=True)
class Trend:
    """The least-squares line v = a + b·s through a curve's points (s: step, v: value) over
    a window of span S = s_last − s_first: ``change`` = b·S, the fitted change of v over the
    window, with its 95 % ``half_width`` t₀.₉₇₅(n−2)·se(b)·S and the two-sided ``p`` of
    b = 0 from t = b / se(b) with n − 2 degrees of freedom (scipy's ``linregress``); the
    residual scatter of the points, not a sampling floor, sets se(b). ``scatter`` is that
    residual standard deviation, √(Σ (v − a − b·s)² / (n − 2)): how far single points
    stray from the line, to set beside one point's sampling noise (:func:`point_spread`)."""

    change: float
    half_width: float
    p: float
    n: int
    scatter: float = math.nan


def trend(steps: Sequence[float], values: Sequence[float]) -> Trend | None:
    """The :class:`Trend` of ``values`` along ``steps``; None for fewer than three points
    (no scatter to judge a slope by)."""
    if len(steps) != len(values):
        raise ValueError(f"steps and values: {len(steps)} against {len(values)} points; one value per step")
    if len(steps) < 3:
        return None
    from scipy.stats import linregress

    s, v = list(map(float, steps)), list(map(float, values))
    fit = linregress(s, v)
    span, n = float(max(steps) - min(steps)), len(steps)
    p = float(fit.pvalue) if math.isfinite(fit.pvalue) else (1.0 if fit.slope == 0 else 0.0)
    rss = sum((y - fit.intercept - fit.slope * x) ** 2 for x, y in zip(s, v))
    return Trend(float(fit.slope) * span, t975(n - 2) * float(fit.stderr) * span, p, n,
                 math.sqrt(float(rss) / (n - 2)))


def point_spread(entries: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """The sampling noise of single curve points: ``entries`` are measurements of one
    checkpoint on several sample seeds (``scripts/curve_point_noise.py``; each with
    ``step``, ``seed``, ``n`` samples and a value per key), grouped by (step, n) in step
    order; per group the seeds and, per key present, the mean and sample standard deviation
    (n − 1; None for one seed) over seeds."""
    groups: dict[tuple[int, int], dict[int, Mapping[str, Any]]] = {}
    for e in entries:
        groups.setdefault((int(e["step"]), int(e["n"])), {})[int(e["seed"])] = e
    out = []
    for (step, n), by_seed in sorted(groups.items()):
        stats = {k: mean_std([e.get(k) for e in by_seed.values()])  # mean_std drops the missing
                 for k in keys if any(e.get(k) is not None for e in by_seed.values())}
        out.append({"step": step, "n": n, "seeds": sorted(by_seed),
                    "mean": {k: m for k, (m, _) in stats.items()}, "sd": {k: sd for k, (_, sd) in stats.items()}})
    return out


def bh_adjust(p: Sequence[float]) -> list[float]:
    """Benjamini–Hochberg adjusted p-values of one family (scipy's
    ``false_discovery_control``): a cell survives FDR control at q when its value ≤ q."""
    if not p:
        return []
    from scipy.stats import false_discovery_control

    return [float(v) for v in false_discovery_control(list(p), method="bh")]


def practical_floor(key: str, floor: float | None, spread: float | None = None) -> tuple[float, str]:
    """The smallest |Δ| of ``key`` that counts (module docstring) and where it comes from.

    ``floor``: the key's real-vs-real value (the noise floor of a distance); ``spread``:
    the real-vs-real standard deviation of the key at the study's sample counts (the floor
    record's ``spread``). A signed key without a recorded spread falls back to |floor|,
    one real-vs-real draw of it (for a zero-mean normal, E|X| ≈ 0.8 σ).
    """
    from specreg.metrics.floor import FACTOR
    from specreg.metrics.registry import find_key

    spec = find_key(key)
    if spec is None:
        return 0.0, "none"
    if spec.distance:
        if floor is None or not math.isfinite(floor):
            return 0.0, "none"
        return FACTOR * abs(float(floor)), f"{FACTOR} × noise floor"
    if spec.direction == "zero":
        if spread is not None and math.isfinite(spread):
            return float(spread), "real-vs-real spread"
        if floor is not None and math.isfinite(floor):
            return abs(float(floor)), "|real vs real|"
    return 0.0, "none"


def marked(p_adj: float | None, diff: float, floor: float, q: float = FDR_Q) -> bool:
    """Whether a tested cell is marked (†): p_BH ≤ q and |Δ| > its practical floor."""
    return p_adj is not None and math.isfinite(diff) and p_adj <= q and abs(diff) > floor


__all__ = ["FDR_Q", "Difference", "Stat", "Trend", "bh_adjust", "difference", "marked", "mean_std", "p_from_t",
           "point_spread", "practical_floor", "t975", "trend"]
