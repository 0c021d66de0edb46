"""Tests of the energy estimator (paper Eq. 3-4): MAC counts, firing rates, options, exports."""

from __future__ import annotations

import csv
import json
import math
import os

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import prune
from torch.overrides import TorchFunctionMode

from spikelottery.energy import (
    ATTENTION_ORDERS,
    E_AC_PJ,
    E_MAC_PJ,
    EnergyReport,
    OpCount,
    count_ops,
    energy_from_counts,
    estimate_energy,
)
from spikelottery.errors import SpikeLotteryError
from spikelottery.layers import SubnetConv, SubnetLinear

sj_layer = pytest.importorskip("spikingjelly.activation_based.layer")
from spikingjelly.activation_based import neuron as sj_neuron  # noqa: E402
from spikingjelly.activation_based.op_counter import DispatchCounterMode, SynOpCounter  # noqa: E402

# ----------------------------------------------------------------------------- hand counts


def conv_out(size: int, k: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    return (size + 2 * padding - dilation * (k - 1) - 1) // stride + 1


def conv_macs(
    cin: int,
    cout: int,
    k: int,
    h: int,
    w: int,
    *,
    stride: int = 1,
    padding: int = 0,
    groups: int = 1,
) -> int:
    """MACs of one conv on one image: every output element reads (cin / groups) * k * k inputs."""
    return (
        cout
        * conv_out(h, k, stride, padding)
        * conv_out(w, k, stride, padding)
        * (cin // groups)
        * k
        * k
    )


VGG9_CONFIG = (64, 64, "A", 128, 128, "A", 256, 256, 256, "A")


def vgg9_hand_count(
    size: int = 32, in_channels: int = 3, hidden: int = 128, classes: int = 10
) -> int:
    """64C3-64C3-AP2-128C3-128C3-AP2-256C3-256C3-256C3-AP2-FC128-FC10, 3x3 convs, padding 1."""
    total, channels = 0, in_channels
    for item in VGG9_CONFIG:
        if item == "A":
            size //= 2
        else:
            total += size * size * channels * item * 9
            channels = item
    return total + channels * size * size * hidden + hidden * classes


def resnet19_hand_count(size: int = 32) -> int:
    """Stem 3->64 conv3; BasicBlocks [3, 3, 2] at 128/256/512 (strides 1, 2, 2); FC256; FC10.

    A BasicBlock is conv3x3(stride) + conv3x3, plus a 1x1 conv shortcut (with the stride)
    where the shape changes: the first block of every stage (64 -> 128 changes channels).
    """
    total = size * size * 3 * 64 * 9
    channels = 64
    for width, blocks, stride in ((128, 3, 1), (256, 3, 2), (512, 2, 2)):
        for i in range(blocks):
            s = stride if i == 0 else 1
            size //= s
            total += size * size * channels * width * 9 + size * size * width * width * 9
            if s != 1 or channels != width:
                total += size * size * channels * width
            channels = width
    return total + 512 * 256 + 256 * 10


def local_vgg9() -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 3
    for item in VGG9_CONFIG:
        if item == "A":
            layers.append(nn.AvgPool2d(2))
        else:
            layers += [
                nn.Conv2d(channels, item, 3, padding=1, bias=False),
                nn.BatchNorm2d(item),
                nn.ReLU(),
            ]
            channels = item
    layers += [nn.Flatten(), nn.Linear(4096, 128), nn.ReLU(), nn.Linear(128, 10)]
    return nn.Sequential(*layers)


class Spike(nn.Module):
    """A stateless Heaviside neuron: spikes where the input is positive."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x > 0).float()


def sj_synops(model: nn.Module, x: torch.Tensor) -> int:
    counter = SynOpCounter()
    with torch.no_grad(), DispatchCounterMode([counter]):
        model(x)
    return counter.get_total()


# ----------------------------------------------------------------------------- MAC counts


@pytest.mark.parametrize(
    ("cin", "cout", "k", "stride", "padding", "groups", "size"),
    [
        (3, 8, 3, 1, 1, 1, 9),  # same padding
        (3, 8, 3, 1, 0, 1, 9),  # valid
        (4, 6, 5, 2, 2, 1, 11),  # stride 2
        (8, 8, 3, 1, 1, 8, 7),  # depthwise
        (8, 12, 3, 2, 1, 4, 10),  # grouped, strided
        (5, 7, 1, 1, 0, 1, 6),  # 1x1
    ],
)
def test_conv_macs_match_hand_count(
    cin: int, cout: int, k: int, stride: int, padding: int, groups: int, size: int
) -> None:
    conv = nn.Conv2d(cin, cout, k, stride, padding, groups=groups)
    (c,) = count_ops(conv, torch.rand(3, cin, size, size))
    assert c.kind == "conv"
    assert c.macs == conv_macs(
        cin, cout, k, size, size, stride=stride, padding=padding, groups=groups
    )
    assert c.steps == 1


@settings(max_examples=25, deadline=None)
@given(
    cin=st.integers(1, 4),
    cout=st.integers(1, 5),
    k=st.integers(1, 4),
    stride=st.integers(1, 3),
    padding=st.integers(0, 2),
    h=st.integers(4, 9),
    w=st.integers(4, 9),
)
def test_conv_macs_property(
    cin: int, cout: int, k: int, stride: int, padding: int, h: int, w: int
) -> None:
    conv = nn.Conv2d(cin, cout, k, stride, padding)
    (c,) = count_ops(conv, torch.rand(2, cin, h, w))
    hand = cout * conv_out(h, k, stride, padding) * conv_out(w, k, stride, padding) * cin * k * k
    assert c.macs == hand


def test_linear_conv1d_and_tokens() -> None:
    net = nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 4))
    counts = count_ops(net, torch.rand(5, 6))
    assert [(c.name, c.macs) for c in counts] == [("0", 60), ("2", 40)]
    # Tokens: [B, N, D] -> N * D_in * D_out per sample, one step.
    (c,) = count_ops(nn.Linear(8, 3), torch.rand(2, 7, 8))
    assert (c.macs, c.steps, c.shape) == (7 * 8 * 3, 1, "7x (8 -> 3)")
    (c,) = count_ops(nn.Conv1d(4, 6, 3, padding=1), torch.rand(2, 4, 10))
    assert c.macs == 6 * 10 * 4 * 3


def test_local_vgg9_is_191m_macs_and_0879_mj() -> None:
    hand = vgg9_hand_count()
    assert hand == 191_038_720
    report = estimate_energy(local_vgg9(), torch.rand(1, 3, 32, 32))
    assert report.macs == hand
    assert [r.kind for r in report.rows] == ["conv"] * 7 + ["linear"] * 2
    assert report.rows[0].macs == 32 * 32 * 3 * 64 * 9
    assert report.rows[-2].macs == 4096 * 128
    assert report.ann_mj == pytest.approx(hand * 4.6e-9, rel=1e-12)
    assert round(report.ann_mj, 3) == 0.879
    assert report.timesteps == 1


def test_zoo_vgg9_mac_count() -> None:
    models = pytest.importorskip("spikelottery.models")
    try:
        model = models.create_model("vgg9", neuron_kwargs={"backend": "eager"})
    except (AttributeError, ValueError, TypeError) as exc:
        pytest.skip(f"vgg9 not available from the zoo: {exc}")
    x, y = torch.rand(3, 3, 32, 32), torch.arange(3)
    report = estimate_energy(model, (x, y))
    assert report.macs == vgg9_hand_count()
    assert report.timesteps == 4
    assert all(r.steps == 4 for r in report.rows)


def test_zoo_resnet19_mac_count() -> None:
    models = pytest.importorskip("spikelottery.models")
    try:
        model = models.create_model("resnet19", spiking=False)
    except (AttributeError, ValueError, TypeError) as exc:
        pytest.skip(f"resnet19 not available from the zoo: {exc}")
    hand = resnet19_hand_count()
    assert hand == 2_216_495_616
    report = estimate_energy(model, torch.rand(1, 3, 32, 32))
    assert report.macs == hand
    assert (
        sum(r.kind == "conv" for r in report.rows) == 1 + 2 * 8 + 3
    )  # stem, 8 blocks, 3 shortcuts


# ----------------------------------------------------------------------------- firing rates


class TwoReaders(nn.Module):
    """Two layers read the same input: the first is the (MAC-priced) first layer."""

    def __init__(self, d_in: int = 64, d_out: int = 16) -> None:
        super().__init__()
        self.first = nn.Linear(d_in, d_out)
        self.second = nn.Linear(d_in, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.first(x) + self.second(x)


def test_rate_of_bernoulli_input() -> None:
    p = 0.3
    x = torch.bernoulli(torch.full((64, 64), p))
    report = estimate_energy(TwoReaders(), x)
    second = report.rows[1]
    assert second.binary and second.op == "AC"
    assert abs(second.rate - p) < 4 * math.sqrt(p * (1 - p) / x.numel())
    assert second.rate == x.mean().item()


def test_rate_exact_on_fixed_pattern_and_sops() -> None:
    x = torch.zeros(4, 64)
    x[:, ::4] = 1  # exactly a quarter of the units fire
    report = estimate_energy(TwoReaders(), x)
    first, second = report.rows
    assert second.rate == 0.25
    assert second.ops == 0.25 * 1 * 64 * 16  # SOPs = fr * T * FLOPs
    assert second.snn_pj == pytest.approx(E_AC_PJ * second.ops)
    assert first.op == "MAC" and first.ops == 64 * 16
    assert report.snn_mj == pytest.approx((E_MAC_PJ * 1024 + E_AC_PJ * 256) / 1e9)
    assert report.sops == 256 and report.snn_macs == 1024
    assert report.mean_rate == pytest.approx((0.25 * 1024 + 0.25 * 1024) / 2048)


def test_multistep_input_reads_t_and_b() -> None:
    t, b = 4, 3
    net = nn.Sequential(
        sj_layer.Linear(10, 6, step_mode="m"), Spike(), sj_layer.Linear(6, 2, step_mode="m")
    )
    x = torch.randn(t, b, 10)
    counts = count_ops(net, (x, torch.zeros(b)))  # B from the labels, T from [T, B, D]
    assert [c.steps for c in counts] == [t, t]
    assert [c.macs for c in counts] == [60, 12]
    report = estimate_energy(net, x, timesteps=t, batch_size=b)  # a 3-D x needs B told
    assert report.timesteps == t and report.samples == b
    spikes = (F.linear(x, net[0].weight, net[0].bias) > 0).float()
    assert report.rows[1].rate == pytest.approx(spikes.mean().item())
    assert report.rows[1].ops == pytest.approx(spikes.mean().item() * t * 12)


class ConvThenLinear(nn.Module):
    """Multi-step conv (T merged into the batch) then a linear on [T, B, D]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.fc = nn.Linear(2 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, T, 1, 4, 4]
        t, b = x.shape[1], x.shape[0]
        y = (self.conv(x.transpose(0, 1).flatten(0, 1)) > 0).float()
        return self.fc(y.view(t, b, -1)).mean(0)


@pytest.mark.parametrize("b", [2, 3])  # B == T must not read [T, B, D] as B samples of T tokens
def test_batch_equal_to_timesteps(b: int) -> None:
    report = estimate_energy(ConvThenLinear(), torch.randn(b, 2, 1, 4, 4))
    assert report.timesteps == 2 and report.samples == b
    assert [(r.macs, r.steps) for r in report.rows] == [(2 * 16 * 9, 2), (32 * 3, 2)]


# ----------------------------------------------------------------------------- density


def test_density_scaling_halves_sops_at_pa_half() -> None:
    # Spikes -> SubnetLinear (pa=0.5) and a multi-step SubnetConv (pa=0.5) on [T, B, C, H, W].
    t, b = 2, 3
    fc = nn.Sequential(nn.Linear(32, 64), Spike(), SubnetLinear(64, 32, pa=0.5))
    conv = nn.Sequential(
        sj_layer.Conv2d(2, 4, 1, step_mode="m"), Spike(), SubnetConv(4, 6, 3, padding=1, pa=0.5)
    )
    for model, x in ((fc, torch.randn(b, 32)), (conv, torch.randn(t, b, 2, 5, 5))):
        dense = estimate_energy(model, x, batch_size=b)
        scaled = estimate_energy(model, x, batch_size=b, density_scaling=True)
        row_d, row_s = dense.rows[1], scaled.rows[1]
        assert row_d.binary and row_d.op == "AC" and row_d.ops > 0
        assert row_s.density == 0.5 and row_d.density == 0.5  # measured either way
        assert row_s.ops == pytest.approx(row_d.ops / 2)  # the SOPs halve
        assert row_s.ann_pj == pytest.approx(row_d.ann_pj / 2)
        assert row_s.macs == row_d.macs  # the MAC column stays the dense count
    assert scaled.timesteps == t


def test_density_from_sparsify_and_torch_prune() -> None:
    sparsify = pytest.importorskip("spikelottery.sparsify").sparsify
    net = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 16, 10))
    sparsify(net, pa=0.75)
    counts = count_ops(net, torch.rand(2, 2, 4, 4))
    assert [c.density for c in counts] == [0.25, 0.25]
    pruned = nn.Linear(20, 10)
    prune.l1_unstructured(pruned, "weight", amount=0.4)
    (c,) = count_ops(pruned, torch.rand(3, 20))
    assert c.density == pytest.approx(0.6)


