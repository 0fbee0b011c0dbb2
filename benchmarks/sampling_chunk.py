"""Time of sampling on a CPU against the network's batch: the same samples drawn with every
network call on the whole sampling batch (the baseline) and split into the chunks that
``specreg.train.runtime.ChunkedForward`` picks ("auto", the CPU default of ``generate``).

Run:  python benchmarks/sampling_chunk.py [--n 256] [--steps 18] [--threads 1] [--repeats 3]

(generate splits calls only with one torch thread, a CPU run's default; ``--threads 2``
times the same splits with two threads, on an otherwise idle machine only.)

For the demo network at 32×32, the 64×64 network of ``resolution_textures_64`` (one more
level) and the DiffWave vocoder (bare forward passes only, 32 clips), it times bare forward
passes per item at each chunk size of ``--chunks`` and prints the chunk "auto" picks; for
the two image networks it then draws ``--n`` Heun samples with
``specreg.train.build.generate`` both ways and checks that the samples are equal bit for
bit. Each repeat times every setting back to back, so a busy machine slows all alike; the
minimum over repeats is printed, with the ratio to the whole-batch time (< 1: faster).
Random weights: the timing does not depend on them.
"""

from __future__ import annotations

import argparse
import time

import torch

NETS = {"32×32 demo": ("demo", []),
        "64×64 (resolution_textures_64)": ("demo", ["data.size=64", "model.channel_mult=[1, 2, 2, 2]"]),
        "DiffWave vocoder": ("speech-vocoder", [])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--steps", type=int, default=18)
    ap.add_argument("--chunks", default="1,2,4,8,16,32,64,256")
    ap.add_argument("--threads", default="1")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from specreg.train.build import build_formulation, build_model, build_net, generate
    from specreg.train.config import load_config
    from specreg.train.runtime import ChunkedForward

    chunks = [int(c) for c in args.chunks.split(",")]
    print(f"torch {torch.__version__}; n = {args.n}, Heun {args.steps} steps; min over {args.repeats} repeats")
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        for name, (base, overrides) in NETS.items():
            cfg = load_config(base, [*overrides, f"sample.steps={args.steps}"])
            formulation = build_formulation(cfg.diffusion)
            model = build_model(formulation, build_net(cfg)).eval()
            audio = cfg.data.is_audio
            n = 32 if audio else args.n
            if audio:
                frames = cfg.data.segment_length // cfg.data.hop_length
                x, level = torch.randn(n, 1, frames * cfg.data.hop_length), torch.randint(0, 50, (n,))
                kw = {"cond": torch.randn(n, cfg.data.n_mels, frames)}
            else:
                x, level, kw = torch.randn(n, cfg.data.channels, cfg.data.size, cfg.data.size), torch.ones(n), {}
            sizes = [c for c in chunks if c <= n]
            per_item: dict[int, list[float]] = {c: [] for c in sizes}
            with torch.no_grad():
                for _ in range(args.repeats):
                    for c in sizes:
                        t0 = time.perf_counter()
                        for i in range(0, n, c):
                            model(x[i:i + c], level[i:i + c], **{k: v[i:i + c] for k, v in kw.items()})
                        per_item[c].append((time.perf_counter() - t0) / n * 1e3)
            auto = ChunkedForward(model)
            with torch.no_grad():
                auto(x[:2], level[:2], **{k: v[:2] for k, v in kw.items()})
            base_ms = min(per_item[max(sizes)])
            print(f"\n{threads} thread(s), {name}: forward ms per item at each chunk (ratio to {max(sizes)} at once);"
                  f" auto picks {auto.chunk}")
            print("  " + "  ".join(f"{c}: {min(v):.2f} ({min(v) / base_ms:.2f})" for c, v in per_item.items()))
            if audio:
                continue
            times: dict[str, list[float]] = {"whole batch": [], "auto": []}
            samples = {}
            for _ in range(args.repeats):
                for label, chunk in (("whole batch", n), ("auto", "auto")):
                    t0 = time.perf_counter()
                    samples[label] = generate(cfg, formulation, model, n, batch_size=n, forward_chunk=chunk,
                                              generator=torch.Generator().manual_seed(0))
                    times[label].append(time.perf_counter() - t0)
            equal = torch.equal(samples["whole batch"], samples["auto"])
            whole = min(times["whole batch"])
            print(f"  generate {n} samples: " + ", ".join(
                f"{k} {min(v):.1f} s ({min(v) / whole:.2f})" for k, v in times.items())
                + f"; samples equal bit for bit: {equal}")


if __name__ == "__main__":
    main()
