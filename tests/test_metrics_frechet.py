"""Fréchet distance and KID against closed forms, scipy and a plain-loop MMD²."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from specreg.metrics.frechet import (
    KID,
    DomainClassifier,
    FrechetDistance,
    frechet_distance,
    frechet_distance_from_stats,
    inception_feature_extractor,
    kid,
    load_domain_embedding,
)


def _scipy_fd(a: np.ndarray, b: np.ndarray) -> float:
    """The textbook formula with scipy's general matrix square root (pytorch-fid's way)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(sa @ sb).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(sa) + np.trace(sb) - 2 * np.trace(covmean))


def test_closed_form_for_diagonal_gaussians() -> None:
    # commuting covariances: FD = ‖Δμ‖² + Σ (√a_i − √b_i)²
    mu_a, mu_b = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    da, db = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = ((mu_a - mu_b) ** 2).sum() + ((np.sqrt(da) - np.sqrt(db)) ** 2).sum()
    assert frechet_distance_from_stats(mu_a, np.diag(da), mu_b, np.diag(db)) == pytest.approx(expected, rel=1e-12)


def test_closed_form_for_rotated_gaussians() -> None:
    # same spectrum, rotated: FD between N(0, Σ) and N(0, RΣRᵀ) with Σ = diag(4, 1), R by θ
    theta = 0.7
    R = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    S = np.diag([4.0, 1.0])
    # tr (Σ^{1/2} RΣRᵀ Σ^{1/2})^{1/2} computed by hand for 2×2: sqrt(tr M + 2 sqrt(det M))
    root = np.diag([2.0, 1.0])
    M = root @ R @ S @ R.T @ root
    tr_sqrt = np.sqrt(np.trace(M) + 2 * np.sqrt(np.linalg.det(M)))
    expected = 2 * np.trace(S) - 2 * tr_sqrt
    assert frechet_distance_from_stats(np.zeros(2), S, np.zeros(2), R @ S @ R.T) == pytest.approx(expected, rel=1e-10)


def test_samples_match_scipy_and_the_population_value() -> None:
    rng = np.random.default_rng(0)
    L = rng.standard_normal((4, 4))
    a = rng.standard_normal((20000, 4))
    b = rng.standard_normal((20000, 4)) @ L.T + 0.5
    fd = frechet_distance(a, b)
    assert fd == pytest.approx(_scipy_fd(a, b), rel=1e-8)
    population = frechet_distance_from_stats(np.zeros(4), np.eye(4), np.full(4, 0.5), L @ L.T)
    assert fd == pytest.approx(population, rel=0.05)


def test_identical_sets_give_zero_and_tensors_are_accepted() -> None:
    a = torch.randn(300, 8)
    assert abs(frechet_distance(a, a)) < 1e-9
    # a singular covariance (rank 2 in 8 dims, n > d) still gives a finite, ~zero value
    low_rank = torch.randn(300, 2) @ torch.randn(2, 8)
    assert abs(frechet_distance(low_rank, low_rank)) < 1e-6


def test_frechet_errors() -> None:
    with pytest.raises(ValueError, match="n > d"):
        frechet_distance(np.random.randn(5, 8), np.random.randn(50, 8))
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(np.random.randn(1, 1), np.random.randn(50, 1))
    with pytest.raises(ValueError, match="dimension"):
        frechet_distance(np.random.randn(50, 3), np.random.randn(50, 4))
    with pytest.raises(ValueError, match="non-empty"):
        frechet_distance(np.zeros((0, 3)), np.random.randn(50, 3))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.full((50, 3), np.nan), np.random.randn(50, 3))
    with pytest.raises(ValueError, match="statistics"):
        frechet_distance_from_stats(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2))


def _loop_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]
    k = lambda u, v: (u @ v / d + 1.0) ** 3  # noqa: E731
    m, n = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kyy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return kxx + kyy - 2 * kxy


def test_kid_matches_a_plain_loop() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((30, 5)), rng.standard_normal((30, 5)) + 0.3
    # one subset of the full size is a permutation of each set; MMD² is permutation invariant
    mean, std = kid(a, b, subsets=1, subset_size=30)
    assert mean == pytest.approx(_loop_mmd2(a, b), rel=1e-10)
    assert std == 0.0


def test_kid_is_unbiased_for_one_distribution() -> None:
    rng = np.random.default_rng(2)
    same = [kid(rng.standard_normal((200, 8)), rng.standard_normal((200, 8)), subsets=20, subset_size=100, seed=s)[0]
            for s in range(10)]
    shifted = kid(rng.standard_normal((200, 8)), rng.standard_normal((200, 8)) + 0.5, subsets=20, subset_size=100)[0]
    assert shifted > 0.05
    assert abs(np.mean(same)) < 0.05 * shifted
    assert min(same) < 0 or abs(np.mean(same)) < 1e-3  # unbiased: values scatter around 0


