"""Named hardware presets, the disclosure line, ANN baselines and the memory-aware view
(``energy/hardware.py``, ``energy/_options.py``, ``energy/_report.py``)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from spikelottery.energy import (
    E_SRAM_BIT_PJ,
    PricingOptions,
    estimate_energy,
)
from spikelottery.energy.hardware import HARDWARE_PRESETS
from spikelottery.neuron import LIFNeuron


def test_presets_are_horowitz_2014() -> None:
    assert {n: (p.e_mac, p.e_ac, p.bits) for n, p in HARDWARE_PRESETS.items()} == {
        "fp32-45nm": (4.6, 0.9, 32),
        "fp16-45nm": (1.5, 0.4, 16),
        "int8-45nm": (0.23, 0.03, 8),
        "int32-45nm": (3.2, 0.1, 32),
    }
    assert E_SRAM_BIT_PJ == 10 / 64
    assert PricingOptions() == PricingOptions.from_preset("fp32")  # the paper's default


def test_preset_keyword_and_disclosure() -> None:
    opts = PricingOptions.from_preset("int8", e_ac=0.05)
    assert (opts.e_mac, opts.e_ac, opts.weight_bits, opts.state_bits) == (0.23, 0.05, 8, 8)
    assert opts.preset_name() == "custom" and "preset custom costs" in opts.conventions()
    assert (
        PricingOptions.from_preset("fp16")
        .conventions()
        .startswith("preset fp16-45nm (Horowitz, ISSCC 2014, 45 nm: fp16 mult 1.1 + add 0.4 pJ)")
    )
    with pytest.raises(ValueError, match="preset must be one of"):
        PricingOptions.from_preset("fp8")
    with pytest.raises(ValueError, match="weight_bits"):
        PricingOptions(weight_bits=0)


def spiking_net() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(16, 8),
        LIFNeuron(step_mode="s", threshold=0.3),
        nn.Linear(8, 4),
    )


def test_estimate_with_a_preset_reprices_and_discloses() -> None:
    torch.manual_seed(0)
    net, x = spiking_net(), torch.rand(2, 1, 4, 4)
    fp32 = estimate_energy(net, x)
    int8 = estimate_energy(net, x, preset="int8")
    assert int8.options["e_mac"] == 0.23 and int8.options["weight_bits"] == 8
    assert int8.snn_mj < fp32.snn_mj and int8.macs == fp32.macs
    assert fp32.reprice(preset="int8").snn_mj == pytest.approx(int8.snn_mj)
    text = str(int8)
    assert text.splitlines()[-1].startswith("preset int8-45nm")
    # The ANN baselines do not depend on the preset: dense fp32 and int8 at 45 nm.
    assert int8.ann_baseline("fp32-45nm") == pytest.approx(fp32.ann_mj)
    assert int8.ann_baseline("int8-45nm") == pytest.approx(int8.ann_mj)


def test_memory_view_by_hand() -> None:
    torch.manual_seed(0)
    net, x = spiking_net(), torch.rand(2, 1, 4, 4)
    r = estimate_energy(net, x)
    e_bit = r.pricing.e_mem_bit
    first, second = r.rows
    # Weight reads: one 32-bit weight per exact synaptic operation.
    assert first.memory_pj == pytest.approx(first.exact_ops * 32 * e_bit)
    assert second.memory_pj == pytest.approx(second.exact_ops * 32 * e_bit)
    # Membranes: 8 neurons, one step, a 32-bit read and write each; their spikes written
    # and read at 1 bit.
    assert r.neuron_updates == 8
    state, spikes = 8 * 2 * 32 * e_bit, 8 * 2 * 1 * e_bit
    assert r.memory_mj == pytest.approx((first.memory_pj + second.memory_pj + state + spikes) / 1e9)
    assert r.memory_snn_mj == pytest.approx(r.exact_snn_mj + r.memory_mj)
    views = r.views()
    assert [v["view"] for v in views] == ["paper formula", "exact synaptic ops", "memory-aware"]
    # The ANN: a 32-bit weight read per MAC, its 8 activations written and read at 32 bits.
    ann_mem = (r.ann_macs * (4.6 + 32 * e_bit) + 8 * 2 * 32 * e_bit) / 1e9
    assert views[2]["ann_fp32_mj"] == pytest.approx(ann_mem)
    assert views[0]["pct_fp32"] == pytest.approx(100 * r.ratio)
    d = r.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["preset"] == "fp32-45nm" and len(d["views"]) == 3 and d["neurons"][0]["updates"] == 8
    assert d["rows"][1]["exact_ops"] == second.exact_ops


def test_the_old_energy_presets_name_warns_and_is_the_hardware_registry() -> None:
    import spikelottery.energy as energy

    with pytest.warns(FutureWarning, match="HARDWARE_PRESETS"):
        old = energy.PRESETS
    assert old is energy.HARDWARE_PRESETS
    assert "fp32-45nm" in old and "PRESETS" not in energy.__all__


def test_a_preset_with_the_costs_of_another_keeps_its_own_name() -> None:
    """A registered preset whose figures equal ``fp32-45nm``'s was reported as
    ``fp32-45nm`` with Horowitz's source: the preset was found again by its costs."""
    from spikelottery.energy.hardware import HardwarePreset, register_hardware_preset

    register_hardware_preset(HardwarePreset("fp32-mychip", 4.6, 0.9, 32, "my chip's datasheet"))
    try:
        net = nn.Sequential(nn.Linear(12, 20), LIFNeuron(), nn.Linear(20, 7))
        report = estimate_energy(net, torch.rand(3, 5, 12), preset="fp32-mychip")
        assert report.to_dict()["preset"] == "fp32-mychip"
        assert "my chip's datasheet" in report.conventions()
        assert report.reprice(nonbinary_as_mac=True).to_dict()["preset"] == "fp32-mychip"
        # Other costs are not the preset any more; the default is still the paper's.
        assert report.reprice(e_ac=0.5).to_dict()["preset"] == "custom"
        assert estimate_energy(net, torch.rand(3, 5, 12)).to_dict()["preset"] == "fp32-45nm"
    finally:
        HARDWARE_PRESETS.unregister("fp32-mychip")
