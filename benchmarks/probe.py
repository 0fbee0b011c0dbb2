"""Time of ``specreg probe`` on the demo model (0.34 M parameters, 32×32) against its floor:
the same number of bare forward passes of the network (items × noise levels).

Run:  python benchmarks/probe.py [--n 256] [--sigmas 32] [--repeats 3]

The run directory is the demo config trained for one step (the timing does not depend on the
weights). Each repeat times the floor and the probe back to back, so a busy machine slows
both alike; the ratio probe/floor is the probe's overhead. Wall and process CPU time are
printed (CPU time is what the probe costs when the machine is not shared); one torch thread,
as the probe uses on a CPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--sigmas", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from specreg.experiments.probe import probe_run
    from specreg.train.build import load_trained
    from specreg.train.config import load_config
    from specreg.train.trainer import Trainer

    run = tempfile.mkdtemp(prefix="probe-bench-")
    cfg = load_config("demo", ["train.steps=1", "train.progress_bar=false", "train.checkpoint_every=1"])
    Trainer(cfg, run).fit()
    _, model, _, _ = load_trained(run)
    params = sum(p.numel() for p in model.parameters())
    torch.set_num_threads(1)
    x = torch.randn(args.batch_size, 1, 32, 32)
    sigma = torch.full((args.batch_size,), 0.5)
    calls = -(-args.n // args.batch_size) * args.sigmas

    def floor() -> None:
        with torch.no_grad():
            for _ in range(calls):
                model(x, sigma)

    def probe() -> None:
        probe_run(run, os.path.join(run, "probe"), n_items=args.n, n_sigma=args.sigmas, batch_size=args.batch_size)

    rows: dict[str, list[tuple[float, float]]] = {"floor": [], "probe": []}
    for _ in range(args.repeats):
        for name, fn in (("floor", floor), ("probe", probe)):
            w0, c0 = time.perf_counter(), time.process_time()
            fn()
            rows[name].append((time.perf_counter() - w0, time.process_time() - c0))
    print(f"demo model: {params} parameters, {args.n} items × {args.sigmas} σ, batch {args.batch_size}, "
          f"1 thread, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print("| what | wall s (median) | CPU s (median) |\n|---|---|---|")
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in rows.items()}
    for name, (w, c) in med.items():
        print(f"| {name} | {w:.1f} | {c:.1f} |")
    print(f"probe / floor: wall {med['probe'][0] / med['floor'][0]:.2f}, CPU {med['probe'][1] / med['floor'][1]:.2f}")


if __name__ == "__main__":
    main()
