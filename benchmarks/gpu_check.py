"""One GPU check: everything a first session with a CUDA GPU should measure, in one command.

Run:  bash benchmarks/gpu_check.sh OUT_DIR            (≈ 6–8 min on one H100-class GPU)
      bash benchmarks/gpu_check.sh OUT_DIR --dry-run  (the same code on the CPU, tiny sizes; measured:
                                                        11–14 s CPU, 95–134 s wall, 2 cores at load 12–14)

Sections, in this order (each one's failure is recorded and the next still runs; a section
that would start after ``--budget`` seconds is skipped and says so; exit status 1 when a
section failed or was skipped, 2 without a CUDA device):
1. parity — every loss on the device against the CPU in float32 (per-sample values to a
   relative 1e-5, gradients reported; TF32 off for this section), and under bf16 autocast with a bf16 x̂0 (the
   value and gradient finite, the value's deviation from float32, and the dtypes the FFT
   and convolution kernels actually ran in, recorded with a dispatch mode);
2. profiles — 200 training steps of each study's ``full`` profile (the pretrained model's
   or the first regularized run's config, and 50 steps of a regularized fine-tuning
   where the protocol is finetune) at its real batch size (no new study after 70 % of the
   budget, so the later sections keep their time): step time, peak memory, and
   the projected training wall time of the whole profile (every run's steps × its step
   time; sampling and evaluation not included). A study whose data set is not installed
   on the machine is skipped and said so;
3. compiled — a training step (EDM loss + ``fourier_amp`` at λ_EDM on x̂0, backward, Adam) of
   the full profiles' 7.6 M-parameter U-Net at batch 64, eager against ``torch.compile``d,
   with the compile time and Dynamo's graph breaks;
4. overhead — benchmarks/overhead.py (peak memory from the CUDA allocator there);
5. peers — benchmarks/losses.py, timed with CUDA events.

Writes ``gpu_check.json`` (after every section, so a killed run keeps what it measured),
``gpu_check.md``, ``losses.md`` and ``overhead.md`` to OUT_DIR. Needs no network: the data
sets are local (scikit-image textures, the Debian Fashion-MNIST and speech packages), the
VAE ships with the package, and peers that are not installed are skipped.

One file of about 500 lines on purpose: it is the single script a short, rented GPU session
runs, its five sections are independent, and the dry-run test exercises all of it.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark scripts

# display name → (registry name, keyword arguments); every loss of the registry at least once
LOSS_CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "fourier_amp": ("fourier_amp", {}),
    "fourier_ap": ("fourier_ap", {}),
    "fourier_ap_weighted": ("fourier_ap_weighted", {}),
    "psd": ("psd", {}),
    "ffl": ("ffl", {}),
    "fourier_l2 flat": ("fourier_l2", {}),
    "fourier_l2 power p=2": ("fourier_l2", {"weights": "power", "power": 2.0}),
    "fourier_l2 whiten": ("fourier_l2", {"weights": "whiten"}),
    "wavelet haar L3 zero": ("wavelet", {"wavelet": "haar", "levels": 3, "mode": "zero"}),
    "wavelet bior1.3 L3 periodization": ("wavelet", {"wavelet": "bior1.3", "levels": 3, "mode": "periodization"}),
    "wavelet_l2 haar L3": ("wavelet_l2", {"wavelet": "haar", "levels": 3, "gamma": [1.0, 2.0, 4.0]}),
    "mrstft": ("mrstft", {}),
}
VALUE_TOL = 1e-5  # relative, float32 device against float32 CPU


class Settings:
    def __init__(self, dry: bool) -> None:
        self.dry = dry
        self.device = "cpu" if dry else "cuda"
        self.image_shape = (2, 3, 64, 64) if dry else (8, 3, 64, 64)  # 64²: bior1.3 takes 3 levels
        self.audio_shape = (2, 1, 4096) if dry else (8, 1, 16000)
        self.profile = "tiny" if dry else "full"
        self.profile_steps, self.finetune_steps = (3, 2) if dry else (200, 50)
        self.studies = 2 if dry else None  # dry run: the first two studies (sorted), enough to run every path
        self.compile_backend = "eager" if dry else "inductor"  # eager: Dynamo's capture only, no code generation
        self.compile_steps = 2 if dry else 30
        self.repeats = 1 if dry else 20


# ============================================================================ helpers


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


@contextlib.contextmanager
def argv(args: list[str]) -> Iterator[None]:
    saved = sys.argv
    sys.argv = args
    try:
        yield
    finally:
        sys.argv = saved


def kernel_dtypes() -> Any:
    """A dispatch mode that records the input dtypes of every FFT and convolution kernel run."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Recorder(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.seen: dict[str, set[str]] = {}

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            name = func.overloadpacket.__name__
            kind = "fft" if "fft" in name else "conv" if "convolution" in name else None
            if kind is not None:
                import torch

                dtypes = {str(a.dtype).removeprefix("torch.") for a in args if isinstance(a, torch.Tensor)}
                self.seen.setdefault(kind, set()).update(dtypes)
            return func(*args, **(kwargs or {}))

    return Recorder()


