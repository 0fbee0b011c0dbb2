"""How the cost of each spectral loss and of a regularized training step grows with the work.

Run:  python benchmarks/scaling.py [--quick] [--device cpu|cuda] [--threads N] [--out-dir docs/figures]
      [--md FILE]

Three sweeps, each loss forward + backward on (x̂0, x0), the fastest of ``--repeats`` runs
after a warm-up. Time on a CPU is the process's CPU time (``time.process_time``: with one
thread, the wall time of an idle machine), which other processes sharing the cores do not
inflate; on CUDA it is wall time around synchronizations. The minimum, not the median:
contention only ever adds time, and an exponent fitted to a loaded machine's medians
measures the load:
- image side 32² … 512² (losses: batch 4, 3 channels; the step: batch 1; N = pixels per sample),
- audio length 1 … 60 s at 16 kHz (batch 2, mono; N = samples),
- batch 1 … 64 (3×64×64 images; N = batch).
The regularized step (image sweep and batch sweep) is an EDM training step — loss with
``fourier_amp`` on x̂0 at λ_EDM(σ), backward, Adam — of a small convolutional U-Net without
attention (16 channels, ×[1, 2, 2], one block per level; its cost is linear in the pixels),
timed next to the same step without the regularizer; "step ratio" is one over the other.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` over the memory held before the
call; on a CPU, where torch keeps no allocator statistics, the peak of the running sum of
the allocations and frees that ``torch.profiler`` (``profile_memory=True``) records during
the call (one extra, profiled run; tracemalloc does not see torch's allocator).

Exponents: the slope of log(time) and log(peak memory) against log(N), fitted by least
squares over the three largest sizes of a sweep (below those, fixed per-call costs
dominate on a CPU) and, for comparison, over all sizes. The expected time exponent is the
slope of N log N over the same sizes for the FFT and STFT losses (≈ 1.1), and 1 for the
DWT losses, the batch sweep and memory. Writes ``scaling.json`` and ``scaling.png`` to
``--out-dir`` and prints a markdown table (also to ``--md``).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from specreg.diffusion import EDM
from specreg.losses import build_loss
from specreg.models.unet import UNet
from specreg.regularizer import SpectralRegularizer

# display name → (registry name, keyword arguments); ndim is added per sweep
LOSSES: dict[str, tuple[str, dict]] = {
    "fourier_amp": ("fourier_amp", {}),
    "fourier_ap": ("fourier_ap", {}),
    "fourier_ap_weighted": ("fourier_ap_weighted", {}),
    "psd": ("psd", {}),
    "ffl": ("ffl", {}),
    "fourier_l2 power p=2": ("fourier_l2", {"weights": "power", "power": 2.0}),
    "wavelet haar L3": ("wavelet", {"wavelet": "haar", "levels": 3}),
    "wavelet_l2 haar L3": ("wavelet_l2", {"wavelet": "haar", "levels": 3, "gamma": [1.0, 2.0, 4.0]}),
    "mrstft": ("mrstft", {}),
}
LINEAR = ("wavelet haar L3", "wavelet_l2 haar L3")  # the DWT: O(N)
STEP, STEP_BASE = "step + fourier_amp", "step (no regularizer)"
RATE = 16000

FULL = {"image": [32, 64, 128, 256, 512], "audio": [1, 2, 5, 10, 30, 60], "batch": [1, 2, 4, 8, 16, 32, 64]}
QUICK = {"image": [16, 32], "audio": [0.15, 0.2], "batch": [1, 2]}
STEP_MAX = {"image": 256, "batch": 16}  # the step is timed up to these sizes on a CPU (time); CUDA: all


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def best_ms(fn: Callable[[], None], repeats: int, device: str) -> float:
    """Fastest time of ``fn()`` in ms over ``repeats`` calls after one warm-up call: CPU time
    of the process on a CPU, synchronized wall time on CUDA."""
    clock = time.perf_counter if device == "cuda" else time.process_time
    fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = clock()
        fn()
        sync(device)
        times.append(clock() - t0)
    return min(times) * 1e3


def peak_bytes(fn: Callable[[], None], device: str) -> int:
    """Peak memory allocated during ``fn()`` above what was held before it (see the module text)."""
    if device == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated() - before)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    # the allocator's events in time order (torch.profiler's kineto results: name, time, bytes ±)
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    running = peak = 0
    for _, nbytes in events:
        running += nbytes
        peak = max(peak, running)
    return int(peak)


def loss_call(name: str, shape: tuple[int, ...], device: str) -> Callable[[], None]:
    loss, kw = LOSSES[name]
    if loss != "mrstft":
        kw = {**kw, "ndim": len(shape) - 2}
    module = build_loss(loss, **kw).to(device)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(*shape, generator=g).to(device)
    x0_hat = (x0 + 0.1 * torch.randn(*shape, generator=g).to(device)).requires_grad_(True)

    def run() -> None:
        module(x0_hat, x0).mean().backward()
        x0_hat.grad = None

    return run


def step_calls(side: int, batch: int, device: str) -> dict[str, Callable[[], None]]:
    """A training step with and without the regularizer, sharing one network and optimizer."""
    torch.manual_seed(0)
    form = EDM("edm")
    net = UNet(in_channels=3, model_channels=16, channel_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(),
               mid_attention=False, resolution=side).to(device)
    model = form.precondition(net)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    x0 = torch.randn(batch, 3, side, side, device=device).clamp(-1, 1)
    reg = SpectralRegularizer("fourier_amp", lam="edm", ndim=2).to(device)

    def step(r: SpectralRegularizer | None) -> Callable[[], None]:
        def run() -> None:
            opt.zero_grad(set_to_none=True)
            g = torch.Generator(device=device).manual_seed(0)
            form.loss(model, x0, regularizer=r, generator=g).loss.mean().backward()
            opt.step()
        return run

    return {STEP_BASE: step(None), STEP: step(reg)}


def sweep_cases(kind: str, size: float, device: str) -> tuple[int, dict[str, Callable[[], Callable[[], None]]]]:
    """(N, name → factory of the timed call) for one size of one sweep."""
    if kind == "image":
        shape, n = (4, 3, int(size), int(size)), int(size) ** 2
    elif kind == "audio":
        shape, n = (2, 1, int(size * RATE)), int(size * RATE)
    else:
        shape, n = (int(size), 3, 64, 64), int(size)
    names = [k for k in LOSSES if k != "mrstft" or kind == "audio"]  # MR-STFT: audio only
    cases: dict[str, Callable[[], Callable[[], None]]] = {k: (lambda k=k: loss_call(k, shape, device)) for k in names}
    if kind in STEP_MAX and (device == "cuda" or size <= STEP_MAX[kind]):
        side, batch = (int(size), 1) if kind == "image" else (64, int(size))
        cases[STEP_BASE] = lambda: step_calls(side, batch, device)[STEP_BASE]
        cases[STEP] = lambda: step_calls(side, batch, device)[STEP]
    return n, cases


def fit_exponent(ns: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y against log N."""
    if len(ns) < 2:
        return float("nan")
    return float(np.polyfit(np.log(ns), np.log(ys), 1)[0])


