"""Run a study: ``specreg compare`` and :func:`run_compare`.

The pipeline, one module per step:

* :mod:`~specreg.experiments.study`     the study file (schema, profiles) → :class:`Study`
* :mod:`~specreg.experiments.plan`      every run, its identity and whether it is done
* this module                           scheduling: pretrained models first, then seed by seed
* :mod:`~specreg.experiments.runner`    one run: train, sample, measure, record; the noise floor
* :mod:`~specreg.experiments.results`   the typed results (``results.json``) and comparisons
* :mod:`~specreg.experiments.report`    ``report.md`` and plots, rendered from the results

Outputs under ``out_dir`` (names: :mod:`specreg.layout`)::

    study.json, invocations.json     the study as run; start, wall time and runs trained of every invocation
    runs/<variant>/seed<k>/          run directories (see specreg.experiments.runner)
    runs/_pretrain/<key>/seed<k>/    pretrained models (protocol finetune)
    real/floor.json, real/samples.png   real-vs-real noise floor and a grid of real items
    results.json, report.md, spectra.png, spectra_ratio.png

Running the same command again skips runs whose record matches the current settings,
resumes interrupted trainings from their newest checkpoint (the trainer's own resume),
and rewrites the report. A run that diverged is recorded as such and not retried. A run
directory is locked while it trains, so two invocations never write the same run. Runs
train seed by seed (every variant at the first seed, then at the next), so a study
stopped part-way already compares every variant; its report marks the missing seeds.
With ``require_plateau`` (``--require-plateau``) no fine-tuning starts from a pretrained
model whose curve has not stopped improving by the strict rule
(:meth:`StudyResults.plateaus`); the study stops there, naming the metric and its gain.

``jobs`` > 1 runs that many trainings at once, each in its own process with one torch
thread (on a 2-core machine, two one-thread runs beat one two-thread run). Without a GPU
a run in the main process (``jobs`` = 1, or a phase with one run, such as a lone
pretraining) uses ``jobs`` threads, the cores it was granted: with more threads than free
cores, a step was up to 50× slower.

(Over 400 lines: the phases, their workers and signals, and the plan's listing are one
schedule.)
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from specreg.experiments.cluster import ClusterOptions, run_jobs
from specreg.experiments.evaluate import measure
from specreg.experiments.plan import RunSpec, plan_runs
from specreg.experiments.reference import RealSets, real_sets
from specreg.experiments.results import StudyResults, collect
from specreg.experiments.runner import execute, measure_floor
from specreg.experiments.study import Evaluation, Study, Variant, load_study
from specreg.files import read_json, write_json
from specreg.layout import (
    PROBE_CURVE_PLOT,
    PROBE_DIR,
    PROBE_SUMMARY,
    REPORT_FILE,
    RESULTS_FILE,
    RUN_RECORD as DONE_FILE,  # a run's record, under its older name here
    Invocation,
    RunRecord,
    write_study,
)
from specreg.stopping import Stopped, handle_signals


@dataclass
class CompareResult:
    """What :func:`run_compare` did: the planned runs (with their status), the results and the report."""

    study: Study
    out_dir: Path
    runs: list[RunSpec]
    report: Path | None = None
    seconds: float = 0.0
    results: StudyResults | None = None


def compare_command(study: str | Path | Mapping[str, Any], out_dir: str | Path, profile: str, jobs: int = 1,
                    dry_run: bool = False, require_plateau: bool = False) -> str:
    """The command line that (re)runs this comparison."""
    src = "<study mapping>" if isinstance(study, Mapping) else str(study)
    parts = ["specreg", "compare", src, "--out", str(out_dir), "--profile", profile]
    if jobs != 1:
        parts += ["--jobs", str(jobs)]
    if require_plateau:
        parts.append("--require-plateau")
    if dry_run:
        parts.append("--dry-run")
    return shlex.join(parts)


def run_compare(study: str | Path | Mapping[str, Any], out_dir: str | Path, profile: str = "small",
                dry_run: bool = False, *, jobs: int = 1, log: Any = None, cluster: ClusterOptions | None = None,
                require_plateau: bool = False) -> CompareResult:
    """Run every (variant, seed) of ``study`` under ``profile`` into ``out_dir`` and write
    ``out_dir/report.md`` (see the module docstring). ``dry_run`` only plans and lists.

    ``jobs`` > 1 trains that many runs at once in separate processes with one torch
    thread each, one GPU each when the machine has GPUs (worker k uses GPU k mod count).
    ``cluster`` submits the runs as jobs instead (:mod:`specreg.experiments.cluster`:
    Slurm, or local jobs). ``log`` is a file for progress lines (default stderr).
    ``require_plateau``: stop before fine-tuning from a pretraining still improving (module doc).
    """
    from specreg.experiments.report import write_report

    t0 = time.time()
    log = sys.stderr if log is None else log
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs={jobs!r} is not accepted; expected an integer >= 1")
    st = load_study(study, profile)
    out = Path(out_dir)
    specs = plan_runs(st, out)
    if require_plateau and not (st.evaluation.curve_every > 0 and any(s.protocol == "pretrain" for s in specs)):
        raise ValueError(f"require_plateau (--require-plateau) is not accepted for {st.name!r} (evaluation.curve_every="
                         f"{st.evaluation.curve_every}, pretrainings: {sum(s.protocol == 'pretrain' for s in specs)}); "
                         "it needs a pretraining measured along training: protocol finetune and "
                         "evaluation.curve_every > 0")
    result = CompareResult(st, out, specs)
    command = compare_command(study, out_dir, profile, jobs, require_plateau=require_plateau)
    if dry_run:
        return result
    out.mkdir(parents=True, exist_ok=True)
    write_study(out, st.to_dict(), command)
    pre = [s for s in specs if s.protocol == "pretrain" and s.status != "done"]
    # seed-major: a study stopped part-way has every variant at its first seeds
    todo = sorted((s for s in specs if s.protocol != "pretrain" and s.status != "done"),
                  key=lambda s: st.seeds.index(s.seed))
    invocation = Invocation(out, command, t0, planned=len(pre) + len(todo))
    try:
        for phase in (pre, todo):  # fine-tuning needs its pretrained model
            if phase is todo and todo and require_plateau:
                _check_plateaus(st, specs, out)
            runner = _run_all(phase, st.evaluation, jobs, log) if cluster is None or cluster.executor == "process" \
                else run_jobs(phase, st.evaluation, cluster, out, log)
            for spec, record in runner:
                spec.recorded = record
                spec.status = "diverged" if record.status == "diverged" else "trained"
                invocation.ran()
    finally:
        invocations = invocation.close()
    runs = [s for s in specs if s.protocol != "pretrain"]
    floor = measure_floor(st.evaluation, out, runs[0].config)
    result.results = collect(st, specs, floor, out, command=command, wall_s=time.time() - t0,
                             invocations=invocations)
    result.report = write_report(result.results, out)
    from specreg.experiments.study_probe import probe_study

    probe_study(st, specs, out, jobs=jobs)  # the spectral error maps, appended to the report
    result.seconds = time.time() - t0
    return result


def _check_plateaus(st: Study, specs: list[RunSpec], out: Path) -> None:
    """Raise (one line) if a pretraining's curve fails the strict rule of
    :meth:`StudyResults.plateaus` in any tabulated distance, or has too few points to tell."""
    pre = [s for s in specs if s.protocol == "pretrain"]
    floor = measure_floor(st.evaluation, out, next(s for s in specs if s.protocol != "pretrain").config)
    curves: list[dict[str, Any]] = [{"run": s.label, "variant": s.variant, "seed": s.seed,
                                     "points": s.recorded.curve or []} for s in pre if s.recorded is not None]
    res = StudyResults(study={}, columns=list(st.column_keys()), rows={}, floor=floor, curves=curves)
    failed = [f"{c['run']} has {len(c['points'])} curve point(s), too few to tell" for c in curves
              if len(c["points"]) < 2]
    failed += [f"{e['run']} {e['key']} gained {e['gain']:.3g} over steps {e['from_step']}–{e['to_step']} (2 × floor "
               f"{e['bound']:.3g}) and {'n/a' if e['strict_gain'] is None else format(e['strict_gain'], '.3g')} "
               f"from step {e['strict_from_step']} (floor {e['floor']:.3g})" for e in res.plateaus() if not e["strict"]]
    if failed:
        raise ValueError("--require-plateau: not fine-tuning; " + "; ".join(failed) +
                         ": pretrain longer (a profile with more train.steps) or run without --require-plateau")


def rerender(out_dir: str | Path) -> Path:
    """Rewrite ``report.md`` (and its plots) of a study from its ``results.json`` alone, and
    the tests that file keeps (``significance``: derived, so recomputed with the current
    rule; nothing else of the file changes). A results.json from before labels and set-up
    were kept updates only the marks of the existing report
    (:func:`specreg.experiments.report_marks.update_marks`)."""
    from specreg.experiments.report import render
    from specreg.experiments.report_marks import update_marks

    out = Path(out_dir)
    res = StudyResults.load(out / RESULTS_FILE)
    raw = read_json(out / RESULTS_FILE)
    if raw.get("significance") != (sig := res.significance()):
        write_json(out / RESULTS_FILE, {**raw, "significance": sig})
    path = out / REPORT_FILE
    if not (res.labels and res.setup) and path.is_file():
        # a results.json from before labels and set-up were kept: rendering it anew would drop
        # what the report shows beyond it (legend, curves, samples), so only the marks change
        path.write_text(update_marks(path.read_text(encoding="utf-8"), res), encoding="utf-8")
        return path
    if not res.timing:  # every study run has a timing row since 0.2
        import warnings

        warnings.warn(f"{out / RESULTS_FILE} was written by specreg 0.1 and holds the tables only; the report "
                      f"will lack curves, spectra, samples and times. To rebuild them from the runs, run "
                      f"`specreg compare STUDY.yaml --out {out}` (finished runs are read, not re-run)", stacklevel=2)
    path.write_text(render(res, out), encoding="utf-8")
    from specreg.experiments.study_probe import _append_section

    if (out / PROBE_DIR / PROBE_SUMMARY).is_file():  # the error maps of the last compare
        _append_section(path, (out / PROBE_DIR / PROBE_CURVE_PLOT).is_file())
    return path


# ============================================================================ scheduling


def _run_all(specs: list[RunSpec], ev: Evaluation, jobs: int, log: Any) -> Iterator[tuple[RunSpec, RunRecord]]:
    if not specs:
        return
    if jobs == 1 or len(specs) == 1:
        from specreg.train.runtime import cpu_threads

        # in the main process, one run at a time: without a GPU it gets one thread per job
        # (the cores --jobs grants), e.g. a lone pretraining with --jobs 2 trains on 2 threads
        threads = jobs * cpu_threads()
        for spec in specs:
            print(f"[compare] {spec.label}: {spec.protocol}, {spec.status} → {spec.run_dir}", file=log, flush=True)
            own = spec.config["train"].get("threads")  # a study's own setting wins
            run = spec if not threads else replace(spec, config=_with_train(spec.config, threads=own or threads))
            yield spec, execute(run, ev, threads=threads, parallel=1)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    import torch

    # spawn: a fresh interpreter per worker (forking a process that holds torch's thread
    # pools is unsafe), which also picks up OMP settings from the environment
    ctx = multiprocessing.get_context("spawn")
    quiet = [replace(s, config=_with_train(s.config, progress_bar=False)) for s in specs]  # bars would overwrite
    slots = ctx.Value("i", 0)  # each worker takes the next slot: its GPU on a machine with several
    stop = _StopForwarder()
    stopped: list[tuple[RunSpec, KeyboardInterrupt]] = []
    with ProcessPoolExecutor(max_workers=min(jobs, len(specs)), mp_context=ctx, initializer=_worker_init,
                             initargs=(slots, torch.cuda.device_count())) as pool, handle_signals(stop):
        futures = {pool.submit(_execute_in_worker, q, ev, min(jobs, len(specs))): s for q, s in zip(quiet, specs)}
        for s in specs:
            print(f"[compare] {s.label}: {s.protocol}, {s.status} → {s.run_dir} (queued)", file=log, flush=True)
        for fut in as_completed(futures):
            spec = futures[fut]
            try:
                record = fut.result()
            except KeyboardInterrupt as err:  # a worker stopped by a signal, at its checkpoint
                stopped.append((spec, err))
                print(f"[compare] {spec.label}: stopped ({err})", file=log, flush=True)
                continue
            print(f"[compare] {spec.label}: {record.status}", file=log, flush=True)
            yield spec, record
    if stop.name is not None or stopped:
        name = stop.name or str(getattr(stopped[0][1], "signal_name", "a stop signal"))
        raise Stopped(name, _stopped_summary(stopped))


class _StopForwarder:
    """The parent's handler of SIGINT and SIGTERM while workers train: pass SIGTERM on to
    every worker (which finishes its step, writes a checkpoint and stops; one that has not
    started a run yet refuses it) and keep waiting for them. Workers ignore SIGINT, so a
    Ctrl-C that reaches the whole process group counts once."""

    def __init__(self) -> None:
        self.name: str | None = None

    def __call__(self, signum: int, frame: Any) -> None:
        import multiprocessing
        import signal

        self.name = self.name or signal.Signals(signum).name
        for child in multiprocessing.active_children():  # the pool's workers (spawned processes)
            if child.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGTERM)


def _stopped_summary(stopped: list[tuple[RunSpec, KeyboardInterrupt]]) -> str:
    steps = [(s, getattr(err, "step", None)) for s, err in stopped]
    trained = [f"{s.label} at step {step}" for s, step in steps if step is not None]
    others = len(stopped) - len(trained)
    parts = [f"{len(trained)} run(s) stopped at their checkpoints ({', '.join(trained)})"] if trained else []
    if others:
        parts.append(f"{others} stopped before or after training (not started, sampling or measuring)")
    return "; ".join([*parts, "run the same command to resume"])


_parent_pid: int | None = None  # the process that started this worker (set by _worker_init)


def _exit_if_orphaned() -> None:
    """End a pool worker whose parent has died. Its death signal (SIGTERM) stops the run
    under way at a checkpoint, but the pool would then hand the worker the next run already
    queued, which would train unseen and race the next invocation's workers."""
    if _parent_pid is not None and os.getppid() != _parent_pid:
        os._exit(143)


