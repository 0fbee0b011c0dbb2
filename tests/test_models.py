"""Tests of the denoising networks (UNet, DiffWave) against closed forms and published sizes."""

from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np
import pytest
import torch

from specreg.models import UNET_PRESETS, DiffWave, UNet, default_upsample_strides, unet_preset
from specreg.models.diffwave import DiffusionStepEmbedding, MelUpsampler
from specreg.models.unet import PositionalEmbedding, SelfAttention, group_count


def tiny_unet(**kw) -> UNet:
    cfg = dict(in_channels=1, model_channels=16, channel_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,),
               resolution=16)
    cfg.update(kw)
    return UNet(**cfg)


def perturb(module: torch.nn.Module, scale: float = 0.1, seed: int = 0) -> None:
    """Add noise to every parameter, so that zero-initialised layers pass signal."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


# --------------------------------------------------------------------------------------
# UNet


def test_positional_embedding_closed_form():
    emb = PositionalEmbedding(8, max_positions=10000)
    c = torch.tensor([0.0, 0.3, -1.7, 999.0], dtype=torch.float64)
    omega = (1.0 / 10000) ** (np.arange(4) / 3)  # endpoint: the last frequency is 1/max_positions
    angle = c.numpy()[:, None] * omega[None]
    expected = np.concatenate([np.sin(angle), np.cos(angle)], axis=1)
    np.testing.assert_allclose(emb(c).numpy(), expected, rtol=1e-12, atol=1e-12)


def test_param_counts_match_edm_songunet():
    # Sizes of NVlabs/edm SongUNet (DDPM++) built with EDM's CIFAR-10 (class-conditional)
    # and 64×64 configurations: 55 734 147 and 61 804 419 parameters.
    with torch.device("meta"):
        cifar = unet_preset("ddpmpp32", in_channels=3, num_classes=10)
        afhq = unet_preset("ddpmpp64", in_channels=3)
    assert n_params(cifar) == 55_734_147
    assert n_params(afhq) == 61_804_419


def test_cpu_preset_size():
    counts = {name: n_params(unet_preset(name)) for name in ("cpu32", "cpu32s")}
    assert 1.2e6 < counts["cpu32"] < 1.5e6
    assert 0.5e6 < counts["cpu32s"] < 1.0e6


def test_group_count_rule():
    # EDM: min(32, C // 4); lowered to a divisor of C where that fails.
    assert [group_count(c) for c in (4, 32, 64, 96, 128, 256, 130, 36)] == [1, 8, 16, 24, 32, 32, 26, 9]
    for c in range(1, 300):
        g = group_count(c)
        assert c % g == 0 and 1 <= g <= max(1, min(32, c // 4))


@pytest.mark.parametrize(
    "kw, shape",
    [
        (dict(), (2, 1, 16, 16)),
        (dict(in_channels=3, model_channels=12, channel_mult=(1, 3, 2), attn_resolutions=(16, 4),
              resolution=64, num_heads=3), (2, 3, 64, 64)),
        (dict(in_channels=5, out_channels=2, model_channels=18), (3, 5, 28, 20)),  # odd counts, 28×20
    ],
)
def test_unet_shapes_and_backward(kw, shape):
    net = tiny_unet(**kw)
    x = torch.randn(shape)
    out = net(x, torch.rand(shape[0]))
    assert out.shape == (shape[0], net.out_channels, *shape[2:])
    assert torch.all(out == 0)  # zero-initialised output conv
    perturb(net)
    out = net(x, torch.rand(shape[0]))
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_scalar_noise_label_is_broadcast():
    net = tiny_unet()
    perturb(net)
    x = torch.randn(3, 1, 16, 16)
    a = net(x, torch.tensor(0.7))
    b = net(x, torch.full((3,), 0.7))
    c = net(x, 0.7)
    d = net(x, torch.full((3, 1, 1, 1), 0.7))  # σ shaped for broadcasting
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a, c, rtol=0, atol=0)
    torch.testing.assert_close(a, d, rtol=0, atol=0)
    # each sample's output depends on its own label only
    e = net(x, torch.tensor([0.7, 3.0, 0.7]))
    torch.testing.assert_close(e[[0, 2]], a[[0, 2]])
    assert not torch.allclose(e[1], a[1])


def test_training_moves_every_parameter_and_fits_a_batch():
    torch.manual_seed(0)
    net = tiny_unet(dropout=0.1)
    x, target = torch.randn(4, 1, 16, 16), torch.randn(4, 1, 16, 16)
    c = torch.rand(4)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        loss = (net(x, c) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # from step 2 on the zero-initialised output conv passes gradient to every layer
    unchanged = [n for n, p in net.named_parameters() if torch.equal(p, before[n])]
    assert unchanged == []
    assert losses[-1] < 0.9 * losses[0]


def test_noise_label_reaches_every_residual_block():
    """After one optimiser step, every block's output depends on the noise label."""
    torch.manual_seed(0)
    net = tiny_unet()
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    (net(torch.randn(2, 1, 16, 16), torch.rand(2)) - 1).square().mean().backward()
    opt.step()
    x = torch.randn(1, 1, 16, 16)
    feats = {}
    hooks = [b.register_forward_hook(lambda m, i, o, k=k: feats.__setitem__(k, o)) for k, b in
             enumerate(list(net.enc) + list(net.dec))]
    net(x, torch.tensor([0.1]))
    first = dict(feats)
    net(x, torch.tensor([5.0]))
    for h in hooks:
        h.remove()
    assert all(not torch.equal(first[k], feats[k]) for k in feats)


