"""``specreg demo``: does a spectral regularizer change the spectrum of what a diffusion model draws?

A few minutes on a CPU, no GPU, no network. The demo is the shipped study ``demo``
(``specreg/configs/studies/demo.yaml``) run by the same harness as every study
(:func:`specreg.experiments.compare.run_compare`): three EDM models with the same network,
data and seed, trained from scratch on 32×32 gray texture crops — the baseline, + λ·L_AP
(Eq. 15) and + λ·Haar L1 (Eq. 16) — sampled with Heun and measured by the log-spectral
distance against crops of the photographs' held-out rows (as every study and ``specreg
eval --reference textures``), next to the metric's noise floor (other real crops).
Outputs: the study's folder (``runs/``, ``results.json``, plots, ``study_report.md``) and a
short ``report.md``. Running it again reuses finished runs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from specreg.experiments.results import StudyResults
from specreg.experiments.study import find_study

STUDY = "demo"
FULL_REPORT = "study_report.md"


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
    from specreg.experiments.report import fmt, results_table, setting, timing_note

    timing = {t["run"]: t for t in res.timing}
    rows = [timing.get(f"{name}/seed{res.seeds[0]}", {}) for name in res.rows]
    lines = ["| variant | train s | s / step | setting | sample s |", "|---|---|---|---|---|"]
    for name, t in zip(res.rows, rows):
        per = t["train_s"] / t["steps"] if t.get("train_s") and t.get("steps") else None
        lines.append(f"| {name} | {fmt(t.get('train_s'), 3)} | {fmt(per, 3)} | {setting(t, res.timing)} | "
                     f"{fmt(t.get('sample_s'), 3)} |")
    lines += ["", timing_note(res.timing) + " These rows time whole runs on a shared machine, not what a loss costs."]
    note = "\n> **Quick mode**: a smoke test; these numbers mean nothing.\n" if quick else ""
    grids = " ".join(f"![{n}]({r.samples}/samples.png)" for n, r in res.rows.items() if r.samples)
    legend = "\n".join(f"- **{k}**: {res.labels.get(k, '')}" for k in res.columns)
    ev = res.study["evaluation"]
    return f"""# specreg demo: spectral regularization on texture crops
{note}
{res.study.get('description', '').strip()}
{res.setup.get('steps', ['?'])[0]} Adam steps of batch {res.setup.get('batch_size')} per model; {ev['n_samples']}
samples each ({res.setup.get('sampler')}, {res.setup.get('sample_steps')} steps) from the EMA weights. Wall time
{total_s / 60:.1f} min ({res.device}).

## Reading

{reading(res)}

## Log-spectral distance

LSD = RMS over radial bins of log10(P_samples / P_real), in decades; the bias is the mean log
ratio (positive: too much power). The reference is {res.floor.get('reference')}; the floor row
is {res.floor.get('floor_set')} measured the same way, the metric's noise floor.

{chr(10).join(results_table(res))}

{legend}

Times (wall seconds on this machine, training including set-up):

{chr(10).join(lines)}

## Samples

Real held-out crops, then {', '.join(res.rows)}:

![real](real/samples.png) {grids}

## Spectra

Radially averaged power spectra against the reference (dashed), and the error of each in
decades (0 is perfect):

![spectra](spectra.png) ![ratio](spectra_ratio.png)

The study's full report, with every table: [{FULL_REPORT}]({FULL_REPORT}).

## Reproduce

`{command}`; the same study through the harness: `specreg compare {STUDY} --out DIR --profile
{'quick' if quick else 'default'} --jobs 2`. One model alone:
`specreg train demo --out DIR/haar regularizer.loss=wavelet "regularizer.options={{wavelet: haar, levels: 3}}"`,
then `specreg sample DIR/haar --n {ev['n_samples']} --out DIR/haar-samples`.
"""


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
    path = out / "report.md"
    path.write_text(short_report(result.results, command, time.time() - t0, quick), encoding="utf-8")
    return path


__all__ = ["FULL_REPORT", "STUDY", "reading", "run_demo", "short_report"]