_worker_stop: str | None = None  # the stop signal a pool worker received (it starts no further run)
_worker_busy = False  # a pool worker is executing a run (outside training, a signal stops it at once)


def _worker_signal(signum: int, frame: Any) -> None:
    """A pool worker's SIGTERM handler outside training: remember it (no further run starts)
    and, during a run's loading, sampling or measuring, stop at once."""
    import signal

    global _worker_stop
    _worker_stop = signal.Signals(signum).name
    if _worker_busy:
        raise Stopped(_worker_stop)


def _execute_in_worker(spec: RunSpec, ev: Evaluation, parallel: int = 1) -> RunRecord:
    # one torch thread per process: --jobs N processes share the machine's cores
    global _worker_busy, _worker_stop
    _exit_if_orphaned()
    if _worker_stop is not None:  # queued before the stop: leave it for the next invocation
        raise Stopped(_worker_stop, f"{spec.label} not started")
    _worker_busy = True
    try:
        return execute(spec, ev, threads=1, parallel=parallel)
    except KeyboardInterrupt as err:  # stopped (in training, by the trainer's own handler): take no further run
        _worker_stop = getattr(err, "signal_name", "SIGTERM")
        raise
    finally:
        _worker_busy = False
        _exit_if_orphaned()


def _worker_init(slots: Any = None, n_gpus: int = 0) -> None:
    """Give the worker its own GPU (slot k → GPU k mod ``n_gpus``, before torch sees CUDA),
    and make it die with the process that started it (Linux): a worker whose parent was
    killed would otherwise finish its run unseen and race the next invocation's workers."""
    import signal

    global _parent_pid
    _parent_pid = os.getppid()
    # the parent forwards SIGINT and SIGTERM as one SIGTERM (a Ctrl-C reaches every process
    # of the group; counted twice, it would stop training without a checkpoint)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _worker_signal)
    if slots is not None and n_gpus > 0:
        with slots.get_lock():
            slot = slots.value
            slots.value += 1
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu_of_slot(slot, n_gpus, os.environ.get("CUDA_VISIBLE_DEVICES")))
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):  # not Linux/glibc: the run lock still keeps runs apart
        pass


