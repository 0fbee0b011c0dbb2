"""The data-set registry (specreg.data.registry): the shipped sets give the tensors they gave
before the registry, a set registered in a test is usable for training and as a reference
without an edit elsewhere, and the checkerboard's spectral lines come from one place.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from specreg.data import (
    ASTERISK_ROOT,
    FASHION_MNIST_ROOT,
    AsteriskSpeech,
    AudioFolder,
    Checkerboards,
    FashionMNIST,
    ImageFolder,
    LogMel,
    MelConditioned,
    TextureCrops,
    checkerboard_lines,
    checkerboard_peaks,
    registry,
)
from specreg.data.entry import DataSet, RealRequest, RealSets, Rows
from specreg.experiments.reference import (
    DATA_KIND,
    REFERENCE_ALIASES,
    REFERENCE_SETS,
    canonical_reference,
    load_reference,
    real_sets,
)
from specreg.train.build import build_dataset
from specreg.train.config import DataConfig, load_config

ROOT = Path(__file__).resolve().parents[1]
HAVE_FASHION = (Path(FASHION_MNIST_ROOT) / "t10k-images-idx3-ubyte.gz").is_file()
HAVE_SPEECH = Path(ASTERISK_ROOT).is_dir()


def fingerprint(t: torch.Tensor) -> tuple:
    """(shape, Σx, Σ x_i·cos(1.2345678·i), Σ|x|) in float64: a different item, order or value
    changes the second or third by far more than float rounding does."""
    a = torch.as_tensor(t).detach().double().flatten().numpy()
    w = np.cos(np.arange(a.size) * 1.2345678)
    return (tuple(t.shape), float(a.sum()), float((a * w).sum()), float(np.abs(a).sum()))


def assert_same_fingerprint(got: tuple | None, want: tuple | None) -> None:
    if want is None:
        assert got is None
        return
    assert got is not None and got[0] == want[0]
    tol = 1e-6 * want[3] + 1e-9  # float32 rounding of the FFT / resampling paths, summed
    assert got[1] == pytest.approx(want[1], abs=tol)
    assert got[2] == pytest.approx(want[2], abs=tol)
    assert got[3] == pytest.approx(want[3], rel=1e-6, abs=1e-9)


def stack(ds, idx=None) -> tuple[torch.Tensor, torch.Tensor]:
    items = [ds[i] for i in (range(len(ds)) if idx is None else idx)]
    x = torch.stack([it[0] for it in items])
    y = items[0][1]
    y = torch.stack([it[1] for it in items]) if isinstance(y, torch.Tensor) else torch.tensor([it[1] for it in items])
    return x, y


# --------------------------------------------------------------------------------------
# The shipped sets give what they gave before the registry.
#
# The numbers below were computed once with the code before the registry (commit 9584404,
# train.build._build_dataset and experiments.reference.real_sets as they were then), by
# calling build_dataset and real_sets with exactly the arguments of TRAINING_CASES and
# REFERENCE_CASES and fingerprinting the outputs with fingerprint() above.

TRAINING_CASES = {  # name: (data section, split, items fingerprinted (None: all))
    "textures-train": (DataConfig(kind="textures", size=32, n=24, seed=3), "train", None),
    "textures-eval": (DataConfig(kind="textures", size=32, n=24, seed=3, channels=3), "eval", None),
    "checkerboard": (DataConfig(kind="checkerboard", size=64, n=24, seed=5), "train", None),
    "fashion-train-32": (DataConfig(kind="fashion_mnist", size=32), "train", [0, 1, 777, 59999]),
    "fashion-test-64": (DataConfig(kind="fashion_mnist", size=64), "test", [0, 5, 9999]),
    "speech-eval": (DataConfig(kind="speech", segment_length=4096), "eval", [0, 1, 2, 59]),
    "speech-train": (DataConfig(kind="speech", segment_length=4096), "train", [0, 3, 100]),  # random crops
}
_SPEECH = {"kind": "speech", "segment_length": 8192, "sample_rate": 8000}
REFERENCE_CASES = {  # name: (reference name, data section, keyword arguments of real_sets)
    "textures": ("textures", {"kind": "textures", "size": 32, "channels": 1},
                 dict(n_samples=8, n_reference=16, seed=1)),
    "textures-train-rgb": ("texture", {"kind": "textures", "size": 24, "channels": 3},
                           dict(n_samples=6, n_reference=None, seed=4, split="train")),
    "textures-imagefolder": ("textures", {"kind": "image_folder", "size": 16, "channels": 1},
                             dict(n_samples=4, n_reference=5, seed=2, floor=False)),
    "checkerboards": ("checkerboards", {"kind": "checkerboard", "size": 64, "channels": 1},
                      dict(n_samples=8, n_reference=16, seed=1)),
    "fashion-32": ("fashion", {"kind": "fashion_mnist", "size": 32, "channels": 1},
                   dict(n_samples=8, n_reference=16, seed=1, num_classes=10)),
    "fashion-28-train": ("fashion-mnist", {"kind": "fashion_mnist", "size": 28, "channels": 1},
                         dict(n_samples=5, n_reference=7, seed=3, split="train")),
    "fashion-64": ("fashion_mnist", {"kind": "fashion_mnist", "size": 64, "channels": 1},
                   dict(n_samples=4, n_reference=6, seed=1)),
    "fashion-all": ("fashion-mnist", {"kind": "fashion_mnist", "size": 32, "channels": 1},
                    dict(n_samples=8, n_reference=None, seed=1)),
    "speech-paired": ("speech", _SPEECH, dict(n_samples=70, n_reference=None, seed=1, segment_length=4096)),
    "speech-unpaired": ("asterisk", _SPEECH, dict(n_samples=6, n_reference=10, seed=1, paired=False)),
    "speech-crop": ("speech", _SPEECH, dict(n_samples=6, n_reference=None, seed=2, paired=False, floor=False,
                                            crop_seed=7, segment_length=2048)),
}

TRAINING = {  # name: (len(dataset), fingerprint of the stacked x, of the stacked labels / mels)
    'textures-train': (24, ((24, 1, 32, 32), -1692.9013649225235, -15.862517486175413, 5721.255227446556),
        ((24,), 24.0, -1.6093304464559142, 24.0)),
    'textures-eval': (24, ((24, 3, 32, 32), -5625.998277068138, -23.182031827293308, 18130.871469140053),
        ((24,), 24.0, -1.6093304464559142, 24.0)),
    'checkerboard': (24, ((24, 1, 64, 64), 0.0, -54.44049808161226, 98304.0),
        ((24,), 19.0, -0.6134446287150352, 19.0)),
    'fashion-train-32': (60000, ((4, 1, 32, 32), -2451.4901760816574, -28.317276837203778, 3589.8823729753494),
        ((4,), 19.0, 0.8578723466085618, 19.0)),
    'fashion-test-64': (10000, ((3, 1, 64, 64), -11440.11763292551, -0.1143211918421605, 11819.458838284016),
        ((3,), 15.0, 5.418461627056359, 15.0)),
    'speech-eval': (60, ((4, 1, 4096), 0.99334716796875, 5.225542671612125, 1270.1793823242188),
        ((4, 80, 32), -49996.1923846859, 25.18321286846715, 50004.641804503146)),
    'speech-train': (498, ((3, 1, 4096), 0.837890625, 0.683449620016495, 944.494384765625),
        ((3, 80, 32), -39522.95055666054, -8.908737013988974, 39529.89573560143)),
}
REFERENCE = {  # name: fingerprints of reference, floor, conditioning; the two descriptions; peaks
    'textures': dict(
        reference=((16, 1, 32, 32), -979.9917402267456, -3.4163101982351236, 3913.153156518936),
        floor=((8, 1, 32, 32), -501.35665875673294, 9.687194930809037, 2004.95697504282),
        conditioning={}, peaks=None,
        description="16 32×32 crops of ['brick', 'grass', 'gravel'] from the held-out eval rows (seed 1)",
        floor_description="8 other 32×32 crops of ['brick', 'grass', 'gravel'] from the held-out eval rows (seed 2)"),
    'textures-train-rgb': dict(
        reference=((2048, 3, 24, 24), -245292.48028099537, 222.09796073147072, 836628.3254867792),
        floor=((6, 3, 24, 24), -1287.8586047887802, -2.218770826962231, 2467.694211602211),
        conditioning={}, peaks=None,
        description="2048 24×24 crops of ['brick', 'grass', 'gravel'] from the train rows (seed 4)",
        floor_description="6 other 24×24 crops of ['brick', 'grass', 'gravel'] from the train rows (seed 5)"),
    'textures-imagefolder': dict(
        reference=((5, 1, 16, 16), -84.81565403938293, 12.866763420307208, 298.41570353507996),
        floor=None,
        conditioning={}, peaks=None,
        description="5 16×16 crops of ['brick', 'grass', 'gravel'] from the held-out eval rows (seed 2)",
        floor_description="4 other 16×16 crops of ['brick', 'grass', 'gravel'] from the held-out eval rows (seed 3)"),
    'checkerboards': dict(
        reference=((16, 1, 64, 64), 0.0, -42.67809996922645, 65536.0),
        floor=((8, 1, 64, 64), 0.0, 1.6656286686614834, 32768.0),
        conditioning={}, peaks=(84, ((84, 2), 84.0, -0.47468670102933763, 84.0)),
        description='16 64×64 checkerboards, periods [4, 8, 16] px, random phase (seed 1)',
        floor_description='8 other 64×64 checkerboards, periods [4, 8, 16] px, random phase (seed 2)'),
    'fashion-32': dict(
        reference=((16, 1, 32, 32), -9400.486176133156, -12.896327455554191, 13877.898148179054),
        floor=((8, 1, 32, 32), -4958.815630197525, 10.533991807597488, 6551.600051164627),
        conditioning={'class_labels': ((8,), 28.0, -0.2789003553223832, 28.0)}, peaks=None,
        description='16 Fashion-MNIST test images at 32×32 (pad) (random subset, seed 1)',
        floor_description='8 other Fashion-MNIST test images at 32×32 (pad)'),
    'fashion-28-train': dict(
        reference=((7, 1, 28, 28), -2078.1881970763206, -5.873078967876223, 4400.415734231472),
        floor=((5, 1, 28, 28), -1388.3215191960335, 4.189844080012903, 2777.325537979603),
        conditioning={}, peaks=None,
        description='7 Fashion-MNIST train images at 28×28 (pad) (random subset, seed 3)',
        floor_description='5 other Fashion-MNIST train images at 28×28 (pad)'),
    'fashion-64': dict(
        reference=((6, 1, 64, 64), -11167.844817872392, -0.022334093753458184, 19975.7330592128),
        floor=((4, 1, 64, 64), -6466.809158634511, -0.8620305974048522, 11575.792049859068),
        conditioning={}, peaks=None,
        description='6 Fashion-MNIST test images at 64×64 (resize) (random subset, seed 1)',
        floor_description='4 other Fashion-MNIST test images at 64×64 (resize)'),
    'fashion-all': dict(
        reference=((9992, 1, 32, 32), -5737606.588298023, -10.217244385103697, 8373811.8863963485),
        floor=((8, 1, 32, 32), -4596.619549572468, -0.502174973673494, 6699.733387291431),
        conditioning={}, peaks=None,
        description='9992 Fashion-MNIST test images at 32×32 (pad) (random subset, seed 1)',
        floor_description='8 other Fashion-MNIST test images at 32×32 (pad)'),
    'speech-paired': dict(
        reference=((70, 1, 4096), 5.61376953125, -3.7884712801320646, 20489.329956054688),
        floor=((70, 1, 4096), -0.35699462890625, -7.242531364746052, 18881.659423828125),
        conditioning={'cond': ((70, 80, 32), -978426.4871402057, -33.83218937895719, 978614.7801520799)},
        peaks=None,
        description="70 4096-sample segments at 8000 Hz of held-out prompts, paired with the samples' log-mels, "
                    "each of the 60 prompts used 2×",
        floor_description='70 4096-sample segments at 8000 Hz of training prompts'),
    'speech-unpaired': dict(
        reference=((10, 1, 8192), -0.0400390625, -2.4367361384022623, 5690.184997558594),
        floor=((6, 1, 8192), -0.27032470703125, -2.161032781354947, 2468.050537109375),
        conditioning={}, peaks=None,
        description='held-out Asterisk prompts (60 eval prompts) at 8000 Hz, 10 segments of 8192 samples',
        floor_description='6 8192-sample segments at 8000 Hz of training prompts'),
    'speech-crop': dict(
        reference=((60, 1, 2048), -9.05120849609375, 2.7607430562736646, 8219.360961914062),
        floor=None,
        conditioning={}, peaks=None,
        description='held-out Asterisk prompts (60 eval prompts) at 8000 Hz, 60 segments (one per prompt, seeded '
                    'offset) of 2048 samples',
        floor_description=''),
}


def _installed(name: str) -> None:
    if name.startswith("fashion") and not HAVE_FASHION:
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    if name.startswith("speech") and not HAVE_SPEECH:
        pytest.skip("Asterisk prompts not installed (apt-get install asterisk-core-sounds-en-wav)")


@pytest.mark.parametrize("name", list(TRAINING_CASES))
def test_training_sets_are_the_tensors_of_before(name):
    _installed(name)
    data, split, idx = TRAINING_CASES[name]
    torch.manual_seed(0)  # the training speech crops draw from torch's global RNG
    ds = build_dataset(data, split)
    x, y = stack(ds, idx)
    n, want_x, want_y = TRAINING[name]
    assert len(ds) == n
    assert_same_fingerprint(fingerprint(x), want_x)
    assert_same_fingerprint(fingerprint(y), want_y)


@pytest.mark.parametrize("name", list(REFERENCE_CASES))
def test_reference_sets_are_the_tensors_of_before(name):
    _installed(name)
    ref, data, kw = REFERENCE_CASES[name]
    got, want = real_sets(ref, data, **kw), REFERENCE[name]
    assert_same_fingerprint(fingerprint(got.reference), want["reference"])
    assert_same_fingerprint(None if got.floor is None else fingerprint(got.floor), want["floor"])
    assert sorted(got.conditioning) == sorted(want["conditioning"])
    for key, value in got.conditioning.items():
        assert_same_fingerprint(fingerprint(value), want["conditioning"][key])
    assert (got.description, got.floor_description) == (want["description"], want["floor_description"])
    if want["peaks"] is None:
        assert got.peaks is None
    else:
        assert len(got.peaks) == want["peaks"][0]
        assert_same_fingerprint(fingerprint(torch.tensor(got.peaks)), want["peaks"][1])


# --------------------------------------------------------------------------------------
# The same, against the data set classes called directly with the arguments each data set
# was built with before the registry (an independent statement of the old factories)


def _same(a, b) -> None:
    xa, ya = stack(a)
    xb, yb = stack(b)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_training_factory_calls_the_data_set_classes_as_before(tmp_path):
    d = DataConfig(kind="textures", names=["brick", "camera"], size=16, n=10, seed=7, channels=3)
    _same(build_dataset(d, "eval"), TextureCrops(names=["brick", "camera"], size=16, n=10, seed=7, channels=3,
                                                 split="eval"))
    d = DataConfig(kind="checkerboard", size=32, n=9, seed=2)
    _same(build_dataset(d), Checkerboards(n=9, size=32, seed=2))
    folder = tmp_path / "images"
    (folder / "a").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (20, 28, 3), dtype=np.uint8)).save(folder / "a" / f"{i}.png")
    d = DataConfig(kind="image_folder", root=str(folder), size=16, channels=3)
    _same(build_dataset(d), ImageFolder(root=folder, size=16, channels=3))
    waves = tmp_path / "waves"
    waves.mkdir()
    for i in range(2):
        sf.write(waves / f"{i}.wav", rng.uniform(-0.5, 0.5, 3000 + 500 * i), 8000)
    d = DataConfig(kind="audio_folder", root=str(waves), segment_length=2048, n_mels=16, n_fft=256, hop_length=64)
    mel = LogMel(sample_rate=8000, n_fft=256, hop_length=64, n_mels=16)
    torch.manual_seed(3)
    got = stack(build_dataset(d))
    torch.manual_seed(3)
    want = stack(MelConditioned(AudioFolder(root=waves, sample_rate=8000, segment_length=2048), mel))
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    if HAVE_FASHION:
        d = DataConfig(kind="fashion_mnist", size=32)
        a, b = build_dataset(d, "test"), FashionMNIST(root=FASHION_MNIST_ROOT, split="test", size=32)
        assert torch.equal(stack(a, [0, 9999])[0], stack(b, [0, 9999])[0])
    if HAVE_SPEECH:
        d = DataConfig(kind="speech", segment_length=4096)
        mel = LogMel(sample_rate=8000, n_fft=512, hop_length=128, n_mels=80)
        a = build_dataset(d, "eval")
        b = MelConditioned(AsteriskSpeech(split="eval", sample_rate=8000, segment_length=4096), mel)
        assert torch.equal(stack(a, [0, 7])[1], stack(b, [0, 7])[1])


def test_reference_sets_are_the_held_out_items_of_the_training_classes():
    s, m, n = 5, 12, 4
    got = real_sets("textures", {"kind": "textures", "size": 16, "channels": 1}, n_samples=n, n_reference=m, seed=s)
    assert torch.equal(got.reference, stack(TextureCrops(size=16, n=m, seed=s, split="eval"))[0])
    assert torch.equal(got.floor, stack(TextureCrops(size=16, n=n, seed=s + 1, split="eval"))[0])
    got = real_sets("checkerboard", {"kind": "checkerboard", "size": 32}, n_samples=n, n_reference=m, seed=s)
    assert torch.equal(got.reference, stack(Checkerboards(m, 32, seed=s))[0])
    assert torch.equal(got.floor, stack(Checkerboards(n, 32, seed=s + 1))[0])
    with pytest.raises(ValueError, match="split='eval' is not accepted for reference 'checkerboards'"):
        real_sets("checkerboards", {"kind": "checkerboard", "size": 32}, n_samples=n, n_reference=m, split="eval")
    with pytest.raises(ValueError, match="reference='speech' does not fit data.kind='textures'; expected "
                                         "reference='textures'"):
        real_sets("speech", {"kind": "textures"}, n_samples=n, n_reference=m)
    if HAVE_FASHION:
        got = real_sets("fashion", {"kind": "fashion_mnist", "size": 32}, n_samples=n, n_reference=m, seed=s)
        ds = FashionMNIST(root=FASHION_MNIST_ROOT, split="test", size=32)
        perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(s))
        assert torch.equal(got.reference, stack(ds, perm[:m].tolist())[0])
        assert torch.equal(got.floor, stack(ds, perm[m:m + n].tolist())[0])


# --------------------------------------------------------------------------------------
# The checkerboard's spectral lines: one source, checked against numpy.fft


@pytest.mark.parametrize("period", [4, 8, 16])
def test_checkerboard_lines_are_where_the_boards_energy_is(period):
    size = 64
    ds = Checkerboards(30, size=size, periods=(period,), seed=period)
    power = sum(np.abs(np.fft.fft2(ds[i][0][0].numpy().astype(np.float64))) ** 2 for i in range(0, 30, 7))
    f = np.arange(size) / size  # the DFT's frequencies in [0, 1), as the lines (not aliased)
    on = {(float(f[i]), float(f[j])) for i, j in zip(*np.nonzero(power > 1e-9 * power.max()))}
    lines = checkerboard_lines([period])
    assert {(round(a, 12), round(b, 12)) for a, b in on} == {(round(a, 12), round(b, 12)) for a, b in lines}
    # the peak table of the spectral metrics is the same lines, aliased into [−½, ½) and taken radially
    radii = np.unique(np.round([np.hypot(a - (a >= 0.5), b - (b >= 0.5)) for a, b in lines], 12))
    np.testing.assert_allclose(radii, checkerboard_peaks(period)[0], atol=1e-12)


def test_checkerboard_reference_carries_the_lines_of_its_boards():
    got = real_sets("checkerboards", {"kind": "checkerboard", "size": 64}, n_samples=2, n_reference=3, floor=False)
    assert got.peaks == checkerboard_lines(Checkerboards(1).periods)
    assert registry.reference_set("checkerboards").peaks is not None
    assert all(registry.reference_set(r).peaks is None for r in ("textures", "fashion-mnist", "speech"))


# --------------------------------------------------------------------------------------
# A data set registered here (and nowhere else) trains and serves as a reference


class ToyNoise(torch.utils.data.Dataset):
    """Seeded noise images: 4·n rows, the first 3·n train and the last n are held out."""

    def __init__(self, n: int, size: int, seed: int, split: str) -> None:
        g = torch.Generator().manual_seed(seed)
        x = torch.rand(4 * n, 1, size, size, generator=g) * 2 - 1
        self.x = x[: 3 * n] if split == "train" else x[3 * n:]

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], -1


def _toy_build(data, split):
    return ToyNoise(data.n, data.size, data.seed, split)


def _toy_real(data, q: RealRequest) -> RealSets:
    m = q.n_reference or 8
    ref = stack(_toy_build(DataConfig(kind="toy_noise", n=m, size=data.size, seed=q.seed), q.split or "eval"))[0]
    floor = stack(_toy_build(DataConfig(kind="toy_noise", n=q.n_samples, size=data.size, seed=q.seed + 1),
                             q.split or "eval"))[0] if q.floor else None
    return RealSets(ref, floor, f"{m} toy noise images", f"{q.n_samples} other toy noise images")


TOY = DataSet("toy_noise", "image", _toy_build, Rows("eval"), reference="toy", aliases=("toy_set",),
              description="seeded noise images", real=_toy_real)


@pytest.fixture
def toy():
    registry.register(TOY)
    try:
        yield TOY
    finally:
        registry.unregister("toy_noise")


def test_an_unregistered_data_set_is_refused():
    with pytest.raises(ValueError, match="data.kind"):
        load_config("demo", ["data.kind=toy_noise"])
    with pytest.raises(ValueError, match="reference='toy' is not a built-in reference set"):
        registry.reference_set("toy")


def test_a_registered_data_set_trains_and_is_a_reference(toy):
    from specreg.experiments.plan import data_kind
    from specreg.experiments.study import Evaluation

    # training: the config accepts it, the one factory builds it
    cfg = load_config("demo", ["data.kind=toy_noise", "data.size=8", "data.n=6", "data.seed=3"])
    assert not cfg.data.is_audio and data_kind(cfg.to_dict()) == ("image", None)
    ds = build_dataset(cfg.data)
    assert len(ds) == 18 and torch.equal(ds[0][0], ToyNoise(6, 8, 3, "train")[0][0])
    held, what = registry.held_out_dataset(cfg.data)  # the probe's items: its Rows
    assert len(held) == 6 and what == "the eval split"
    # a reference: named, aliased, described, built for a study and for specreg eval
    assert "toy" in REFERENCE_SETS and REFERENCE_ALIASES["toy_set"] == "toy" and DATA_KIND["toy"] == "toy_noise"
    assert canonical_reference("TOY-SET") == "toy"
    ev = Evaluation.from_dict({"reference": "toy_set", "n_samples": 4, "n_reference": 5, "metrics": ["lsd"]})
    assert ev.reference == "toy"
    sets = ev.real_sets(cfg.to_dict())
    assert sets.reference.shape == (5, 1, 8, 8) and sets.floor.shape == (4, 1, 8, 8)
    assert torch.equal(sets.reference, ToyNoise(5, 8, ev.reference_seed, "eval").x)
    r, desc = load_reference("toy", torch.zeros(3, 1, 8, 8), "image", n_reference=5)
    assert torch.equal(r, sets.reference) and desc == "5 toy noise images"


def test_the_registry_refuses_clashes_and_bad_entries(toy):
    with pytest.raises(ValueError, match="already registered"):
        registry.register(TOY)
    with pytest.raises(ValueError, match=r"reference names \['toy', 'toy_set'\] are already another set's"):
        registry.register(DataSet("toy2", "image", _toy_build, Rows("eval"), reference="toy", aliases=("toy_set",),
                                  real=_toy_real))
    with pytest.raises(ValueError, match="kind='video' is not accepted"):
        DataSet("clips", "video", _toy_build, Rows("eval"))
    with pytest.raises(ValueError, match="needs a real-set builder"):
        DataSet("clips", "image", _toy_build, Rows("eval"), reference="clips")
    with pytest.raises(ValueError, match=r"data.kind='nope' is not accepted; expected one of \["):
        registry.data_set("nope")


# --------------------------------------------------------------------------------------
# Held-out rows


def test_an_audio_folder_is_probed_on_its_own_items_and_says_so(tmp_path):
    """Before the registry the probe said "the eval split" of an audio folder, which has none
    (its items were the training files all along)."""
    from specreg.experiments.probe import probe_items

    rng = np.random.default_rng(1)
    for i in range(3):
        sf.write(tmp_path / f"{i}.wav", rng.uniform(-0.5, 0.5, 4000), 8000)
    cfg = load_config("speech-vocoder", ["data.kind=audio_folder", f"data.root={tmp_path}",
                                         "data.segment_length=2048"])
    x0, kw, what = probe_items(cfg, 2)
    assert x0.shape == (2, 1, 2048) and kw["cond"].shape[0] == 2
    assert what == "2 items from the training folder's own items (an audio folder has no held-out split)"


def test_held_out_rows_of_the_shipped_sets():
    rows = {name: entry.rows for name, entry in registry.DATASETS.items()}
    assert rows["textures"].held_out == "eval" and rows["speech"].held_out == "eval"
    assert rows["fashion_mnist"].held_out == "test"
    assert rows["checkerboard"] == Rows(None, reseed=1, text="checkerboards of data.seed + 1")
    d = DataConfig(kind="checkerboard", size=32, n=5, seed=4)
    held, what = registry.held_out_dataset(d)
    assert torch.equal(stack(held)[0], stack(Checkerboards(5, 32, seed=5))[0])
    assert what == "checkerboards of data.seed + 1"


def test_the_registry_is_read_without_torch():
    code = textwrap.dedent("""
        import sys
        from specreg.data import registry
        from specreg.experiments.reference import REFERENCE_SETS
        assert registry.data_names()[:6] == ("textures", "checkerboard", "fashion_mnist", "image_folder",
                                             "speech", "audio_folder")
        assert list(REFERENCE_SETS) == ["textures", "checkerboards", "fashion-mnist", "speech"]
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in {"torch", "numpy"})
        print(heavy)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
