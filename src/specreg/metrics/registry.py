"""The metric registry: one entry per metric, carrying everything that computes, ranks or
reports it.

Each :class:`Metric` says which kinds of data it applies to, the result keys it writes
(each a :class:`Key` with its direction — lower, higher or toward 0 is better — whether it
is a distance between two sets, whose real-vs-real value is then the noise floor, and its
label), whether it pairs sample i with reference i, why it cannot be computed on given
data, and how to compute it: ``make(ctx)`` returns a streaming accumulator with
``update(batch)`` (a :class:`Batch` of samples or reference items, whose shared work —
spectra, domain features — is computed once and cached) and ``compute() -> {key: value}``;
paired metrics also take ``update_paired(x, r)``.

``specreg eval`` (:func:`specreg.experiments.evaluate.evaluate`) and the study report
loop over :data:`METRICS`; nothing else keeps a list of metric names. Adding a metric is
one entry in :data:`METRICS` plus its implementation. Result keys of metrics that are gone
stay readable in :data:`LEGACY_KEYS` (direction and label), so old results.json files
re-render.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from specreg.metrics.streaming import (
    FD,
    LSD,
    NDB,
    Batch,
    Context,
    KIDStream,
    PeakEnergy,
    PerClip,
    domain_problem,
    embedding_name,
    ndb_problem,
)

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
    ``{fd}``, ``{kid}`` and ``{ndb_on}`` (:meth:`Context.label_fields`).
    """

    name: str
    direction: str
    label: str
    distance: bool = False

    @property
    def ranked(self) -> bool:
        return bool(self.direction)

    def score(self, value: float) -> float:
        """Smaller is better: the value, its negative or its size, by direction (NaN if unranked)."""
        return {"lower": value, "higher": -value, "zero": abs(value)}.get(self.direction, float("nan"))


@dataclass(frozen=True)
class Metric:
    """One metric: where it applies, what it writes, how it is computed.

    ``paired``: compares sample i with reference i (needs as many reference items as
    samples, same shape; no real-vs-real floor from disjoint sets). ``default_for``: the
    kinds whose default metric list includes it. ``problem(ctx)``: why it cannot be
    computed on these data (None when it can). ``make(ctx)``: its accumulator.
    """

    name: str
    kinds: tuple[str, ...]
    keys: tuple[Key, ...]
    make: Callable[[Context], Any]
    paired: bool = False
    default_for: tuple[str, ...] = ()
    problem: Callable[[Context], str | None] = lambda ctx: None
    needs_peaks: bool = False

    @property
    def primary(self) -> str:
        """The key a table shows for this metric unless told otherwise."""
        return self.keys[0].name


def _lsd(name: str, band: str | None, default_for: tuple[str, ...] = ()) -> Metric:
    """A log-spectral distance over one band of :data:`specreg.metrics.spectrum.BANDS`
    (labelled with the band's edges)."""
    from specreg.metrics.bands import band_text

    where = band_text(band)
    return Metric(
        name, KINDS,
        (Key(name, "lower", f"log-spectral distance, RMS of log10(P_gen/P_ref) over {where} (decades)", True),
         Key(f"{name}_bias", "zero", f"mean of log10(P_gen/P_ref) over {where} (decades; > 0 = too much power)")),
        make=lambda ctx: LSD(ctx, name, band), default_for=default_for)


def _fid(ctx: Context) -> Any:
    from specreg.metrics.fid import FIDStream  # loads torch: only when fid is computed

    return FIDStream(ctx)


def _fid_problem(ctx: Context) -> str | None:
    from specreg.metrics.fid import fid_problem

    return fid_problem(ctx)