def gpu_of_slot(slot: int, n_gpus: int, visible: str | None = None) -> str:
    """The GPU of worker ``slot``: the (slot mod n)-th of ``CUDA_VISIBLE_DEVICES`` if set, else of 0…n−1."""
    ids = [v.strip() for v in visible.split(",") if v.strip()] if visible else [str(i) for i in range(n_gpus)]
    return ids[slot % len(ids)]


def _with_train(cfg: dict[str, Any], **train: Any) -> dict[str, Any]:
    """A copy of the run config ``cfg`` with these ``train`` settings (none of them is part
    of a run's identity)."""
    return {**cfg, "train": {**cfg["train"], **train}}


def format_plan(result: CompareResult) -> str:
    """The dry-run listing: one line per run with its status and directory."""
    st = result.study
    lines = [f"study {st.name} ({st.source}), profile {st.profile}: {len(result.runs)} runs "
             f"({sum(s.status == 'done' for s in result.runs)} done)"]
    if st.cut:
        lines.append(f"left out by this profile: {', '.join(st.cut)}")
    for s in result.runs:
        steps = s.config["train"]["steps"]
        lines.append(f"  {s.status:<7} {s.label:<40} {s.protocol:<9} {steps:>7} steps  {s.run_dir}")
    lines.append(plan_cost(result.runs))
    return "\n".join(lines)


def plan_cost(runs: list[RunSpec]) -> str:
    """The cost of a plan in training steps: pretrainings and the other runs, in all and still to do."""
    def total(specs: list[RunSpec]) -> int:
        return sum(int(s.config["train"]["steps"]) for s in specs)

    pre = [s for s in runs if s.protocol == "pretrain"]
    rest = [s for s in runs if s.protocol != "pretrain"]
    todo = [s for s in runs if s.status != "done"]
    parts = [f"{len(pre)} pretraining(s), {total(pre)} steps"] if pre else []
    parts.append(f"{len(rest)} runs, {total(rest)} steps")
    return (f"cost: {' + '.join(parts)} = {total(runs)} training steps; still to do: {len(todo)} runs, "
            f"{total(todo)} steps")


__all__ = [
    "DONE_FILE",
    "ClusterOptions",
    "CompareResult",
    "Evaluation",
    "RealSets",
    "RunSpec",
    "Study",
    "StudyResults",
    "Variant",
    "compare_command",
    "execute",
    "format_plan",
    "plan_cost",
    "load_study",
    "measure",
    "plan_runs",
    "real_sets",
    "rerender",
    "run_compare",
]