# ============================================================================ 1. parity


def _value_and_grad(loss: Any, x0_hat: Any, x0: Any) -> tuple[Any, Any]:
    x = x0_hat.detach().clone().requires_grad_(True)
    v = loss(x, x0)
    v.sum().backward()
    return v.detach(), x.grad


def parity(s: Settings) -> list[dict[str, Any]]:
    import torch

    rows: list[dict[str, Any]] = []
    g = torch.Generator().manual_seed(0)
    # TF32 convolutions (cuDNN's default) round to 10 mantissa bits; float32 parity needs them off
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        _parity(s, g, rows)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    return rows


def _parity(s: Settings, g: Any, rows: list[dict[str, Any]]) -> None:
    import torch

    from specreg.losses import build_loss

    for kind, shape in (("image", s.image_shape), ("audio", s.audio_shape)):
        x0 = torch.randn(*shape, generator=g)
        x0_hat = x0 + 0.1 * torch.randn(*shape, generator=g)
        for display, (name, kw) in LOSS_CASES.items():
            if name == "mrstft" and kind != "audio":  # the STFT loss is 1-D
                continue
            row: dict[str, Any] = {"input": f"{kind} {'×'.join(map(str, shape))}", "loss": display}
            try:
                cpu = build_loss(name, **(kw if name == "mrstft" else {**kw, "ndim": len(shape) - 2}))
                if hasattr(cpu, "fit") and kw.get("weights") == "whiten":
                    cpu.fit(x0)
                dev = copy.deepcopy(cpu).to(s.device)
                v_cpu, g_cpu = _value_and_grad(cpu, x0_hat, x0)
                v_dev, g_dev = _value_and_grad(dev, x0_hat.to(s.device), x0.to(s.device))
                scale = v_cpu.abs().max().clamp_min(torch.finfo(torch.float32).tiny)
                row["value_rel_err"] = float((v_dev.cpu() - v_cpu).abs().max() / scale)
                row["grad_rel_err"] = float((g_dev.cpu() - g_cpu).norm() / g_cpu.norm().clamp_min(1e-30))
                row["float32_ok"] = row["value_rel_err"] <= VALUE_TOL
                # bf16: the network's output in bf16 under autocast, as a mixed-precision trainer has it
                rec = kernel_dtypes()
                xb = x0_hat.to(s.device).bfloat16().requires_grad_(True)
                with torch.autocast(s.device, dtype=torch.bfloat16), rec:
                    vb = dev(xb, x0.to(s.device))
                    vb.sum().backward()
                row["bf16_finite"] = bool(torch.isfinite(vb).all() and torch.isfinite(xb.grad).all())
                row["bf16_value_dtype"] = str(vb.dtype).removeprefix("torch.")
                row["bf16_rel_dev"] = float((vb.float().cpu() - v_cpu).abs().max() / scale)
                row["bf16_kernels"] = {k: sorted(v) for k, v in rec.seen.items()}
            except Exception as err:  # recorded, the others still run
                row["error"] = f"{type(err).__name__}: {err}"
                row["float32_ok"] = False
            rows.append(row)


# ============================================================================ 2. study profiles


def _data_missing(err: Exception) -> bool:
    text = str(err)
    return isinstance(err, ValueError) and ("not found" in text or "install" in text)


