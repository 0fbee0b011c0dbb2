"""``specreg probe RUN_DIR``: the spectral error map of a trained run (EMA weights) on held-out
items, with the training weight of its objective; probe.json, probe.png and probe.md.

The maps themselves are :mod:`specreg.metrics.probe`; this module picks the items (the data
set's held-out split: textures' eval rows, Fashion-MNIST's test split, checkerboards of
another seed, audio's eval split; an image folder has none and is probed on its own items,
which the summary says; with ``split="train"`` the run's own training items instead, so that
the gap e_held-out − e_train shows what the network memorized rather than learned), the σ
grid (:func:`~specreg.metrics.probe.probe_sigmas`), the run's regularizer (with its
checkpointed state) and a latent run's decoder, and writes:

* ``probe.json``: axes (σ in data units of the model space, band edges in cycles per
  sample), every map and floor, per space (``model``; ``decoded`` for a latent run), the
  training weight, the run's identity (step, config's diffusion and regularizer sections);
* ``probe.png``: per space, e/w and the training weight as heat maps on (ln σ, band);
* ``probe.md``: per band, the σ ranges where e exceeds w by more than twice its floor, and
  the share of the objective's training weight T that lands there (and of the expected
  loss Σ T·e, the network's own error included).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from specreg.layout import (
    CHECKPOINT_DIR,
    PROBE_DIR,
    PROBE_FILES as PROBE_FILES,  # what probe_run writes
    PROBE_PLOT,
    PROBE_RECORD,
    PROBE_SUMMARY,
)

EXCESS_FLOORS = 2.0  # e/w − 1 must exceed this many floors to count as "e > w" …
MIN_RUN = 2  # … at this many neighbouring σ at least (one cell in 40 passes 2 floors by chance)


PROBE_SPLITS = ("held-out", "train")  # the items a probe may use (probe_items)


def probe_items(cfg: Any, n: int, seed: int = 0, split: str = "held-out"
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor], str]:
    """``n`` items of the run's data set, chosen with ``seed``: (x0 images or audio, model kwargs,
    description). ``split``: "held-out" (the data set's held-out rows) or "train" (the items the
    run trained on: its ``data`` section built as training builds it)."""
    from specreg.data.registry import build_dataset, held_out_dataset

    if split not in PROBE_SPLITS:
        raise ValueError(f"split={split!r} is not accepted; expected one of {list(PROBE_SPLITS)}")
    data = cfg.data
    try:  # both come from the data set's registry entry: its builder, its held-out Rows
        if split == "train":
            ds, what = build_dataset(data), f"the run's own training items (data.kind={data.kind}, n={data.n})"
        else:
            ds, what = held_out_dataset(data)
    except FileNotFoundError as err:
        raise ValueError(f"data.root={data.root!r} (data.kind={data.kind}): {err}") from None
    total = len(ds)  # type: ignore[arg-type]
    if total < 2:
        raise ValueError(f"the {split} set has {total} items; the probe needs at least 2")
    idx = torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n].tolist()
    items = [ds[i] for i in idx]
    x0 = torch.stack([it[0] for it in items]).float()
    kw: dict[str, torch.Tensor] = {}
    if data.is_audio:
        kw["cond"] = torch.stack([it[1] for it in items])
    elif cfg.model.num_classes > 0:
        kw["class_labels"] = torch.as_tensor([int(it[1]) for it in items])
    return x0, kw, f"{len(idx)} items from {what}"


def probe_run(run_dir: str | Path, out: str | Path | None = None, *, n_items: int = 256, n_sigma: int = 32,
              bands: int = 8, batch_size: int = 128, seed: int = 0, device: str | None = None,
              plot: bool = True, threads: int = 0, checkpoint: str | Path | None = None,
              sigmas: Any = None, split: str = "held-out") -> dict[str, Any]:
    """Probe a run (module doc); returns the probe.json mapping.

    ``threads``: torch CPU threads (0: one without a GPU, as training's ``train.threads``:
    faster per core and immune to a busy machine). ``checkpoint``: a checkpoint directory of
    the run instead of its newest. ``sigmas``: an explicit σ grid (e.g. a baseline's, to
    compare maps cell by cell) instead of ``n_sigma`` over the run's own training range.
    ``split``: the items, "held-out" or the run's own "train" items (:func:`probe_items`).
    """
    before = torch.get_num_threads()
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.set_num_threads(threads if threads > 0 else (1 if dev.type == "cpu" else before))
    try:
        return _probe_run(run_dir, out, n_items=n_items, n_sigma=n_sigma, bands=bands, batch_size=batch_size,
                          seed=seed, dev=dev, plot=plot, checkpoint=checkpoint, sigmas=sigmas, split=split)
    finally:
        torch.set_num_threads(before)


def _probe_run(run_dir: str | Path, out: str | Path | None, *, n_items: int, n_sigma: int, bands: int,
               batch_size: int, seed: int, dev: torch.device, plot: bool,
               checkpoint: str | Path | None = None, sigmas: Any = None, split: str = "held-out"
               ) -> dict[str, Any]:
    from specreg.metrics.probe import as_denoiser, probe_sigmas, spectral_error_map, training_weight_map
    from specreg.train.build import build_autoencoder, build_regularizer, load_trained, spatial_ndim
    from specreg.train.checkpoint import latest_checkpoint, load_checkpoint
    from specreg.train.runtime import chunked

    for name, value, lo in (("--n", n_items, 2), ("--sigmas", n_sigma, 2), ("--bands", bands, 1),
                            ("--batch-size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise ValueError(f"{name}={value!r} is not accepted; expected an integer >= {lo}")
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    out_dir = Path(out) if out is not None else run_dir / PROBE_DIR
    cfg, model, formulation, step = load_trained(run_dir, checkpoint=checkpoint)
    model.to(dev)
    if isinstance(formulation, torch.nn.Module):
        formulation.to(dev)
    ndim = spatial_ndim(cfg)
    x0, kw, items = probe_items(cfg, n_items, seed, split)
    autoencoder = build_autoencoder(cfg)
    decode = None
    if autoencoder is not None:
        autoencoder.to(dev).eval()
        with torch.no_grad():
            x0 = torch.cat([autoencoder.latents(x0[s:s + batch_size].to(dev)).cpu()
                            for s in range(0, x0.shape[0], batch_size)])
        decode = autoencoder.images
    sigma = probe_sigmas(formulation, n_sigma) if sigmas is None else np.asarray(sigmas, dtype=np.float64)
    denoiser = as_denoiser(formulation, chunked(model, dev))  # the same maps, faster on a CPU
    with torch.no_grad():
        maps = spectral_error_map(denoiser, x0.to(dev), sigma, ndim=ndim, bands=bands, batch_size=batch_size,
                                  seed=seed, decode=decode, model_kwargs={k: v.to(dev) for k, v in kw.items()})
    regularizer = build_regularizer(cfg.regularizer, ndim=ndim, sigma_data=cfg.diffusion.sigma_data,
                                    autoencoder=autoencoder)
    if regularizer is not None:
        ckpt = latest_checkpoint(run_dir / CHECKPOINT_DIR) if checkpoint is None else load_checkpoint(checkpoint)
        if ckpt is not None and ckpt.regularizer:
            regularizer.load_state_dict(ckpt.regularizer)
    weight = training_weight_map(formulation, sigma, x0, ndim=ndim, bands=bands, regularizer=regularizer)
    first = maps["model"]
    record: dict[str, Any] = {
        "format": 1, "run": str(run_dir), "step": step, "items": items, "seed": seed,
        "settings": {"n_items": n_items, "n_sigma": n_sigma, "bands": bands, "seed": seed, "split": split},
        "diffusion": dataclasses.asdict(cfg.diffusion), "regularizer": dataclasses.asdict(cfg.regularizer),
        "axes": {"sigma": sigma.tolist(), "sigma_units": "VE noise level σ in the model space's data units "
                 "(x = x0 + σ·ε; flow t = σ/(1 + σ); DDPM σ = √((1 − ᾱ)/ᾱ))",
                 "band_edges": first.edges.tolist(), "band_units": "radial frequency |ω| in cycles per sample "
                 "(the last band includes the corners beyond 0.5)"},
        "definitions": {
            "e": "Σ_band E|F(x̂0 − x0)|² / Σ_band E|F x0|²", "w": "per-frequency Wiener filter's relative error "
            "Σ_band S·σ²/(S + σ²) / Σ_band S (decoded space: the decoded error of the latent Wiener filter)",
            "ratio": "e / w", "floor": "half the difference of the maps of two disjoint halves of the items",
            "training_weight": "T with E[loss] = Σ_{σ, band} T·e: σ-cell mass × λ(σ) × Σ_band S/n (+ spectral term)"},
        "spaces": {name: m.to_dict() for name, m in maps.items()},
        "training_weight": weight.to_dict(),
        "excess": {name: excess_table(m, weight.total) for name, m in maps.items()},
        "seconds": 0.0,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    record["seconds"] = round(time.perf_counter() - t0, 2)
    (out_dir / PROBE_RECORD).write_text(json.dumps(record, indent=1, default=float))
    (out_dir / PROBE_SUMMARY).write_text(summary_markdown(record))
    if plot:
        plot_probe(record, out_dir / PROBE_PLOT)
    return record


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous True runs of a 1-D mask as (first, last) indices."""
    out, start = [], None
    for i, v in enumerate(mask):
        if v and start is None:
            start = i
        if not v and start is not None:
            out.append((start, i - 1))
            start = None
    if start is not None:
        out.append((start, len(mask) - 1))
    return out


