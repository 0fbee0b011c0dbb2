"""Add the real-vs-real spread of the signed keys to committed studies' results.json.

Studies run before the floor record held ``spread``
(:func:`specreg.experiments.runner.floor_spread`) fall back to |real vs real| for a
signed key's practical floor. This rebuilds each study's floor set from the settings its
results.json holds (the same builder ``specreg compare`` uses), measures the spread, and
writes it under ``floor.spread``, with the tests it changes (``significance``); nothing
else of the file changes. Then re-render with ``specreg compare --report-only``.

    python scripts/add_floor_spread.py docs/results/*/
"""

from __future__ import annotations

import sys
from pathlib import Path

from specreg.experiments.plan import data_kind
from specreg.experiments.results import RESULTS_FILE, StudyResults
from specreg.experiments.runner import floor_spread
from specreg.experiments.study import Evaluation
from specreg.files import read_json, write_json
from specreg.train.config import load_config


def add_spread(folder: Path) -> dict[str, float]:
    raw = read_json(folder / RESULTS_FILE)
    st = raw["study"]
    ev = Evaluation.from_dict(st["evaluation"])
    first = st["variants"][0]
    cfg = load_config(st["base"], [*st.get("overrides", []), *first.get("overrides", [])]).to_dict()
    kind, rate = data_kind(cfg)
    spread = floor_spread(ev.real_sets(cfg), ev, kind=kind, sample_rate=rate)
    raw.setdefault("floor", {})["spread"] = spread
    raw["significance"] = StudyResults.from_dict(raw).significance()
    write_json(folder / RESULTS_FILE, raw)
    return spread


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(arg, add_spread(Path(arg)), flush=True)
