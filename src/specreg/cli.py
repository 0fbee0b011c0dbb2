"""The ``specreg`` command line.

::

    specreg train CONFIG --out DIR [section.key=value ...]
    specreg sample RUN_DIR --n N --out DIR [--sampler NAME] [--steps K] [--seed S]
    specreg eval RUN_DIR_OR_SAMPLE_DIR [--reference NAME_OR_DIR] ...
    specreg compare CONFIG --out DIR [--profile NAME] [--jobs N]
    specreg demo [--out DIR]
    specreg probe RUN_DIR [--out DIR]

Each sub-command is one small ``add_<name>(subparsers)`` function that declares its
options and sets ``func`` to the function that runs it; :data:`COMMANDS` lists them.
Sub-commands that live in other modules (``eval``, ``compare``, ``demo``) are found through
:data:`COMMAND_MODULES`: such a module defines ``register(subparsers)`` the same way,
so adding a command is a function there and one line here. Heavy imports (torch) happen
inside the run functions, so ``--help`` stays fast.

A user mistake (a ``ValueError``, an ``OSError`` on a path, a usage error) is one line on
stderr and exit status 2; SIGINT or SIGTERM is one line and 130 or 143
(``tests/test_cli_bad_inputs.py``, ``tests/test_stop_signals.py``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from specreg.files import folder_arg

# Modules that add their own sub-commands: each defines ``register(subparsers)``.
COMMAND_MODULES: tuple[str, ...] = ("specreg.experiments.commands",)


def _builtin_names() -> str:
    from specreg.train.config import builtin_configs

    return ", ".join(builtin_configs())


# --------------------------------------------------------------------------- train

def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a model from a config (resumes if DIR holds a checkpoint)",
        description="Train a diffusion model, with or without a spectral regularizer, from a config. "
                    "Running the same command again continues from the newest checkpoint in DIR. "
                    "Multi-process (DDP, also on CPUs with gloo): `torchrun --standalone --nproc_per_node N "
                    "-m specreg.cli train ...` or `accelerate launch --multi_gpu --num_processes N -m "
                    "specreg.cli train ...` (accelerate's --cpu flag starts a single process). "
                    "train.batch_size is the global batch.",
        epilog="Example: specreg train demo --out runs/ap train.steps=200 regularizer.loss=fourier_ap "
               "regularizer.lam=edm. Every key and its value: specreg train CONFIG --out DIR --print-config.",
    )
    p.add_argument("config", help=f"built-in config name ({_builtin_names()}) or a YAML file")
    p.add_argument("--out", required=True, type=folder_arg, metavar="DIR",
                   help="run directory (config, logs, checkpoints, samples)")
    p.add_argument("overrides", nargs="*", metavar="section.key=value",
                   help="override config values; values are typed as YAML (200, 1e-4, edm, null, [1, 2])")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    from specreg.train.config import dump_config, load_config

    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        print(dump_config(cfg), end="")
        return 0
    from specreg.metrics.plots import redraw_band_weights
    from specreg.train.trainer import Trainer

    result = Trainer(cfg, args.out, on_checkpoint=redraw_band_weights).fit()
    if not result.is_main_process:  # one report per run, not one per DDP process
        return 0
    if result.resumed_from:
        print(f"resumed from step {result.resumed_from}", file=sys.stderr)
    print(f"trained to step {result.step} in {result.seconds:.1f} s; run directory {args.out}")
    return 0


# --------------------------------------------------------------------------- sample

def add_sample(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sample", help="draw samples from a trained run",
        description="Load the newest checkpoint of a run (EMA weights) and write N samples: images as "
                    "grid.png plus samples.npy (float32, N×C×H×W in [-1, 1]); audio as WAV files plus "
                    "samples.npy (N×1×L).",
    )
    p.add_argument("run_dir", type=Path, help="a run directory written by `specreg train`")
    p.add_argument("--n", type=int, required=True, help="number of samples")
    p.add_argument("--out", type=folder_arg, required=True, metavar="DIR", help="output directory")
    p.add_argument("--sampler", default=None,
                   help="sampler (edm: heun, euler, dpmpp_2m; ddpm: ddpm, ddim; flow: euler, heun); "
                        "default: the run's sample.sampler")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the run's sample.steps)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling noise (default 0)")
    p.add_argument("--batch-size", type=int, default=256, help="samples per forward batch (default 256)")
    p.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.set_defaults(func=run_sample)


def run_sample(args: argparse.Namespace) -> int:
    from specreg._checks import SEED_RANGE, check_device, check_int

    check_int("--n", args.n, lo=1)
    check_int("--batch-size", args.batch_size, lo=1)
    check_int("--seed", args.seed, lo=SEED_RANGE[0], hi=SEED_RANGE[1])
    if args.steps is not None:
        check_int("--steps", args.steps, lo=1)
    device = check_device("--device", args.device)
    import numpy as np
    import torch

    from specreg.files import save_audio, save_image_grid
    from specreg.train.build import conditioning_for_samples, generate, load_trained

    overrides = [f"sample.seed={args.seed}"]
    if args.sampler is not None:
        overrides.append(f"sample.sampler={args.sampler}")
    if args.steps is not None:
        overrides.append(f"sample.steps={args.steps}")
    cfg, model, formulation, step = load_trained(args.run_dir, ema=not args.raw, overrides=overrides)
    model.to(device)
    if isinstance(formulation, torch.nn.Module):
        formulation.to(device)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    kw = conditioning_for_samples(cfg, args.n)
    x = generate(cfg, formulation, model, args.n, generator=generator, model_kwargs=kw,
                 batch_size=args.batch_size).cpu()
    args.out.mkdir(parents=True, exist_ok=True)
    from specreg.layout import SAMPLE_OUT_GRID, SAMPLES_ARRAY

    np.save(args.out / SAMPLES_ARRAY, x.numpy().astype(np.float32))
    if cfg.data.is_audio:
        save_audio(x, args.out, cfg.data.sample_rate)
    else:
        save_image_grid(x[:256], args.out / SAMPLE_OUT_GRID)
    print(f"wrote {args.n} samples of step {step} ({cfg.sample.sampler}, {cfg.sample.steps} steps) to {args.out}")
    return 0


# --------------------------------------------------------------------------- parser

COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [add_train, add_sample]


class OneLineParser(argparse.ArgumentParser):
    """Usage errors in one line, as every other error of the command line."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="specreg",
        description="Spectral regularization of diffusion models: train, sample, evaluate, compare.",
    )
    from specreg import __version__

    parser.add_argument("--version", action="version", version=f"specreg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in COMMANDS:
        add(sub)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:  # that command is not installed; anything else is a real error
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``specreg`` script; returns the exit status."""
    # Idle OpenMP threads sleep instead of spinning. Must be set before torch loads its
    # OpenMP runtime. On a CPU shared with other jobs, spinning threads made a training
    # step 8× slower (5.2 s vs 0.66 s, 2 threads, 2 busy cores).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from specreg._optional import MissingExtraError

    try:
        parser = build_parser()
    except MissingExtraError as err:  # a core-only install: one line naming the extra
        print(f"specreg: the command line needs the '{err.extra}' extra: pip install 'specreg[{err.extra}]'",
              file=sys.stderr)
        return 1
    # argparse cannot collect a nargs="*" positional on both sides of an option
    # (`train demo --out DIR a=1`), so overrides after the options come back as extras
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any(e.startswith("-") for e in extra):
            parser.exit(2, f"specreg {args.command}: error: unrecognized arguments: {' '.join(extra)} "
                           f"(see specreg {args.command} --help)\n")
        args.overrides = [*args.overrides, *extra]
    from specreg.stopping import stop_on_signals

    try:
        with stop_on_signals():  # SIGTERM outside training: one line too, not a silent death
            return int(args.func(args) or 0)
    except MissingExtraError as err:  # e.g. `specreg eval` without the audio extra
        print(f"specreg {args.command}: {err}", file=sys.stderr)
        return 1
    except ValueError as err:  # a bad config, override or argument: one line saying what to change
        _report(args.command, f"error: {err}", hint=False)
        return 2
    except RuntimeError as err:  # diverged or out of memory: the message says what to try
        _report(args.command, str(err))
        return 1
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as err:  # a path the user gave: a file where a folder goes, no permission, a full disk
        _report(args.command, f"error: {_os_error(err)}", hint=False)
        return 2
    except KeyboardInterrupt as err:  # Ctrl-C (training: SIGTERM too, after saving): one line, no traceback
        if getattr(err, "is_main_process", True):
            line = f"specreg {args.command}: interrupted" + (f" by {err}" if str(err) else "")
            if args.command in ("train", "compare", "demo") and "resume" not in line:
                line += "; every checkpoint written is kept: run the same command to resume"
            print(line, file=sys.stderr)
        return 143 if getattr(err, "signal_name", "") == "SIGTERM" else 130


def _report(command: str, message: str, *, hint: bool = True) -> None:
    if os.environ.get("SPECREG_TRACEBACK"):
        traceback.print_exc()
    print(f"specreg {command}: {_one_line(message)}", file=sys.stderr)
    if hint:
        print("(set SPECREG_TRACEBACK=1 to see where it came from)", file=sys.stderr)


def _one_line(message: str, limit: int = 400) -> str:
    """The message on one line, its middle cut at ``limit`` characters (a long error of a
    library, such as torch's state-dict mismatch listing every key, stays readable)."""
    text = " ".join(message.split())
    return text if len(text) <= limit else f"{text[:limit - 60]} … {text[-50:]}"


def _os_error(err: OSError) -> str:
    """``NotADirectoryError(20, ..., 'out/x')`` → "'out/x': Not a directory"."""
    where = " → ".join(repr(str(f)) for f in (err.filename, err.filename2) if f is not None)
    return f"{where}: {err.strerror}" if where and err.strerror else str(err)


if __name__ == "__main__":
    sys.exit(main())
