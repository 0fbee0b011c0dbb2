"""Forward+backward time of each spectral loss against its peers, measured side by side.

Run:  python benchmarks/losses.py [--repeats 20] [--device cpu|cuda] [--out docs/benchmarks_losses.md]

Peers are optional (``pip install -e ".[bench]"``; pytorch_wavelets needs an older
setuptools for ``pkg_resources``): ptwt and pytorch_wavelets for the wavelet loss,
auraloss for MR-STFT, focal_frequency_loss for FFL. A peer that is not installed is
skipped and said so. Timings are medians over ``--repeats`` runs, taken round-robin
(every candidate once per round) so that drifts of the machine hit all candidates alike.
Each "floor" is the cost of the transforms alone (two FFTs, or one DWT, fwd+bwd).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

import specreg
from specreg.losses import build_loss
from specreg.transforms.fourier import rfftn


def _timed(fn: Callable[[], torch.Tensor], device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn().backward()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def run_group(cands: dict[str, Callable[[], torch.Tensor]], repeats: int, device: str) -> dict[str, float]:
    for fn in cands.values():  # warm-up (plans, caches, allocator)
        for _ in range(2):
            _timed(fn, device)
    times: dict[str, list[float]] = {k: [] for k in cands}
    for _ in range(repeats):
        for k, fn in cands.items():
            times[k].append(_timed(fn, device))
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def wavelet_peers(x_hat: torch.Tensor, x0: torch.Tensor, wave: str,
                  levels: int) -> dict[str, Callable[[], torch.Tensor]]:
    peers: dict[str, Callable[[], torch.Tensor]] = {}
    try:
        import ptwt

        def ptwt_two():
            a = ptwt.wavedec2(x_hat, wave, level=levels, mode="zero")
            b = ptwt.wavedec2(x0, wave, level=levels, mode="zero")
            return sum((p - q).abs().mean() for p, q in zip(_flat(a), _flat(b)))

        def ptwt_one():
            d = ptwt.wavedec2(x_hat - x0, wave, level=levels, mode="zero")
            return sum(c.abs().mean() for c in _flat(d))

        peers["ptwt.wavedec2 (2 transforms)"] = ptwt_two
        peers["ptwt.wavedec2 (1 transform of x̂0−x0)"] = ptwt_one
    except ImportError as e:
        print(f"skipping ptwt: {e}")
    try:
        from pytorch_wavelets import DWTForward

        dwt = DWTForward(J=levels, wave=wave, mode="zero").to(x0.device)

        def pw_two():
            (la, ha), (lb, hb) = dwt(x_hat), dwt(x0)
            return (la - lb).abs().mean() + sum((p - q).abs().mean() for p, q in zip(ha, hb))

        def pw_one():
            lo, hi = dwt(x_hat - x0)
            return lo.abs().mean() + sum(h.abs().mean() for h in hi)

        peers["pytorch_wavelets (2 transforms)"] = pw_two
        peers["pytorch_wavelets (1 transform of x̂0−x0)"] = pw_one
    except Exception as e:  # ImportError, or pkg_resources missing with new setuptools
        print(f"skipping pytorch_wavelets: {type(e).__name__}: {e}")
    return peers


def _flat(coeffs):
    out = [coeffs[0]]
    for level in coeffs[1:]:
        out.extend(level.values() if isinstance(level, dict) else level)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None, help="also write the markdown table to this file")
    args = ap.parse_args()
    dev = args.device
    g = torch.Generator().manual_seed(0)
    img0 = torch.randn(64, 3, 64, 64, generator=g).to(dev)
    img_hat = (img0 + 0.1 * torch.randn(64, 3, 64, 64, generator=g).to(dev)).requires_grad_(True)
    aud0 = torch.randn(16, 1, 16000, generator=g).to(dev)
    aud_hat = (aud0 + 0.1 * torch.randn(16, 1, 16000, generator=g).to(dev)).requires_grad_(True)

    rows: list[tuple[str, str, float, str, float, float]] = []

    def fft_floor(x_hat, x0, ndim):
        return lambda: rfftn(x_hat, ndim).abs().mean() + rfftn(x0, ndim).abs().mean()

    # Fourier losses: no peer implements Eq. 14/15 or the weighted L2; report the floor ratio.
    fourier = {"fourier_amp": ("fourier_amp", {}), "fourier_ap": ("fourier_ap", {}),
               "fourier_ap_weighted": ("fourier_ap_weighted", {}), "psd": ("psd", {}), "ffl": ("ffl", {}),
               "fourier_l2 (flat)": ("fourier_l2", {}), "fourier_l2 power p=2": ("fourier_l2", {"weights": "power"}),
               "fourier_l2 whiten": ("fourier_l2", {"weights": "whiten"})}

    def fourier_rows(data: str, xh: torch.Tensor, x0: torch.Tensor, ndim: int) -> None:
        """One data kind's Fourier rows (a function, so that each closure binds its own tensors)."""
        built = {n: build_loss(k, ndim=ndim, **kw).to(dev) for n, (k, kw) in fourier.items()}
        built["fourier_l2 whiten"].fit(x0.detach())
        cands = {n: (lambda loss=built[n]: loss(xh, x0).mean()) for n in fourier}
        cands["floor: two FFTs"] = fft_floor(xh, x0, ndim)
        peer_name = None
        if ndim == 2:
            try:
                from focal_frequency_loss import FocalFrequencyLoss as PeerFFL

                peer = PeerFFL()
                cands["focal_frequency_loss"] = lambda: peer(xh, x0)
                peer_name = "focal_frequency_loss"
            except ImportError as e:
                print(f"skipping focal_frequency_loss: {e}")
        t = run_group(cands, args.repeats, dev)
        floor = t["floor: two FFTs"]
        for n in fourier:
            if n == "ffl" and peer_name:
                rows.append((data, n, t[n], peer_name, t[peer_name], t[n] / floor))
            else:
                rows.append((data, n, t[n], "—", float("nan"), t[n] / floor))

    fourier_rows("image 64×3×64×64", img_hat, img0, 2)
    fourier_rows("audio 16×1×16000", aud_hat, aud0, 1)

    # Wavelet loss, 3 levels, zero padding (a mode every peer has) and periodization (ours).
    def wavelet_rows(wave: str) -> None:
        """One wavelet's rows (a function, so that each closure binds its own losses)."""
        ours_zero = build_loss("wavelet", wavelet=wave, levels=3, mode="zero").to(dev)
        ours_per = build_loss("wavelet", wavelet=wave, levels=3, mode="periodization").to(dev)
        cands = {
            "ours (zero)": lambda: ours_zero(img_hat, img0).mean(),
            "ours (periodization)": lambda: ours_per(img_hat, img0).mean(),
            "floor: one DWT (ours, zero)": lambda: sum(
                c.abs().mean() for c in _flat(specreg.transforms.wavedec(img_hat, wave, level=3, mode="zero"))),
        }
        peers = wavelet_peers(img_hat, img0, wave, 3)
        cands.update(peers)
        t = run_group(cands, args.repeats, dev)
        best_peer = min(peers, key=t.get) if peers else None
        rows.append(("image 64×3×64×64", f"wavelet {wave} L3 (zero)", t["ours (zero)"], best_peer or "—",
                     t[best_peer] if best_peer else float("nan"), t["ours (zero)"] / t["floor: one DWT (ours, zero)"]))
        rows.append(("image 64×3×64×64", f"wavelet {wave} L3 (periodization)", t["ours (periodization)"], "—",
                     float("nan"), t["ours (periodization)"] / t["floor: one DWT (ours, zero)"]))
        if wave == "haar":  # the L2 family takes orthogonal wavelets only
            l2 = build_loss("wavelet_l2", wavelet=wave, levels=3, gamma=[1.0, 2.0, 4.0]).to(dev)
            t2 = run_group({"l2": lambda: l2(img_hat, img0).mean(),
                            "floor": cands["floor: one DWT (ours, zero)"]}, args.repeats, dev)
            rows.append(("image 64×3×64×64", "wavelet_l2 haar L3 γ=1,2,4 (periodization)", t2["l2"], "—",
                         float("nan"), t2["l2"] / t2["floor"]))
        for p in peers:
            print(f"  {wave}: {p}: {t[p]:.2f} ms")
    for wave in ["haar", "bior1.3"]:
        wavelet_rows(wave)

    # MR-STFT on audio against auraloss (same settings: its defaults).
    ours = build_loss("mrstft").to(dev)
    cands = {"ours": lambda: ours(aud_hat, aud0).mean()}
    try:
        import auraloss

        peer = auraloss.freq.MultiResolutionSTFTLoss().to(dev)
        cands["auraloss"] = lambda: peer(aud_hat, aud0)
    except ImportError as e:
        print(f"skipping auraloss: {e}")
    cands["floor: two STFTs ×3 resolutions"] = lambda: sum(
        torch.stft(x.view(-1, x.shape[-1]), n, h, w, torch.hann_window(w, device=dev), return_complex=True).abs().mean()
        for n, h, w in [(1024, 120, 600), (2048, 240, 1200), (512, 50, 240)] for x in (aud_hat, aud0))
    t = run_group(cands, args.repeats, dev)
    rows.append(("audio 16×1×16000", "mrstft", t["ours"], "auraloss" if "auraloss" in t else "—",
                 t.get("auraloss", float("nan")), t["ours"] / t["floor: two STFTs ×3 resolutions"]))

    lines = [
        f"device: {dev} ({torch.get_num_threads()} threads), torch {torch.__version__}, repeats {args.repeats}, "
        "forward+backward, median ms",
        "",
        "| input | loss | ours (ms) | fastest peer | peer (ms) | peer / ours | ours / floor |",
        "|---|---|---|---|---|---|---|",
    ]
    for data, name, ours_ms, peer, peer_ms, floor_ratio in rows:
        speed = f"{peer_ms / ours_ms:.2f}×" if peer_ms == peer_ms else "—"
        pms = f"{peer_ms:.2f}" if peer_ms == peer_ms else "—"
        lines.append(f"| {data} | {name} | {ours_ms:.2f} | {peer} | {pms} | {speed} | {floor_ratio:.2f} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