METRICS: dict[str, Metric] = {m.name: m for m in (
    _lsd("lsd", None, KINDS),
    _lsd("lsd_low", "low", ("image",)),
    _lsd("lsd_mid", "mid", ("image",)),
    _lsd("lsd_high", "high", KINDS),
    Metric("domain_fd", KINDS, (Key("domain_fd", "lower", "{fd}", True),), FD, default_for=KINDS,
           problem=domain_problem("domain_fd")),
    Metric("domain_kid", KINDS,
           (Key("domain_kid", "lower", "{kid}", True),
            Key("domain_kid_std", "", "standard deviation of the KID over its random subsets")), KIDStream,
           default_for=KINDS, problem=domain_problem("domain_kid")),
    Metric("fid", ("image",),
           (Key("fid", "lower", "{fid}; Fréchet distance of 2048-d pool features, 8-bit images resized to 299×299 "
                "(TF1 bilinear, as torch-fidelity)", True),
            Key("fid_floor", "", "noise floor of fid: each set's even and odd items as two halves, their FIDs "
                "scaled to the two sets' sizes and summed (symmetric in samples and reference)")),
           _fid, problem=_fid_problem),
    Metric("ndb", KINDS,
           (Key("ndb", "lower", "NDB/k: fraction of k-means bins (fitted on the reference {ndb_on}) whose share "
                "differs (p < 0.05)", True),
            Key("ndb_number", "", "number of statistically different bins"),
            Key("ndb_bins", "", "number of bins k")), NDB, default_for=("audio",), problem=ndb_problem),
    Metric("mrstft", ("audio",),
           (Key("mrstft", "lower", "multi-resolution STFT distance, sample i vs reference i (auraloss definition; "
                "lower is better)"),), lambda ctx: PerClip(ctx, "mrstft"), paired=True),
    Metric("pesq", ("audio",),
           (Key("pesq", "higher", "PESQ MOS-LQO, sample i degraded vs reference i (nb at 8 kHz, wb at 16 kHz, else "
                "wb at 16 kHz)"),), lambda ctx: PerClip(ctx, "pesq"), paired=True),
    Metric("dnsmos", ("audio",),
           tuple(Key(f"dnsmos_{k}", "higher", f"DNSMOS P.835 {what} MOS of the samples (1–5, higher is better)")
                 for k, what in (("ovrl", "overall"), ("sig", "signal"), ("bak", "background"), ("p808", "P.808"))),
           lambda ctx: PerClip(ctx, "dnsmos")),
    Metric("peak_energy", ("image",),
           (Key("peak_energy", "higher", "share of the energy near the checkerboards' spectral lines that sits "
                "exactly on them (1 = no leakage)"),), PeakEnergy, needs_peaks=True,
           problem=lambda ctx: None if ctx.peaks else "peak_energy needs data with known spectral lines "
                                                        "(reference: checkerboards)"),
)}


# keys of metrics that are gone, so that results.json files that hold them still re-render
LEGACY_KEYS: dict[str, Key] = {k.name: k for k in (
    Key("lsd_upper", "lower", "log-spectral distance over f >= 1/4 cycles/sample (decades; legacy band, now "
        "lsd_high: f >= 1/3)", True),
    Key("lsd_upper_bias", "zero", "mean of log10(P_gen/P_ref) over f >= 1/4 cycles/sample (decades; legacy band, "
        "now lsd_high_bias: f >= 1/3)"),
)}


def metric_names(kind: str) -> tuple[str, ...]:
    """Metrics that apply to ``kind`` (``"image"`` or ``"audio"``), in registry order."""
    return tuple(n for n, m in METRICS.items() if kind in m.kinds)


def default_metrics(kind: str) -> tuple[str, ...]:
    return tuple(n for n, m in METRICS.items() if kind in m.default_for)


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


def check_metrics(metrics: Iterable[str] | str | None, kind: str, *, allow: Iterable[str] = ()) -> tuple[str, ...]:
    """Normalise metric names (a list or comma-separated string; ``-`` = ``_``) for ``kind``,
    or a ValueError naming the first that does not apply. ``None``: the kind's defaults."""
    if metrics is None:
        return default_metrics(kind)
    if isinstance(metrics, str):
        metrics = [metrics]
    accepted = metric_names(kind)
    names: list[str] = []
    for m in metrics:
        for name in str(m).split(","):
            name = name.strip().lower().replace("-", "_")
            if not name:
                continue
            if name not in accepted:
                other = next((k for k in KINDS if k != kind and name in metric_names(k)), None)
                hint = f" (it applies to {other} data)" if other else ""
                raise ValueError(f"metrics contains {name!r}, which is not a metric for {kind} data{hint}; "
                                 f"accepted: {list(accepted)}")
            if name not in names:
                names.append(name)
    if not names:
        raise ValueError(f"metrics is empty; accepted: {list(accepted)}")
    return tuple(names)


def labels(names: Iterable[str], ctx: Context) -> dict[str, str]:
    """Every result key of the metrics ``names`` → its label for these data."""
    fields = ctx.label_fields()
    return {k.name: k.label.format(**fields) for n in names for k in METRICS[n].keys}


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
    "check_metrics",
    "default_metrics",
    "embedding_name",
    "find_key",
    "labels",
    "metric_names",
    "metric_of",
]
