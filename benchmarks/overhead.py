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

Memory: the peak memory of a step with each regularizer over the step without. On CUDA
``torch.cuda.max_memory_allocated``; on a CPU, where torch keeps no allocator statistics,
the bytes of the distinct tensors autograd saves for the backward (the activations, which
set a step's peak on top of the weights and optimizer state) — deterministic, so one
measurement per variant. Goal ≤ 1.02.

A fourth configuration is latent flow matching (4×8×8 latents of a 32×32 VAE, the shape
of the shipped ``fashion_vae``; its weights do not change the cost): the trainers' Fourier
L1 on the latents and the same loss on decoded images D(x̂0) through the frozen decoder
(``regularizer.space: decoded``), which adds a decoder forward and backward per step.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from specreg.diffusion import EDM, FlowMatching
from specreg.models import DiffWave, unet_preset
from specreg.models.unet import UNet
from specreg.models.vae import ConvVAE
from specreg.regularizer import SpectralRegularizer

# display name → (loss name, keyword arguments of the regularizer)
IMAGE_LOSSES = {
    "fourier_amp": ("fourier_amp", {}),
    "fourier_ap": ("fourier_ap", {}),
    "fourier_ap_weighted": ("fourier_ap_weighted", {}),
    "wavelet haar L3": ("wavelet", {"wavelet": "haar", "levels": 3}),
    "wavelet bior1.3 (max 3 levels)": ("wavelet", {"wavelet": "bior1.3"}),
    "fourier_l2 power p=2": ("fourier_l2", {"weights": "power", "power": 2.0}),
    "fourier_l2 whiten": ("fourier_l2", {"weights": "whiten"}),
    "wavelet_l2 haar L3 γ=1,2,4": ("wavelet_l2", {"wavelet": "haar", "levels": 3, "gamma": [1.0, 2.0, 4.0]}),
    "fourier_l2 + learned band weights": ("fourier_l2", {"bands": 4, "band_weights": True}),
}
AUDIO_LOSSES = {**{k: v for k, v in IMAGE_LOSSES.items() if "whiten" not in k},
                "mrstft": ("mrstft", {"fft_sizes": (512, 256, 128), "hop_sizes": (128, 64, 32),
                                      "win_lengths": (512, 256, 128)})}


def _reg(name: str, ndim: int, x0: torch.Tensor) -> SpectralRegularizer:
    loss, kw = ALL_LOSSES[name]
    kw = dict(kw)
    band_weights = kw.pop("band_weights", False)
    if loss != "mrstft":
        kw["ndim"] = ndim
    if loss == "fourier_l2" and kw.get("weights") == "whiten":
        from specreg.losses import FourierL2Loss

        built = FourierL2Loss(**kw).fit(x0)  # the trainer fits it on the data the same way
        return SpectralRegularizer(built, lam="edm")
    return SpectralRegularizer(loss, lam="edm", band_weights=band_weights, **kw)


ALL_LOSSES = {**IMAGE_LOSSES, **AUDIO_LOSSES}


def saved_bytes(fn) -> int:
    """Bytes of the distinct tensors autograd saves for the backward of ``fn()`` (its
    activation memory, which sets a training step's peak on top of the weights)."""
    seen: dict[tuple, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        seen[(st.data_ptr(), t.device.type)] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = fn()
    loss.backward()
    return sum(seen.values())


LATENT_LOSSES = {
    "fourier_amp on latents": ("fourier_amp", {"lam": 0.05, "sigma_max": 2.3333}),
    "fourier_amp on decoded images": ("fourier_amp", {"lam": 0.05, "sigma_max": 2.3333, "decoded": True}),
    "fourier_l2 power p=2 on decoded images": ("fourier_l2", {"weights": "power", "lam": "flow", "decoded": True}),
}


def _latent_reg(name: str, vae: ConvVAE) -> SpectralRegularizer:
    loss, kw = LATENT_LOSSES[name]
    kw = dict(kw)
    lam, sigma_max, decoded = kw.pop("lam"), kw.pop("sigma_max", None), kw.pop("decoded", False)
    return SpectralRegularizer(loss, lam=lam, sigma_max=sigma_max, decode=vae.images if decoded else None, **kw)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_config(make_net, shape, regs: dict, repeats: int, device: str, formulation=None
                ) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """(median step ms, regularizer-alone ms, memory ratio) per variant; ``regs`` maps a name
    to a regularizer (built on this configuration's data)."""
    torch.manual_seed(0)
    form = formulation or EDM("edm")
    net = make_net().to(device)
    model = form.precondition(net) if hasattr(form, "precondition") else net
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    x0 = torch.randn(*shape, device=device).clamp(-1, 1)
    regs = {k: r.to(device) for k, r in regs.items()}
    variants = {"baseline": None, "baseline (again)": None, **regs}

    def loss(reg):
        g = torch.Generator(device=device).manual_seed(0)  # the same σ and noise for every variant
        return form.loss(model, x0, regularizer=reg, generator=g).loss.mean()

    def step(reg):
        opt.zero_grad(set_to_none=True)
        loss(reg).backward()
        opt.step()

    def timed(reg):
        _sync(device)
        t0 = time.perf_counter()
        step(reg)
        _sync(device)
        return time.perf_counter() - t0

    for reg in variants.values():
        for _ in range(2):
            timed(reg)
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeats):
        for k, reg in variants.items():
            times[k].append(timed(reg))
    step_ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}

    def memory(reg) -> float:
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            loss(reg).backward()
            torch.cuda.synchronize()
            return float(torch.cuda.max_memory_allocated())
        return float(saved_bytes(lambda: loss(reg)))

    base_mem = memory(None)
    mem = {k: memory(reg) / base_mem for k, reg in variants.items()}

    # the regularizer alone on a fixed x̂0 (same shape, at fixed σ), many repeats
    x0_hat = (x0 + 0.1 * torch.randn_like(x0)).requires_grad_(True)
    sigma = torch.full((shape[0],), 0.5, device=device)

    def alone(reg):
        def run():
            _sync(device)
            t0 = time.perf_counter()
            reg(x0_hat, x0, sigma).value.mean().backward()
            _sync(device)
            return time.perf_counter() - t0
        for _ in range(3):
            run()
        return statistics.median(run() for _ in range(max(20, 4 * repeats))) * 1e3

    alone_ms = {k: alone(reg) for k, reg in regs.items()}
    return step_ms, alone_ms, mem


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    ap.add_argument("--only", default=None, help="run only configurations whose name contains this text")
    ap.add_argument("--out", default=None, help="also write the markdown table to this file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    vae = ConvVAE().eval().requires_grad_(False)
    data = {shape: torch.randn(*shape, generator=g).clamp(-1, 1) for shape in [(32, 1, 32, 32), (16, 1, 64, 64)]}
    configs = {
        "UNet cpu32, 32×32 gray, batch 32": (lambda: unet_preset("cpu32", in_channels=1), (32, 1, 32, 32),
                                             lambda: {n: _reg(n, 2, data[(32, 1, 32, 32)]) for n in IMAGE_LOSSES},
                                             None),
        "UNet cpu64, 64×64 gray, batch 16": (lambda: unet_preset("cpu64", in_channels=1), (16, 1, 64, 64),
                                             lambda: {n: _reg(n, 2, data[(16, 1, 64, 64)]) for n in IMAGE_LOSSES},
                                             None),
        "DiffWave 12×64, 8000 samples, batch 8": (
            lambda: DiffWave(residual_layers=12, residual_channels=64, dilation_cycle=6), (8, 1, 8000),
            lambda: {n: _reg(n, 1, torch.randn(8, 1, 8000)) for n in AUDIO_LOSSES}, None),
        "latent flow, 4×8×8 latents (32×32 images), batch 64": (
            lambda: UNet(in_channels=4, model_channels=32, channel_mult=[1, 2], num_res_blocks=1, resolution=8),
            (64, 4, 8, 8), lambda: {n: _latent_reg(n, vae) for n in LATENT_LOSSES}, FlowMatching("logit_normal")),
    }
    lines = [
        f"device: {args.device} ({torch.get_num_threads()} threads), torch {torch.__version__}, "
        f"repeats {args.repeats}, median step time; λ = λ_EDM(σ) (latent flow: as named)",
        "",
        "| configuration | regularizer | step (ms) | ratio to baseline | alone (ms) | 1 + alone / baseline step "
        "| memory ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, (make, shape, regs, form) in configs.items():
        if args.only and args.only not in name:
            continue
        t, a, m = time_config(make, shape, regs(), args.repeats, args.device, form)
        base = t["baseline"]
        for k, v in t.items():
            extra = f"{a[k]:.2f} | {1 + a[k] / base:.3f}" if k in a else "— | —"
            lines.append(f"| {name} | {k} | {v:.1f} | {v / base:.3f} | {extra} | {m[k]:.3f} |")
        print("\n".join(lines[-len(t):]), flush=True)
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
