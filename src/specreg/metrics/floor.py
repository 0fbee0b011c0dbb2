"""The noise floor of a two-set distance, estimated from both sets alike.

A distance between two finite sets is not 0 even when both come from one distribution:
sampling noise alone gives it a *floor*. ``specreg eval`` estimates it from the two sets
it is given, each split into random halves, so that swapping the sets (``A --reference
B`` ↔ ``B --reference A``) gives the same floor and the same verdicts.

For a set S of |S| items split into halves of a and b items, the distance d_S between its
halves estimates the set's own noise. To first order the squared log-spectral distance
(and the squared bias) and the Fréchet distance between independent sets of n and m
items grow as c_A/n + c_B/m, where c_S is a per-item noise constant of the set; a split of
S gives E[g(d_S)] = c_S (1/a + 1/b), with g(d) = d² for the log-spectral keys and
g(d) = d for the Fréchet distance. So the floor at n against m items is

    floor = g⁻¹( Σ_{S ∈ {A, B}} mean_k g(d_{S,k}) / (|S| (1/a_S + 1/b_S)) )

averaged over k = 1 … ``splits`` random splits of each set. It is symmetric in A and B by
construction: each set's splits depend only on its size and the seed, never on its role.
With n = m and equal noise it reduces to d/√2 for the LSD and d/2 for the FD, as it should
(two sets of n items are twice as far apart in variance as n items from n/2 + n/2).

Which keys have a floor is declared by their registry entries (``floor``: a
:class:`Halves` that computes the metric on two halves); this module holds the partition,
the scaling rule and the verdict (:data:`FACTOR`, :func:`within_floor`) and names no
metric. The split is used by :func:`specreg.metrics.evaluation.evaluate`; studies measure
their floor from a separate real set (:mod:`specreg.experiments.reference`; kept so that
committed study reports keep their numbers) and judge it by the same :data:`FACTOR`
(:func:`specreg.experiments.stats.practical_floor`, the training curves' verdicts).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from specreg.metrics.streaming import Batch

FACTOR = 2  # a value within FACTOR × its floor does not tell the two sets apart
SPLITS = 8  # random half-splits per set; the floor's own relative noise falls as 1/√splits
METHOD = ("each set split into random halves (8 splits, seeded by the metric seed and the set's size), the "
          "distance between the halves scaled to the two sets' sizes and combined over both sets: symmetric in "
          "samples and reference")


def _partition(size: int, seed: int, splits: int) -> np.ndarray:
    """(splits, size) bool: True for the items of the second half in each split. Depends on
    the set's size and the seed only, never on whether the set is the samples or the reference."""
    import numpy as np

    labels = np.zeros((splits, size), dtype=bool)
    for k in range(splits):
        perm = np.random.default_rng([seed, size, k]).permutation(size)
        labels[k, perm[size // 2:]] = True
    return labels


class Halves:
    """One metric's part of the split floor: streams a set's items into the two halves of
    every split and gives, per split, the distance between the halves for each of the
    metric's floored keys. ``power``: the g of the module docstring is d ** power."""

    power = 1  # 1 or 2

    def update(self, batch: Batch, half: Any) -> None:
        """Add ``batch``; ``half`` (splits, B) float64 is 1 for the items of the second half."""
        raise NotImplementedError  # pragma: no cover

    def distances(self, real: bool, labels: Any) -> dict[str, list[float]] | None:
        """``{key: [d_k per split]}`` of one set (``labels``: its (splits, size) halves); None
        when a half is too small for the metric."""
        raise NotImplementedError  # pragma: no cover


class SpectralHalves(Halves):
    """The log-spectral distance ``name`` and bias ``name_bias`` over ``band``: g(d) = d²."""

    power = 2

    def __init__(self, name: str, band: str | None, ndim: int) -> None:
        self.name, self.band, self.ndim = name, band, ndim
        self.power_sums: dict[bool, Any] = {True: None, False: None}  # (splits, 2 halves, C, bins)
        self.spatial: tuple[int, ...] | None = None

    def update(self, batch: Batch, half: Any) -> None:
        import torch

        p = batch.radial_power  # (B, C, bins), float64
        both = torch.stack([torch.einsum("kb,bcf->kcf", 1 - half, p), torch.einsum("kb,bcf->kcf", half, p)], 1)
        real = batch.real
        self.power_sums[real] = both if self.power_sums[real] is None else self.power_sums[real] + both
        self.spatial = tuple(batch.x.shape[-self.ndim:])

    def distances(self, real: bool, labels: Any) -> dict[str, list[float]] | None:
        import torch

        from specreg.metrics.spectrum import log_spectral_distance_from_spectra
        from specreg.transforms.fourier import radial_bins

        if self.power_sums[real] is None or self.spatial is None:
            return None
        freqs = radial_bins(self.spatial)[2]
        second = labels.sum(1).double()  # items in the second half, per split
        counts = torch.stack([labels.shape[1] - second, second], 1)  # (K, 2)
        spectra = (self.power_sums[real] / counts[:, :, None, None]).mean(2)  # (K, 2, bins), channel mean
        pairs = [log_spectral_distance_from_spectra(freqs, spectra[k, 0], spectra[k, 1], band=self.band)
                 for k in range(spectra.shape[0])]
        return {self.name: [d for d, _ in pairs], f"{self.name}_bias": [b for _, b in pairs]}


class FrechetHalves(Halves):
    """The Fréchet distance ``name`` on the batches' domain features: g(d) = d."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.features: dict[bool, list[Any]] = {True: [], False: []}

    def update(self, batch: Batch, half: Any) -> None:
        self.features[batch.real].append((half.numpy(), batch.features))

    def distances(self, real: bool, labels: Any) -> dict[str, list[float]] | None:
        import numpy as np

        from specreg.metrics.frechet import FrechetDistance

        if not self.features[real]:
            return None
        halves = np.concatenate([h for h, _ in self.features[real]], axis=1).astype(bool)
        f = np.concatenate([x for _, x in self.features[real]])
        if min(int(halves.sum(1).min()), int((~halves).sum(1).min())) <= f.shape[1]:
            return None  # a half with no more items than feature dimensions: no full-rank covariance
        out = []
        for k in range(halves.shape[0]):
            fd = FrechetDistance()
            fd.add_features(f[~halves[k]], False)
            fd.add_features(f[halves[k]], True)
            out.append(fd.compute())
        return {self.name: out}


class SplitFloor:
    """Streams both sets' halves through the :class:`Halves` of every floored metric;
    :meth:`compute` gives ``{key: floor}``.

    Args:
        sizes: ``{real: number of items}`` for the samples (False) and reference (True).
        parts: the metrics' :class:`Halves` (the registry entries' ``floor``).
        seed: the metric seed.
    """

    def __init__(self, sizes: dict[bool, int], parts: list[Halves], *, seed: int = 0, splits: int = SPLITS) -> None:
        import torch

        self.sizes, self.parts = sizes, parts
        self.labels = {real: torch.from_numpy(_partition(size, seed, splits)) for real, size in sizes.items()}

    def usable(self) -> bool:
        """Both sets have at least two items per half."""
        return min(self.sizes.values()) >= 4

    def update(self, batch: Batch, start: int) -> None:
        """Add ``batch`` (items ``start`` … of its side)."""
        half = self.labels[batch.real][:, start:start + batch.x.shape[0]].double()  # (K, B)
        for part in self.parts:
            part.update(batch, half)

    def compute(self) -> dict[str, float]:
        """``{key: floor}`` for every floored key (absent where a half is too small for the metric)."""
        out: dict[str, float] = {}
        for part in self.parts:
            per_set = {real: part.distances(real, self.labels[real]) for real in self.sizes}
            if any(d is None for d in per_set.values()):
                continue
            terms: dict[str, float] = {}
            for real, size in self.sizes.items():
                a, b = size // 2, size - size // 2
                for key, values in per_set[real].items():  # type: ignore[union-attr]
                    g = [v * v for v in values] if part.power == 2 else values
                    terms[key] = terms.get(key, 0.0) + (sum(g) / len(g)) / (size * (1 / a + 1 / b))
            out.update({key: math.sqrt(value) if part.power == 2 else value for key, value in terms.items()})
        return out


def within_floor(values: dict[str, float], floors: dict[str, float]) -> list[str]:
    """Keys whose |value| is below :data:`FACTOR` × their noise floor: these counts cannot
    tell the two sets apart there."""
    return [key for key, fl in floors.items() if key in values and abs(values[key]) < FACTOR * fl]


__all__ = ["FACTOR", "METHOD", "SPLITS", "FrechetHalves", "Halves", "SpectralHalves", "SplitFloor", "within_floor"]