# ----------------------------------------------------------------------------- SpikingJelly cross-check


def test_sops_equal_spikingjelly_synops_on_1x1_conv() -> None:
    conv = sj_layer.Conv2d(6, 5, 1, bias=False)
    x = torch.bernoulli(torch.full((3, 6, 7, 7), 0.2))
    (c,) = count_ops(conv, x)
    ours = c.rate * c.steps * c.macs * 3  # per sample times B
    assert ours == pytest.approx(sj_synops(conv, x), rel=1e-12)


def test_sops_near_spikingjelly_on_3x3_conv() -> None:
    # Without padding every tap reads a real input; the exact count differs from
    # fr * T * FLOPs only by how the spikes happen to fall near the border.
    conv = nn.Conv2d(4, 8, 3, bias=False)
    x = torch.bernoulli(torch.full((2, 4, 24, 24), 0.3))
    (c,) = count_ops(conv, x)
    assert c.rate * c.macs * 2 == pytest.approx(sj_synops(conv, x), rel=0.03)
    # With zero padding the paper's FLOPs include the padded taps, which SpikingJelly skips:
    # on an all-ones input the ratio is exactly the fraction of taps inside the image.
    conv = nn.Conv2d(4, 8, 3, padding=1, bias=False)
    ones = torch.ones(1, 4, 8, 8)
    (c,) = count_ops(conv, ones)
    inside = (3 * 8 - 2) ** 2 / (9 * 8 * 8)
    assert c.rate == 1.0
    assert sj_synops(conv, ones) == pytest.approx(c.macs * inside, rel=1e-12)


