"""The metric registry: one entry per metric, carrying everything that computes, ranks or
reports it.

Each :class:`Metric` says which kinds of data it applies to, the result keys it writes
(each a :class:`Key` with its direction — lower, higher or toward 0 is better — whether it
is a distance between two sets, whose real-vs-real value is then the noise floor, and its
label), whether it pairs sample i with reference i, why it cannot be computed on given
data, its part of the noise floor, its warnings, and how to compute it: ``make(ctx)``
returns an :class:`~specreg.metrics.accumulator.Accumulator` with ``update(batch)`` (a
:class:`Batch` of samples or reference items, whose shared work — spectra, domain
features — is computed once and cached), ``merge``, ``sync`` and ``compute() -> {key:
value}``, whose keys :meth:`Metric.results` checks against the entry; paired metrics also
take ``update_paired(x, r)``.

The evaluation engine (:func:`specreg.metrics.evaluation.evaluate`, behind ``specreg
eval`` and every study) and the study report loop over :data:`METRICS`; no module outside
``specreg.metrics`` names a metric (``tests/test_metric_names.py`` checks it), and
:func:`metric_table` writes the list for docs and help. Adding a metric is one entry in
:data:`METRICS` plus its implementation. Result keys of metrics that are gone
stay readable in :data:`LEGACY_KEYS` (direction and label), so old results.json files
re-render.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from specreg.metrics.bands import band_text
from specreg.metrics.rules import (
    full_rank_problem,
    gray_images_problem,
    kid_subsets_problem,
    kid_warnings,
    ndb_problem,
    peaks_problem,
    quiet_reference_warnings,
)
from specreg.metrics.streaming import (
    DNSMOS,
    DNSMOS_PARTS,
    FD,
    LSD,
    MRSTFT,
    NDB,
    PESQ,
    Batch,
    Context,
    KIDStream,
    PeakEnergy,
    embedding_name,
)

if TYPE_CHECKING:
    from specreg.metrics.floor import Halves

KINDS = ("image", "audio")
DIRECTIONS = ("lower", "higher", "zero", "")
ARROWS = {"lower": " ↓", "higher": " ↑", "zero": " →0", "": ""}


@dataclass(frozen=True)
class Key:
    """One result key a metric writes.

    ``direction``: ``"lower"``, ``"higher"`` or ``"zero"`` (closest to 0, for signed
    biases) is better; ``""`` for values shown but never ranked (a count, a spread).
    ``distance``: the key measures how far two *sets* are apart, so two disjoint real sets
    of the same sizes give its noise floor. ``label`` may use the context's fields
    ``{fd}``, ``{kid}`` and ``{ndb_on}`` (:meth:`Context.label_fields`). ``floor_of`` /
    ``spread_of``: this key is the noise floor / the spread of that key (shown beside it).
    ``optional``: the metric may leave the key out (when the data cannot give it).
    """

    name: str
    direction: str
    label: str
    distance: bool = False
    floor_of: str | None = None
    spread_of: str | None = None
    optional: bool = False

    @property
    def ranked(self) -> bool:
        return bool(self.direction)

    def score(self, value: float) -> float:
        """Smaller is better: the value, its negative or its size, by direction (NaN if unranked)."""
        return {"lower": value, "higher": -value, "zero": abs(value)}.get(self.direction, float("nan"))


def _no_problem(ctx: Context) -> str | None:
    return None


@dataclass(frozen=True)
class Metric:
    """One metric: where it applies, what it writes, how it is computed.

    ``make(ctx)``: its accumulator (:class:`~specreg.metrics.accumulator.Accumulator`;
    ``update(batch)``, ``update_paired(x, r)`` when paired, ``compute() -> {key: value}``,
    checked against ``keys`` by :meth:`results`). ``paired``: compares sample i with
    reference i (needs as many reference items as samples, same shape; no real-vs-real
    floor from disjoint sets). ``default_for``: the kinds whose default metric list
    includes it; ``study_default``: in a study's default list. Applicability: ``kinds``,
    ``needs_peaks`` (data with known spectral lines) and ``problem(ctx)`` (why it cannot be
    computed on these data — too few items, wrong shape —, None when it can).
    ``features``: computed on the domain features (the result names the embedding).
    ``floor(ctx)``: its part of the split noise floor (:class:`specreg.metrics.floor.Halves`),
    None when it has none. ``warnings(values, ctx, x, r)``: what a reader of its values
    should know. ``band``: the :data:`~specreg.metrics.bands.BANDS` band of a spectral
    metric (``None`` with ``spectral``: all bins). ``note``: its label's first clause is
    printed under the CLI's table.
    """

    name: str
    kinds: tuple[str, ...]
    keys: tuple[Key, ...]
    make: Callable[[Context], Any]
    paired: bool = False
    default_for: tuple[str, ...] = ()
    problem: Callable[[Context], str | None] = _no_problem
    needs_peaks: bool = False
    features: bool = False
    floor: Callable[[Context], Halves] | None = None
    warnings: Callable[[Mapping[str, float], Context, Any, Any], list[str]] | None = None
    spectral: bool = False
    band: str | None = None
    study_default: bool = False
    note: bool = False

    @property
    def primary(self) -> str:
        """The key a table shows for this metric unless told otherwise."""
        return self.keys[0].name

    def applies(self, kind: str, *, peaks: bool | None = None) -> bool:
        """Whether the metric is measured for ``kind`` data (``peaks``: whether they have
        known spectral lines; None = not known yet)."""
        return kind in self.kinds and not (self.needs_peaks and peaks is False)

    def results(self, acc: Any) -> dict[str, float]:
        """``acc.compute()``, or a ValueError when it writes other keys than :attr:`keys` declares."""
        out = acc.compute()
        declared = {k.name for k in self.keys}
        required = {k.name for k in self.keys if not k.optional}
        missing, extra = sorted(required - set(out)), sorted(set(out) - declared)
        if missing or extra:
            raise ValueError(f"metric {self.name!r}: its accumulator {type(acc).__name__} wrote keys {sorted(out)}, "
                             f"but the registry entry declares {[k.name for k in self.keys]} (missing {missing}, "
                             f"extra {extra}); fix the accumulator or the entry's keys")
        return out


def _partial(f: Callable[..., Any], name: str) -> Callable[..., Any]:
    return functools.partial(f, name)


def _both(*checks: Callable[[Context], str | None]) -> Callable[[Context], str | None]:
    """The first problem any of ``checks`` finds."""
    def problem(ctx: Context) -> str | None:
        return next((why for check in checks if (why := check(ctx))), None)

    return problem


def _lsd(name: str, band: str | None, default_for: tuple[str, ...] = (), study_default: bool = False) -> Metric:
    """A log-spectral distance over one band of :data:`specreg.metrics.bands.BANDS`
    (labelled with the band's edges)."""
    from specreg.metrics.floor import SpectralHalves

    where = band_text(band)
    return Metric(
        name, KINDS,
        (Key(name, "lower", f"log-spectral distance, RMS of log10(P_gen/P_ref) over {where} (decades)", True),
         Key(f"{name}_bias", "zero", f"mean of log10(P_gen/P_ref) over {where} (decades; > 0 = too much power)")),
        make=lambda ctx: LSD(ctx, name, band), default_for=default_for, spectral=True, band=band,
        floor=lambda ctx: SpectralHalves(name, band, ctx.ndim), study_default=study_default)


def _fid(ctx: Context) -> Any:
    from specreg.metrics.fid import FIDStream  # loads torch: only when fid is computed

    return FIDStream(ctx, "fid")


def _fid_problem(ctx: Context) -> str | None:
    from specreg.metrics.fid import fid_problem

    return fid_problem(ctx)


def _domain_fd_floor(ctx: Context) -> Halves:
    from specreg.metrics.floor import FrechetHalves

    return FrechetHalves("domain_fd")


METRICS: dict[str, Metric] = {m.name: m for m in (
    _lsd("lsd", None, KINDS, study_default=True),
    _lsd("lsd_low", "low", ("image",)),
    _lsd("lsd_mid", "mid", ("image",)),
    _lsd("lsd_high", "high", KINDS, study_default=True),
    Metric("domain_fd", KINDS, (Key("domain_fd", "lower", "{fd}", True),), lambda ctx: FD(ctx, "domain_fd"),
           default_for=KINDS, features=True, floor=_domain_fd_floor,
           problem=_both(_partial(gray_images_problem, "domain_fd"), _partial(full_rank_problem, "domain_fd"))),
    Metric("domain_kid", KINDS,
           (Key("domain_kid", "lower", "{kid}", True),
            Key("domain_kid_std", "", "standard deviation of the KID over its random subsets",
                spread_of="domain_kid")), lambda ctx: KIDStream(ctx, "domain_kid"),
           default_for=KINDS, features=True, warnings=_partial(kid_warnings, "domain_kid"),
           problem=_both(_partial(gray_images_problem, "domain_kid"), _partial(kid_subsets_problem, "domain_kid"))),
    Metric("fid", ("image",),
           (Key("fid", "lower", "{fid_net}; Fréchet distance of 2048-d pool features, 8-bit images resized to 299×299 "
                "(TF1 bilinear, as torch-fidelity)", True),
            Key("fid_floor", "", "noise floor of fid: each set's even and odd items as two halves, their FIDs "
                "scaled to the two sets' sizes and summed (symmetric in samples and reference)", floor_of="fid",
                optional=True)),
           _fid, problem=_fid_problem, note=True),
    Metric("ndb", KINDS,
           (Key("ndb", "lower", "NDB/k: fraction of k-means bins (fitted on the reference {ndb_on}) whose share "
                "differs (p < 0.05)", True),
            Key("ndb_number", "", "number of statistically different bins"),
            Key("ndb_bins", "", "number of bins k")), lambda ctx: NDB(ctx, "ndb"), default_for=("audio",),
           problem=_partial(ndb_problem, "ndb")),
    Metric("mrstft", ("audio",),
           (Key("mrstft", "lower", "multi-resolution STFT distance, sample i vs reference i (auraloss definition; "
                "lower is better)"),), lambda ctx: MRSTFT(ctx, "mrstft"), paired=True,
           warnings=_partial(quiet_reference_warnings, "mrstft")),
    Metric("pesq", ("audio",),
           (Key("pesq", "higher", "PESQ MOS-LQO, sample i degraded vs reference i (nb at 8 kHz, wb at 16 kHz, else "
                "wb at 16 kHz)"),), lambda ctx: PESQ(ctx, "pesq"), paired=True),
    Metric("dnsmos", ("audio",),
           tuple(Key(f"dnsmos_{k}", "higher", f"DNSMOS P.835 {what} MOS of the samples (1–5, higher is better)")
                 for k, what in zip(DNSMOS_PARTS, ("overall", "signal", "background", "P.808"))),
           lambda ctx: DNSMOS(ctx, "dnsmos")),
    Metric("peak_energy", ("image",),
           (Key("peak_energy", "higher", "share of the energy near the checkerboards' spectral lines that sits "
                "exactly on them (1 = no leakage)"),), lambda ctx: PeakEnergy(ctx, "peak_energy"), needs_peaks=True,
           problem=_partial(peaks_problem, "peak_energy")),
)}


# keys of metrics that are gone, so that results.json files that hold them still re-render
LEGACY_KEYS: dict[str, Key] = {k.name: k for k in (
    Key("lsd_upper", "lower", "log-spectral distance over f >= 1/4 cycles/sample (decades; legacy band, now "
        f"lsd_high: {band_text('high', '').strip()})", True),
    Key("lsd_upper_bias", "zero", "mean of log10(P_gen/P_ref) over f >= 1/4 cycles/sample (decades; legacy band, "
        f"now lsd_high_bias: {band_text('high', '').strip()})"),
)}


def metric_names(kind: str, *, peaks: bool | None = None) -> tuple[str, ...]:
    """Metrics that apply to ``kind`` (``"image"`` or ``"audio"``), in registry order
    (``peaks=False``: without those that need known spectral lines)."""
    return tuple(n for n, m in METRICS.items() if m.applies(kind, peaks=peaks))


def default_metrics(kind: str) -> tuple[str, ...]:
    return tuple(n for n, m in METRICS.items() if kind in m.default_for)


def study_default_metrics() -> tuple[str, ...]:
    """A study's metrics when its config names none."""
    return tuple(n for n, m in METRICS.items() if m.study_default)


def band_metric(band: str | None) -> Metric:
    """The spectral metric over ``band`` of :data:`~specreg.metrics.bands.BANDS` (None: all bins)."""
    for m in METRICS.values():
        if m.spectral and m.band == band:
            return m
    accepted = [m.band for m in METRICS.values() if m.spectral]
    raise ValueError(f"band={band!r} has no spectral metric; accepted: {accepted}")


def find_key(key: str) -> Key | None:
    """The :class:`Key` named ``key`` of any registered metric (None if none writes it)."""
    for m in METRICS.values():
        for k in m.keys:
            if k.name == key:
                return k
    return LEGACY_KEYS.get(key)


def metric_of(key: str) -> Metric | None:
    """The registered metric that writes result key ``key``."""
    for m in METRICS.values():
        if any(k.name == key for k in m.keys):
            return m
    return None


def check_metrics(metrics: Iterable[str] | str | None, kind: str, *, peaks: bool | None = None,
                  arg: str = "metrics", data: str = "a metric for {kind} data") -> tuple[str, ...]:
    """Normalise metric names (a list or comma-separated string; ``-`` = ``_``) for ``kind``,
    or a ValueError naming the first that does not apply. ``None``: the kind's defaults.
    ``peaks``: whether the data have known spectral lines (None: not known). ``arg`` and
    ``data``: how the error names the argument and the data."""
    if metrics is None:
        return default_metrics(kind)
    if isinstance(metrics, str):
        metrics = [metrics]
    accepted = metric_names(kind, peaks=peaks)
    names: list[str] = []
    for m in metrics:
        for name in str(m).split(","):
            name = name.strip().lower().replace("-", "_")
            if not name:
                continue
            if name not in accepted:
                other = next((k for k in KINDS if k != kind and name in metric_names(k)), None)
                hint = f" (it applies to {other} data)" if other else ""
                raise ValueError(f"{arg} contains {name!r}, which is not {data.format(kind=kind)}{hint}; "
                                 f"accepted: {list(accepted)}")
            if name not in names:
                names.append(name)
    if not names:
        raise ValueError(f"{arg} is empty; accepted: {list(accepted)}")
    return tuple(names)


def labels(names: Iterable[str], ctx: Context) -> dict[str, str]:
    """Every result key of the metrics ``names`` → its label for these data."""
    fields = ctx.label_fields()
    return {k.name: k.label.format(**fields) for n in names for k in METRICS[n].keys}


def notes(result: Mapping[str, Any]) -> list[str]:
    """Lines under a printed result: what the feature-based values are, and the first
    clause of the label of each metric marked ``note``."""
    from specreg.metrics.domain import DOMAIN_FD_LABEL

    values, out = result.get("metrics", {}), []
    feats = [m.name for m in METRICS.values() if m.features and m.primary in values]
    if result.get("embedding") and feats:
        out.append(f"({'/'.join(feats)}: {DOMAIN_FD_LABEL})")
    for m in METRICS.values():
        if m.note and m.primary in values:
            out.append(f"({m.primary}: {result['labels'][m.primary].split(';')[0]})")
    return out


def metric_table() -> str:
    """The registry as a Markdown table (name, data kinds, keys with their direction), for docs and help."""
    rows = ["| metric | data | keys |", "|---|---|---|"]
    for m in METRICS.values():
        kinds = "/".join(m.kinds) + (", paired" if m.paired else "") + (", known spectral lines" if m.needs_peaks
                                                                      else "")
        rows.append(f"| {m.name} | {kinds} | {', '.join(k.name + ARROWS[k.direction] for k in m.keys)} |")
    return "\n".join(rows)


__all__ = [
    "ARROWS",
    "DIRECTIONS",
    "KINDS",
    "LEGACY_KEYS",
    "METRICS",
    "Batch",
    "Context",
    "Key",
    "Metric",
    "band_metric",
    "check_metrics",
    "default_metrics",
    "embedding_name",
    "find_key",
    "labels",
    "metric_names",
    "metric_of",
    "metric_table",
    "notes",
    "study_default_metrics",
]
