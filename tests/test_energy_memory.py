"""The memory view in parts (issue 24, item 4): weights, mask, membranes and spikes by
hand, the like-for-like comparison at one weight width, and the SRAM that does not fit."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from spikelottery import sparsify
from spikelottery.energy import PricingOptions, estimate_energy
from spikelottery.energy._memory import ASSUMPTIONS
from spikelottery.multistep import MultiStep
from spikelottery.neuron import LIFNeuron


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        MultiStep(nn.Conv2d(1, 8, 3, padding=1)),
        LIFNeuron(threshold=0.2),
        MultiStep(nn.Flatten()),
        nn.Linear(8 * 16, 4),
    )


X = (torch.rand(3, 2, 1, 4, 4) < 0.4).float()  # [T, B, ...] event frames


def test_parts_by_hand() -> None:
    report = estimate_energy(_net(), X)
    e = report.pricing.e_mem_bit
    parts = report.memory_parts()
    reads = sum(r.exact_ops for r in report.rows)  # binary inputs: one read per op
    assert parts["weights"] == pytest.approx(reads * 32 * e / 1e9)
    assert parts["mask"] == 0.0  # a dense network stores no mask
    updates = report.neuron_updates
    assert parts["membranes"] == pytest.approx(updates * 2 * 32 * e / 1e9)
    assert parts["activations"] == pytest.approx(updates * 2 * 1 * e / 1e9)
    assert report.memory_mj == pytest.approx(sum(parts.values()))


def test_a_ticket_reads_its_mask_and_compares_like_for_like() -> None:
    net = _net()
    sparsify(net, pa=0.5, mode="mp")
    ticket = estimate_energy(net, X)
    assert all(r.binarised for r in ticket.rows)
    parts = ticket.memory_parts()
    e = ticket.pricing.e_mem_bit
    mask = sum(r.exact_ops / c.density for r, c in zip(ticket.rows, ticket.counts, strict=True))
    assert parts["mask"] == pytest.approx(mask * e / 1e9)
    like = ticket.memory_like_for_like()
    # The headline reads the binarised ticket at 1 bit; at 32 bits it pays 32 times the reads.
    assert like["memory_snn_mj"] == pytest.approx(like["memory_1bit_mj"])
    weights_1bit = parts["weights"]
    extra = like["memory_32bit_mj"] - like["memory_1bit_mj"]
    assert extra == pytest.approx(31 * weights_1bit)
    d = ticket.to_dict()["memory"]
    json.dumps(d, allow_nan=False)
    assert [a["part"] for a in d["assumptions"]] == [p for p, _, _ in ASSUMPTIONS]
    assert all(a["source"] for a in d["assumptions"])


def test_the_sram_that_does_not_fit_is_said() -> None:
    report = estimate_energy(_net(), X)
    bits = report.memory_footprint()["bits"]
    weights = sum(c.weights for c in report.counts)
    units = sum(n.units for n in report.neurons)
    assert bits == weights * 32 + units * 32
    fits = report.memory_footprint()
    assert fits["fits"] and "fit the 8 KiB SRAM" in fits["text"]
    small = report.reprice(sram_kib=0.5)
    note = small.memory_footprint()
    assert not note["fits"] and "do not fit the 0.5 KiB SRAM" in note["text"]
    assert "lower bound" in note["text"] and "do not fit" in str(small)
    with pytest.raises(ValueError, match="sram_kib"):
        PricingOptions(sram_kib=-1.0)