def test_sj_multistep_net_matches_spikingjelly_synops() -> None:
    t, b = 4, 2
    net = nn.Sequential(
        sj_layer.Conv2d(2, 8, 1, bias=False, step_mode="m"),
        sj_neuron.LIFNode(tau=2.0, step_mode="m"),
        sj_layer.Conv2d(8, 8, 1, bias=False, step_mode="m"),
        sj_neuron.LIFNode(tau=2.0, step_mode="m"),
        sj_layer.Flatten(step_mode="m"),
        sj_layer.Linear(8 * 5 * 5, 10, step_mode="m"),
    )
    with torch.no_grad():
        for m in net:
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.abs_().mul_(3)  # large positive weights: the neurons fire
    x = 4 * torch.rand(t, b, 2, 5, 5)
    report = estimate_energy(net, x, timesteps=t)  # 5-D x with x.shape[0] == T: [T, B, ...]
    assert report.samples == b
    assert [r.name for r in report.rows] == ["0", "2", "5"]
    assert [r.steps for r in report.rows] == [t, t, t]
    assert [r.binary for r in report.rows] == [False, True, True]
    assert 0 < report.rows[1].rate < 1 and 0 < report.rows[2].rate < 1
    # estimate_energy reset the neurons afterwards, so this run starts from rest too.
    reference = sj_synops(net, x)
    ours = sum(r.ops for r in report.rows if r.op == "AC") * b
    assert ours == pytest.approx(reference, rel=1e-9)


