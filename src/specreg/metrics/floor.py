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

Used by :func:`specreg.experiments.evaluate.evaluate`; studies measure their floor from a
separate real set instead (:mod:`specreg.experiments.reference`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from specreg.metrics.streaming import Batch

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


class SplitFloor:
    """Streams both sets' halves: radial spectra sums for the log-spectral keys, feature
    sums for ``domain_fd``; :meth:`compute` gives ``{key: floor}``.

    Args:
        ndim: spatial dims of the spectra.
        sizes: ``{real: number of items}`` for the samples (False) and reference (True).
        bands: LSD metric name → band (``None`` = all bins) whose floor is wanted.
        fd: also the floor of ``domain_fd`` (needs the batches' domain features).
        seed: the metric seed.
    """

    def __init__(self, ndim: int, sizes: dict[bool, int], bands: dict[str, str | None], *, fd: bool = False,
                 seed: int = 0, splits: int = SPLITS) -> None:
        import torch

        self.ndim, self.sizes, self.bands, self.fd = ndim, sizes, bands, fd
        self.labels = {real: torch.from_numpy(_partition(size, seed, splits)) for real, size in sizes.items()}
        # per side: spectra sums (splits, 2 halves, C, bins) and feature sums per split and half
        self.power: dict[bool, Any] = {True: None, False: None}
        self.spatial: tuple[int, ...] | None = None
        self.features: dict[bool, list[Any]] = {True: [], False: []}

    def usable(self) -> bool:
        """Both sets have at least two items per half."""
        return min(self.sizes.values()) >= 4

    def update(self, batch: Batch, start: int) -> None:
        """Add ``batch`` (items ``start`` … of its side)."""
        import torch

        real = batch.real
        half = self.labels[real][:, start:start + batch.x.shape[0]].double()  # (K, B)
        if self.bands:
            p = batch.radial_power  # (B, C, bins), float64
            both = torch.stack([torch.einsum("kb,bcf->kcf", 1 - half, p), torch.einsum("kb,bcf->kcf", half, p)], 1)
            self.power[real] = both if self.power[real] is None else self.power[real] + both
            self.spatial = tuple(batch.x.shape[-self.ndim:])
        if self.fd:
            self.features[real].append((half.numpy(), batch.features))

    def _fd_halves(self, real: bool, splits: int) -> list[float] | None:
        import numpy as np

        from specreg.metrics.frechet import FrechetDistance

        labels = np.concatenate([h for h, _ in self.features[real]], axis=1).astype(bool)
        f = np.concatenate([x for _, x in self.features[real]])
        if min(int(labels.sum(1).min()), int((~labels).sum(1).min())) <= f.shape[1]:
            return None  # a half with no more items than feature dimensions: no full-rank covariance
        out = []
        for k in range(splits):
            fd = FrechetDistance()
            for side, rows in ((False, f[~labels[k]]), (True, f[labels[k]])):
                fd._add(side, rows.shape[0], rows.sum(0), rows.T @ rows)
            out.append(fd.compute())
        return out

    def compute(self) -> dict[str, float]:
        """``{key: floor}`` for every LSD key (``name`` and ``name_bias``) and ``domain_fd``
        (absent when a half is too small for its covariance)."""
        import torch

        from specreg.metrics.spectrum import log_spectral_distance_from_spectra
        from specreg.transforms.fourier import radial_bins

        terms: dict[str, float] = {}

        def add(key: str, values: list[float], size: int, squared: bool) -> None:
            a, b = size // 2, size - size // 2
            g = [v * v for v in values] if squared else values
            terms[key] = terms.get(key, 0.0) + (sum(g) / len(g)) / (size * (1 / a + 1 / b))

        for real, size in self.sizes.items():
            if self.bands and self.power[real] is not None and self.spatial is not None:
                freqs = radial_bins(self.spatial)[2]
                second = self.labels[real].sum(1).double()  # items in the second half, per split
                counts = torch.stack([size - second, second], 1)  # (K, 2)
                spectra = (self.power[real] / counts[:, :, None, None]).mean(2)  # (K, 2, bins), channel mean
                for name, band in self.bands.items():
                    pairs = [log_spectral_distance_from_spectra(freqs, spectra[k, 0], spectra[k, 1], band=band)
                             for k in range(spectra.shape[0])]
                    add(name, [d for d, _ in pairs], size, True)
                    add(f"{name}_bias", [b for _, b in pairs], size, True)
        if self.fd and all(self.features.values()):
            fds = {real: self._fd_halves(real, self.labels[real].shape[0]) for real in self.sizes}
            for real, size in self.sizes.items():
                values = fds[real]
                if values is None or any(fds[other] is None for other in self.sizes):
                    break
                add("domain_fd", values, size, False)
        return {key: value if key == "domain_fd" else math.sqrt(value) for key, value in terms.items()}


__all__ = ["METHOD", "SPLITS", "SplitFloor"]
