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

Adding a data set is one :func:`register` call (the shipped ones are in
:mod:`specreg.data.sets`): configs accept its name, studies its reference name, and
training, probing and evaluation build it through its entry. Nothing here imports torch;
the builders import their data set classes when called.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch.utils.data import Dataset

__all__ = ["DATASETS", "DEFAULT_COUNT", "KINDS", "DataSet", "LiveMapping", "RealRequest", "RealSets", "Rows",
           "build_dataset", "canonical_reference", "data_names", "data_set", "held_out_dataset", "real_sets",
           "reference_aliases", "reference_names", "reference_set", "register", "unregister"]

KINDS = ("image", "audio")
DEFAULT_COUNT = 2048  # items of a generated reference (textures, checkerboards) when none is given


@dataclass(frozen=True)
class Rows:
    """Which items of a data set train and which are held out.

    ``held_out``: the split (the ``split`` passed to the builder) of the held-out rows,
    e.g. ``"eval"`` or ``"test"``; None when the set has no split. Then ``reseed`` > 0
    draws the held-out items as the same set with ``data.seed + reseed`` (generated sets),
    and ``reseed`` = 0 takes the training items themselves (a folder). Training always uses
    ``data.split`` (``"train"`` by default). ``text`` says which items are held out, for reports.
    """

    held_out: str | None
    reseed: int = 0
    text: str = ""

    def describe(self) -> str:
        return self.text or (f"the {self.held_out} split" if self.held_out is not None else "")


@dataclass(frozen=True)
class RealRequest:
    """What a reference is asked for: ``n_samples`` generated items will be measured against
    ``n_reference`` real ones (None: every item of a fixed set, :data:`DEFAULT_COUNT` of a
    generated one) drawn with ``seed``; ``floor``: also a disjoint real set of
    ``n_samples`` items (seed + 1), the noise floor. See
    :func:`specreg.experiments.reference.real_sets` for the other fields."""

    n_samples: int
    n_reference: int | None
    seed: int = 1
    split: str | None = None
    segment_length: int | None = None
    num_classes: int = 0
    paired: bool = True
    floor: bool = True
    crop_seed: int | None = None


@dataclass
class RealSets:
    """The reference set, a disjoint real set of the samples' size (the noise floor; None
    when not asked for) and the conditioning of the samples (paired with the reference for
    audio), with descriptions for the report; ``peaks``: the set's known spectral lines
    (cycles/sample, not aliased), None when it has none."""

    reference: Any
    floor: Any
    description: str
    floor_description: str
    conditioning: dict[str, Any] = field(default_factory=dict)
    peaks: list[tuple[float, ...]] | None = None


@dataclass(frozen=True)
class DataSet:
    """One data set (see the module docstring). ``data`` in the callables is a config's
    data section (:class:`specreg.train.config.DataConfig`: ``kind``, ``size``,
    ``channels``, ``n``, ``seed``, ``root``, ``names``, audio settings)."""

    name: str
    kind: str
    build: Callable[[Any, str], Dataset]
    rows: Rows
    reference: str | None = None
    aliases: tuple[str, ...] = ()
    description: str = ""
    real: Callable[[Any, RealRequest], RealSets] | None = None
    serves: tuple[str, ...] = ()
    peaks: Callable[[Any], list[tuple[float, ...]]] | None = None
    channels: tuple[int, ...] = (1, 3)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r} is not accepted; expected one of {list(KINDS)}")
        if (self.reference is None) != (self.real is None):
            raise ValueError(f"data set {self.name!r}: a reference name needs a real-set builder and vice versa")

    def held_out(self, data: Any) -> tuple[Dataset, str]:
        """The held-out items of the set configured by ``data`` (:attr:`rows`) and what they are."""
        rows = self.rows
        if rows.held_out is not None:
            return self.build(data, rows.held_out), rows.describe()
        if rows.reseed:
            data = dataclasses.replace(data, seed=data.seed + rows.reseed)
        return self.build(data, data.split), rows.describe()


DATASETS: dict[str, DataSet] = {}
"""``data.kind`` → its entry, in registration order."""


def register(entry: DataSet, *, replace: bool = False) -> DataSet:
    """Add ``entry`` (a new ``data.kind`` and, if it has one, reference name) to the registry."""
    clash = entry.name in DATASETS or (entry.reference is not None and entry.reference in _references())
    if clash and not replace:
        raise ValueError(f"data set {entry.name!r} (reference {entry.reference!r}) is already registered; "
                         "pass replace=True to replace it")
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


from specreg.data import sets as _sets  # noqa: E402,F401  (the shipped entries register themselves)