def excess_table(m: Any, weight: np.ndarray) -> list[dict[str, Any]]:
    """Per band: σ ranges with e/w − 1 > EXCESS_FLOORS·floor, the training weight's share there,
    and the share of the expected loss Σ T·e there (where the objective's gradient is spent)."""
    total = float(np.nansum(weight))
    loss = np.nan_to_num(weight * m.e)
    loss_total = float(loss.sum())
    rows = []
    for b in range(m.e.shape[1]):
        over = np.nan_to_num(m.ratio[:, b] - 1 - EXCESS_FLOORS * m.ratio_floor[:, b], nan=-1.0) > 0
        runs = [(i, j) for i, j in _runs(over) if j - i + 1 >= MIN_RUN]
        over = np.zeros_like(over)
        for i, j in runs:
            over[i:j + 1] = True
        ranges = [[float(m.sigma[i]), float(m.sigma[j])] for i, j in runs]
        share = float(np.nansum(weight[over, b]) / total) if total > 0 else float("nan")
        rows.append({"band": b, "sigma_ranges": ranges, "weight_share": share,
                     "loss_share": float(loss[over, b].sum() / loss_total) if loss_total > 0 else float("nan"),
                     "max_ratio": float(np.nanmax(m.ratio[:, b])) if over.any() else None})
    return rows


