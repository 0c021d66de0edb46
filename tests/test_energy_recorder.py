"""Tests of the op recorder (``energy/_recorder.py``): firing rates, weight densities and
the pairing of a spiking attention's two matmuls."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn.utils import prune
from torch.overrides import TorchFunctionMode

from spikelottery.energy import E_AC_PJ, E_MAC_PJ, count_ops, energy_from_counts, estimate_energy
from spikelottery.sparsify import sparsify

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


# ----------------------------------------------------------------------------- density


def test_density_from_sparsify_and_torch_prune() -> None:
    net = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 16, 10))
    sparsify(net, pa=0.75)
    counts = count_ops(net, torch.rand(2, 2, 4, 4))
    assert [c.density for c in counts] == [0.25, 0.25]
    pruned = nn.Linear(20, 10)
    prune.l1_unstructured(pruned, "weight", amount=0.4)
    (c,) = count_ops(pruned, torch.rand(3, 20))
    assert c.density == pytest.approx(0.6)


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


# ----------------------------------------------------------------------------- attention pairs


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


def test_attention_run_as_q_times_kt_v_pairs_the_other_way() -> None:
    class LinearAttention(nn.Module):
        """Q (K^T V) with spikes Q, K, V: the model runs the ``kv_first`` order."""

        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = (self.fc(x) > 0).float()
            return s @ ((s.transpose(-2, -1) @ s) * 0.5)

    x = torch.randn(2, 6, 4)
    report = estimate_energy(LinearAttention(), x, batch_size=2)
    assert report.attention_pairs == 1
    kt_v, q_ktv = report.rows[1], report.rows[2]
    assert (kt_v.macs, q_ktv.macs) == (8 * 6 * 8, 6 * 8 * 8)
    qk_first = report.reprice(attention_order="qk_first")
    assert [r.macs for r in qk_first.rows[1:]] == [6 * 8 * 6, 6 * 6 * 8]
    assert report.reprice(attention_order="kv_first").snn_mj == pytest.approx(report.snn_mj)
