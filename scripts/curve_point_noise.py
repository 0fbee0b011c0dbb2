"""How noisy is one point of a study's training curve? Samples one kept checkpoint of a
run measured along training with several sample seeds, as the curve does (the runner's own
``sample`` and the study's reference), and prints each seed's LSD and high-band LSD, their
mean and standard deviation, and the symmetric noise floor of each set
(:mod:`specreg.metrics.floor`, both sets split in halves). The spread over seeds is the
measurement noise of one curve point; compare it with the curve's real-vs-real floor.

    python scripts/curve_point_noise.py configs/studies/resolution_textures_64.yaml \
        --profile small_20k --out results/resolution_textures_64_20k --step 8000 --seeds 1,2,3,4,5

Results are appended to ``<run>/point_noise.json`` (a seed already there is skipped); the
study's report tables them beside the curve (``specreg compare ... --report-only``).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

KEYS = ("lsd", "lsd_bias", "lsd_high", "lsd_high_bias")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study")
    ap.add_argument("--profile", default="small")
    ap.add_argument("--out", required=True, help="the study folder")
    ap.add_argument("--run", default=None, help="run label (default: the first run measured along training)")
    ap.add_argument("--step", type=int, required=True, help="a kept checkpoint's step")
    ap.add_argument("--seeds", default="1,2,3", help="sample seeds, comma-separated")
    ap.add_argument("--n", type=int, default=None, help="samples per seed (default: the curve's)")
    args = ap.parse_args()

    from specreg.experiments.compare import load_study, plan_runs
    from specreg.experiments.plan import data_kind
    from specreg.experiments.runner import sample
    from specreg.experiments.stats import point_spread
    from specreg.files import write_json
    from specreg.layout import POINT_NOISE_FILE, read_point_noise
    from specreg.metrics.evaluation import evaluate
    from specreg.train.checkpoint import checkpoint_name

    st = load_study(args.study, args.profile)
    specs = [s for s in plan_runs(st, Path(args.out)) if s.curve and (args.run is None or s.label == args.run)]
    if not specs:
        raise SystemExit(f"--run={args.run!r}: no run of {st.name!r} is measured along training under that label")
    spec, ev = specs[0], st.evaluation
    ckpt = spec.run_dir / "checkpoints" / checkpoint_name(args.step)
    if not ckpt.is_dir():
        raise SystemExit(f"--step={args.step}: {spec.label} has no kept checkpoint there ({ckpt.name} is missing)")
    n = args.n or min(ev.curve_samples, ev.n_samples)
    real = ev.real_sets(spec.config)
    kind, rate = data_kind(spec.config)
    path = spec.run_dir / POINT_NOISE_FILE
    done = read_point_noise(spec.run_dir)
    for seed in (int(s) for s in args.seeds.split(",")):
        if any(r["step"] == args.step and r["seed"] == seed and r["n"] == n for r in done):
            continue
        t0 = time.time()
        x, _, _ = sample(spec, replace(ev, sample_seed=seed - spec.seed), real, n, checkpoint=ckpt)
        res = evaluate(x, real.reference, kind=kind, metrics=["lsd", "lsd_high"], sample_rate=rate,
                       batch_size=ev.batch_size, seed=ev.metric_seed, progress=False, floor=True)
        done.append({"step": args.step, "seed": seed, "n": n, **{k: res["metrics"][k] for k in KEYS},
                     "floors": {k: res["floors"].get(k) for k in KEYS}, "seconds": round(time.time() - t0, 1)})
        write_json(path, done)
        print(f"seed {seed}: " + ", ".join(f"{k} {res['metrics'][k]:.4f}" for k in KEYS), flush=True)
    (g,) = [g for g in point_spread(done, KEYS) if g["step"] == args.step and g["n"] == n]
    for k in KEYS:
        sd = "—" if g["sd"][k] is None else f"{g['sd'][k]:.4f}"
        print(f"{k}: {len(g['seeds'])} seeds, mean {g['mean'][k]:.4f}, sd {sd}")


if __name__ == "__main__":
    main()
