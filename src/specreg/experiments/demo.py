"""``specreg demo``: does a spectral regularizer change the spectrum of what a diffusion model draws?

A few minutes on a CPU, no GPU, no network. The demo is the shipped study ``demo``
(``specreg/configs/studies/demo.yaml``) run by the same harness as every study
(:func:`specreg.experiments.compare.run_compare`): three EDM models with the same network,
data and seed, trained from scratch on 32×32 gray texture crops — the baseline, + λ·L_AP
(Eq. 15) and + λ·Haar L1 (Eq. 16) — sampled with Heun and measured by the log-spectral
distance against crops of the photographs' held-out rows (as every study and ``specreg
eval --reference textures``), next to the metric's noise floor (other real crops).
Outputs: the study's folder (``runs/``, ``results.json``, plots, ``study_report.md``) and a
short ``report.md``: the template beside the study file (``demo.md``) filled by
:func:`specreg.experiments.report.render_template`. Running it again reuses finished runs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from specreg.experiments.results import StudyResults
from specreg.experiments.study import find_study
from specreg.layout import FULL_REPORT, REPORT_FILE

STUDY = "demo"


def reading(res: StudyResults, band: str = "high") -> str:
    """One honest line about a band (default the high band of
    :data:`specreg.metrics.bands.BANDS`): who over- or undershoots, against which noise.

    Two noise sources bound what one run shows: sampling noise (the real-vs-real floor,
    measured) and the spread between training runs (not measured: one seed)."""
    from specreg.metrics.registry import band_metric

    metric = band_metric(band)
    key, bias = (k.name for k in metric.keys)
    rows = res.rows
    floor = res.floor_value(key) or 0.0
    values = ", ".join(f"{n} {r.stats[key].mean:.3f} (bias {r.stats[bias].mean:+.3f})" for n, r in rows.items()
                       if key in r.stats and bias in r.stats)
    compare = []
    base = next(n for n, r in rows.items() if r.variant.get("baseline") is None)
    for n, r in rows.items():
        if n == base:
            continue
        d = r.stats[key].mean - rows[base].stats[key].mean
        if abs(d) <= floor:
            compare.append(f"{n} is within the floor of the baseline")
        else:
            compare.append(f"{n} is {'closer to' if d < 0 else 'further from'} the real spectrum than the baseline "
                           f"by {abs(d):.3f}")
    from specreg.metrics.bands import band_text

    where = band_text(metric.band, "cycles/pixel").replace(">=", "≥").replace("<=", "≤")
    return (f"{key} ({where}): {values}; real-vs-real floor {floor:.3f}. {'; '.join(compare)}. "
            "A positive bias is too much high-frequency power, a negative one too little. One short run per "
            "model, so differences of a few floors can come from run-to-run variation alone: this shows the "
            "pipeline and the size of the effects, not which loss is better.")


def short_report(res: StudyResults, command: str, total_s: float, quick: bool) -> str:
    """The demo's ``report.md``: its template (``demo.md`` beside the study file) filled with
    the study report's tables (:func:`specreg.experiments.report.render_template`)."""
    from importlib import resources

    from specreg.experiments.report import render_template

    beside = find_study(STUDY).with_suffix(".md")  # a local configs/studies/demo.yaml may bring its own
    shipped = Path(str(resources.files("specreg") / "configs" / "studies" / f"{STUDY}.md"))
    template = (beside if beside.is_file() else shipped).read_text(encoding="utf-8")
    note = "\n> **Quick mode**: a smoke test; these numbers mean nothing.\n" if quick else ""
    return render_template(template, res, note=note, reading=reading(res), minutes=f"{total_s / 60:.1f}",
                           command=command, study=STUDY, profile="quick" if quick else "default")


def run_demo(out: str | Path = "runs/demo", *, jobs: int = 2, threads: int = 0, quick: bool = False,
             overrides: list[str] | None = None, log: Any = None) -> Path:
    """Run the demo study into ``out`` and write ``out/report.md``; return its path.

    ``jobs``: runs trained at once (default 2: both cores of a laptop-class CPU, one
    thread each). ``threads`` > 0 sets ``train.threads`` of every run. ``overrides``
    (``section.key=value``) apply to every run, after the study's own.
    """
    import yaml

    from specreg.experiments.compare import run_compare

    t0 = time.time()
    out = Path(out)
    raw = yaml.safe_load(find_study(STUDY).read_text())
    extra = [*(overrides or []), *([f"train.threads={threads}"] if threads else [])]
    raw["overrides"] = [*(raw.get("overrides") or []), *extra]
    result = run_compare(raw, out, "quick" if quick else "default", jobs=jobs, log=log)
    assert result.results is not None and result.report is not None
    result.report.replace(out / FULL_REPORT)
    command = " ".join(["specreg demo --out", str(out), *(["--quick"] if quick else []),
                        *([f"--jobs {jobs}"] if jobs != 2 else []), *extra])
    path = out / REPORT_FILE
    path.write_text(short_report(result.results, command, time.time() - t0, quick), encoding="utf-8")
    return path


__all__ = ["FULL_REPORT", "STUDY", "reading", "run_demo", "short_report"]