def test_class_conditioning():
    net = tiny_unet(num_classes=4)
    perturb(net)
    net.eval()
    x, c = torch.randn(3, 1, 16, 16), torch.rand(3)
    out = net(x, c, torch.tensor([0, 1, 2]))
    other = net(x, c, torch.tensor([3, 3, 3]))
    assert all(not torch.allclose(out[i], other[i]) for i in range(3))
    # integer labels equal their one-hot rows; −1 equals the zero (unconditional) row
    onehot = torch.nn.functional.one_hot(torch.tensor([0, 1, 2]), 4).float()
    torch.testing.assert_close(net(x, c, onehot), out)
    uncond = net(x, c, torch.tensor([-1, -1, -1]))
    torch.testing.assert_close(net(x, c, torch.zeros(3, 4)), uncond)
    # label dropout replaces labels by the unconditional one (all of them at p → 1)
    net.train()
    net.label_dropout = 1.0
    torch.testing.assert_close(net(x, c, torch.tensor([0, 1, 2])), uncond)
    # an unconditional network ignores class labels
    plain = tiny_unet()
    perturb(plain)
    torch.testing.assert_close(plain(x, c, torch.tensor([0, 1, 2])), plain(x, c))


def test_image_condition_channels():
    net = tiny_unet(cond_channels=2)
    perturb(net)
    x = torch.randn(2, 1, 16, 16)
    a = net(x, 0.5, cond=torch.zeros(2, 2, 16, 16))
    b = net(x, 0.5, cond=torch.ones(2, 2, 16, 16))
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="cond"):
        net(x, 0.5)
    with pytest.raises(ValueError, match="cond"):
        tiny_unet()(x, 0.5, cond=torch.zeros(2, 2, 16, 16))


def test_self_attention_matches_naive_softmax():
    torch.manual_seed(0)
    attn = SelfAttention(8, num_heads=2).double()
    perturb(attn, 0.3)
    x = torch.randn(2, 8, 3, 5, dtype=torch.float64)
    out = attn(x)
    # naive reference: q, k, v per head from the qkv conv, softmax over key positions
    with torch.no_grad():
        h = torch.nn.functional.group_norm(x, attn.norm.num_groups, attn.norm.weight, attn.norm.bias,
                                           attn.norm.eps)
        qkv = torch.einsum("oc,bchw->bohw", attn.qkv.weight[:, :, 0, 0], h) + attn.qkv.bias[None, :, None, None]
    qkv = qkv.reshape(2, 2, 4, 3, 15).numpy()  # (batch, head, d, [q k v], position)
    heads = []
    for b in range(2):
        per = []
        for hd in range(2):
            q, k, v = qkv[b, hd, :, 0], qkv[b, hd, :, 1], qkv[b, hd, :, 2]
            logits = q.T @ k / math.sqrt(4)
            w = np.exp(logits - logits.max(axis=1, keepdims=True))
            w /= w.sum(axis=1, keepdims=True)
            per.append(v @ w.T)  # (d, positions)
        heads.append(np.concatenate(per, axis=0))
    a = torch.from_numpy(np.stack(heads)).reshape(2, 8, 3, 5)
    with torch.no_grad():
        expected = x + torch.nn.functional.conv2d(a, attn.proj.weight, attn.proj.bias)
    torch.testing.assert_close(out.detach(), expected, rtol=1e-10, atol=1e-10)


