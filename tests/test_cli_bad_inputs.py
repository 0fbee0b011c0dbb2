"""Every sub-command against a table of bad inputs (issue 29): each must end with exactly
one line on stderr, a non-zero exit, no traceback, and every file that was on disk before
still there, unchanged. The cases run in-process (``main(argv)``), so the table is fast."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from _tiny import tiny_config

from specreg.cli import main

TINY = tiny_config(steps=2, checkpoint_every=2, sample_steps=2)
NO_CUDA = "cuda" if not torch.cuda.is_available() else f"cuda:{torch.cuda.device_count()}"
BIG = str(2**64)


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """A workspace: a config, a trained run, samples, a file, damaged tensor files, a study."""
    from specreg.train.config import config_from_dict
    from specreg.train.trainer import Trainer

    root = tmp_path_factory.mktemp("bad")
    (root / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    (root / "list.yaml").write_text("- data\n- model\n")
    (root / "number.yaml").write_text("3\n")
    (root / "garbage.yaml").write_text("data: [unclosed\n")
    (root / "afile").write_text("not a folder\n")
    Trainer(config_from_dict(TINY), root / "run").fit()
    (root / "samples").mkdir()
    np.save(root / "samples" / "samples.npy", np.zeros((4, 1, 16, 16), np.float32))
    (root / "empty.npy").write_bytes(b"")
    (root / "garbage.safetensors").write_bytes(b"\x00\x01garbage" * 20)
    (root / "garbage.pt").write_bytes(b"\x80\x04garbage" * 20)
    (root / "text.npy").write_text("just text")
    (root / "rundir_file").write_text("x")
    (root / "emptydir").mkdir()
    (root / "s_blocked" / "samples.npy").mkdir(parents=True)  # where sample writes a file: an OSError
    # a run whose checkpoints/ is a file: training must refuse before it trains
    (root / "blocked").mkdir()
    (root / "blocked" / "checkpoints").write_text("in the way")
    # a run whose config.yaml was edited after training (another width)
    edited = root / "edited"
    Trainer(config_from_dict(TINY), edited).fit()
    cfg = yaml.safe_load((edited / "config.yaml").read_text())
    cfg["model"]["model_channels"] = 16
    (edited / "config.yaml").write_text(yaml.safe_dump(cfg))
    study = {"name": "s", "base": "demo", "seeds": [0], "variants": [{"name": "baseline"}],
             "baseline": "baseline", "evaluation": {"reference": "textures", "n_samples": 4, "metrics": ["lsd"]},
             "profiles": {"tiny": {"overrides": ["train.steps=1"]}}}
    (root / "study.yaml").write_text(yaml.safe_dump(study))
    return root


def _train(*extra: str) -> list[str]:
    return ["train", "{ws}/tiny.yaml", "--out", "{ws}/new", *extra]


def _sample(*extra: str) -> list[str]:
    return ["sample", "{ws}/run", "--n", "2", "--out", "{ws}/s_out", *extra]


def _eval(samples: str, *extra: str) -> list[str]:
    return ["eval", samples, "--reference", "checkerboards", "--no-progress", *extra]


CASES: dict[str, tuple[list[str], str]] = {
    # constructor options: unknown keys, wrong types, keys the config sets elsewhere
    "haar unknown option": (_train("regularizer.loss=haar", "regularizer.options.foo=1"), "regularizer.options"),
    "bior1.3 unknown option": (_train("regularizer.loss=bior1.3", "regularizer.options.foo=1"),
                               "regularizer.options"),
    "auto unknown key": (_train("regularizer.loss=haar", "regularizer.lam=auto", "regularizer.auto.foo=1"),
                         "regularizer.auto.foo=1"),
    "model unknown option": (_train("model.options.foo=1"), "model.options.foo=1"),
    "diffusion unknown option": (_train("diffusion.options.foo=1"), "diffusion.options.foo=1"),
    "diffusion non-number": (_train("diffusion.options.sigma_min=abc"), "diffusion.options.sigma_min='abc'"),
    "diffusion options not a mapping": (_train("diffusion.options=3"), "diffusion.options=3"),
    "option set by its own key": (_train("diffusion.options.sigma_data=1"), "diffusion.options.sigma_data=1"),
    "lam a bool": (_train("regularizer.loss=haar", "regularizer.lam=true"), "regularizer.lam=True"),
    # config files
    "config a list": (["train", "{ws}/list.yaml", "--out", "{ws}/new"], "a config must be a mapping"),
    "config a list, with overrides": (["train", "{ws}/list.yaml", "--out", "{ws}/new", "train.steps=1"],
                                      "its top level is a list"),
    "config a number": (["train", "{ws}/number.yaml", "--out", "{ws}/new"], "its top level is a int"),
    "config not YAML": (["train", "{ws}/garbage.yaml", "--out", "{ws}/new"], "is not valid YAML"),
    "config missing": (["train", "{ws}/nope.yaml", "--out", "{ws}/new"], "not found"),
    "config an empty folder": (["train", "{ws}/emptydir", "--out", "{ws}/new"], "not found"),
    # out-of-range and mistyped integers
    "steps 0": (_train("train.steps=0"), "train.steps=0"),
    "steps a word": (_train("train.steps=abc"), "train.steps"),
    "seed beyond 64 bits": (_train(f"train.seed={BIG}"), "train.seed"),
    "negative batch": (_train("train.batch_size=-1"), "train.batch_size=-1"),
    # output folders
    "train --out a file": (["train", "{ws}/tiny.yaml", "--out", "{ws}/afile"], "--out: '{ws}/afile' is a file"),
    "train --out below a file": (["train", "{ws}/tiny.yaml", "--out", "{ws}/afile/run"], "lies below the file"),
    "train --out empty": (["train", "{ws}/tiny.yaml", "--out", ""], "--out: '' is not accepted"),
    "train checkpoints/ a file": (["train", "{ws}/tiny.yaml", "--out", "{ws}/blocked"], "checkpoints="),
    "sample --out a file": (["sample", "{ws}/run", "--n", "2", "--out", "{ws}/afile"], "is a file"),
    "sample --out below a file": (["sample", "{ws}/run", "--n", "2", "--out", "{ws}/afile/x"], "below the file"),
    "sample --out empty": (["sample", "{ws}/run", "--n", "2", "--out", ""], "--out: '' is not accepted"),
    "eval --out a file": (_eval("{ws}/samples", "--out", "{ws}/afile"), "is a file"),
    "eval --out below a file": (_eval("{ws}/samples", "--out", "{ws}/afile/e"), "below the file"),
    "compare --out a file": (["compare", "{ws}/study.yaml", "--out", "{ws}/afile", "--profile", "tiny"], "is a file"),
    "compare --out below a file": (["compare", "{ws}/study.yaml", "--out", "{ws}/afile/c", "--profile", "tiny"],
                                   "below the file"),
    "demo --out a file": (["demo", "--out", "{ws}/afile"], "is a file"),
    # sample's arguments
    "sample batch 0": (_sample("--batch-size", "0"), "--batch-size=0"),
    "sample batch -1": (_sample("--batch-size", "-1"), "--batch-size=-1"),
    "sample batch a word": (_sample("--batch-size", "abc"), "--batch-size"),
    "sample seed beyond 64 bits": (_sample("--seed", BIG), f"--seed={BIG}"),
    "sample negative seed": (_sample("--seed", "-1"), "--seed=-1"),
    "sample n 0": (["sample", "{ws}/run", "--n", "0", "--out", "{ws}/s_out"], "--n=0"),
    "sample steps 0": (_sample("--steps", "0"), "--steps=0"),
    "sample unsupported device": (_sample("--device", NO_CUDA), f"--device='{NO_CUDA}'"),
    "sample unknown device": (_sample("--device", "toaster"), "--device='toaster'"),
    "sample run dir a file": (["sample", "{ws}/rundir_file", "--n", "2", "--out", "{ws}/s_out"],
                              "not a run directory"),
    "sample run dir empty": (["sample", "{ws}/emptydir", "--n", "2", "--out", "{ws}/s_out"], "not a run directory"),
    "sample after an edited config": (["sample", "{ws}/edited", "--n", "2", "--out", "{ws}/s_out"],
                                      "does not match"),
    "sample output file a folder": (["sample", "{ws}/run", "--n", "2", "--out", "{ws}/s_blocked"], "samples.npy"),
    # eval's inputs
    "eval empty .npy": (_eval("{ws}/empty.npy"), "is not a readable .npy"),
    "eval text as .npy": (_eval("{ws}/text.npy"), "is not a readable .npy"),
    "eval garbage .safetensors": (_eval("{ws}/garbage.safetensors"), "is not a readable .safetensors"),
    "eval garbage .pt": (_eval("{ws}/garbage.pt"), "is not a readable .pt"),
    "eval missing samples": (_eval("{ws}/nothing_here"), "does not exist"),
    "eval empty folder": (_eval("{ws}/emptydir"), "no samples found"),
    "eval unsupported device": (_eval("{ws}/samples", "--device", NO_CUDA), f"--device='{NO_CUDA}'"),
    "eval batch 0": (_eval("{ws}/samples", "--batch-size", "0"), "--batch-size=0"),
    "eval seed beyond 64 bits": (_eval("{ws}/samples", "--seed", BIG), f"--seed={BIG}"),
    "eval unknown metric": (_eval("{ws}/samples", "--metrics", "nope"), "nope"),
    "eval unknown reference": (["eval", "{ws}/samples", "--reference", "{ws}/nothing"], "nothing"),
    # compare and demo
    "compare jobs 0": (["compare", "{ws}/study.yaml", "--out", "{ws}/c", "--jobs", "0"], "--jobs=0"),
    "compare jobs a word": (["compare", "{ws}/study.yaml", "--out", "{ws}/c", "--jobs", "two"], "--jobs"),
    "compare study a list": (["compare", "{ws}/list.yaml", "--out", "{ws}/c"], "must be a mapping"),
    "compare study missing": (["compare", "{ws}/nope.yaml", "--out", "{ws}/c"], "nope.yaml"),
    "compare unknown profile": (["compare", "{ws}/study.yaml", "--out", "{ws}/c", "--profile", "huge"], "huge"),
    "demo jobs 0": (["demo", "--out", "{ws}/d", "--jobs", "0"], "--jobs=0"),
    "demo threads -1": (["demo", "--out", "{ws}/d", "--threads", "-1"], "--threads=-1"),
    "unknown command": (["fly"], "invalid choice"),
    "unknown option": (["sample", "{ws}/run", "--n", "2", "--out", "{ws}/s_out", "--fast"], "--fast"),
}


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", list(CASES))
def test_a_bad_input_is_one_line_a_nonzero_exit_and_nothing_lost(name, ws, capsys):
    argv, expected = CASES[name]
    argv = [a.replace("{ws}", str(ws)) for a in argv]
    before = _snapshot(ws)
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:  # a warning is a line on stderr too
        warnings.simplefilter("always")
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse's usage errors
            code = exit_.code
    out, err = capsys.readouterr()
    assert not caught, [str(w.message) for w in caught]
    lines = [line for line in err.splitlines() if line.strip()]
    assert code not in (0, None), (name, out, err)
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"specreg {argv[0]}: error: " if argv[0] != "fly" else "specreg: error: "), lines[0]
    assert expected.replace("{ws}", str(ws)) in lines[0], lines[0]
    assert len(lines[0]) < 500, lines[0]
    after = _snapshot(ws)
    assert {k: v for k, v in after.items() if k in before} == before, "a file was changed or removed"
    assert not (ws / "new" / "checkpoints").exists() and not (ws / "blocked" / "metrics.jsonl").exists()
