"""What the data-set registry (:mod:`specreg.data.registry`) holds: a :class:`DataSet`
entry per data set, its train/held-out :class:`Rows`, and what a reference builder is asked
(:class:`RealRequest`) and returns (:class:`RealSets`). Types only; nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch.utils.data import Dataset

__all__ = ["DEFAULT_COUNT", "KINDS", "DataSet", "RealRequest", "RealSets", "Rows"]

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
    """One data set (its fields: :mod:`specreg.data.registry`). ``data`` in the callables
    is a config's data section (:class:`specreg.train.config.DataConfig`: ``kind``,
    ``size``, ``channels``, ``n``, ``seed``, ``root``, ``names``, audio settings);
    ``channels``: the image channel counts the set can give."""

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