def band_label(edges: list[float], b: int) -> str:
    """A band's label in cycles per sample; the last band includes the corners beyond ½."""
    return f"[{edges[b]:.3g}, {edges[b + 1]:.3g})" if b + 2 < len(edges) else f">= {edges[b]:.3g}"


def summary_markdown(record: dict[str, Any], level: int = 2) -> str:
    """probe.md: the σ ranges per band where e > w beyond the floor (headings at ``level``)."""
    edges = record["axes"]["band_edges"]
    lines = [f"# Spectral error map of {record['run']} (step {record['step']})", "",
             f"{record['items']}; {len(record['axes']['sigma'])} noise levels σ from "
             f"{record['axes']['sigma'][0]:.3g} to {record['axes']['sigma'][-1]:.3g}; e = the network's relative "
             "error per band, w = the per-frequency Wiener filter's; a σ range counts when e/w − 1 exceeds "
             f"{EXCESS_FLOORS:g} floors (halves of the items) at {MIN_RUN} or more neighbouring σ.", ""]
    for space, rows in record["excess"].items():
        lines += [f"{'#' * level} {space}", "",
                  "| band (cycles/sample) | σ where e > w beyond the floor | max e/w there | "
                  "share of training weight there | share of the loss there |", "|---|---|---|---|---|"]
        for r in rows:
            label = band_label(edges, r["band"])
            ranges = ", ".join(f"{lo:.3g}–{hi:.3g}" for lo, hi in r["sigma_ranges"]) or "none"
            mx = "—" if r["max_ratio"] is None else f"{r['max_ratio']:.3g}"
            share = "—" if not r["sigma_ranges"] else f"{100 * r['weight_share']:.2g} %"
            loss = "—" if not r["sigma_ranges"] else f"{100 * r['loss_share']:.2g} %"
            lines.append(f"| {label} | {ranges} | {mx} | {share} | {loss} |")
        lines.append("")
    notes = record["training_weight"].get("notes") or []
    if notes:
        lines += ["Training weight: " + "; ".join(notes) + ".", ""]
    lines.append(f"Took {record['seconds']:.1f} s.")
    return "\n".join(lines) + "\n"


