"""Training noise-level samplers (specreg.diffusion.timesteps): each against its own density by a
Kolmogorov–Smirnov test (scipy), densities against CDFs by quadrature, reproducible draws,
the formulations' built-in draws unchanged, YAML, the adaptive sampler's importance weights and
its checkpointed state."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.integrate
import scipy.stats
import torch

from specreg.diffusion import DDPM, EDM, FlowMatching
from specreg.diffusion.timesteps import REGISTRY, build_timestep_sampler, default_sampler

SPECS = [
    {"name": "lognormal", "P_mean": -1.2, "P_std": 1.2},
    {"name": "logit_normal", "mean": 0.5, "std": 0.8, "shift": 3.0},
    {"name": "resolution", "n": 4096, "n_base": 1024, "mean": -0.5},
    {"name": "uniform"},
    {"name": "uniform", "t_min": 0.1, "t_max": 0.9, "shift": 0.5},
    {"name": "vp"},
    {"name": "loguniform", "sigma_min": 0.01, "sigma_max": 50.0},
    {"name": "mixture", "q": 0.2, "base": {"name": "uniform"}, "low": {"name": "lognormal", "P_mean": -3}},
    {"name": "adaptive", "bins": 8, "base": {"name": "vp"}},
]


def _trained_adaptive(spec):
    s = build_timestep_sampler(spec)
    g = torch.Generator().manual_seed(1)
    for _ in range(20):  # a loss that falls with σ: the proposal moves toward low noise
        sigma = s.sample(256, g)
        s.observe(sigma, 1 / (sigma + 0.1))
    return s


def _sampler(spec):
    return _trained_adaptive(spec) if spec["name"] == "adaptive" else build_timestep_sampler(spec)


def _ks(s, draws):
    return scipy.stats.kstest(draws.numpy(), lambda v: s.cdf(torch.as_tensor(v)).numpy()).pvalue


@pytest.mark.parametrize("spec", SPECS, ids=[json.dumps(s) for s in SPECS])
def test_draws_follow_the_cdf_and_a_shifted_cdf_is_rejected(spec):
    s = _sampler(spec)
    draws = s.sample(100_000, torch.Generator().manual_seed(0))
    assert draws.dtype == torch.float64 and bool((draws > 0).all())
    assert _ks(s, draws) > 1e-3
    # the same test has the power to see a 10 % change of σ
    assert _ks(s, draws * 1.1) < 1e-6


@pytest.mark.parametrize("spec", SPECS, ids=[json.dumps(s) for s in SPECS])
def test_density_integrates_to_the_cdf(spec):
    s = _sampler(spec)
    for lo, hi in ((1e-3, 0.1), (0.1, 1.0), (0.5, 3.0), (2.0, 60.0)):
        # quadrature in ln σ, split at the adaptive sampler's bin edges (its density jumps there)
        f = lambda u: float(s.pdf(torch.tensor([math.exp(u)], dtype=torch.float64))[0]) * math.exp(u)  # noqa: E731
        points = None
        if spec["name"] == "adaptive":
            edges = s.base.icdf(torch.arange(1, s.bins) / s.bins).log().tolist()
            points = [e for e in edges if math.log(lo) < e < math.log(hi)] or None
        mass, _ = scipy.integrate.quad(f, math.log(lo), math.log(hi), points=points, limit=200)
        expected = float(s.cdf(torch.tensor(hi)) - s.cdf(torch.tensor(lo)))
        assert mass == pytest.approx(expected, abs=1e-7)


def test_every_registry_entry_is_covered():
    assert {s["name"] for s in SPECS} == set(REGISTRY)


@pytest.mark.parametrize("spec", SPECS, ids=[json.dumps(s) for s in SPECS])
def test_draws_are_reproducible_under_the_seed(spec):
    a = _sampler(spec).sample(64, torch.Generator().manual_seed(5))
    b = _sampler(spec).sample(64, torch.Generator().manual_seed(5))
    c = _sampler(spec).sample(64, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_sd3_shift_and_resolution_shift():
    t = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)
    s = 3.0
    shifted = s * t / (1 + (s - 1) * t)  # SD3's t' (diffusers' formula)
    base = build_timestep_sampler({"name": "logit_normal"})
    moved = build_timestep_sampler({"name": "logit_normal", "shift": s})
    # P(t' <= shift(t)) = P(t <= t): the CDF moves with the map, in σ = t/(1 − t)
    torch.testing.assert_close(moved.cdf(shifted / (1 - shifted)), base.cdf(t / (1 - t)))
    res = build_timestep_sampler({"name": "resolution", "n": 64 * 64, "n_base": 32 * 32, "shift": 1.5})
    assert res.shift == pytest.approx(3.0)


@pytest.mark.parametrize("make", [lambda: EDM("edm"), lambda: EDM("vp"), lambda: EDM("ve", ve_sigma_min=0.05),
                                  lambda: FlowMatching("uniform", shift=2.0),
                                  lambda: FlowMatching("logit_normal", logit_mean=0.3, shift=3.0)],
                         ids=["edm", "vp", "ve", "flow-uniform", "flow-logit"])
def test_default_sampler_has_the_distribution_of_the_builtin_draw(make):
    form = make()
    g = torch.Generator().manual_seed(0)
    if isinstance(form, EDM):
        draws = form.sample_sigma(100_000, g).double()
    else:
        t = form.sample_t(100_000, g)
        draws = t / (1 - t)
    s = default_sampler(form)
    assert _ks(s, draws) > 1e-3


def test_ddpm_default_sampler_is_uniform_over_its_noise_levels():
    ddpm = DDPM("linear", timesteps=50)
    s = default_sampler(ddpm)
    sig = ddpm.sigma(torch.arange(50))
    assert float(s.cdf(sig[9])) == pytest.approx(10 / 50) and float(s.cdf(sig[-1])) == 1.0


def test_without_the_key_each_formulation_draws_exactly_as_before():
    """Runs without diffusion.timesteps_sampler keep their draws (the formulas of the code before it)."""
    from specreg.experiments.plan import identity
    from specreg.train.build import build_formulation
    from specreg.train.config import load_config

    cfg = load_config("demo")
    assert cfg.diffusion.timesteps_sampler == {}
    assert "timesteps_sampler" not in identity(cfg.to_dict()).get("diffusion", {})
    edm = build_formulation(cfg.diffusion)
    assert edm.time_sampler is None
    seen = {}
    x0 = torch.zeros(4, 1, 4, 4)
    edm.loss(lambda x, s: seen.setdefault("s", s) * 0 + x * 0, x0, generator=torch.Generator().manual_seed(3))
    ref = (torch.randn(4, generator=torch.Generator().manual_seed(3)) * 1.2 - 1.2).exp()
    assert torch.equal(seen["s"], ref)
    # flow matching: t ~ U(0, 1) in float64; DDPM: t ~ U{0, …, T−1}; both drawn first
    for kind, ref_t in (("flow", torch.rand(4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)),
                        ("ddpm", torch.randint(0, 1000, (4,), generator=torch.Generator().manual_seed(3)))):
        sampler = {"flow": "euler", "ddpm": "ddim"}[kind]
        form = build_formulation(load_config("demo", [f"diffusion.kind={kind}", f"sample.sampler={sampler}"]).diffusion)
        got = {}
        form.loss(lambda x, t, got=got: got.setdefault("t", t) * 0 + x * 0, x0,
                  generator=torch.Generator().manual_seed(3))
        assert torch.equal(got["t"], ref_t.to(got["t"].dtype))


def test_configured_sampler_reaches_each_formulation():
    from specreg.train.build import build_formulation
    from specreg.train.config import load_config

    spec = "{name: lognormal, P_mean: -3.0, P_std: 0.1}"
    for kind in ("edm", "flow", "ddpm"):
        cfg = load_config("demo", [f"diffusion.kind={kind}", f"diffusion.timesteps_sampler={spec}",
                                   "sample.sampler=" + {"edm": "heun", "flow": "euler", "ddpm": "ddim"}[kind]])
        form = build_formulation(cfg.diffusion)
        out = form.loss(lambda x, t: x * 0, torch.zeros(64, 1, 4, 4), generator=torch.Generator().manual_seed(0))
        # σ near e^-3 ≈ 0.05 in every formulation (DDPM: its nearest timestep's σ)
        assert float(out.sigma.double().log().mean()) == pytest.approx(-3.0, abs=0.1)


@pytest.mark.parametrize("override, words", [
    ("diffusion.timesteps_sampler={name: lognormal, P_std: -1}", "diffusion.timesteps_sampler.P_std=-1"),
    ("diffusion.timesteps_sampler={name: cosine}", "diffusion.timesteps_sampler.name='cosine'"),
    ("diffusion.timesteps_sampler={name: mixture, q: 1.5}", "diffusion.timesteps_sampler.q=1.5"),
    ("diffusion.timesteps_sampler={name: uniform, tmin: 0.1}", "unknown key diffusion.timesteps_sampler.tmin"),
    ("diffusion.timesteps_sampler={name: mixture, low: {name: vp, beta_d: 0}}",
     "diffusion.timesteps_sampler.low.beta_d=0"),
    ("diffusion.timesteps_sampler={name: adaptive, bins: 1}", "diffusion.timesteps_sampler.bins=1"),
])
def test_bad_values_give_one_line_naming_the_key(override, words):
    from specreg.train.config import load_config

    with pytest.raises(ValueError) as err:
        load_config("demo", [override])
    assert words in str(err.value) and "\n" not in str(err.value)


def test_adaptive_importance_weights_keep_the_objective():
    """E_q[w·f(σ)] = E_p[f(σ)] for the base density p, while q itself is far from p."""
    s = _trained_adaptive({"name": "adaptive", "bins": 16, "base": {"name": "lognormal"}})
    base = s.base
    g = torch.Generator().manual_seed(2)
    sig = s.sample(400_000, g)
    w = s.importance(sig)
    f = lambda x: x.clamp(max=50) ** 0.5  # noqa: E731
    ref = f(base.sample(400_000, torch.Generator().manual_seed(3)))
    assert float((w * f(sig)).mean()) == pytest.approx(float(ref.mean()), rel=5e-3)
    assert abs(float(f(sig).mean()) - float(ref.mean())) > 0.05 * float(ref.mean())  # unweighted: moved
    assert float(w.max()) <= 1 / s.floor + 1e-9
    none = build_timestep_sampler({"name": "adaptive", "weighting": "none"})
    assert none.importance(sig) is None


def test_adaptive_state_round_trips_through_state_dict():
    s = _trained_adaptive({"name": "adaptive", "bins": 8})
    fresh = build_timestep_sampler({"name": "adaptive", "bins": 8})
    fresh.load_state_dict(s.state_dict())
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    assert torch.equal(s.sample(32, g1), fresh.sample(32, g2))
    assert not np.allclose(s.probs().numpy(), 1 / 8)


def test_adaptive_sampler_resumes_exactly_in_training(tmp_path):
    from specreg.train.checkpoint import latest_checkpoint
    from specreg.train.config import config_from_dict
    from specreg.train.trainer import Trainer

    def cfg(steps):
        return config_from_dict({
            "data": {"kind": "checkerboard", "size": 16, "n": 40},
            "model": {"kind": "unet", "model_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1},
            "diffusion": {"kind": "edm", "timesteps_sampler": {"name": "adaptive", "bins": 4}},
            "train": {"steps": steps, "batch_size": 8, "lr": 1e-2, "log_every": 1, "checkpoint_every": 2,
                      "keep_checkpoints": 3, "threads": 1, "tensorboard": False, "progress_bar": False},
            "sample": {"n": 4, "steps": 3}})

    Trainer(cfg(4), tmp_path / "straight").fit()
    Trainer(cfg(2), tmp_path / "resumed").fit()
    assert Trainer(cfg(4), tmp_path / "resumed").fit().resumed_from == 2
    a, b = (latest_checkpoint(tmp_path / d / "checkpoints") for d in ("straight", "resumed"))
    assert set(a.timesteps) == {"m2", "seen"} and float(a.timesteps["seen"].sum()) == 32
    for k in a.timesteps:
        torch.testing.assert_close(b.timesteps[k], a.timesteps[k], rtol=0, atol=0)
    for k in a.model:
        torch.testing.assert_close(b.model[k], a.model[k], rtol=0, atol=0)


def test_schedule_rows_share_one_pretrained_model(tmp_path):
    """A fine-tuning study's σ-sampler rows fine-tune the baseline's pretrained model, which
    is the pretraining of the study the schedule study builds on (same run keys)."""
    from pathlib import Path

    from specreg.experiments.plan import plan_runs
    from specreg.experiments.study import load_study

    studies = Path(__file__).resolve().parents[1] / "configs" / "studies"
    for name, shares_with in (("schedule_or_loss_fashion", "quadratic_fashion"),
                              ("schedule_or_loss_latent", "latent_fashion")):
        specs = plan_runs(load_study(studies / f"{name}.yaml", "small"), tmp_path / name)
        assert len([s for s in specs if s.protocol == "pretrain"]) == 1
        assert len({s.pretrain_dir for s in specs if s.protocol == "finetune"}) == 1
        # the pretraining and the fine-tuned baseline are the earlier study's runs (same keys)
        earlier = {s.label: s.key for s in plan_runs(load_study(studies / f"{shares_with}.yaml", "small"),
                                                        tmp_path / shares_with)}
        mine = {s.label: s.key for s in specs}
        shared = [k for k in mine if k.startswith(("_pretrain/", "baseline_ft/"))]
        assert shared and all(earlier.get(k) == mine[k] for k in shared)
    # the fashion study's "10k model" rows start from the pretraining's checkpoint at 10 000 steps
    fashion = plan_runs(load_study(studies / "schedule_or_loss_fashion.yaml", "small"), tmp_path / "again")
    steps = {s.variant: s.pretrain_step for s in fashion if s.protocol == "finetune"}
    assert {v for v, step in steps.items() if step == 10000} == {v for v in steps if v.endswith("_10k")}
    assert steps["baseline_ft"] is None