def expected_exponent(name: str, kind: str, ns: list[float], what: str) -> float:
    if what == "memory" or kind == "batch" or name in LINEAR or name.startswith("step"):
        return 1.0
    return fit_exponent(ns, [n * math.log(n) for n in ns])  # N log N over the same sizes


def run(sizes: dict[str, list[float]], repeats: int, device: str, log: Callable[[str], None] = print) -> dict:
    """Every sweep; returns {kind: {name: [{"size", "n", "ms", "bytes"}, ...]}}."""
    results: dict[str, dict[str, list[dict]]] = {}
    for kind, values in sizes.items():
        results[kind] = {}
        for size in values:
            n, cases = sweep_cases(kind, size, device)
            for name, make in cases.items():
                fn = make()
                ms = best_ms(fn, repeats, device)
                nbytes = peak_bytes(fn, device)
                results[kind].setdefault(name, []).append({"size": size, "n": n, "ms": ms, "bytes": nbytes})
                log(f"{kind} {size}: {name}: {ms:.2f} ms, {nbytes / 2**20:.1f} MiB")
                del fn
            if device == "cuda":
                torch.cuda.empty_cache()
    return results


def exponents(results: dict) -> list[dict]:
    rows = []
    for kind, by_name in results.items():
        for name, points in by_name.items():
            ns = [p["n"] for p in points]
            row = {"sweep": kind, "name": name, "sizes": [p["size"] for p in points]}
            for what, key in (("time", "ms"), ("memory", "bytes")):
                ys = [max(p[key], 1e-9) for p in points]
                top = slice(-3, None)
                row[f"{what}_top3"] = fit_exponent(ns[top], ys[top])
                row[f"{what}_all"] = fit_exponent(ns, ys)
                row[f"{what}_expected"] = expected_exponent(name, kind, ns[top], what)
            rows.append(row)
    return rows