def _figure(ncols: int, nrows: int) -> Any:
    from specreg._optional import needs_extra

    with needs_extra("metrics", "specreg probe's figure"):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    fig = Figure(figsize=(5.2 * ncols, 3.6 * nrows))
    FigureCanvasAgg(fig)
    return fig


def heat(ax: Any, sigma: list[float], edges: list[float], values: np.ndarray, *, title: str, diverging: bool,
         label: str) -> None:
    """One (ln σ, band) heat map: log10 of ``values``; diverging maps are centred on 0 (= 1)."""
    from matplotlib.colors import TwoSlopeNorm

    s = np.asarray(sigma)
    s_edges = np.concatenate([[s[0] ** 1.5 / s[1] ** 0.5], np.sqrt(s[1:] * s[:-1]), [s[-1] ** 1.5 / s[-2] ** 0.5]])
    y = np.asarray(edges, dtype=float).copy()
    y[-1] = max(y[-1], y[-2] + (y[1] - y[0]))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.log10(np.where(values > 0, values, np.nan)).T
    if diverging:
        lim = max(float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 1.0, 1e-3)
        mesh = ax.pcolormesh(s_edges, y, z, cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -lim, lim))
    else:
        mesh = ax.pcolormesh(s_edges, y, z, cmap="viridis")
    ax.set_xscale("log")
    ax.set_xlabel("σ (noise level)")
    ax.set_ylabel("radial frequency (cycles/sample)")
    ax.set_title(title, fontsize=9)
    ax.figure.colorbar(mesh, ax=ax, label=label)


def plot_probe(record: dict[str, Any], path: str | Path) -> Path:
    """e/w and the training weight side by side, one row per space."""
    spaces = list(record["spaces"])
    fig = _figure(2, len(spaces))
    sigma, edges = record["axes"]["sigma"], record["axes"]["band_edges"]
    weight = np.asarray(record["training_weight"]["total"], dtype=float)
    for i, space in enumerate(spaces):
        ratio = np.asarray(record["spaces"][space]["ratio"], dtype=float)
        heat(fig.add_subplot(len(spaces), 2, 2 * i + 1), sigma, edges, ratio,
             title=f"{space}: e/w (red: worse than the Wiener filter)", diverging=True,
             label="log10 e/w")
        heat(fig.add_subplot(len(spaces), 2, 2 * i + 2), sigma, edges, weight / np.nansum(weight),
             title="training weight on e (share)", diverging=False, label="log10 share")
    fig.tight_layout()
    fig.savefig(str(path), dpi=110)
    return Path(path)