def test_unet_config_roundtrip_and_errors():
    net = tiny_unet(num_classes=3, dropout=0.1)
    cfg = asdict(net.config)
    cfg["channel_mult"] = list(cfg["channel_mult"])  # as YAML would give it
    twin = UNet.from_config(cfg)
    assert [(k, v.shape) for k, v in twin.state_dict().items()] == \
           [(k, v.shape) for k, v in net.state_dict().items()]
    with pytest.raises(ValueError, match=r"unknown key UNet\.width"):
        UNet.from_config({**cfg, "width": 3})
    with pytest.raises(ValueError, match="model_channels"):
        UNet(model_channels=0)
    with pytest.raises(ValueError, match="channel_mult"):
        UNet(channel_mult=())
    with pytest.raises(ValueError, match="dropout"):
        UNet(dropout=1.5)
    with pytest.raises(ValueError, match="name"):
        unet_preset("huge")
    with pytest.raises(ValueError, match="divisible by 2"):
        net(torch.randn(1, 1, 17, 16), 0.1)
    with pytest.raises(ValueError, match="channels"):
        net(torch.randn(1, 3, 16, 16), 0.1)
    with pytest.raises(ValueError, match="noise_label"):
        net(torch.randn(2, 1, 16, 16), torch.rand(3))
    assert set(UNET_PRESETS) >= {"cpu32", "ddpmpp32", "ddpmpp64"}


# --------------------------------------------------------------------------------------
# DiffWave


def tiny_diffwave(**kw) -> DiffWave:
    cfg = dict(residual_layers=3, residual_channels=16, dilation_cycle=10, emb_channels=32)
    cfg.update(kw)
    return DiffWave(**cfg)


def test_diffusion_step_embedding_closed_form():
    emb = DiffusionStepEmbedding()
    t = torch.tensor([0.0, 1.0, 17.0, 49.5], dtype=torch.float64)
    omega = 10.0 ** (np.arange(64) * 4.0 / 63.0)  # Kong et al. 2021, §3
    angle = t.numpy()[:, None] * omega[None]
    expected = np.concatenate([np.sin(angle), np.cos(angle)], axis=1)
    np.testing.assert_allclose(emb.sinusoids(t).numpy(), expected, rtol=1e-9, atol=1e-9)


def test_diffwave_paper_size():
    """30 layers, C=64, 80 mels: count of the paper's layer list, written out."""
    c, mels, layers, e = 64, 80, 30, 512
    upsampler = 2 * (3 * 32 + 1)
    embedding = (128 * e + e) + (e * e + e)
    per_layer = (c * 2 * c * 3 + 2 * c) + (e * c + c) + (mels * 2 * c + 2 * c) + (c * 2 * c + 2 * c)
    expected = (c + c) + embedding + upsampler + layers * per_layer + (c * c + c) + (c + 1)
    with torch.device("meta"):
        net = DiffWave(n_mels=80)
    assert n_params(net) == expected
    assert net.receptive_field == 1 + 2 * 3 * (2**10 - 1)


@pytest.mark.parametrize("hop, strides", [(256, (16, 16)), (128, (16, 8)), (100, (10, 10)), (75, (15, 5)),
                                          (7, (7,))])
def test_upsample_strides(hop, strides):
    assert default_upsample_strides(hop) == strides
    assert math.prod(strides) == hop


