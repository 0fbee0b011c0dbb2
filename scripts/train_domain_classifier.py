#!/usr/bin/env python
"""Train the two shipped domain embeddings (``specreg/assets/``) on a CPU in a few minutes.

Both are :class:`specreg.metrics.frechet.DomainClassifier` CNNs whose penultimate layer is
the feature space of the domain Fréchet distance (:mod:`specreg.metrics.domain`):

* ``fashion``: Fashion-MNIST train split (60 000 images, 28×28 padded to 32×32 with
  background, as ``FashionMNIST(size=32)``), 10 classes, random horizontal flips.
  Reports accuracy on the 10 000 test images.
* ``speech``: 1-s segments (8 kHz) of the Asterisk prompts, ``AsteriskSpeech`` split
  ``train``; task: which of 8 degradations was applied (see :data:`DEGRADATIONS`,
  each with a random strength, followed by a random gain of ±6 dB so that level is no
  cue). Input: the log-mel front end of :data:`specreg.metrics.domain.SPEECH_FRONTEND`,
  normalised by the mean/std of clean training segments. Reports accuracy on every
  non-overlapping 1-s segment of the held-out ``eval`` prompts (no prompt shared with
  training) under all 8 degradations, with strengths from a fixed seed.

Each model is saved as ``<name>.safetensors`` (float32 state dict) with a JSON sidecar:
architecture config, the command line, data, accuracy, training time, date, versions.

Usage (defaults reproduce the shipped files)::

    python scripts/train_domain_classifier.py --out src/specreg/assets
    python scripts/train_domain_classifier.py --which fashion --fashion-steps 50   # smoke test
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from specreg.data.audio import AsteriskSpeech, LogMel
from specreg.data.images import FashionMNIST
from specreg.metrics.domain import (
    FASHION_ASSET,
    SPEECH_ASSET,
    SPEECH_DEGRADATIONS,
    SPEECH_FRONTEND,
    SPEECH_SAMPLE_RATE,
)
from specreg.metrics.frechet import DomainClassifier

SEGMENT = SPEECH_SAMPLE_RATE  # 1 s

# ----------------------------------------------------------------------------- training loop


def train_classifier(net: nn.Module, batches: Callable[[int, torch.Generator], tuple[torch.Tensor, torch.Tensor]],
                     steps: int, lr: float, seed: int, log_every: int = 25) -> float:
    """AdamW with a one-cycle schedule (linear warm-up 10 %, cosine decay); returns seconds."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    net.train()
    start = time.time()
    for step in range(steps):
        x, y = batches(step, g)
        # channels_last runs these small convolutions about 2× faster on CPUs (oneDNN)
        loss = F.cross_entropy(net(x.contiguous(memory_format=torch.channels_last)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps - 1:
            print(f"  step {step:4d}  loss {loss.item():.4f}  {time.time() - start:6.1f} s", flush=True)
    net.eval()
    return time.time() - start


@torch.no_grad()
def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> float:
    correct = 0
    for i in range(0, x.shape[0], batch_size):
        xb = x[i:i + batch_size].contiguous(memory_format=torch.channels_last)
        correct += int((net(xb).argmax(1) == y[i:i + batch_size]).sum())
    return correct / x.shape[0]


# ----------------------------------------------------------------------------- Fashion-MNIST


def train_fashion(args: argparse.Namespace) -> tuple[nn.Module, dict[str, Any]]:
    train, test = FashionMNIST(split="train", size=32), FashionMNIST(split="test", size=32)
    net = DomainClassifier(in_channels=1, num_classes=10, embed_dim=args.fashion_dim)
    net = net.to(memory_format=torch.channels_last)

    def batches(step: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(len(train), (args.batch_size,), generator=g)
        x = torch.stack([train[int(i)][0] for i in idx])
        flip = torch.rand(args.batch_size, generator=g) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        return x, train.labels[idx]

    print(f"fashion: {args.fashion_steps} steps of {args.batch_size}", flush=True)
    seconds = train_classifier(net, batches, args.fashion_steps, args.lr, args.seed)
    x_test = torch.stack([test[i][0] for i in range(len(test))])
    acc = accuracy(net, x_test, test.labels)
    print(f"fashion: test accuracy {acc:.4f} ({len(test)} images), {seconds:.0f} s", flush=True)
    meta = {
        "task": "Fashion-MNIST 10-class classification",
        "data": {"dataset": "Fashion-MNIST (Xiao et al. 2017), Debian package dataset-fashion-mnist",
                 "train": "train split, 60000 images, 28×28 padded to 32×32 with background (-1), "
                          "values in [-1, 1], random horizontal flips",
                 "test": "test split, 10000 images, same preprocessing, no flips"},
        "config": {"in_channels": 1, "num_classes": 10, "embed_dim": args.fashion_dim, "input_size": [32, 32],
                   "input_range": [-1.0, 1.0], "classes": list(FashionMNIST.classes)},
        "training": {"steps": args.fashion_steps, "batch_size": args.batch_size, "optimizer": "AdamW",
                     "lr": args.lr, "schedule": "one-cycle (10% warm-up, cosine)", "weight_decay": 1e-4,
                     "seed": args.seed, "seconds": round(seconds, 1)},
        "accuracy": {"test": round(acc, 4), "n_test": len(test)},
    }
    return net, meta


# ----------------------------------------------------------------------------- speech

DEGRADATIONS = SPEECH_DEGRADATIONS


def _rand(n: int, lo: float, hi: float, g: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _fft_gain(x: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """Apply a real gain (B, n_fft//2+1) per rfft bin of the whole segment."""
    return torch.fft.irfft(torch.fft.rfft(x) * gain, n=x.shape[-1])


def _stft_edit(x: torch.Tensor, edit: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
               ) -> torch.Tensor:
    """STFT (n_fft 256, hop 64, Hann) → edit(magnitude, phase) → inverse STFT."""
    win = torch.hann_window(256)
    spec = torch.stft(x, 256, 64, window=win, return_complex=True)
    mag, phase = edit(spec.abs(), spec.angle())
    return torch.istft(torch.polar(mag, phase), 256, 64, window=win, length=x.shape[-1])


def degrade(x: torch.Tensor, label: int, g: torch.Generator) -> torch.Tensor:
    """Apply degradation ``DEGRADATIONS[label]`` with a random strength to clips (B, T) at 8 kHz."""
    b, n = x.shape
    freqs = torch.fft.rfftfreq(n, 1.0 / SPEECH_SAMPLE_RATE)
    name = DEGRADATIONS[label]
    if name == "clean":
        return x
    if name == "lowpass":  # band-limited / over-smoothed output: brick-wall at 1.2 … 3.2 kHz
        cutoff = _rand(b, 1200.0, 3200.0, g)
        return _fft_gain(x, (freqs[None] <= cutoff[:, None]).to(x.dtype))
    if name == "white_noise":  # SNR 10 … 30 dB against the segment's RMS (floored for silence)
        snr = _rand(b, 10.0, 30.0, g)
        rms = x.square().mean(-1).sqrt().clamp_min(1e-3)
        return x + torch.randn(x.shape, generator=g) * (rms * 10 ** (-snr / 20))[:, None]
    if name == "phase_random":  # phasiness: keep |STFT|, perturb the phase by α·U(−π, π), α ∈ [0.5, 1]
        alpha = _rand(b, 0.5, 1.0, g)

        def edit(mag: torch.Tensor, phase: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            noise = (torch.rand(phase.shape, generator=g) * 2 - 1) * math.pi
            return mag, phase + alpha[:, None, None] * noise
        return _stft_edit(x, edit)
    if name in ("freq_blur", "time_smear"):  # smoothed magnitudes (lost harmonics / transients)
        width = int(torch.randint(2, 5, (), generator=g)) * 2 + 1  # 5, 7 or 9 bins (frames)
        dim = -2 if name == "freq_blur" else -1

        def edit(mag: torch.Tensor, phase: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            m = mag.transpose(dim, -1)
            shape = m.shape
            m = F.avg_pool1d(m.reshape(-1, 1, shape[-1]), width, 1, width // 2, count_include_pad=False)
            return m.reshape(shape).transpose(dim, -1), phase
        return _stft_edit(x, edit)
    if name == "hf_boost":  # excess high-frequency power: +6 … +15 dB shelf above 1.5 … 3 kHz
        boost = 10 ** (_rand(b, 6.0, 15.0, g) / 20)
        f0 = _rand(b, 1500.0, 3000.0, g)
        shelf = torch.sigmoid((freqs[None] - f0[:, None]) / 200.0)
        return _fft_gain(x, 1 + (boost[:, None] - 1) * shelf)
    if name == "mulaw":  # μ-law (μ = 255) quantisation to 4, 5 or 6 bits
        levels = 2 ** int(torch.randint(4, 7, (), generator=g))
        mu = 255.0
        y = torch.sign(x) * torch.log1p(mu * x.abs().clamp(max=1.0)) / math.log1p(mu)
        y = torch.round((y + 1) / 2 * (levels - 1)) / (levels - 1) * 2 - 1
        return torch.sign(y) * ((1 + mu) ** y.abs() - 1) / mu
    raise ValueError(f"unknown degradation {name!r}")


def eval_segments(clips: list[np.ndarray]) -> torch.Tensor:
    """Every non-overlapping 1-s segment of each clip; clips shorter than 1 s zero-padded."""
    segs = []
    for c in clips:
        if c.size < SEGMENT:
            c = np.pad(c, (0, SEGMENT - c.size))
        for k in range(c.size // SEGMENT):
            segs.append(c[k * SEGMENT:(k + 1) * SEGMENT])
    return torch.from_numpy(np.stack(segs)).float()


def train_speech(args: argparse.Namespace) -> tuple[nn.Module, dict[str, Any]]:
    train = AsteriskSpeech(split="train", sample_rate=SPEECH_SAMPLE_RATE, segment_length=None)
    held = AsteriskSpeech(split="eval", sample_rate=SPEECH_SAMPLE_RATE, segment_length=None)
    frontend = LogMel(**SPEECH_FRONTEND)
    clips = [torch.from_numpy(np.pad(c, (0, max(0, SEGMENT - c.size)))) for c in train.clips]
    # a segment starts at a uniformly random time of all training audio: long prompts weigh more
    lengths = torch.tensor([c.numel() - SEGMENT + 1 for c in clips], dtype=torch.float64)
    n_classes = len(DEGRADATIONS)

    def crops(n: int, g: torch.Generator) -> torch.Tensor:
        which = torch.multinomial(lengths, n, replacement=True, generator=g)
        starts = (torch.rand(n, generator=g, dtype=torch.float64) * lengths[which]).long()
        return torch.stack([clips[int(i)][int(s):int(s) + SEGMENT] for i, s in zip(which, starts)])

    g0 = torch.Generator().manual_seed(args.seed + 1)
    with torch.no_grad():
        ref = frontend(crops(512, g0))
    mean, std = float(ref.mean()), float(ref.std())

    def inputs(x: torch.Tensor, labels: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        out = torch.empty_like(x)
        for k in range(n_classes):
            sel = labels == k
            if sel.any():
                out[sel] = degrade(x[sel], k, g)
        gain = 10 ** (_rand(x.shape[0], -6.0, 6.0, g) / 20)
        with torch.no_grad():
            return ((frontend(out * gain[:, None]) - mean) / std)[:, None]

    def batches(step: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(args.batch_size) % n_classes  # balanced classes in every batch
        return inputs(crops(args.batch_size, g), labels, g), labels

    net = DomainClassifier(in_channels=1, num_classes=n_classes, embed_dim=args.speech_dim)
    net = net.to(memory_format=torch.channels_last)
    print(f"speech: {args.speech_steps} steps of {args.batch_size}", flush=True)
    seconds = train_classifier(net, batches, args.speech_steps, args.lr, args.seed)

    segs = eval_segments(held.clips)
    g_eval = torch.Generator().manual_seed(1234)
    x_eval = torch.cat([inputs(segs, torch.full((segs.shape[0],), k), g_eval) for k in range(n_classes)])
    y_eval = torch.arange(n_classes).repeat_interleave(segs.shape[0])
    acc = accuracy(net, x_eval, y_eval)
    with torch.no_grad():
        pred = torch.cat([net(x_eval[i:i + 500].contiguous(memory_format=torch.channels_last)).argmax(1)
                          for i in range(0, x_eval.shape[0], 500)])
    per_class = {name: round(float((pred[y_eval == k] == k).float().mean()), 4) for k, name in enumerate(DEGRADATIONS)}
    print(f"speech: held-out accuracy {acc:.4f} ({x_eval.shape[0]} segments of {len(held)} eval prompts), "
          f"{seconds:.0f} s; per class {per_class}", flush=True)
    meta = {
        "task": "which of 8 degradations was applied to a 1-s speech segment (8 kHz)",
        "data": {"dataset": "Asterisk prompts by Allison Smith (Debian package asterisk-core-sounds-en-wav), "
                            "specreg.data.AsteriskSpeech",
                 "train": f"split 'train' ({len(train)} prompts): 1-s segments at uniformly random times, "
                          "clips shorter than 1 s zero-padded; degradation classes balanced per batch, random "
                          "strengths, then a random gain of ±6 dB",
                 "test": f"split 'eval' ({len(held)} prompts, none used in training): all {segs.shape[0]} "
                         f"non-overlapping 1-s segments × {n_classes} degradations, strengths from seed 1234",
                 "degradations": {
                     "clean": "unchanged",
                     "lowpass": "brick-wall low-pass at 1.2 … 3.2 kHz",
                     "white_noise": "white noise at 10 … 30 dB SNR",
                     "phase_random": "STFT (256/64) phase + α·U(−π, π), α ∈ [0.5, 1], magnitudes kept",
                     "freq_blur": "STFT magnitudes box-averaged over 5/7/9 frequency bins",
                     "time_smear": "STFT magnitudes box-averaged over 5/7/9 frames (hop 8 ms)",
                     "hf_boost": "high shelf +6 … +15 dB above 1.5 … 3 kHz",
                     "mulaw": "μ-law (μ = 255) quantisation to 4/5/6 bits",
                 }},
        "config": {"in_channels": 1, "num_classes": n_classes, "embed_dim": args.speech_dim,
                   "classes": list(DEGRADATIONS), "frontend": dict(SPEECH_FRONTEND),
                   "input_mean": mean, "input_std": std, "segment_seconds": 1.0,
                   "input_size": [SPEECH_FRONTEND["n_mels"], SEGMENT // SPEECH_FRONTEND["hop_length"]]},
        "training": {"steps": args.speech_steps, "batch_size": args.batch_size, "optimizer": "AdamW",
                     "lr": args.lr, "schedule": "one-cycle (10% warm-up, cosine)", "weight_decay": 1e-4,
                     "seed": args.seed, "seconds": round(seconds, 1)},
        "accuracy": {"test": round(acc, 4), "n_test": int(x_eval.shape[0]), "per_class": per_class},
    }
    return net, meta


# ----------------------------------------------------------------------------- saving


def save(net: nn.Module, meta: dict[str, Any], out: Path, name: str, argv: list[str]) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().float() for k, v in net.state_dict().items()}
    save_file(state, str(out / f"{name}.safetensors"), metadata={"format": "pt", "architecture": "DomainClassifier"})
    (out / f"{name}.safetensors").chmod(0o644)  # package data: readable by everyone (save_file makes it 0600)
    meta = {
        "architecture": "specreg.metrics.frechet.DomainClassifier",
        "label": "domain Fréchet distance (project classifier), not FID",
        **meta,
        "parameters": sum(p.numel() for p in net.parameters()),
        "command": "python " + " ".join(shlex.quote(a) for a in argv),
        "date": datetime.date.today().isoformat(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "threads": torch.get_num_threads(),
    }
    (out / f"{name}.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {out / name}.safetensors and .json", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--which", choices=("fashion", "speech", "both"), default="both")
    p.add_argument("--out", type=Path, default=Path("src/specreg/assets"), help="output folder")
    p.add_argument("--fashion-steps", type=int, default=1500)
    p.add_argument("--speech-steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate")
    p.add_argument("--fashion-dim", type=int, default=64, help="embedding dimension of the fashion model")
    p.add_argument("--speech-dim", type=int, default=32, help="embedding dimension of the speech model")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    full_argv = [sys.argv[0], *(sys.argv[1:] if argv is None else argv)]
    if args.which in ("fashion", "both"):
        net, meta = train_fashion(args)
        save(net, meta, args.out, FASHION_ASSET, full_argv)
    if args.which in ("speech", "both"):
        net, meta = train_speech(args)
        save(net, meta, args.out, SPEECH_ASSET, full_argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