def test_kid_errors() -> None:
    a = np.random.randn(50, 3)
    with pytest.raises(ValueError, match="subset_size"):
        kid(a, a, subsets=2, subset_size=51)
    with pytest.raises(ValueError, match="subset_size"):
        kid(a, a, subsets=2, subset_size=1)
    with pytest.raises(ValueError, match="subsets"):
        kid(a, a, subsets=0, subset_size=10)
    with pytest.raises(ValueError, match="dimension"):
        kid(a, np.random.randn(50, 4), subsets=2, subset_size=10)


def test_streaming_frechet_independent_of_batching_and_mergeable() -> None:
    rng = np.random.default_rng(3)
    real, fake = rng.standard_normal((120, 6)), rng.standard_normal((90, 6)) * 1.5 + 0.2
    expected = _scipy_fd(fake, real)
    for size in (1, 7, 120):
        m = FrechetDistance()
        for i in range(0, 120, size):
            m.update(torch.from_numpy(real[i:i + size]), real=True)
        for i in range(0, 90, size):
            m.update(torch.from_numpy(fake[i:i + size]), real=False)
        assert m.compute() == pytest.approx(expected, rel=1e-8)
    a, b = FrechetDistance(), FrechetDistance()
    a.update(real[:50], real=True)
    a.update(fake[:10], real=False)
    b.update(real[50:], real=True)
    b.update(fake[10:], real=False)
    a.sync()  # no process group: a no-op
    assert a.merge(b).compute() == pytest.approx(expected, rel=1e-8)


def test_streaming_frechet_with_an_injected_extractor() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    imgs_real, imgs_fake = torch.randn(64, 1, 4, 4), torch.randn(64, 1, 4, 4) + 0.3
    m = FrechetDistance(feature_extractor=net)
    m.update(imgs_real, real=True)
    m.update(imgs_fake, real=False)
    with torch.no_grad():
        expected = _scipy_fd(net(imgs_fake).double().numpy(), net(imgs_real).double().numpy())
    assert m.compute() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="callable"):
        FrechetDistance(feature_extractor=3)


def test_streaming_frechet_errors() -> None:
    m = FrechetDistance()
    with pytest.raises(ValueError, match="real"):
        m.compute()
    m.update(np.random.randn(10, 3), real=True)
    with pytest.raises(ValueError, match="dimension"):
        m.update(np.random.randn(10, 4), real=True)
    m.update(np.random.randn(3, 3), real=False)
    with pytest.raises(ValueError, match="n > d"):
        m.compute()


def test_streaming_kid_equals_batch_kid() -> None:
    rng = np.random.default_rng(4)
    real, fake = rng.standard_normal((60, 4)), rng.standard_normal((60, 4)) + 0.2
    m, other = KID(subsets=5, subset_size=30), KID(subsets=5, subset_size=30)
    m.update(real[:25], real=True)
    other.update(real[25:], real=True)
    for part in np.split(fake, 3):
        m.update(part, real=False)
    m.merge(other)
    assert m.compute() == pytest.approx(kid(fake, real, subsets=5, subset_size=30), rel=1e-12)
    with pytest.raises(ValueError, match="no real features"):
        KID().compute()
    only_real = KID()
    only_real.update(real, real=True)
    with pytest.raises(ValueError, match="no generated features"):
        only_real.compute()


def test_inception_extractor_never_downloads_silently(tmp_path) -> None:
    with pytest.raises(ValueError, match="weights_path.*allow_download"):
        inception_feature_extractor()
    with pytest.raises(FileNotFoundError, match="weights_path"):
        inception_feature_extractor(tmp_path / "missing.pth")
    from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE

    if not _TORCH_FIDELITY_AVAILABLE:
        fake = tmp_path / "weights.pth"
        fake.write_bytes(b"")
        with pytest.raises(ImportError, match="torch-fidelity"):
            inception_feature_extractor(fake)


@pytest.mark.parametrize("size, channels", [(28, 1), (32, 1), (32, 3)])
def test_domain_embedding_round_trip(tmp_path, size: int, channels: int) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(0)
    clf = DomainClassifier(in_channels=channels, num_classes=7, embed_dim=24).eval()
    x = torch.randn(5, channels, size, size)
    assert clf(x).shape == (5, 7)
    path = tmp_path / "clf.safetensors"
    save_file(clf.state_dict(), str(path))
    emb = load_domain_embedding(path)
    out = emb(x)
    assert out.shape == (5, 24)
    torch.testing.assert_close(out, clf.embedding(x))
    assert not any(p.requires_grad for p in emb.parameters())


def test_domain_embedding_errors(tmp_path) -> None:
    from safetensors.torch import save_file

    with pytest.raises(FileNotFoundError):
        load_domain_embedding(tmp_path / "nope.safetensors")
    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(ValueError, match="not a DomainClassifier"):
        load_domain_embedding(path)
    with pytest.raises(ValueError, match="num_classes"):
        DomainClassifier(num_classes=0)