@pytest.mark.parametrize("hop", [256, 100, 75, 7])
def test_mel_upsampler_length_and_locality(hop):
    torch.manual_seed(0)
    up = MelUpsampler(default_upsample_strides(hop)).double()
    perturb(up, 0.5)
    mel = torch.randn(1, 7, 5, dtype=torch.float64)
    out = up(mel)
    assert out.shape == (1, 7, 5 * hop)
    k, m = 2, 3
    bumped = mel.clone()
    bumped[0, m, k] += 1.0
    changed = (up(bumped) - out).abs() > 1e-12
    rows = changed.any(dim=2)[0].nonzero().ravel().tolist()
    cols = changed.any(dim=1)[0].nonzero().ravel()
    reach = len(up.strides)  # each stage has a 3-tap kernel over mel bands
    assert rows == list(range(m - reach, m + reach + 1))
    # frame k drives its own hop of samples and stays within the neighbouring frames
    assert changed[0, m, k * hop:(k + 1) * hop].all()
    assert cols.min() >= (k - 1) * hop and cols.max() < (k + 2) * hop


def test_diffwave_receptive_field_closed_form():
    net = tiny_diffwave().double()  # dilations 1, 2, 4: reach 7 samples each side
    perturb(net, 0.3)
    x = torch.randn(1, 1, 64, dtype=torch.float64)
    n = 30
    bumped = x.clone()
    bumped[0, 0, n] += 1.0
    changed = ((net(bumped, 3.0) - net(x, 3.0)).abs() > 1e-13)[0, 0].nonzero().ravel()
    half = (net.receptive_field - 1) // 2
    assert half == 7
    assert changed.min() == n - half and changed.max() == n + half


def test_diffwave_conditioning_shapes_and_backward():
    net = tiny_diffwave(n_mels=5, hop_length=16)
    x = torch.randn(2, 1, 64)
    mel = torch.randn(2, 5, 4)
    out = net(x, torch.tensor([1.0, 7.0]), cond=mel)
    assert out.shape == x.shape and torch.all(out == 0)  # zero-initialised output
    perturb(net)
    out = net(x, torch.tensor([1.0, 7.0]), cond=mel)
    assert not torch.allclose(out, net(x, torch.tensor([1.0, 7.0]), cond=mel + 1))
    assert not torch.allclose(out, net(x, torch.tensor([2.0, 7.0]), cond=mel))
    torch.testing.assert_close(net(x, 4.0, cond=mel), net(x, torch.tensor([4.0, 4.0]), cond=mel))
    out.square().sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    with pytest.raises(ValueError, match="cond"):
        net(x, 1.0)
    with pytest.raises(ValueError, match="hop_length"):
        net(x, 1.0, cond=torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match="unconditional"):
        tiny_diffwave()(x, 1.0, cond=mel)
    with pytest.raises(ValueError, match=r"\(B, 1, T\)"):
        net(torch.randn(2, 64), 1.0, cond=mel)
    with pytest.raises(ValueError, match="upsample_strides"):
        DiffWave(n_mels=5, hop_length=16, upsample_strides=(4, 2))
    with pytest.raises(ValueError, match="residual_layers"):
        DiffWave(residual_layers=0)


def test_diffwave_fits_a_batch_and_config_roundtrip():
    torch.manual_seed(0)
    net = tiny_diffwave(n_mels=4, hop_length=8)
    x, mel, target = torch.randn(2, 1, 32), torch.randn(2, 4, 4), torch.randn(2, 1, 32)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = (net(x, torch.tensor([3.0, 9.0]), cond=mel) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    twin = DiffWave.from_config(asdict(net.config))
    twin.load_state_dict(net.state_dict())
    torch.testing.assert_close(twin(x, 3.0, cond=mel), net(x, 3.0, cond=mel))


def test_from_config_takes_the_config_object_or_a_mapping_and_names_an_unknown_key():
    # UNet and DiffWave read their configs through one helper (schema.constructor_kwargs)
    for net, cls, bad in ((tiny_unet(), UNet, "width"), (tiny_diffwave(n_mels=4, hop_length=8), DiffWave, "layers")):
        for config in (net.config, asdict(net.config)):
            twin = cls.from_config(config)
            assert [(k, v.shape) for k, v in twin.state_dict().items()] == \
                   [(k, v.shape) for k, v in net.state_dict().items()]
        with pytest.raises(ValueError, match=rf"unknown key {cls.__name__}\.{bad}; accepted keys in {cls.__name__}: "):
            cls.from_config({**asdict(net.config), bad: 1})
        with pytest.raises(ValueError, match=f"{cls.__name__} config must be a mapping"):
            cls.from_config([1, 2])
