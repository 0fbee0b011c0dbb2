"""The spectral error map: where in (noise level σ, radial frequency f) a denoiser is worse
than the per-frequency Wiener filter, and where the training objective puts its weight.

For clean data x0 (B, C, *spatial), a denoiser D(x, σ) → x̂0 of the VE state x = x0 + σ·ε,
a grid of σ and radial bands b of |ω| (cycles per sample; rFFT over the last ``ndim`` dims,
orthonormal, Hermitian-weighted as every Fourier loss here):

* e(σ, b) = Σ_{f∈b} E|F(x̂0 − x0)(f)|² / Σ_{f∈b} E|F x0(f)|², one forward pass per item and σ;
* w(σ, b) = Σ_{f∈b} S(f)·σ²/(S(f) + σ²) / Σ_{f∈b} S(f), S(f) = E|F x0(f)|² per channel and
  frequency: the relative error of the per-frequency Wiener filter S/(S + σ²), for any data.
  The posterior mean minimises the error of every linear functional of x0, so the ideal
  denoiser has e ≤ w; e > w marks what the network has not learned even linearly;
* T(σ, b): the weight the training objective puts on e(σ, b), i.e. the expected loss is
  Σ_{σ, b} T·e: the σ mass of its sampler in the cell around σ (cells split at the geometric
  midpoints, the end cells take the tails) × λ(σ) × Σ_{f∈b} S(f)/n, n the elements per item,
  for the diffusion term (:func:`diffusion_weight` gives λ in x0 units); plus, for the
  spectral term, λ_S(σ)·g(σ) × Σ_{f∈b} w_f·S(f)/n with the loss's frequency weights w_f where it
  has them (``weight_map``) and flat ones otherwise;
* each with a noise floor: half the difference of the maps of two disjoint halves of the
  items (the standard error of the full map, from one split).

Noise: ε of item i at σ_j comes from a generator seeded by (seed, j) over all items, so the
maps do not depend on the batch size. Sums are float64.

Example (a user's own model, e.g. a diffusers UNet wrapped to return x̂0)::

    import numpy as np
    from specreg.metrics.probe import spectral_error_map
    maps = spectral_error_map(lambda x, s: my_x0_predictor(x, s), x0_batch,
                              sigmas=np.geomspace(0.01, 50, 32), ndim=2)
    m = maps["model"]  # with decode=: also maps["decoded"]
    print(m.ratio)     # e/w, (n_sigma, n_bands); m.ratio_floor beside it
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from specreg.transforms.fourier import hermitian_weights, radial_frequency, rfftn

Denoiser = Callable[..., torch.Tensor]


def band_edges(n_bands: int) -> np.ndarray:
    """Linear radial band edges on [0, ½] cycles per sample (the last band takes the corners)."""
    if isinstance(n_bands, bool) or not isinstance(n_bands, int) or n_bands < 1:
        raise ValueError(f"bands={n_bands!r} is not accepted; expected an integer >= 1")
    return np.linspace(0.0, 0.5, n_bands + 1)


def _band_index(spatial: tuple[int, ...], edges: np.ndarray) -> torch.Tensor:
    f = radial_frequency(spatial).to(torch.float64)
    inner = torch.as_tensor(edges[1:-1], dtype=torch.float64)
    return torch.bucketize(f.contiguous(), inner, right=True)  # (rfft grid) in 0 … K−1


def _weighted(spatial: tuple[int, ...]) -> torch.Tensor:
    return hermitian_weights(spatial, dtype=torch.float64)


def _band_sum(values: torch.Tensor, index: torch.Tensor, herm: torch.Tensor, n_bands: int) -> torch.Tensor:
    """Σ over channels and the rFFT bins of each band, Hermitian-weighted: (B, C, *grid) → (B, K)."""
    v = (values * herm).sum(1).flatten(1)  # (B, bins)
    out = v.new_zeros(v.shape[0], n_bands)
    return out.index_add_(1, index.flatten().to(v.device), v)


@dataclass
class SpectralErrorMap:
    """The maps on (σ, band) of one space (``"model"``: what the denoiser sees; ``"decoded"``).

    Arrays are (n_sigma, n_bands) except ``power`` (n_bands,) = Σ_{f∈b} S(f)/n, the data's
    power per band in squared data units per element. Floors are half the difference of the
    two halves' maps. In the decoded space ``w`` is the decoded error of the latent Wiener filter.
    """

    space: str
    sigma: np.ndarray
    edges: np.ndarray
    e: np.ndarray
    w: np.ndarray
    e_floor: np.ndarray
    w_floor: np.ndarray
    ratio: np.ndarray
    ratio_floor: np.ndarray
    power: np.ndarray
    n_items: int
    halves: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"space": self.space, "n_items": self.n_items, "power_per_band": self.power.tolist(),
                **{k: getattr(self, k).tolist() for k in ("e", "w", "e_floor", "w_floor", "ratio", "ratio_floor")}}


def _finish(space: str, sigma: np.ndarray, edges: np.ndarray, num: np.ndarray, wnum: np.ndarray,
            den: np.ndarray, n_items: int, n_elem: int, wfull: np.ndarray | None = None) -> SpectralErrorMap:
    """num, wnum (2, S, K) and den (2, K) are the halves' sums; ``wfull`` (S, K) the full set's
    Wiener sums where they are not the halves' sum (the bound from the whole set's spectrum)."""
    def ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a / np.where(b > 0, b, np.nan)

    e_h = ratio(num, den[:, None, :])
    w_h = ratio(wnum, den[:, None, :])
    e = ratio(num.sum(0), den.sum(0)[None, :])
    w = ratio(wnum.sum(0) if wfull is None else wfull, den.sum(0)[None, :])
    r_h = ratio(e_h, w_h)
    return SpectralErrorMap(space, sigma, edges, e, w, np.abs(e_h[0] - e_h[1]) / 2, np.abs(w_h[0] - w_h[1]) / 2,
                            ratio(e, w), np.abs(r_h[0] - r_h[1]) / 2, den.sum(0) / (n_items * n_elem), n_items,
                            halves={"e": e_h, "w": w_h})


def _spectrum(x0: torch.Tensor, ndim: int, batch_size: int) -> torch.Tensor:
    """S(c, f) = mean over items of |F x0|² on the rFFT grid, float64 (C, *grid)."""
    total = None
    for start in range(0, x0.shape[0], batch_size):
        p = rfftn(x0[start:start + batch_size].to(torch.float64), ndim).abs().square().sum(0)
        total = p if total is None else total + p
    assert total is not None
    return total / x0.shape[0]


@torch.no_grad()
def spectral_error_map(denoiser: Denoiser, x0: torch.Tensor, sigmas: Sequence[float] | np.ndarray, *,
                       ndim: int = 2, bands: int = 8, batch_size: int = 64, seed: int = 0,
                       decode: Callable[[torch.Tensor], torch.Tensor] | None = None,
                       model_kwargs: dict[str, torch.Tensor] | None = None) -> dict[str, SpectralErrorMap]:
    """e, w and their floors (module doc) for ``denoiser(x, sigma (B,), **kw) → x̂0`` on ``x0``.

    ``x0`` (N ≥ 2, C, *spatial) is split into halves [0, N/2) and [N/2, N) for the floors.
    ``decode`` (a latent model's decoder): also the maps of D(x̂0) against D(x0), with the
    decoded error of the latent Wiener filter as ``w``. ``model_kwargs`` rows follow x0's.
    Returns ``{"model": map}`` (and ``"decoded"``).
    """
    if not isinstance(x0, torch.Tensor) or not x0.is_floating_point() or x0.dim() < ndim + 2 or x0.shape[0] < 2:
        raise ValueError(f"x0 must be a floating tensor (N >= 2, C, *spatial) with {ndim} spatial dims, got "
                         f"{tuple(x0.shape) if isinstance(x0, torch.Tensor) else type(x0).__name__}")
    sig = np.asarray(sigmas, dtype=np.float64)
    if sig.ndim != 1 or sig.size < 1 or not np.all(np.isfinite(sig)) or not np.all(sig > 0):
        raise ValueError(f"sigmas={sigmas!r} is not accepted; expected finite noise levels > 0")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is not accepted; expected an integer >= 1")
    edges = band_edges(bands)
    n, device = x0.shape[0], x0.device
    half = n // 2
    kw = dict(model_kwargs or {})
    spatial = tuple(int(s) for s in x0.shape[-ndim:])
    index, herm = _band_index(spatial, edges).to(device), _weighted(spatial).to(device)
    S = _spectrum(x0, ndim, batch_size)  # (C, *grid)
    gain_num = S  # Wiener gain S/(S + σ²) per channel and frequency
    x0_dec = None
    if decode is not None:
        x0_dec = torch.cat([decode(x0[s:s + batch_size]).to(torch.float64) for s in range(0, n, batch_size)])
        spatial_d = tuple(int(s) for s in x0_dec.shape[-ndim:])
        index_d, herm_d = _band_index(spatial_d, edges).to(device), _weighted(spatial_d).to(device)
    spaces = ["model"] + (["decoded"] if decode is not None else [])
    num = {s: np.zeros((2, sig.size, bands)) for s in spaces}
    wnum = {s: np.zeros((2, sig.size, bands)) for s in spaces}
    den = {s: np.zeros((2, bands)) for s in spaces}

    def halves_of(values: torch.Tensor, start: int) -> np.ndarray:
        """(B, K) per-item sums → (2, K) sums of the items in each half."""
        which = (torch.arange(start, start + values.shape[0], device=values.device) >= half).long()
        out = values.new_zeros(2, values.shape[1]).index_add_(0, which, values)
        return out.cpu().numpy()

    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        p0 = rfftn(x0[start:stop].to(torch.float64), ndim).abs().square()
        den["model"] += halves_of(_band_sum(p0, index, herm, bands), start)
        if x0_dec is not None:
            pd = rfftn(x0_dec[start:stop], ndim).abs().square()
            den["decoded"] += halves_of(_band_sum(pd, index_d, herm_d, bands), start)
    wfull = np.zeros((sig.size, bands))
    # the Wiener bound of each half uses that half's own spectrum, the full map the whole set's
    S_h = [_spectrum(x0[:half], ndim, batch_size), _spectrum(x0[half:], ndim, batch_size)]
    counts = (half, n - half)
    for j, s in enumerate(sig):
        wfull[j] = _band_sum((S * s**2 / (S + s**2))[None], index, herm, bands)[0].cpu().numpy() * n
        for h in range(2):
            mse = S_h[h] * s**2 / (S_h[h] + s**2)
            wnum["model"][h, j] = _band_sum(mse[None], index, herm, bands)[0].cpu().numpy() * counts[h]
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + j)
        eps = torch.randn(x0.shape, generator=g, dtype=torch.float32).to(device)
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            clean = x0[start:stop]
            x = clean + float(s) * eps[start:stop].to(clean.dtype)
            sigma_b = torch.full((stop - start,), float(s), device=device, dtype=clean.dtype)
            x0_hat = denoiser(x, sigma_b, **{k: v[start:stop] for k, v in kw.items()})
            err = rfftn((x0_hat.to(torch.float64) - clean.to(torch.float64)), ndim).abs().square()
            num["model"][:, j] += halves_of(_band_sum(err, index, herm, bands), start)
            if decode is not None and x0_dec is not None:
                ref = x0_dec[start:stop]
                d_hat = decode(x0_hat.to(clean.dtype)).to(torch.float64)
                err_d = rfftn(d_hat - ref, ndim).abs().square()
                num["decoded"][:, j] += halves_of(_band_sum(err_d, index_d, herm_d, bands), start)
                gain = gain_num / (gain_num + float(s) ** 2)
                wiener = torch.fft.irfftn(gain * rfftn(x.to(torch.float64), ndim), s=spatial,
                                          dim=tuple(range(-ndim, 0)), norm="ortho")
                err_w = rfftn(decode(wiener.to(clean.dtype)).to(torch.float64) - ref, ndim).abs().square()
                wnum["decoded"][:, j] += halves_of(_band_sum(err_w, index_d, herm_d, bands), start)
    out = {}
    n_elem = {"model": math.prod(x0.shape[1:])}
    if x0_dec is not None:
        n_elem["decoded"] = math.prod(x0_dec.shape[1:])
    for space in spaces:
        out[space] = _finish(space, sig, edges, num[space], wnum[space], den[space], n, n_elem[space],
                             wfull if space == "model" else None)
    return out


def as_denoiser(formulation: Any, model: Any) -> Denoiser:
    """D(x, σ) → x̂0 for the VE state x = x0 + σ·ε, building each formulation's own input.

    EDM: ``model`` is the preconditioned denoiser already. Flow matching: t = σ/(1 + σ),
    x_t = x/(1 + σ) = (1 − t)·x0 + t·ε, x̂0 = x_t − t·v̂. DDPM: the timestep whose σ_t is
    nearest in ln σ (exact on :func:`probe_sigmas`' grid), x_t = √ᾱ_t·x.
    """
    kind = type(formulation).__name__
    if kind == "EDM":
        return model
    if kind == "FlowMatching":
        def flow(x: torch.Tensor, sigma: torch.Tensor, **kw: Any) -> torch.Tensor:
            s = sigma.to(torch.float64).reshape(-1, *([1] * (x.dim() - 1)))
            t = (s / (1 + s)).to(x.dtype)
            x_t = (x.to(torch.float64) / (1 + s)).to(x.dtype)
            return formulation.predict_x0(model(x_t, t.flatten(), **kw), x_t, t.flatten())

        return flow
    if kind == "DDPM":
        from specreg.diffusion.timesteps import nearest_timestep

        table = formulation.sigma(torch.arange(formulation.num_timesteps)).to(torch.float64)

        def ddpm(x: torch.Tensor, sigma: torch.Tensor, **kw: Any) -> torch.Tensor:
            t = nearest_timestep(sigma.cpu(), table).to(x.device)
            a = formulation.alpha_bar(t).reshape(-1, *([1] * (x.dim() - 1)))
            x_t = (x.to(torch.float64) * a.sqrt()).to(x.dtype)
            return formulation.predict_x0(model(x_t, t, **kw), x_t, t)

        return ddpm
    raise ValueError(f"formulation {formulation!r} is not accepted; expected EDM, DDPM or FlowMatching")


# --------------------------------------------------------------------------- training weight

def diffusion_weight(formulation: Any, sigma: np.ndarray) -> np.ndarray:
    """λ(σ) in x0 units: the formulation's per-sample diffusion term is λ(σ)·mean|x̂0 − x0|².

    EDM: its own λ; flow matching (velocity MSE): x̂0 − x0 = −t·(v̂ − v), so λ = 1/t² with
    t = σ/(1 + σ); DDPM: ε-MSE 1/σ², x0-MSE 1, v-MSE (1 + σ²)/σ² (x̂0 − x0 = −σ·Δε = −√(1 − ᾱ)·Δv).
    """
    s = np.asarray(sigma, dtype=np.float64)
    kind = type(formulation).__name__
    if kind == "EDM":
        return formulation.weight(torch.as_tensor(s)).numpy()
    if kind == "FlowMatching":
        return ((1 + s) / s) ** 2
    if kind == "DDPM":
        return {"eps": 1 / s**2, "x0": np.ones_like(s), "v": (1 + s**2) / s**2}[formulation.prediction]
    raise ValueError(f"formulation {formulation!r} is not accepted; expected EDM, DDPM or FlowMatching")


def sigma_cells(sigma: np.ndarray) -> np.ndarray:
    """Cell edges (n + 1,) around a increasing grid: geometric midpoints, 0 and ∞ at the ends."""
    s = np.asarray(sigma, dtype=np.float64)
    mid = np.sqrt(s[1:] * s[:-1])
    return np.concatenate([[0.0], mid, [np.inf]])


def cell_mass(cdf: Callable[[torch.Tensor], torch.Tensor], sigma: np.ndarray) -> np.ndarray:
    """The probability of each σ cell under ``cdf`` (sums to 1)."""
    edges = sigma_cells(sigma)
    c = cdf(torch.as_tensor(edges[1:-1], dtype=torch.float64)).numpy()
    c = np.concatenate([[0.0], c, [1.0]])
    return np.diff(c)


@dataclass
class TrainingWeightMap:
    """T(σ, b) = diffusion + spectral (module doc), (n_sigma, n_bands); ``notes`` say what was
    approximated (a non-quadratic spectral loss drawn with flat frequency weights, AutoLambda)."""

    diffusion: np.ndarray
    spectral: np.ndarray
    mass: np.ndarray
    lam: np.ndarray
    lam_spectral: np.ndarray
    notes: list[str]

    @property
    def total(self) -> np.ndarray:
        return self.diffusion + self.spectral

    def to_dict(self) -> dict[str, Any]:
        return {"diffusion": self.diffusion.tolist(), "spectral": self.spectral.tolist(),
                "total": self.total.tolist(), "sigma_mass": self.mass.tolist(), "lambda": self.lam.tolist(),
                "lambda_spectral": self.lam_spectral.tolist(), "notes": list(self.notes)}


def training_weight_map(formulation: Any, sigma: np.ndarray, x0: torch.Tensor, *, ndim: int = 2, bands: int = 8,
                        regularizer: Any | None = None, sampler: Any | None = None) -> TrainingWeightMap:
    """T(σ, b) of ``formulation`` (its configured or built-in σ sampler, or ``sampler``) and
    ``regularizer`` on data ``x0`` (for S(f)); see the module doc."""
    from specreg.diffusion.timesteps import default_sampler

    s = np.asarray(sigma, dtype=np.float64)
    sampler = sampler if sampler is not None else default_sampler(formulation)
    mass = cell_mass(sampler.objective_cdf, s)
    lam = diffusion_weight(formulation, s)
    edges = band_edges(bands)
    spatial = tuple(int(v) for v in x0.shape[-ndim:])
    index, herm = _band_index(spatial, edges), _weighted(spatial)
    S = _spectrum(x0.cpu(), ndim, 256)
    n_elem = math.prod(x0.shape[1:])
    per_band = _band_sum(S[None], index, herm, bands)[0].numpy() / n_elem
    diffusion = (mass * lam)[:, None] * per_band[None, :]
    notes: list[str] = []
    lam_s = np.zeros_like(s)
    spectral = np.zeros_like(diffusion)
    if regularizer is not None:
        from specreg.regularizer import AutoLambda

        if isinstance(regularizer.lam, AutoLambda):
            notes.append("lam: auto (AutoLambda) follows the losses during training; its weight is not drawn")
        else:
            like = torch.zeros(s.size, dtype=torch.float64)
            lam_s = regularizer.weights(torch.as_tensor(s), s.size, like, like, None).numpy()
            loss = regularizer.loss
            if hasattr(loss, "weight_map") and getattr(regularizer, "band_weights", None) is None:
                wf = loss.weight_map(spatial).to(torch.float64)
                fw = _band_sum((S * wf)[None], index, herm, bands)[0].numpy() / n_elem
            else:
                fw = per_band
                notes.append(f"the spectral loss {type(loss).__name__} is not a weighted squared error per "
                             "frequency (or has learned band weights): drawn with flat frequency weights, "
                             "its λ·g(σ) only")
            if getattr(regularizer, "_decode", ()):
                notes.append("the spectral term is computed on decoded images: its frequency weights are drawn "
                             "on the latents")
            spectral = (mass * lam_s)[:, None] * fw[None, :]
    return TrainingWeightMap(diffusion, spectral, mass, lam, lam_s, notes)


def probe_sigmas(formulation: Any, n: int = 32, *, q: float = 1e-3, sampler: Any | None = None) -> np.ndarray:
    """``n`` log-spaced σ over the training range: the q and 1 − q quantiles of the objective's σ
    density; DDPM: the distinct σ_t of its timesteps nearest to that log-spaced grid."""
    from specreg.diffusion.timesteps import default_sampler, nearest_timestep

    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n_sigma={n!r} is not accepted; expected an integer >= 2")
    sampler = sampler if sampler is not None else default_sampler(formulation)

    def quantile(p: float) -> float:
        lo, hi = -30.0, 30.0  # bisection in ln σ
        for _ in range(100):
            mid = (lo + hi) / 2
            if float(sampler.objective_cdf(torch.tensor([math.exp(mid)], dtype=torch.float64))[0]) < p:
                lo = mid
            else:
                hi = mid
        return math.exp((lo + hi) / 2)

    grid = np.geomspace(quantile(q), quantile(1 - q), n)
    if type(formulation).__name__ == "DDPM":
        table = formulation.sigma(torch.arange(formulation.num_timesteps)).to(torch.float64)
        t = nearest_timestep(torch.as_tensor(grid), table).unique()
        grid = table[t].numpy()
    return grid


__all__ = ["SpectralErrorMap", "TrainingWeightMap", "as_denoiser", "band_edges", "cell_mass", "diffusion_weight",
           "probe_sigmas", "sigma_cells", "spectral_error_map", "training_weight_map"]
