"""Where each spectral loss's minimiser lies against the posterior mean, with an exact posterior.

Run:  python scripts/posterior_mean_figure.py [--out docs/figures] [--trials 8]

The computation of ``tests/test_losses_quadratic.py::test_quadratic_losses_keep_the_posterior_mean``
on real data: K = 32 crops x0_k (16×16, scikit-image textures) are the whole data set; a
noisy x_t = x0_j + σ·ε at three noise levels σ, from one where the posterior
p_k ∝ N(x_t; x0_k, σ²) sits on one crop to one where it spreads over most of them; the
posterior mean is Σ p_k x0_k. For each loss L we minimise the expected loss
E_p[L(x̂, x0_k)] over x̂ (Adam, float64, from the posterior mean) and report, averaged over
``--trials`` draws of (j, ε) per σ:

* how far the minimiser is from the posterior mean (RMS, relative to the mean's RMS);
* the power it adds or removes in the upper band f ≥ 1/4 cycles/pixel, in decades:
  log10(P_minimiser / P_mean) averaged over the band's rings.

A diffusion model trained with L + MSE is pulled toward that minimiser at every noise
level; a loss whose minimiser is the posterior mean adds no bias.

The direction of an L1's pull depends on the data. The second part repeats the upper-band
shift of the L1 losses at σ = 8 for data sets of K = 32 draws from priors of different
sparsity, scaled to the textures' standard deviation: the textures, Gaussian white noise,
a Gaussian 1/f field (power ∝ 1/|f|²), and piecewise-constant images (sums of three
random rectangles: sparse detail). The sparsity of each is the excess kurtosis of its
finest Haar detail coefficients (0 for a Gaussian). Writes ``posterior_mean.png`` and
``posterior_mean.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from specreg.data.images import TextureCrops
from specreg.losses import build_loss
from specreg.metrics.spectrum import radial_power_spectrum

SIGMAS = (0.5, 2.0, 8.0)
LOSSES = {
    "MSE (fourier_l2 flat)": ("fourier_l2", {}),
    "fourier_l2, w ∝ |ω|²": ("fourier_l2", {"weights": "power", "power": 2.0}),
    "wavelet_l2, γ = 1, 2, 4": ("wavelet_l2", {"levels": 3, "gamma": [1.0, 2.0, 4.0]}),
    "fourier_amp (Eq. 14, L1)": ("fourier_amp", {}),
    "fourier_ap_weighted (Eq. 15, L1)": ("fourier_ap_weighted", {}),
    "Haar L1 (Eq. 16)": ("haar", {"levels": 3}),
}


PRIOR_SIGMA = 8.0
PRIORS = ("textures", "1/f Gaussian", "white Gaussian", "piecewise constant")
L1_LOSSES = {
    "fourier_amp (Eq. 14)": ("fourier_amp", {}),
    "Haar L1 (3 levels)": ("haar", {"levels": 3}),
    "db2 L1 (2 levels)": ("wavelet", {"wavelet": "db2", "levels": 2}),
    "bior1.3 L1 (1 level)": ("bior1.3", {"levels": 1}),  # as deep as 16×16 allows
}


def prior_draws(name: str, textures: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """K draws of prior ``name`` shaped and scaled like ``textures`` (K, 1, S, S), float64."""
    k, _, n, _ = textures.shape
    if name == "textures":
        return textures
    if name == "white Gaussian":
        x = torch.randn(textures.shape, generator=g, dtype=torch.float64)
    elif name == "1/f Gaussian":
        f = torch.fft.fftfreq(n, dtype=torch.float64)
        r = (f[:, None] ** 2 + f[None, :] ** 2).sqrt()
        amp = torch.where(r > 0, 1 / r.clamp(min=1e-12), torch.zeros_like(r))  # no DC: zero-mean field
        noise = torch.randn(textures.shape, generator=g, dtype=torch.float64)
        x = torch.fft.ifft2(torch.fft.fft2(noise) * amp).real
    elif name == "piecewise constant":
        x = torch.zeros(textures.shape, dtype=torch.float64)
        for i in range(k):
            for _ in range(3):
                a, b = sorted(torch.randint(0, n + 1, (2,), generator=g).tolist())
                c, d = sorted(torch.randint(0, n + 1, (2,), generator=g).tolist())
                x[i, :, a:b + 1, c:d + 1] += torch.randn((), generator=g, dtype=torch.float64)
    else:
        raise ValueError(f"prior={name!r} is not accepted; expected one of {PRIORS}")
    x = x - x.mean()
    return x / x.std() * textures.std() + textures.mean()


def detail_kurtosis(x: torch.Tensor) -> float:
    """Excess kurtosis of the finest Haar detail coefficients of ``x`` (0 for a Gaussian)."""
    import pywt
    from scipy.stats import kurtosis

    _, (h, v, d) = pywt.dwt2(x[:, 0].numpy(), "haar")
    return float(kurtosis(np.concatenate([h.ravel(), v.ravel(), d.ravel()])))


def prior_shifts(textures: torch.Tensor, trials: int) -> dict:
    """Upper-band shift of each L1 minimiser at σ = PRIOR_SIGMA, per prior (module docstring)."""
    g = torch.Generator().manual_seed(1)
    out = {}
    for prior in PRIORS:
        x0s = prior_draws(prior, textures, g)
        shifts: dict[str, list[float]] = {name: [] for name in L1_LOSSES}
        sizes = []
        for _ in range(trials):
            j = int(torch.randint(len(x0s), (1,), generator=g))
            x_t = x0s[j] + PRIOR_SIGMA * torch.randn(x0s[j].shape, generator=g, dtype=torch.float64)
            p = torch.softmax(-((x_t - x0s) ** 2).flatten(1).sum(1) / (2 * PRIOR_SIGMA**2), 0)
            sizes.append(float(1 / (p**2).sum()))
            mean = (p[:, None, None, None] * x0s).sum(0, keepdim=True)
            for name, (key, kw) in L1_LOSSES.items():
                shifts[name].append(upper_band_shift(minimiser(build_loss(key, **kw), x0s, p, mean), mean))
        out[prior] = {"kurtosis": detail_kurtosis(x0s), "effective_posterior_size": float(np.mean(sizes)),
                      "shift": {n: (float(np.mean(v)), float(np.std(v, ddof=1))) for n, v in shifts.items()}}
        print(f"{prior:20s} kurtosis {out[prior]['kurtosis']:6.2f}  " + "  ".join(
            f"{n.split(' ')[0]} {m:+.3f} ± {e:.3f}" for n, (m, e) in out[prior]["shift"].items()), flush=True)
    return out


def minimiser(loss, x0s: torch.Tensor, p: torch.Tensor, start: torch.Tensor, steps: int = 1500) -> torch.Tensor:
    x = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        opt.zero_grad()
        (p * loss(x.expand_as(x0s), x0s)).sum().backward()
        opt.step()
        sched.step()
    return x.detach()


def upper_band_shift(x: torch.Tensor, mean: torch.Tensor) -> float:
    f, px = radial_power_spectrum(x, 2)
    _, pm = radial_power_spectrum(mean, 2)
    keep = f >= 0.25
    return float((torch.log10(px[keep]) - torch.log10(pm[keep])).mean())


def texture_crops() -> torch.Tensor:
    """The data set: K = 32 crops (16×16) of the textures' training rows, float64."""
    data = TextureCrops(size=16, n=32, seed=0, split="train")
    return torch.stack([data[i][0] for i in range(len(data))]).double()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("docs/figures"))
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--prior-trials", type=int, default=3, help="draws per prior in the second part")
    ap.add_argument("--plot-only", action="store_true", help="redraw the figure from --out/posterior_mean.json")
    ap.add_argument("--priors-only", action="store_true",
                    help="compute only the second part and add it to --out/posterior_mean.json")
    args = ap.parse_args()
    if args.priors_only:
        torch.set_num_threads(1)
        raw = json.loads((args.out / "posterior_mean.json").read_text())
        raw["priors"] = {"sigma": PRIOR_SIGMA, "trials": args.prior_trials,
                         "by_prior": prior_shifts(texture_crops(), args.prior_trials)}
        (args.out / "posterior_mean.json").write_text(json.dumps(raw, indent=1) + "\n")
        args.plot_only = True
    if args.plot_only:
        raw = json.loads((args.out / "posterior_mean.json").read_text())
        plot({float(s): r for s, r in raw["by_sigma"].items()}, raw["trials"], args.out, raw.get("priors"))
        return
    torch.set_num_threads(1)
    x0s = texture_crops()
    results = {}
    g = torch.Generator().manual_seed(0)
    for sigma in SIGMAS:
        rows: dict[str, dict[str, list[float]]] = {name: {"distance": [], "shift": []} for name in LOSSES}
        spreads = []
        for _ in range(args.trials):
            j = int(torch.randint(len(x0s), (1,), generator=g))
            x_t = x0s[j] + sigma * torch.randn(x0s[j].shape, generator=g, dtype=torch.float64)
            p = torch.softmax(-((x_t - x0s) ** 2).flatten(1).sum(1) / (2 * sigma**2), 0)
            spreads.append(float(1 / (p**2).sum()))  # effective number of crops in the posterior
            mean = (p[:, None, None, None] * x0s).sum(0, keepdim=True)
            for name, (key, kw) in LOSSES.items():
                x = minimiser(build_loss(key, **kw), x0s, p, mean)
                rows[name]["distance"].append(float(((x - mean) ** 2).mean().sqrt() / (mean**2).mean().sqrt()))
                rows[name]["shift"].append(upper_band_shift(x, mean))
        print(f"σ = {sigma}: effective posterior size {np.mean(spreads):.1f} crops", flush=True)
        results[sigma] = {"effective_posterior_size": float(np.mean(spreads)),
                          "losses": {name: {k: (float(np.mean(v)), float(np.std(v, ddof=1))) for k, v in r.items()}
                                     for name, r in rows.items()}}
    priors = {"sigma": PRIOR_SIGMA, "trials": args.prior_trials, "by_prior": prior_shifts(x0s, args.prior_trials)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "posterior_mean.json").write_text(json.dumps(
        {"trials": args.trials, "by_sigma": {str(s): r for s, r in results.items()}, "priors": priors},
        indent=1) + "\n")
    plot(results, args.trials, args.out, priors)
    for s in SIGMAS:
        for name in LOSSES:
            d, sh = results[s]["losses"][name]["distance"], results[s]["losses"][name]["shift"]
            print(f"σ {s:<4} {name:34s} distance {d[0]:.2e} ± {d[1]:.1e}   upper-band shift {sh[0]:+.3f} ± "
                  f"{sh[1]:.3f} decades")