def _time_run(spec: Any, steps: int, s: Settings, work: Path) -> dict[str, Any]:
    """Train ``steps`` steps of ``spec``'s config from scratch (a fine-tuning from random
    weights costs the same per step); per-step time after a warm-up, peak memory."""
    import torch

    from specreg.train.config import config_from_dict
    from specreg.train.trainer import Trainer

    raw = json.loads(json.dumps(spec.config))
    t = raw["train"]
    t.update(steps=steps, log_every=1, checkpoint_every=steps, progress_bar=False, tensorboard=False,
             sample_every=0)
    if s.dry:
        t.update(batch_size=min(2, t["batch_size"]), grad_accum=1, threads=1)
        raw["data"]["n"] = min(raw["data"]["n"], 8)
    cfg = config_from_dict(raw)
    if s.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    result = Trainer(cfg, work / spec.variant.replace("/", "_")).fit()
    times = [row["time"] for row in result.history]
    warm = min(10, steps // 2)
    step_s = (times[-1] - times[warm - 1]) / (steps - warm) if steps > warm >= 1 else times[-1] / steps
    out = {"config": spec.variant, "protocol": spec.protocol, "batch": cfg.train.batch_size, "steps_timed": steps,
           "step_ms": step_s * 1e3, "finite": all(row["loss"] == row["loss"] for row in result.history)}
    if s.device == "cuda":
        out["peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def profiles(s: Settings, deadline: float, report: Callable[[str], None]) -> list[dict[str, Any]]:
    from specreg.experiments.plan import plan_runs
    from specreg.experiments.study import load_study

    paths = sorted((ROOT / "configs" / "studies").glob("*.yaml"))[: s.studies]
    rows = []
    for path in paths:
        row: dict[str, Any] = {"study": path.stem, "profile": s.profile}
        if time.time() > deadline:
            row["status"] = "skipped: over the time budget"
            rows.append(row)
            continue
        t0 = time.time()
        try:
            with tempfile.TemporaryDirectory() as tmp:
                study = load_study(path, s.profile)
                specs = plan_runs(study, Path(tmp) / "study")
                runs = [x for x in specs if x.protocol != "pretrain"]
                pre = [x for x in specs if x.protocol == "pretrain"]
                regularized = [x for x in runs if x.config["regularizer"]["loss"] is not None]
                main = pre[0] if pre else (regularized or runs)[0]
                ft = next((x for x in regularized if x.protocol == "finetune"), None)
                row["main"] = _time_run(main, s.profile_steps, s, Path(tmp))
                if ft is not None:
                    row["finetune"] = _time_run(ft, s.finetune_steps, s, Path(tmp))
                per_step = {"finetune": (row.get("finetune") or row["main"])["step_ms"] / 1e3}
                total = sum(x.config["train"]["steps"] * per_step.get(x.protocol, row["main"]["step_ms"] / 1e3)
                            for x in specs)
                row.update(runs=len(specs), total_steps=sum(x.config["train"]["steps"] for x in specs),
                           projected_hours=total / 3600, status="ok")
        except Exception as err:
            row["status"] = ("skipped: data not installed: " if _data_missing(err) else "error: ") + \
                f"{type(err).__name__}: {err}"
            if not _data_missing(err):
                row["traceback"] = traceback.format_exc(limit=4)
        row["seconds"] = time.time() - t0
        report(f"profiles: {path.stem}: {row['status']} ({row['seconds']:.0f} s)")
        rows.append(row)
    return rows


# ============================================================================ 3. compiled step


def compiled(s: Settings) -> dict[str, Any]:
    import torch

    from specreg.diffusion import EDM
    from specreg.models.unet import UNet
    from specreg.regularizer import SpectralRegularizer

    torch.manual_seed(0)
    if s.dry:
        net_kw, shape = dict(model_channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,),
                             resolution=16), (2, 1, 16, 16)
    else:  # the full profiles' U-Net (7.6 M parameters) at their batch
        net_kw, shape = dict(model_channels=64, channel_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(16,),
                             resolution=32), (64, 1, 32, 32)
    form = EDM("edm")
    net = UNet(in_channels=1, **net_kw).to(s.device)
    model = form.precondition(net)
    reg = SpectralRegularizer("fourier_amp", lam="edm", ndim=2).to(s.device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    x0 = torch.randn(*shape, device=s.device).clamp(-1, 1)

    def loss_fn(x0: Any, sigma: Any, noise: Any) -> Any:
        return form.loss(model, x0, regularizer=reg, sigma=sigma, noise=noise).loss.mean()

    def step(fn: Callable[..., Any]) -> None:
        g = torch.Generator(device=s.device).manual_seed(0)
        sigma = (torch.randn(shape[0], device=s.device, generator=g) * 1.2 - 1.2).exp()
        noise = torch.randn(x0.shape, device=s.device, generator=g)
        opt.zero_grad(set_to_none=True)
        fn(x0, sigma, noise).backward()
        opt.step()

    def timed(fn: Callable[..., Any], n: int) -> float:
        sync(s.device)
        t0 = time.perf_counter()
        for _ in range(n):
            step(fn)
        sync(s.device)
        return (time.perf_counter() - t0) / n * 1e3

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    fast = torch.compile(loss_fn, backend=s.compile_backend)
    t0 = time.perf_counter()
    step(fast)  # compiles
    sync(s.device)
    compile_s = time.perf_counter() - t0
    step(loss_fn)
    eager = timed(loss_fn, s.compile_steps)
    comp = timed(fast, s.compile_steps)
    breaks = {str(k): v for k, v in torch._dynamo.utils.counters["graph_break"].items()}
    return {"backend": s.compile_backend, "shape": list(shape), "eager_ms": eager, "compiled_ms": comp,
            "speedup": eager / comp, "compile_s": compile_s, "graph_breaks": breaks}


# ============================================================================ 4./5. the other benchmarks


def overhead(s: Settings, out: Path) -> dict[str, Any]:
    import overhead as bench  # benchmarks/overhead.py
    import torch

    if not s.dry:
        with argv(["overhead.py", "--device", s.device, "--repeats", "10", "--out", str(out / "overhead.md")]):
            bench.main()
        return {"table": "overhead.md"}
    from specreg.models.unet import UNet

    shape = (2, 1, 16, 16)
    x0 = torch.randn(*shape)
    step, alone, mem = bench.time_config(
        lambda: UNet(in_channels=1, model_channels=8, channel_mult=(1,), num_res_blocks=1, attn_resolutions=(),
                     resolution=16), shape, {"fourier_amp": bench._reg("fourier_amp", 2, x0)}, 1, s.device)
    (out / "overhead.md").write_text(f"dry run: step ms {step}, alone ms {alone}, memory ratio {mem}\n")
    return {"table": "overhead.md", "step_ms": step, "alone_ms": alone, "memory_ratio": mem}


def peers(s: Settings, out: Path) -> dict[str, Any]:
    import losses as bench  # benchmarks/losses.py
    import torch

    timer = "perf_counter around synchronize"
    if s.device == "cuda" and hasattr(bench, "_timed"):
        def cuda_event_timed(fn: Callable[[], Any], device: str) -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn().backward()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3

        bench._timed = cuda_event_timed
        timer = "CUDA events"
    with argv(["losses.py", "--device", s.device, "--repeats", str(s.repeats), "--out", str(out / "losses.md")]):
        bench.main()
    return {"table": "losses.md", "timer": timer}


# ============================================================================ report


def environment(s: Settings) -> dict[str, Any]:
    import torch

    env: dict[str, Any] = {"dry_run": s.dry, "device": s.device, "torch": torch.__version__,
                           "python": platform.python_version(), "cpu_threads": torch.get_num_threads()}
    if s.device == "cuda":
        p = torch.cuda.get_device_properties(0)
        env.update(gpu=p.name, gpu_memory_gib=p.total_memory / 2**30, capability=f"{p.major}.{p.minor}",
                   cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                   tf32_matmul=torch.backends.cuda.matmul.allow_tf32)
    return env


def markdown(rec: dict[str, Any]) -> str:
    env = rec["environment"]
    lines = [f"# GPU check{' (dry run on the CPU: the numbers mean nothing)' if env['dry_run'] else ''}", "",
             "environment: " + ", ".join(f"{k} {v}" for k, v in env.items()), ""]
    for name, sec in rec["sections"].items():
        lines.append(f"## {name} ({sec.get('seconds', 0):.0f} s): {sec['status']}")
        lines.append("")
        res = sec.get("result")
        if name == "parity" and res:
            lines += [f"| input | loss | float32 value rel. err (≤ {VALUE_TOL:g}) | grad rel. err | bf16 finite "
                      "| bf16 value dtype | bf16 rel. dev. | kernels under bf16 autocast |",
                      "|---|---|---|---|---|---|---|---|"]
            for r in res:
                if "error" in r:
                    lines.append(f"| {r['input']} | {r['loss']} | error: {r['error']} | | | | | |")
                    continue
                kern = "; ".join(f"{k}: {', '.join(v)}" for k, v in r["bf16_kernels"].items())
                kern = kern or "no FFT, no convolution"
                lines.append(f"| {r['input']} | {r['loss']} | {r['value_rel_err']:.2e}"
                             f"{'' if r['float32_ok'] else ' **FAIL**'} | {r['grad_rel_err']:.2e} | "
                             f"{r['bf16_finite']} | {r['bf16_value_dtype']} | {r['bf16_rel_dev']:.2e} | {kern} |")
        elif name == "profiles" and res:
            lines += ["| study | status | config timed | batch | step (ms) | peak (MiB) | fine-tune step (ms) "
                      "| runs | steps in all | projected training (h) |", "|---|---|---|---|---|---|---|---|---|---|"]
            for r in res:
                m, f = r.get("main", {}), r.get("finetune", {})
                lines.append(f"| {r['study']} | {r['status']} | {m.get('config', '—')} | {m.get('batch', '—')} | "
                             f"{m.get('step_ms', float('nan')):.1f} | {m.get('peak_mib', float('nan')):.0f} | "
                             f"{f.get('step_ms', float('nan')):.1f} | {r.get('runs', '—')} | "
                             f"{r.get('total_steps', '—')} | {r.get('projected_hours', float('nan')):.2f} |")
        elif res:
            lines.append("```")
            lines.append(json.dumps(res, indent=1, default=str))
            lines.append("```")
        if "error" in sec:
            lines += ["```", sec["error"], "```"]
        lines.append("")
    for table in ("losses.md", "overhead.md"):
        path = Path(rec["out"]) / table
        if path.is_file():
            lines += [f"## {table}", "", path.read_text(), ""]
    return "\n".join(lines)


def main(args_list: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="folder for gpu_check.json, gpu_check.md, losses.md, overhead.md")
    ap.add_argument("--dry-run", action="store_true", help="on the CPU, tiny sizes, few steps: checks the script")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds after which no new section (or study) starts (default 420; dry run 300)")
    ap.add_argument("--only", default=None, help="comma-separated sections to run")
    args = ap.parse_args(args_list)
    s = Settings(args.dry_run)
    if s.dry:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the CPU, even on a machine with a GPU
    import torch

    if not s.dry and not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible to torch (torch "
              f"{torch.__version__}); install a CUDA build, or use --dry-run on a CPU", file=sys.stderr)
        return 2
    if s.dry:
        torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # latents encoded for the latent study go to a scratch folder, not ~/.cache nor OUT_DIR
    os.environ.setdefault("SPECREG_CACHE", tempfile.mkdtemp(prefix="specreg-gpu-check-"))
    t_start = time.time()
    budget = args.budget if args.budget is not None else (300 if s.dry else 420)
    deadline = t_start + budget  # no section starts later; no study starts after 70 % of it
    rec: dict[str, Any] = {"out": str(out), "environment": environment(s), "sections": {}}

    def save() -> None:
        (out / "gpu_check.json").write_text(json.dumps(rec, indent=1, default=str) + "\n")
        (out / "gpu_check.md").write_text(markdown(rec))

    sections: dict[str, Callable[[], Any]] = {
        "parity": lambda: parity(s),
        "profiles": lambda: profiles(s, t_start + 0.7 * budget, lambda m: print(m, flush=True)),
        "compiled": lambda: compiled(s),
        "overhead": lambda: overhead(s, out),
        "peers": lambda: peers(s, out),
    }
    failed = False
    for name, fn in sections.items():
        if args.only and name not in args.only.split(","):
            continue
        sec: dict[str, Any] = {}
        rec["sections"][name] = sec
        if time.time() > deadline:
            sec["status"] = "skipped: over the time budget"
            save()
            continue
        print(f"gpu_check: {name} …", flush=True)
        t0 = time.time()
        try:
            sec["result"] = fn()
            sec["status"] = "ok"
            if name == "parity" and not all(r["float32_ok"] and r.get("bf16_finite") for r in sec["result"]):
                sec["status"] = "FAIL: a loss differs from the CPU beyond the tolerance, or is not finite under bf16"
            if name == "profiles" and any(r["status"].startswith("error") for r in sec["result"]):
                sec["status"] = "FAIL: a study's profile did not train"
        except Exception as err:
            sec["status"] = f"error: {type(err).__name__}: {err}"
            sec["error"] = traceback.format_exc(limit=6)
        failed |= not sec["status"].startswith("ok")
        sec["seconds"] = time.time() - t0
        print(f"gpu_check: {name}: {sec['status']} ({sec['seconds']:.0f} s)", flush=True)
        save()
    rec["seconds"] = time.time() - t_start
    save()
    print(f"gpu_check: wrote {out / 'gpu_check.md'} and {out / 'gpu_check.json'} ({rec['seconds']:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
