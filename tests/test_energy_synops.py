"""Exact synaptic operations (``energy/_synops.py`` and the exact view of the report):
hand counts on tiny networks with known spikes and masks, and a brute-force check."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from spikelottery.energy import (
    conv_synops,
    count_ops,
    estimate_energy,
    linear_synops,
    matmul_synops,
)
from spikelottery.neuron import LIFNeuron

# ----------------------------------------------------------------------------- hand counts


def test_conv_padding_stride_hand_count() -> None:
    # A 1-channel 3x3 input with 2 spikes, a 3x3 kernel with 5 kept taps, padding 1,
    # stride 2: the output is 2x2 and output (i, j) reads input (2i - 1 + a, 2j - 1 + b)
    # through tap (a, b).
    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 0, 0] = 1.0  # reaches output (0, 0) only, through tap (1, 1): kept -> 1
    x[0, 0, 1, 2] = 1.0  # reaches (0, 1) through tap (2, 1): kept; (1, 1) through (0, 1): pruned
    mask = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    w = (torch.randn(1, 1, 3, 3).abs() + 0.1) * mask
    assert float(conv_synops(x, w, padding=1, stride=2)[0]) == 2.0
    # Every tap kept: the corner spike still meets 1 output, the other spike 2.
    assert float(conv_synops(x, torch.ones(1, 1, 3, 3), padding=1, stride=2)[0]) == 3.0
    # The paper's formula prices fr * FLOPs = 2/9 * 4 outputs * 9 taps = 8 ACs.
    conv = nn.Conv2d(1, 1, 3, padding=1, stride=2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(w)
    (c,) = count_ops(nn.Sequential(conv), x)
    assert c.synops == 2.0 and c.rate * c.macs == pytest.approx(8.0)


def test_grouped_conv_hand_count() -> None:
    # 4 input channels in 2 groups, 2 outputs per group, 3x3 input, 3x3 kernel, no
    # padding: one output position, where input (r, c) meets tap (r, c).
    x = torch.zeros(1, 4, 3, 3)
    x[0, 0, 0, 0] = 1.0  # group 0, channel 0
    x[0, 2, 1, 1] = 1.0  # group 1, channel 2 (local 0)
    x[0, 3, 2, 2] = 1.0  # group 1, channel 3 (local 1)
    w = torch.zeros(4, 2, 3, 3)
    w[0, 0, 0, 0] = w[1, 0, 0, 0] = 0.5  # channel 0, tap (0, 0) -> outputs 0 and 1: 2
    w[1, 1, :, :] = 1.0  # channel 1 has no spike: 0
    w[2, 0, 1, 1] = -1.0  # channel 2, tap (1, 1) -> output 2: 1
    w[3, 1, 2, 2] = 2.0  # channel 3, tap (2, 2) -> output 3: 1
    w[2, 1, 0, 0] = 1.0  # channel 3, tap (0, 0): no spike there: 0
    assert float(conv_synops(x, w, groups=2)[0]) == 4.0
    conv = nn.Conv2d(4, 4, 3, groups=2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(w)
    (c,) = count_ops(nn.Sequential(conv), x)
    assert c.synops == 4.0 and c.synops_per_step == (4.0,)


def test_linear_hand_count() -> None:
    w = torch.tensor([[1.0, 0.0, 2.0, 0.0], [0.0, 0.0, 3.0, 1.0], [1.0, 0.0, 0.0, 1.0]])
    # fan-outs of the 4 inputs: 2, 0, 2, 2
    x = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    assert linear_synops(x, w).tolist() == [2.0, 4.0]
    graded = torch.tensor([[2.0, 0.0, 0.0, 0.0]])  # a sum of 2 spikes reaches 2 weights twice
    assert linear_synops(graded, w).tolist() == [2.0]
    assert linear_synops(graded, w, values=True).tolist() == [4.0]


def test_attention_matmul_hand_count() -> None:
    # Q K^T of two spike matrices: feature k pairs the tokens of Q and of K that spike on it.
    q = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])  # 2 tokens, 3 features
    k = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])  # 3 tokens
    # feature 0: 2 x 2, feature 1: 1 x 2, feature 2: 1 x 1
    assert float(matmul_synops(q, k.T)) == 7.0
    scores = q @ k.T  # integer scores; (Q K^T) V counts non-zero scores x spikes of V
    v = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    brute = sum(
        1
        for i, j, m in itertools.product(range(2), range(3), range(2))
        if scores[i, j] != 0 and v[j, m] != 0
    )
    # every score is non-zero; V has 1, 0 and 2 spikes in its rows: 2 x (1 + 0 + 2)
    assert float(matmul_synops(scores, v)) == brute == 6


class SpikeAttention(nn.Module):
    """Q K^T and (Q K^T) V on given spike matrices (the model's input is ignored)."""

    def __init__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        super().__init__()
        self.q, self.k, self.v = q, k, v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.q @ self.k.transpose(-2, -1)) * 0.125 @ self.v + 0 * x.sum()


