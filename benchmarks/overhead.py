"""Training-step time with each regularizer divided by the time without, side by side.

Run:  python benchmarks/overhead.py [--repeats 10] [--device cpu|cuda] [--threads N] [--out FILE]

A step is what the trainer does: zero_grad, EDM loss (with the regularizer on x̂0),
backward, Adam step. Configurations: the reference UNet (preset ``cpu32``) on 32×32 gray
images, batch 32; preset ``cpu64`` on 64×64, batch 16; DiffWave (12 layers, 64 channels,
unconditional) on 1 s of 8 kHz audio, batch 8. All variants of a configuration are timed
round-robin in the same run (median of ``--repeats``), so the ratio is free of drift.
The paper calls the overhead "negligible"; the goal here is ≤ 1.05.

Two checks on the ratio itself: the baseline is timed twice under two names, so
"baseline (again)" shows how far from 1 a ratio strays by noise alone; and the
"alone" column times just the regularizer's forward + backward on a fixed x̂0 of the
batch's shape, divided by the baseline step: the overhead without the noise of the
network's much larger cost (1 + alone ≈ the ratio, when the noise is small).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from specreg.diffusion import EDM
from specreg.models import DiffWave, unet_preset
from specreg.regularizer import SpectralRegularizer

IMAGE_LOSSES = {
    "fourier_amp": {},
    "fourier_ap": {},
    "fourier_ap_weighted": {},
    "wavelet haar L3": {"wavelet": "haar", "levels": 3},
    "wavelet bior1.3 (max 3 levels)": {"wavelet": "bior1.3"},
}
AUDIO_LOSSES = {**IMAGE_LOSSES, "mrstft": {"fft_sizes": (512, 256, 128), "hop_sizes": (128, 64, 32),
                                           "win_lengths": (512, 256, 128)}}


def _reg(name: str, kw: dict, ndim: int) -> SpectralRegularizer:
    loss = "wavelet" if name.startswith("wavelet") else name
    extra = {} if loss == "mrstft" else {"ndim": ndim}
    return SpectralRegularizer(loss, lam="edm", **extra, **kw)


def time_config(make_net, shape, losses: dict, ndim: int, repeats: int, device: str) -> dict[str, float]:
    torch.manual_seed(0)
    edm = EDM("edm")
    net = make_net().to(device)
    denoiser = edm.precondition(net)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    x0 = torch.randn(*shape, device=device).clamp(-1, 1)
    regs = {n: _reg(n, kw, ndim).to(device) for n, kw in losses.items()}
    variants = {"baseline": None, "baseline (again)": None, **regs}

    def step(reg):
        opt.zero_grad(set_to_none=True)
        edm.loss(denoiser, x0, regularizer=reg).loss.mean().backward()
        opt.step()

    def timed(reg):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step(reg)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    for reg in variants.values():
        for _ in range(2):
            timed(reg)
    times = {k: [] for k in variants}
    for _ in range(repeats):
        for k, reg in variants.items():
            times[k].append(timed(reg))
    step_ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}

    # the regularizer alone on a fixed x̂0 (same shape, λ_EDM at fixed σ), many repeats
    x0_hat = (x0 + 0.1 * torch.randn_like(x0)).requires_grad_(True)
    sigma = torch.full((shape[0],), 0.5, device=device)

    def alone(reg):
        def run():
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            reg(x0_hat, x0, sigma).value.mean().backward()
            if device == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - t0
        for _ in range(3):
            run()
        return statistics.median(run() for _ in range(max(20, 4 * repeats))) * 1e3

    alone_ms = {k: alone(reg) for k, reg in regs.items()}
    return step_ms, alone_ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    ap.add_argument("--out", default=None, help="also write the markdown table to this file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    configs = {
        "UNet cpu32, 32×32 gray, batch 32": (lambda: unet_preset("cpu32", in_channels=1), (32, 1, 32, 32), IMAGE_LOSSES, 2),
        "UNet cpu64, 64×64 gray, batch 16": (lambda: unet_preset("cpu64", in_channels=1), (16, 1, 64, 64), IMAGE_LOSSES, 2),
        "DiffWave 12×64, 8000 samples, batch 8": (
            lambda: DiffWave(residual_layers=12, residual_channels=64, dilation_cycle=6), (8, 1, 8000), AUDIO_LOSSES, 1),
    }
    lines = [
        f"device: {args.device} ({torch.get_num_threads()} threads), torch {torch.__version__}, "
        f"repeats {args.repeats}, median step time; λ = λ_EDM(σ)",
        "",
        "| configuration | regularizer | step (ms) | ratio to baseline | alone (ms) | 1 + alone / baseline step |",
        "|---|---|---|---|---|---|",
    ]
    for name, (make, shape, losses, ndim) in configs.items():
        t, a = time_config(make, shape, losses, ndim, args.repeats, args.device)
        base = t["baseline"]
        for k, v in t.items():
            extra = f"{a[k]:.2f} | {1 + a[k] / base:.3f}" if k in a else "— | —"
            lines.append(f"| {name} | {k} | {v:.1f} | {v / base:.3f} | {extra} |")
        print("\n".join(lines[-len(t):]), flush=True)
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
