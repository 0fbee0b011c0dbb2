"""Training-step and sampling time of this checkout against another one, side by side.

Run:  git worktree add ../specreg-old <commit>
      python benchmarks/checkouts.py --old ../specreg-old/src [--rounds 5] [--threads 1]

For a refactor that must not cost speed: each round runs one short process per checkout
(``PYTHONPATH`` set to that checkout's ``src``), alternating, so both see the same machine
load; the ratio new / old of the medians over rounds is what to read, not the absolute
times. A process times, on one torch thread by default, a training step as the trainer
does it (zero_grad, EDM loss with ``fourier_ap`` on x̂0 at λ = λ_EDM(σ), backward, Adam) of
the UNet preset ``cpu32`` on 32×32 gray images, batch 32 (median of ``--steps``), and
EDM's Heun sampler, 18 steps, for 8 images.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def worker(steps: int, threads: int) -> dict[str, float]:
    """Times in this process, with whatever ``specreg`` is first on the path."""
    import torch

    from specreg.diffusion import EDM
    from specreg.models import unet_preset
    from specreg.regularizer import SpectralRegularizer

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = unet_preset("cpu32", in_channels=1)
    edm = EDM()
    denoiser = edm.precondition(net)
    reg = SpectralRegularizer("fourier_ap", lam="edm")
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    x0 = torch.rand(32, 1, 32, 32) * 2 - 1

    def step() -> float:
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        out = edm.loss(denoiser, x0, regularizer=reg)
        out.loss.mean().backward()
        opt.step()
        return time.perf_counter() - t0

    step()
    train = statistics.median(step() for _ in range(steps))
    with torch.no_grad():
        t0 = time.perf_counter()
        edm.sample(denoiser, (8, 1, 32, 32), sampler="heun", steps=18, generator=torch.Generator().manual_seed(0))
        sample = time.perf_counter() - t0
    return {"train_step_s": train, "sample_s": sample}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--old", help="the other checkout's src/ folder")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=5, help="training steps timed per process")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        print(json.dumps(worker(a.steps, a.threads)))
        return
    if a.old is None:
        p.error("--old is required: the other checkout's src/ folder")
    here = Path(__file__).resolve().parents[1] / "src"
    srcs = {"old": Path(a.old).resolve(), "new": here}
    if not (srcs["old"] / "specreg").is_dir():
        sys.exit(f"--old={a.old!r} is not a checkout's src/ folder (it has no specreg/ package)")
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in srcs}
    for r in range(a.rounds):
        for name in (("old", "new") if r % 2 == 0 else ("new", "old")):  # alternate who goes first
            env = {**os.environ, "PYTHONPATH": str(srcs[name])}
            out = subprocess.run([sys.executable, __file__, "--worker", "--steps", str(a.steps),
                                  "--threads", str(a.threads)], env=env, check=True, capture_output=True, text=True)
            runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"torch threads {a.threads}, {a.rounds} rounds, median over rounds")
    print("| measure | old (s) | new (s) | new / old |")
    print("|---|---|---|---|")
    for key in ("train_step_s", "sample_s"):
        old = statistics.median(x[key] for x in runs["old"])
        new = statistics.median(x[key] for x in runs["new"])
        print(f"| {key} | {old:.4f} | {new:.4f} | {new / old:.3f} |")


if __name__ == "__main__":
    main()
