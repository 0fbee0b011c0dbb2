"""The data sets a config (``data.kind``) or a study (``evaluation.reference``) can name:
one :class:`DataSet` entry each, in :data:`DATASETS`.

An entry says everything the rest of the code needs to know about a data set:

* ``name``: the ``data.kind`` of a config; ``kind``: ``"image"`` or ``"audio"`` (what the
  networks and metrics see; a latent model encodes an image set, so it has no entry of
  its own);
* ``build(data, split)``: the one factory of the set, for training, for the probe's
  held-out items and for the reference sets;
* ``rows``: which items train and which are held out (:class:`Rows`);
* ``reference`` and ``aliases``: the built-in reference name a study or ``specreg eval``
  uses, ``real(data, request)``: the reference and noise-floor sets (:class:`RealSets`),
  ``serves``: other data kinds it is a reference for;
* ``peaks(data)``: special structure, the known spectral lines (checkerboards).

The entry types are in :mod:`specreg.data.entry`. Adding a data set is one entry: in
:mod:`specreg.data.sets` (listed in ``SHIPPED``) for a shipped set, or one :func:`register`
call (a plug-in, a test). Configs then accept its name, studies its reference name, and
training, probing and evaluation build it through its entry. Nothing here imports torch;
the builders import their data set classes when called.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from specreg.data.entry import DEFAULT_COUNT, KINDS, DataSet, RealRequest, RealSets, Rows
from specreg.data.sets import SHIPPED

if TYPE_CHECKING:
    from torch.utils.data import Dataset

__all__ = ["DATASETS", "DEFAULT_COUNT", "KINDS", "DataSet", "LiveMapping", "RealRequest", "RealSets", "Rows",
           "build_dataset", "canonical_reference", "data_names", "data_set", "held_out_dataset", "real_sets",
           "reference_aliases", "reference_names", "reference_set", "register", "unregister"]

DATASETS: dict[str, DataSet] = {entry.name: entry for entry in SHIPPED}
"""``data.kind`` → its entry: the shipped sets (:data:`specreg.data.sets.SHIPPED`), then
those registered at run time, in order."""


def register(entry: DataSet, *, replace: bool = False) -> DataSet:
    """Add ``entry`` (a new ``data.kind`` and, if it has one, reference name) to the registry;
    ``replace=True`` replaces the entry of the same ``data.kind``."""
    if entry.name in DATASETS and not replace:
        raise ValueError(f"data set {entry.name!r} is already registered; pass replace=True to replace it")
    names = {a for e in DATASETS.values() if e.name != entry.name and e.reference is not None
             for a in (e.reference, *e.aliases)}
    taken = [a for a in (entry.reference, *entry.aliases) if a is not None and a in names]
    if taken:
        raise ValueError(f"data set {entry.name!r}: reference names {taken} are already another set's")
    DATASETS[entry.name] = entry
    return entry


def unregister(name: str) -> DataSet:
    """Remove the entry of ``data.kind`` ``name`` (a test's toy set) and return it."""
    return DATASETS.pop(data_set(name).name)


def data_names() -> tuple[str, ...]:
    """Every ``data.kind`` a config accepts."""
    return tuple(DATASETS)


def data_set(name: str) -> DataSet:
    """The entry of ``data.kind`` ``name``; a one-line ``ValueError`` when there is none."""
    if name not in DATASETS:
        raise ValueError(f"data.kind={name!r} is not accepted; expected one of {list(DATASETS)}")
    return DATASETS[name]


def _references() -> dict[str, DataSet]:
    return {e.reference: e for e in DATASETS.values() if e.reference is not None}


def reference_names() -> tuple[str, ...]:
    """The built-in reference sets' names (canonical spelling)."""
    return tuple(_references())


def reference_aliases() -> dict[str, str]:
    """Other spellings of the built-in reference names → the name."""
    return {a: e.reference for e in DATASETS.values() if e.reference is not None for a in e.aliases}


def canonical_reference(name: str) -> str:
    """A built-in reference's name with aliases folded (``fashion`` → ``fashion-mnist``);
    an unknown name comes back lower-cased, unchanged otherwise."""
    aliases, names = reference_aliases(), _references()
    key = str(name).strip().lower()
    key = aliases.get(key, aliases.get(key.replace("-", "_"), key))
    return key.replace("_", "-") if key.replace("_", "-") in names else key


def reference_set(name: str) -> DataSet:
    """The entry whose built-in reference is ``name`` (aliases accepted); else a ValueError."""
    refs = _references()
    key = canonical_reference(name)
    if key not in refs:
        raise ValueError(f"reference={name!r} is not a built-in reference set; accepted: {list(refs)}")
    return refs[key]


class LiveMapping(Mapping[str, Any]):
    """A read-only mapping recomputed from the registry at each use (``table()`` gives it),
    so tables built from it (help texts, accepted names) include sets registered later."""

    def __init__(self, table: Callable[[], dict[str, Any]]) -> None:
        self._table = table

    def __getitem__(self, key: str) -> Any:
        return self._table()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())

    def __repr__(self) -> str:
        return repr(self._table())


def build_dataset(data: Any, split: str | None = None) -> Dataset:
    """The data set configured by ``data`` (its ``kind`` names the entry), rows ``split``
    (default ``data.split``): the one factory of training, probing and reference sets."""
    return data_set(data.kind).build(data, data.split if split is None else split)


def held_out_dataset(data: Any) -> tuple[Dataset, str]:
    """The held-out items of the set configured by ``data`` and what they are (:class:`Rows`)."""
    return data_set(data.kind).held_out(data)


def real_sets(name: str, data: Any, request: RealRequest) -> RealSets:
    """The reference (and floor) set of built-in reference ``name`` for data like ``data``;
    a ValueError when the name is unknown or does not fit ``data.kind``."""
    entry = reference_set(name)
    if data.kind != entry.name and data.kind not in entry.serves:
        fits = next((e.reference for e in DATASETS.values() if e.name == data.kind), None)
        raise ValueError(f"reference={entry.reference!r} does not fit data.kind={data.kind!r}; expected "
                         f"reference={fits!r}")
    build = entry.real
    if build is None:  # unreachable: __post_init__ pairs a reference name with its builder
        raise ValueError(f"reference={entry.reference!r} has no real-set builder")
    sets = build(data, request)
    if entry.peaks is not None:
        sets.peaks = entry.peaks(data)
    return sets