def markdown(results: dict, rows: list[dict], header: str) -> str:
    unit = {"image": "pixels per sample (losses batch 4, step batch 1)", "audio": "samples (16 kHz, batch 2)",
            "batch": "batch (3×64×64)"}
    lines = [header, "", "| sweep (N) | loss or step | sizes | time at largest (ms) | time exponent, top 3 "
             "| (all sizes) | expected | memory at largest (MiB) | memory exponent, top 3 | expected |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        last = results[r["sweep"]][r["name"]][-1]
        sizes = ", ".join(f"{s:g}" for s in r["sizes"])
        lines.append(f"| {unit[r['sweep']]} | {r['name']} | {sizes} | {last['ms']:.1f} | {r['time_top3']:.2f} "
                     f"| {r['time_all']:.2f} | {r['time_expected']:.2f} | {last['bytes'] / 2**20:.1f} "
                     f"| {r['memory_top3']:.2f} | {r['memory_expected']:.2f} |")
    ratio = []
    for kind, by_name in results.items():
        if STEP in by_name:
            ratio.append(f"{kind}: " + ", ".join(f"{a['size']:g} → {b['ms'] / a['ms']:.3f}"
                                                   for a, b in zip(by_name[STEP_BASE], by_name[STEP])))
    if ratio:
        lines += ["", "Step time with the regularizer over without (size → ratio): " + "; ".join(ratio)]
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(results)
    names = list(dict.fromkeys(n for by_name in results.values() for n in by_name))
    colors = dict(zip(names, plt.get_cmap("tab20").colors[::2] + plt.get_cmap("tab20").colors[1::2]))
    fig, axes = plt.subplots(2, len(kinds), figsize=(5 * len(kinds), 8), squeeze=False)
    xlabel = {"image": "pixels per sample N", "audio": "samples N (16 kHz)", "batch": "batch (3×64×64)"}
    for j, kind in enumerate(kinds):
        for i, (key, scale, ylabel) in enumerate((("ms", 1.0, "forward + backward (ms)"),
                                                  ("bytes", 2.0**-20, "peak memory (MiB)"))):
            ax = axes[i][j]
            for name, points in results[kind].items():
                ns = [p["n"] for p in points]
                step = name.startswith("step")
                ax.loglog(ns, [max(p[key] * scale, 1e-6) for p in points], marker="o" if step else ".", label=name,
                          lw=2 if step else 1, color=colors[name], ls="--" if name == STEP_BASE else "-")
            ns = sorted({p["n"] for pts in results[kind].values() for p in pts})
            ref = [p for p in results[kind].get("fourier_amp", next(iter(results[kind].values())))]
            if ref and len(ns) > 1:  # an N log N guide through the first point of fourier_amp
                n0, y0 = ref[0]["n"], ref[0][key] * scale
                guide = (lambda n: n * math.log(n)) if kind != "batch" and key == "ms" else (lambda n: n)
                ax.loglog(ns, [y0 * guide(n) / guide(n0) for n in ns], "k:", lw=1,
                          label="∝ N log N" if guide(2) != 2 else "∝ N")
            ax.set_xlabel(xlabel[kind])
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
        axes[0][j].set_title(f"{kind} sweep")
    legend = {label: h for ax in axes[0] for h, label in zip(*ax.get_legend_handles_labels())}
    axes[0][-1].legend(legend.values(), legend.keys(), fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: checks the script runs")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", default=None, help="sweeps to run, comma-separated: image,audio,batch")
    ap.add_argument("--out-dir", default="docs/figures", help="where scaling.json and scaling.png go")
    ap.add_argument("--md", default=None, help="also write the markdown table to this file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = dict(QUICK if args.quick else FULL)
    if args.only:
        sizes = {k: v for k, v in sizes.items() if k in args.only.split(",")}
    repeats = 1 if args.quick else args.repeats
    t0 = time.time()
    results = run(sizes, repeats, args.device)
    rows = exponents(results)
    header = (f"device: {args.device} ({torch.get_num_threads()} threads), torch {torch.__version__}, "
              f"repeats {repeats}{' (quick)' if args.quick else ''}, fastest forward + backward "
              f"({'wall' if args.device == 'cuda' else 'CPU'} time); "
              f"{time.time() - t0:.0f} s")
    text = markdown(results, rows, header)
    print(text)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = {"device": args.device, "threads": torch.get_num_threads(), "torch": torch.__version__,
              "repeats": repeats, "quick": args.quick, "results": results, "exponents": rows}
    (out / "scaling.json").write_text(json.dumps(record, indent=1) + "\n")
    plot(results, out / "scaling.png")
    if args.md:
        Path(args.md).write_text(text + "\n")
    return record


if __name__ == "__main__":
    main()
