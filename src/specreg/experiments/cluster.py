"""Running a study's runs as jobs: on a Slurm cluster, or as local jobs, through submitit.

``specreg compare ... --executor slurm`` submits every run of a phase (the pretrained
models, then the variants) as one Slurm job array through `submitit
<https://github.com/facebookincubator/submitit>`_ and waits for it; ``--executor local``
does the same with submitit's local executor (each run a separate local process, all at
once), which is how the suite tests it. The runs write the same run directories as a
study run on one machine, so an interrupted study is resumed by running the command
again (finished runs are skipped, killed ones resume from their newest checkpoint), and
the report at the end is the same. The jobs' logs go to ``<out>/submitit/``.

Each job gets ``cpus`` CPU threads for torch and ``gpus`` GPUs (one run needs one).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from specreg.layout import JOB_LOG_DIR as LOG_DIR, RunRecord

EXECUTORS = ("process", "local", "slurm")


@dataclass(frozen=True)
class ClusterOptions:
    """Where a study's runs execute. ``process`` (default): this machine, ``--jobs`` processes."""

    executor: str = "process"
    partition: str | None = None  # Slurm partition
    time_min: int = 240  # wall-clock limit of one job, minutes
    gpus: int = 1  # GPUs per job (Slurm)
    cpus: int = 1  # CPU threads per job
    mem_gb: float | None = None  # memory per job (Slurm)

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ValueError(f"executor={self.executor!r} is not accepted; expected one of {list(EXECUTORS)}")
        for name in ("time_min", "cpus"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}={v!r} is not accepted; expected an integer >= 1")
        if isinstance(self.gpus, bool) or not isinstance(self.gpus, int) or self.gpus < 0:
            raise ValueError(f"gpus={self.gpus!r} is not accepted; expected an integer >= 0")


def executor(opts: ClusterOptions, out: Path) -> Any:
    """A configured ``submitit`` executor for ``opts`` (its logs under ``out/submitit``)."""
    try:
        import submitit
    except ImportError:
        from specreg._optional import MissingExtraError

        raise MissingExtraError("specreg compare --executor " + opts.executor, "cluster", "submitit") from None
    ex = submitit.AutoExecutor(folder=out / LOG_DIR / "%j", cluster="local" if opts.executor == "local" else "slurm")
    params: dict[str, Any] = {"name": "specreg", "timeout_min": opts.time_min, "cpus_per_task": opts.cpus,
                              "tasks_per_node": 1, "nodes": 1}
    if opts.executor == "slurm":
        params["gpus_per_node"] = opts.gpus
        if opts.partition:
            params["slurm_partition"] = opts.partition
        if opts.mem_gb:
            params["mem_gb"] = opts.mem_gb
    ex.update_parameters(**params)
    return ex


def run_job(spec: Any, ev: Any, threads: int) -> RunRecord:
    """What one job runs: :func:`specreg.experiments.runner.execute` with ``threads`` threads."""
    from specreg.experiments.runner import execute

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return execute(spec, ev, threads=threads)


def run_jobs(specs: list[Any], ev: Any, opts: ClusterOptions, out: Path, log: Any
             ) -> Iterator[tuple[Any, RunRecord]]:
    """Submit ``specs`` as one job array and yield (spec, record) as each finishes, in order."""
    if not specs:
        return
    ex = executor(opts, out)
    threads = opts.cpus if opts.executor == "slurm" else 1  # local jobs share this machine's cores
    with ex.batch():
        jobs = [ex.submit(run_job, spec, ev, threads) for spec in specs]
    for spec, job in zip(specs, jobs):
        print(f"[compare] {spec.label}: {spec.protocol}, {spec.status} → {spec.run_dir} (job {job.job_id})",
              file=log, flush=True)
    for spec, job in zip(specs, jobs):
        try:
            record = job.result()
        except Exception as err:  # submitit's failure carries the job's own traceback; point at its log
            raise RuntimeError(f"{spec.label}: job {job.job_id} failed ({type(err).__name__}); its log: "
                               f"{job.paths.stderr}") from err
        print(f"[compare] {spec.label}: {record.status} (job {job.job_id})", file=log, flush=True)
        yield spec, record


__all__ = ["EXECUTORS", "ClusterOptions", "executor", "run_job", "run_jobs"]
