"""The amplitude family against a plain amplitude L1, forward + backward, in one run.

Run:  python benchmarks/amplitude.py [--repeats 15] [--threads 2] [--batches 32 64] [--compile]

"autograd form" is each loss as written with autograd operations (the code before the fused
functions of :mod:`specreg.losses.fourier_fused`, still used when x0 needs a gradient);
the plain name is the fused function. The baseline is the unhardened Eq. 14 as one would
first write it,
mean |abs(rfft2(x̂0)) − abs(rfft2(x0))| per sample (no per-sample scaling, no residue
snapping, torch's own |·| backward). Each loss and the baseline run forward + backward on
(B, 3, 64, 64) float32 with x̂0 requiring a gradient; timings are medians over
``--repeats`` rounds taken round-robin (every candidate once per round, so a loaded
machine's drifts hit all alike); the ratio is the median of the per-round ratios. With
``--compile`` each loss is also wrapped in
``torch.compile`` (its compile time is excluded; graph breaks are counted with
``torch._dynamo.explain``), and the loss of a whole EDM training step (UNet, regularizer)
is timed eager and compiled. Prints one markdown table: ms and the ratio to the baseline
measured in the same run (issue 31's targets: fourier_amp ≤ 1.15, psd ≤ 1.3,
fourier_ap and fourier_ap_weighted ≤ 1.8).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from specreg.losses import build_loss

NAMES = ("fourier_amp", "psd", "fourier_ap", "fourier_ap_weighted")


def plain_amplitude_l1(x0_hat: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    a_hat = torch.fft.rfft2(x0_hat, norm="ortho").abs()
    a0 = torch.fft.rfft2(x0, norm="ortho").abs()
    return (a_hat - a0).abs().flatten(1).mean(1)


def _timed(fn: Callable[[], torch.Tensor]) -> float:
    t0 = time.perf_counter()
    fn().sum().backward()
    return time.perf_counter() - t0


def measure(cands: dict[str, Callable[[], torch.Tensor]], repeats: int, base: str
            ) -> tuple[dict[str, float], dict[str, float]]:
    """(median ms, median of the per-round ratio to ``base``) per candidate; each round
    times every candidate once, so a ratio compares timings taken seconds apart."""
    for fn in cands.values():
        for _ in range(2):  # warm-up (compiles, FFT plans, allocator)
            _timed(fn)
    times: dict[str, list[float]] = {k: [] for k in cands}
    for _ in range(repeats):
        for k, fn in cands.items():
            times[k].append(_timed(fn))
    ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    ratio = {k: statistics.median(a / b for a, b in zip(v, times[base])) for k, v in times.items()}
    return ms, ratio


def loss_candidates(x0_hat: torch.Tensor, x0: torch.Tensor, compiled: bool,
                    breaks: dict[str, str]) -> dict[str, Callable[[], torch.Tensor]]:
    """The baseline, each loss before (autograd form) and after (fused), and compiled."""
    cands: dict[str, Callable[[], torch.Tensor]] = {"plain amplitude L1": lambda: plain_amplitude_l1(x0_hat, x0)}
    for n in NAMES:
        m = build_loss(n)
        cands[f"{n} (autograd form)"] = lambda m=m: m.per_sample_autograd(x0_hat, x0)
        cands[n] = lambda m=m: m(x0_hat, x0)
        if compiled:
            c = torch.compile(m)
            cands[f"{n} (compiled)"] = lambda c=c: c(x0_hat, x0)
            if n not in breaks:
                e = torch._dynamo.explain(m)(x0_hat, x0)
                breaks[n] = f"{e.graph_count} graph(s), {e.graph_break_count} break(s)"
    return cands


def step_candidates(breaks: dict[str, str]) -> dict[str, Callable[[], torch.Tensor]]:
    """The loss of one EDM training step of the reference UNet (preset cpu32, 32×32 gray,
    batch 16) with the fourier_amp regularizer, forward + backward: eager; compiled with the
    noise drawn from an explicit ``torch.Generator`` (as the trainer draws it); compiled
    with the global RNG."""
    from specreg.diffusion import EDM
    from specreg.models import unet_preset
    from specreg.regularizer import SpectralRegularizer

    torch.manual_seed(0)
    form = EDM("edm")
    model = form.precondition(unet_preset("cpu32"))
    reg = SpectralRegularizer("fourier_amp", lam="edm")
    x0 = torch.randn(16, 1, 32, 32).clamp(-1, 1)
    gen = torch.Generator().manual_seed(0)

    def with_generator() -> torch.Tensor:
        return form.loss(model, x0, regularizer=reg, generator=gen).loss.mean()

    def global_rng() -> torch.Tensor:
        return form.loss(model, x0, regularizer=reg).loss.mean()

    for name, fn in (("step, explicit generator", with_generator), ("step, global RNG", global_rng)):
        torch._dynamo.reset()
        e = torch._dynamo.explain(fn)()
        reasons = sorted({str(b.reason).strip().splitlines()[0][:90] for b in e.break_reasons if str(b.reason).strip()})
        breaks[name] = f"{e.graph_count} graph(s), {e.graph_break_count} break(s)" + (
            f": {'; '.join(reasons)}" if reasons else "")

    def zeroed(fn: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            model.zero_grad(set_to_none=True)
            return fn()
        return run

    return {"step eager": zeroed(with_generator),
            "step compiled, explicit generator": zeroed(torch.compile(with_generator)),
            "step compiled, global RNG": zeroed(torch.compile(global_rng))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", type=int, nargs="+", default=[32, 64])
    ap.add_argument("--compile", action="store_true", help="also time each loss and a training step compiled")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    rows = []
    breaks: dict[str, str] = {}
    for b in args.batches:
        x0 = torch.randn(b, 3, 64, 64, generator=g)
        x0_hat = (x0 + 0.1 * torch.randn(b, 3, 64, 64, generator=g)).requires_grad_(True)
        t, r = measure(loss_candidates(x0_hat, x0, args.compile, breaks), args.repeats, "plain amplitude L1")
        rows += [(f"{b}×3×64×64", k, ms, f"{r[k]:.2f}") for k, ms in t.items()]
    if args.compile:
        t, r = measure(step_candidates(breaks), max(3, args.repeats // 3), "step eager")
        rows += [("UNet cpu32, 16×1×32×32", k, ms, f"{r[k]:.2f} × eager") for k, ms in t.items()]
    print(f"torch {torch.__version__}, {args.threads} threads, forward+backward, medians of {args.repeats} "
          "interleaved rounds (the ratio: median of the per-round ratios)\n")
    print("| input | loss | ms | × plain amplitude L1 |")
    print("|---|---|---:|---:|")
    for data, k, ms, ratio in rows:
        print(f"| {data} | {k} | {ms:.2f} | {ratio} |")
    if breaks:
        print("\n| compiled | graphs |\n|---|---|")
        for n, v in breaks.items():
            print(f"| {n} | {v} |")


if __name__ == "__main__":
    main()