def plot(results: dict, trials: int, out: Path, priors: dict | None = None) -> None:

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from specreg.metrics.plots import tidy_log_axis

    sigmas = sorted(results)
    panels = 3 if priors else 2
    fig = Figure(figsize=(4.5 * panels, 3.8))
    FigureCanvasAgg(fig)
    names = list(LOSSES)
    for i, (key, title) in enumerate((("distance", "minimiser − posterior mean (relative RMS)"),
                                      ("shift", "upper-band power vs the mean (decades)"))):
        ax = fig.add_subplot(1, panels, i + 1)
        for name in names:
            vals = [results[s]["losses"][name][key][0] for s in sigmas]
            errs = [results[s]["losses"][name][key][1] for s in sigmas]
            style = "-o" if "l2" in name or "MSE" in name else "--s"
            ax.errorbar(sigmas, vals, yerr=errs, fmt=style, label=name, capsize=2, markersize=4)
        ax.set_xscale("log")
        tidy_log_axis(ax.xaxis)
        ax.set_xticks(sigmas, [f"{s:g}" for s in sigmas])
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xlabel("noise level σ (effective posterior size: " +
                      ", ".join(f"{results[s]['effective_posterior_size']:.1f}" for s in sigmas) + " crops)",
                      fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.grid(True, alpha=0.3)
        if i == 1:
            ax.legend(fontsize=6)
    if priors:
        ax = fig.add_subplot(1, panels, 3)
        by = priors["by_prior"]
        names_p, losses = list(by), list(next(iter(by.values()))["shift"])
        width = 0.8 / len(losses)
        for k, loss in enumerate(losses):
            xs = [i + (k - (len(losses) - 1) / 2) * width for i in range(len(names_p))]
            ax.bar(xs, [by[p]["shift"][loss][0] for p in names_p], width,
                   yerr=[by[p]["shift"][loss][1] for p in names_p], capsize=2, label=loss)
        ax.set_xticks(range(len(names_p)), [f"{p}\n(kurtosis {by[p]['kurtosis']:.1f})" for p in names_p],
                      fontsize=7)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_title(f"L1 minimisers at σ = {priors['sigma']:g} by prior: upper-band power (decades)", fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=6)
    fig.suptitle(f"Exact posterior over 32 items (texture crops: mean ± std over {trials} draws per σ; right: "
                 f"{priors['trials'] if priors else 0} draws per prior); solid: quadratic, dashed: L1", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "posterior_mean.png", dpi=120)


if __name__ == "__main__":
    main()
