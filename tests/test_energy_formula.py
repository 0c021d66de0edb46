"""Tests of the energy formula (paper Eq. 3-4): ``price_layer`` and ``energy_from_counts``."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from spikelottery.energy import (
    E_AC_PJ,
    E_MAC_PJ,
    OpCount,
    PricingOptions,
    energy_from_counts,
    estimate_energy,
)
from spikelottery.energy._formula import price_layer, price_layers


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
    # The report's rows are the pure per-layer formula.
    options = PricingOptions(**r.options)
    assert r.rows == price_layers(counts, options)
    assert r.rows[0] == price_layer(counts[0], options, first=True)


def test_price_layer_by_hand() -> None:
    spikes = OpCount("fc", "linear", "Linear", "", 1000.0, 4.0, 0.25, True, 0.5)
    row = price_layer(spikes, PricingOptions())
    assert (row.op, row.ops, row.snn_pj, row.ann_pj) == ("AC", 1000.0, 900.0, 4600.0)
    row = price_layer(spikes, PricingOptions(density_scaling=True, ann_every_step=True))
    assert (row.ops, row.ann_pj) == (500.0, 4.6 * 500 * 4)
    row = price_layer(spikes, PricingOptions(first_layer_times_t=True), first=True)
    assert (row.op, row.ops, row.snn_pj) == ("MAC", 4000.0, 4.6 * 4000)
    real = OpCount("fc", "linear", "Linear", "", 1000.0, 4.0, 2.0, False, 1.0)
    assert price_layer(real, PricingOptions()).ops == 2.0 * 4 * 1000
    as_mac = price_layer(real, PricingOptions(nonbinary_as_mac=True))
    assert (as_mac.op, as_mac.ops) == ("MAC", 4000.0)


def test_empty_counts() -> None:
    with pytest.raises(ValueError, match="empty"):
        energy_from_counts([])


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
    x = torch.randn(b, 1, 2, 8, 8).expand(b, t, 2, 8, 8)  # a static image over T steps
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
    # A static image: the ANN reference runs once (one distinct frame), as the paper's.
    assert "ANN reference counted one pass per distinct input frame" in report.conventions()
    assert report.frames == 1
    every = report.reprice(ann_every_step=True)
    assert every.ann_mj == pytest.approx(t * report.ann_mj) and every.snn_mj == base
    assert every.rows[1].ann_pj == pytest.approx(E_MAC_PJ * t * f2)
    assert "ANN reference counted every time step it ran" in every.conventions()
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