# ----------------------------------------------------------------------------- models of all kinds


class LoopNet(nn.Module):
    """A single-step SpikingJelly model that loops over time itself."""

    def __init__(self, steps: int = 5) -> None:
        super().__init__()
        self.steps = steps
        self.fc1 = nn.Linear(16, 32)
        self.lif = sj_neuron.LIFNode(tau=2.0)
        self.fc2 = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = 0
        for _ in range(self.steps):
            out = out + self.fc2(self.lif(self.fc1(x)))
        return out / self.steps


def test_single_step_loop_model_and_reset_between_batches() -> None:
    model = LoopNet()
    x = 3 * torch.rand(3, 16)
    once = estimate_energy(model, x)
    assert once.timesteps == 5
    assert [(r.name, r.macs, r.steps) for r in once.rows] == [("fc1", 512, 5), ("fc2", 128, 5)]
    assert 0 < once.rows[1].rate < 1
    twice = estimate_energy(model, [x, x])  # two batches: the state must not leak
    assert twice.samples == 6
    assert twice.rows[1].rate == pytest.approx(once.rows[1].rate)
    assert isinstance(model.lif.v, float) and model.lif.v == 0.0  # left at rest


class SpikingAttention(nn.Module):
    """Spiking self-attention on [T, B, N, D]: (Q K^T * 0.125) V with binary Q, K, V."""

    def __init__(self, dim: int = 8, heads: int = 2, softmax: bool = False) -> None:
        super().__init__()
        self.heads, self.softmax = heads, softmax
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(-3, -2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = (self.split((f(x) > 0).float()) for f in (self.q, self.k, self.v))
        scores = (q @ k.transpose(-2, -1)) * 0.125
        if self.softmax:
            scores = scores.softmax(-1)
        return (scores @ v).transpose(-3, -2).flatten(-2)


class UserTransformer(nn.Module):
    def __init__(self, softmax: bool = False) -> None:
        super().__init__()
        self.embed = nn.Linear(5, 8)
        self.attn = SpikingAttention(softmax=softmax)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(self.embed(x))


def test_user_attention_rows_and_orders() -> None:
    t, b, n, d, h = 2, 3, 6, 8, 2
    hd = d // h
    model = UserTransformer()
    x = torch.randn(t, b, n, 5)
    report = estimate_energy(model, x, timesteps=t, batch_size=b)
    names = [r.name for r in report.rows]
    assert names == ["embed", "attn.q", "attn.k", "attn.v", "attn.matmul0", "attn.matmul1"]
    qk, av = report.rows[4], report.rows[5]
    assert (qk.macs, av.macs) == (h * n * hd * n, h * n * n * hd)
    assert qk.steps == av.steps == t
    assert report.attention_pairs == 1
    # Rates: Q K^T reads spikes Q (left); (Q K^T) V reads spikes V (right).
    with torch.no_grad():
        e = model.embed(x)
        q, k, v = ((f(e) > 0).float() for f in (model.attn.q, model.attn.k, model.attn.v))
    assert qk.rate == pytest.approx(q.mean().item()) and qk.binary
    assert av.rate == pytest.approx(v.mean().item()) and av.binary
    as_run = energy_from_counts(report.counts, attention_order="as_run")
    qk_first = energy_from_counts(report.counts, attention_order="qk_first")
    kv_first = energy_from_counts(report.counts, attention_order="kv_first")
    assert qk_first.snn_mj == pytest.approx(as_run.snn_mj)  # the model runs (Q K^T) V
    kt_v, q_ktv = kv_first.rows[4], kv_first.rows[5]
    assert (kt_v.macs, q_ktv.macs) == (h * hd * n * hd, h * n * hd * hd)
    assert kt_v.rate == pytest.approx(k.mean().item())  # K^T V: spikes K^T on the left
    assert q_ktv.rate == pytest.approx(q.mean().item())  # Q (K^T V): spikes Q on the left
    assert kv_first.macs == report.macs - (2 * h * n * n * hd) + (2 * h * hd * n * hd)
    assert kv_first.rows[:4] == as_run.rows[:4]


def test_softmax_attention_is_not_reordered() -> None:
    model = UserTransformer(softmax=True)
    x = torch.randn(2, 3, 6, 5)
    report = estimate_energy(model, x, timesteps=2, batch_size=3)
    assert report.attention_pairs == 0
    kv = estimate_energy(model, x, timesteps=2, batch_size=3, attention_order="kv_first")
    assert kv.macs == report.macs and kv.snn_mj == pytest.approx(report.snn_mj)


def test_torch_attention_mha_sdpa_einsum_hand_counts() -> None:
    n, e, heads, b = 10, 16, 2, 3
    layer = nn.TransformerEncoderLayer(e, heads, 32, batch_first=True, dropout=0.0)
    report = estimate_energy(layer, torch.rand(b, n, e))
    macs = {r.name: r.macs for r in report.rows}
    assert macs == {
        "self_attn.in_proj": n * 3 * e * e,
        "self_attn.matmul0": n * n * e,
        "self_attn.matmul1": n * n * e,
        "self_attn.out_proj": n * e * e,
        "linear1": n * e * 32,
        "linear2": n * 32 * e,
    }
    assert report.timesteps == 1

    class Sdpa(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(e, 8))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.einsum("bnd,de->bne", x, self.w)
            return F.scaled_dot_product_attention(y, y, y)

    counts = count_ops(Sdpa(), torch.rand(b, n, e))
    assert [(c.name, c.macs) for c in counts] == [
        ("matmul0", n * e * 8),
        ("matmul1", n * 8 * n),
        ("matmul2", n * n * 8),
    ]


# ----------------------------------------------------------------------------- options


class PooledSNN(nn.Module):
    """conv -> spikes -> avg pool (non-binary) -> conv, multi-step over T = 3."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, 4, 3, padding=1)
        self.pool = nn.AvgPool2d(2)
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (self.stem(x.flatten(0, 1)) > 0).float()
        return self.conv(self.pool(s))


def test_options_change_the_result_as_documented() -> None:
    t, b = 3, 2
    x = torch.randn(b, t, 2, 8, 8)
    report = estimate_energy(PooledSNN(), (x, torch.zeros(b)))
    stem, conv = report.rows
    assert report.timesteps == t and stem.steps == t and conv.steps == t
    assert not conv.binary  # average-pooled spikes
    f1, f2 = stem.macs, conv.macs
    # default (paper): first layer once as MAC, the pooled input as SOPs at its mean
    assert stem.op == "MAC" and stem.ops == f1
    assert conv.op == "AC" and conv.ops == pytest.approx(conv.rate * t * f2)
    base = report.snn_mj
    assert base == pytest.approx((E_MAC_PJ * f1 + E_AC_PJ * conv.rate * t * f2) / 1e9)

    times_t = energy_from_counts(report.counts, first_layer_times_t=True)
    assert times_t.snn_mj - base == pytest.approx(E_MAC_PJ * (t - 1) * f1 / 1e9)
    as_mac = report.reprice(nonbinary_as_mac=True)
    assert as_mac.rows[1].op == "MAC" and as_mac.rows[1].ops == t * f2
    assert as_mac.snn_mj == pytest.approx((E_MAC_PJ * f1 + E_MAC_PJ * t * f2) / 1e9)
    cheap = energy_from_counts(report.counts, e_mac=1.0, e_ac=0.5)
    assert cheap.ann_mj == pytest.approx((f1 + f2) / 1e9)
    assert cheap.snn_mj == pytest.approx((f1 + 0.5 * conv.rate * t * f2) / 1e9)
    assert energy_from_counts(report.counts).ann_mj == report.ann_mj
    again = as_mac.reprice(nonbinary_as_mac=False)  # keeps T, samples and the other options
    assert again.snn_mj == pytest.approx(base) and again.samples == b and again.timesteps == t
    assert report.reprice(e_ac=0.5).options["e_ac"] == 0.5
    with pytest.raises(TypeError, match="unknown option"):
        report.reprice(e_acc=0.5)
    # The paper's ANN runs once; a network that does not spike but runs T frames pays T.
    assert "ANN counted once (T = 1)" in report.conventions()
    every = report.reprice(ann_every_step=True)
    assert every.ann_mj == pytest.approx(t * report.ann_mj) and every.snn_mj == base
    assert every.rows[1].ann_pj == pytest.approx(E_MAC_PJ * t * f2)
    assert "ANN counted every time step it ran" in every.conventions()
    direct = estimate_energy(PooledSNN(), (x, torch.zeros(b)), ann_every_step=True)
    assert direct.ann_mj == pytest.approx(every.ann_mj)


def test_pooled_rate_is_pre_pool_firing_rate() -> None:
    t, b = 3, 2
    model = PooledSNN()
    x = torch.randn(b, t, 2, 8, 8)
    report = estimate_energy(model, x, batch_size=b)
    with torch.no_grad():
        spikes = (model.stem(x.flatten(0, 1)) > 0).float()
    assert report.rows[1].rate == pytest.approx(spikes.mean().item())  # the pool keeps the mean


def _op_counts() -> st.SearchStrategy[list[OpCount]]:
    row = st.builds(
        OpCount,
        name=st.just("l"),
        kind=st.sampled_from(["conv", "linear", "matmul"]),
        module=st.just("M"),
        shape=st.just(""),
        macs=st.integers(0, 10**7).map(float),
        steps=st.integers(1, 8).map(float),
        rate=st.floats(0, 1),
        binary=st.booleans(),
        density=st.floats(0, 1),
    )
    return st.lists(row, min_size=1, max_size=6)


@settings(max_examples=40, deadline=None)
@given(
    counts=_op_counts(),
    times_t=st.booleans(),
    as_mac=st.booleans(),
    scale=st.booleans(),
    ann_steps=st.booleans(),
)
def test_formula_property(
    counts: list[OpCount], times_t: bool, as_mac: bool, scale: bool, ann_steps: bool
) -> None:
    r = energy_from_counts(
        counts,
        first_layer_times_t=times_t,
        nonbinary_as_mac=as_mac,
        density_scaling=scale,
        ann_every_step=ann_steps,
    )
    d = [c.density if scale else 1.0 for c in counts]
    ann = sum(
        E_MAC_PJ * c.macs * di * (c.steps if ann_steps else 1)
        for c, di in zip(counts, d, strict=True)
    )
    first = counts[0]
    snn = E_MAC_PJ * first.macs * d[0] * (first.steps if times_t else 1)
    for c, di in zip(counts[1:], d[1:], strict=True):
        if c.binary or not as_mac:
            snn += E_AC_PJ * c.rate * c.steps * c.macs * di
        else:
            snn += E_MAC_PJ * c.steps * c.macs * di
    assert r.ann_mj == pytest.approx(ann / 1e9, rel=1e-9, abs=1e-18)
    assert r.snn_mj == pytest.approx(snn / 1e9, rel=1e-9, abs=1e-18)
    assert r.macs == pytest.approx(sum(c.macs for c in counts))
    assert r.sops + r.snn_macs == pytest.approx(sum(row.ops for row in r.rows))


# ----------------------------------------------------------------------------- errors, state, exports


def test_argument_errors() -> None:
    net = nn.Linear(4, 2)
    x = torch.rand(2, 4)
    with pytest.raises(ValueError, match="attention_order"):
        estimate_energy(net, x, attention_order="qkv")
    with pytest.raises(ValueError, match="e_mac"):
        estimate_energy(net, x, e_mac=-1.0)
    with pytest.raises(TypeError, match="density_scaling"):
        estimate_energy(net, x, density_scaling=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ann_every_step"):
        estimate_energy(net, x, ann_every_step="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timesteps"):
        estimate_energy(net, x, timesteps=0)
    with pytest.raises(TypeError, match="model"):
        estimate_energy("net", x)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no batch"):
        estimate_energy(net, [])
    with pytest.raises(SpikeLotteryError, match="no conv, linear or matmul"):
        estimate_energy(nn.ReLU(), x)
    with pytest.raises(TypeError, match="batch"):
        estimate_energy(net, [{"x": x}])
    with pytest.raises(ValueError, match="empty"):
        energy_from_counts([])
    assert ATTENTION_ORDERS == ("as_run", "qk_first", "kv_first")


class _CountNonzeroOf(TorchFunctionMode):
    """Counts ``torch.count_nonzero`` calls on one tensor (the estimator's own calls included)."""

    def __init__(self, target: torch.Tensor) -> None:
        super().__init__()
        self.target, self.calls = target, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func is torch.count_nonzero and args and args[0] is self.target:
            self.calls += 1
        return func(*args, **(kwargs or {}))


class StepLoop(nn.Module):
    """One linear layer called once per time step (a single-step loop)."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.steps = steps
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.fc(x) for _ in range(self.steps)]).mean(0)


def test_weight_density_is_counted_once_per_weight_and_version() -> None:
    net = StepLoop(steps=6)
    with torch.no_grad():
        net.fc.weight[:, :2] = 0.0
    x = torch.rand(3, 8)
    with _CountNonzeroOf(net.fc.weight) as counter:
        counts = count_ops(net, [x, x], batch_size=3)
    assert counter.calls == 1  # not once per call (a GPU sync each)
    assert counts[0].density == pytest.approx(0.75) and counts[0].calls == 12
    with torch.no_grad():
        net.fc.weight[:, :4] = 0.0  # changed in place: counted afresh
    assert count_ops(net, x, batch_size=3)[0].density == pytest.approx(0.5)
    # Same-shape weights made afresh on each call (torch pruning) keep their own density.
    pair = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
    prune.random_unstructured(pair[0], "weight", amount=0.25)
    prune.random_unstructured(pair[1], "weight", amount=0.75)
    first, second = count_ops(pair, torch.rand(2, 8))
    assert (first.density, second.density) == (0.75, 0.25)


def test_training_flags_and_hooks_restored_even_on_error() -> None:
    net = nn.Sequential(nn.Linear(4, 4), nn.Dropout(), nn.Linear(4, 2))
    net.train()
    net[1].eval()  # a mixed state must come back as it was
    estimate_energy(net, torch.rand(2, 4))
    assert net.training and not net[1].training and net[2].training

    class Broken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.fc(x)
            raise RuntimeError("boom")

    broken = Broken().train()
    with pytest.raises(RuntimeError, match="boom"):
        estimate_energy(broken, torch.rand(2, 4))
    assert broken.training
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in broken.modules())
    assert torch.is_grad_enabled()


def test_max_batches_and_dataloader_batches() -> None:
    data = torch.utils.data.TensorDataset(torch.rand(10, 6), torch.zeros(10))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    net = nn.Linear(6, 3)
    assert estimate_energy(net, loader).samples == 10  # 4 + 4 + 2, from the labels
    assert estimate_energy(net, loader, max_batches=2).samples == 8
    assert estimate_energy(net, next(iter(loader))).samples == 4  # one [x, y] batch


def test_report_exports(tmp_path: os.PathLike[str]) -> None:
    report = estimate_energy(TwoReaders(), torch.bernoulli(torch.full((4, 64), 0.5)))
    assert isinstance(report, EnergyReport)
    text = str(report)
    assert "first" in text and "second" in text and "total" in text
    assert "E_ANN" in text and "paper Eq. 3-4" in text
    lines = text.splitlines()
    assert len({len(line) for line in lines[:2]}) == 1  # header as wide as the rule
    md = report.to_markdown()
    assert md.startswith("| layer | kind |") and md.count("\n|") == 4  # separator, 2 rows, total
    d = report.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["totals"]["ann_mj"] == report.ann_mj and d["options"]["attention_order"] == "as_run"
    assert d["rows"][1]["snn_mj"] == report.rows[1].snn_mj
    path = report.to_csv(os.path.join(tmp_path, "energy.csv"))
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["first", "second"]
    assert float(rows[1]["ops"]) == report.rows[1].ops
    assert sorted(os.listdir(tmp_path)) == ["energy.csv"]  # no temp file left behind
    no_spikes = energy_from_counts(
        [OpCount("a", "linear", "Linear", "", 0.0, 1.0, 0.0, False, 1.0)]
    )
    assert math.isnan(no_spikes.ratio) and no_spikes.to_dict()["totals"]["ratio"] is None
