"""Tests of the pricing conventions (``energy/_options.py``): defaults, checks, keywords."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from spikelottery.energy import (
    ATTENTION_ORDERS,
    E_AC_PJ,
    E_MAC_PJ,
    OpCount,
    PricingOptions,
    energy_from_counts,
    estimate_energy,
)


def test_defaults_are_the_papers() -> None:
    o = PricingOptions()
    assert (o.e_mac, o.e_ac) == (E_MAC_PJ, E_AC_PJ) == (4.6, 0.9)
    assert not (o.first_layer_times_t or o.nonbinary_as_mac or o.density_scaling)
    assert not o.ann_every_step and o.attention_order == "as_run"
    assert ATTENTION_ORDERS == ("as_run", "qk_first", "kv_first")
    assert PricingOptions(e_mac=1).e_mac == 1.0 and isinstance(PricingOptions(e_mac=1).e_mac, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.e_mac = 1.0  # type: ignore[misc]


def test_option_errors() -> None:
    net = nn.Linear(4, 2)
    x = torch.rand(2, 4)
    with pytest.raises(ValueError, match="attention_order"):
        estimate_energy(net, x, attention_order="qkv")
    with pytest.raises(ValueError, match="e_mac"):
        estimate_energy(net, x, e_mac=-1.0)
    with pytest.raises(TypeError, match="density_scaling"):
        estimate_energy(net, x, density_scaling=1)
    with pytest.raises(TypeError, match="ann_every_step"):
        estimate_energy(net, x, ann_every_step="yes")
    with pytest.raises(TypeError, match="e_ac must be a number"):
        PricingOptions(e_ac="0.9")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="finite"):
        PricingOptions(e_ac=float("inf"))
    with pytest.raises(TypeError, match="first_layer_times_t must be True or False"):
        PricingOptions(first_layer_times_t=None)  # type: ignore[arg-type]


def test_options_are_checked_before_the_model_runs() -> None:
    class Boom(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise AssertionError("the model ran")

    with pytest.raises(ValueError, match="attention_order"):
        estimate_energy(Boom(), torch.rand(2, 4), attention_order="v_first")


def test_unknown_keywords_name_the_valid_options() -> None:
    net, x = nn.Linear(4, 2), torch.rand(2, 4)
    with pytest.raises(TypeError, match=r"estimate_energy\(\) got unknown option\(s\) \['e_acc'\]"):
        estimate_energy(net, x, e_acc=0.5)
    count = OpCount("a", "linear", "Linear", "", 8.0, 1.0, 0.0, False, 1.0)
    with pytest.raises(TypeError, match="valid: .*'nonbinary_as_mac'"):
        energy_from_counts([count], nonbinary_as_mac_=True)
    with pytest.raises(TypeError, match="options must be a PricingOptions"):
        energy_from_counts([count], options="paper")  # type: ignore[arg-type]


def test_options_object_and_keywords_agree() -> None:
    net, x = nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2)), torch.rand(3, 4)
    cheap = PricingOptions(e_mac=1.0, e_ac=0.5, first_layer_times_t=True)
    by_object = estimate_energy(net, x, options=cheap)
    by_keywords = estimate_energy(net, x, e_mac=1.0, e_ac=0.5, first_layer_times_t=True)
    assert by_object.options == by_keywords.options == cheap.to_dict()
    assert by_object.snn_mj == by_keywords.snn_mj
    # Keywords override the object; the report's options round-trip.
    mixed = estimate_energy(net, x, options=cheap, e_ac=0.25)
    assert mixed.options["e_ac"] == 0.25 and mixed.options["e_mac"] == 1.0
    assert PricingOptions(**mixed.options) == dataclasses.replace(cheap, e_ac=0.25)
    assert energy_from_counts(mixed.counts, options=cheap).snn_mj == by_object.snn_mj


def test_conventions_name_every_option() -> None:
    text = PricingOptions(e_ac=0.03, attention_order="kv_first", density_scaling=True).conventions()
    assert "e_MAC=4.6 pJ, e_AC=0.03 pJ" in text and "attention order kv_first" in text
    assert (
        "scaled by weight density" in text
        and "ANN reference counted one pass per distinct input frame" in text
    )


def test_docstring_documents_every_field() -> None:
    doc = PricingOptions.__doc__ or ""
    section = doc[doc.index("Attributes:") :]
    for f in dataclasses.fields(PricingOptions):
        assert f"    {f.name}: " in section
        assert f.metadata["help"].split()[0] in section