def test_attention_matmuls_are_counted_in_the_report() -> None:
    q = torch.tensor([[[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]]])
    k = torch.tensor([[[1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [1.0, 0.0, 0.0]]])
    v = torch.tensor([[[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]]])
    report = estimate_energy(SpikeAttention(q, k, v), torch.zeros(1, 1), timesteps=1)
    qk, av = report.rows
    assert (qk.kind, av.kind) == ("matmul", "matmul")
    assert qk.per_step == (7.0,) and av.per_step == (6.0,)
    assert av.exact_op == "AC" and av.exact_ops == 6.0  # V is the spike operand


# ----------------------------------------------------------------------------- brute force


def _brute_conv(
    x: torch.Tensor, w: torch.Tensor, stride: int, padding: int, dilation: int, groups: int
) -> float:
    """Count (non-zero input, kept weight) pairs that meet in a conv, tap by tap."""
    n, _, h, wd = x.shape
    c_out, c_per, kh, kw = w.shape
    out_per = c_out // groups
    ho = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    wo = (wd + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    total = 0
    for b, o, i, j, c, a, e in itertools.product(
        range(n), range(c_out), range(ho), range(wo), range(c_per), range(kh), range(kw)
    ):
        r, s = i * stride - padding + a * dilation, j * stride - padding + e * dilation
        ch = (o // out_per) * c_per + c
        if 0 <= r < h and 0 <= s < wd and x[b, ch, r, s] != 0 and w[o, c, a, e] != 0:
            total += 1
    return float(total)


@pytest.mark.parametrize(
    ("stride", "padding", "dilation", "groups"),
    [(1, 0, 1, 1), (2, 1, 1, 1), (1, 1, 2, 2), (2, 2, 1, 4), (3, 1, 1, 2)],
)
def test_conv_matches_brute_force(stride: int, padding: int, dilation: int, groups: int) -> None:
    gen = torch.Generator().manual_seed(stride * 100 + padding * 10 + groups)
    x = (torch.rand(2, 4, 6, 5, generator=gen) < 0.3).float()
    w = torch.randn(4, 4 // groups, 3, 3, generator=gen) * (
        torch.rand(4, 4 // groups, 3, 3, generator=gen) < 0.5
    )
    got = conv_synops(x, w, stride=stride, padding=padding, dilation=dilation, groups=groups)
    assert float(got.sum()) == _brute_conv(x, w, stride, padding, dilation, groups)
    assert got.shape == (2,)


def test_transposed_conv_counts_every_scattered_product() -> None:
    x = (torch.rand(1, 2, 4, 4, generator=torch.Generator().manual_seed(1)) < 0.4).float()
    w = torch.randn(2, 3, 3, 3) * (torch.rand(2, 3, 3, 3) < 0.5)
    # No padding: every input meets all its kept weights.
    per_channel = (w != 0).flatten(1).sum(1).float()
    expected = float((x[0].flatten(1).sum(1) * per_channel).sum())
    assert float(conv_synops(x, w, transposed=True, stride=2)[0]) == expected
    # With padding the cropped border is not computed: fewer products.
    assert float(conv_synops(x, w, transposed=True, stride=2, padding=1)[0]) <= expected


# ----------------------------------------------------------------------------- per step, tickets


class TinySNN(nn.Module):
    """conv -> LIF -> linear on [T, B, C, H, W] (multi-step)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1, bias=False)
        self.lif = LIFNeuron(beta=0.5, threshold=0.5)
        self.fc = nn.Linear(2 * 16, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, b = x.shape[:2]
        h = self.conv(x.flatten(0, 1)).reshape(t, b, 2, 4, 4)
        s = self.lif(h)
        return self.fc(s.flatten(2)).mean(0)


def test_per_step_counts_and_neuron_updates() -> None:
    torch.manual_seed(0)
    net = TinySNN()
    x = (torch.rand(3, 2, 1, 4, 4) < 0.5).float()  # T = 3, B = 2, binary
    report = estimate_energy(net, x, timesteps=3, batch_size=2)
    conv, fc = report.rows
    # Hand: per step, each spike meets the kept taps of both output channels in range.
    w = net.conv.weight
    for t in range(3):
        expected = float(conv_synops(x[t], w, padding=1).sum()) / 2  # per sample
        assert conv.per_step[t] == pytest.approx(expected)
    # Binary event frames: the first layer is priced as spikes, on every step.
    assert conv.exact_op == "AC" and conv.exact_ops == pytest.approx(sum(conv.per_step))
    # The linear layer reads the LIF's spikes: fan-out 3 each (dense weight).
    with torch.no_grad():
        spikes = net.lif(net.conv(x.flatten(0, 1)).reshape(3, 2, 2, 4, 4))
    assert fc.per_step == pytest.approx(tuple(float(s.sum()) * 3 / 2 for s in spikes))
    assert fc.exact_op == "AC" and fc.exact_ops == pytest.approx(sum(fc.per_step))
    assert report.neuron_updates == 2 * 16 * 3  # units x T, per sample
    assert report.per_step_synops == pytest.approx(
        tuple(a + b for a, b in zip(conv.per_step, fc.per_step, strict=True))
    )


def test_single_step_loop_per_step() -> None:
    fc = nn.Linear(4, 2, bias=False)

    class Loop(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = fc

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [T, B, 4]
            return torch.stack([self.fc(x[t]) for t in range(x.shape[0])]).mean(0)

    x = torch.zeros(3, 1, 4)
    x[0, 0, 0] = x[2, 0, :] = 1.0  # 1 spike at step 0, none at step 1, 4 at step 2
    (c,) = count_ops(Loop(), x, timesteps=3, batch_size=1)
    assert c.synops_per_step == (2.0, 0.0, 8.0)


@pytest.mark.parametrize("mode", ["lt", "mp"])
def test_ticket_counts_only_kept_weights(mode: str) -> None:
    from spikelottery import sparsify

    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(2, 2, 1), nn.Conv2d(2, 4, 3, padding=1, bias=False))
    sparsify(net, pa=0.5, mode=mode)
    x = torch.rand(1, 2, 5, 5)
    _, c = count_ops(net, x)
    spikes = (net[0](x) > 0.5).float()  # not the model's input: compare on a known input
    kept = net[1].effective_weight().detach()
    assert c.density == 0.5 and c.binarised == (mode == "mp")
    # A ticket's real input here is not binary: count on a binary one through the pure function.
    assert float(conv_synops(spikes, kept, padding=1).sum()) == _brute_conv(
        spikes, kept, 1, 1, 1, 1
    )
    assert c.synops is not None and c.synops <= 0.5 * c.macs * c.steps


def test_binarised_weights_are_read_at_one_bit() -> None:
    net = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[0.5, -0.5, 0.0, 0.5], [0.0, 0.5, -0.5, 0.0]]))
    x = torch.rand(2, 4)
    report = estimate_energy(net, x)
    first, second = report.rows
    assert second.binarised and not first.binarised
    e_bit = report.pricing.e_mem_bit
    assert second.memory_pj == pytest.approx(second.exact_ops * 1 * e_bit) or not second.binary
    assert first.memory_pj == pytest.approx(first.exact_ops * 32 * e_bit)


def test_counting_can_be_turned_off() -> None:
    net = nn.Sequential(nn.Linear(4, 2))
    (c,) = count_ops(net, torch.rand(3, 4), synops=False)
    assert c.synops is None and c.synops_per_step == ()
    report = estimate_energy(net, torch.rand(3, 4), synops=False)
    assert report.exact_layers == 0 and report.exact_snn_mj == report.snn_mj
