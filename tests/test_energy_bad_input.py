"""Bad input to the energy estimate: NaN / infinite values name the layer; an empty
loader names the argument."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from spikelottery.energy import count_ops, estimate_energy
from spikelottery.errors import SpikeLotteryError


def net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 16, 3))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_input_names_the_first_layer(bad: float) -> None:
    x = torch.rand(2, 1, 6, 6)
    x[1, 0, 2, 2] = bad
    with pytest.raises(SpikeLotteryError, match=r"layer '0': its input holds NaN or infinite"):
        estimate_energy(net(), x)


def test_non_finite_weight_names_the_layer() -> None:
    model = net()
    with torch.no_grad():
        model[2].weight[0, 0] = float("nan")
    with pytest.raises(SpikeLotteryError, match=r"layer '2': its weight holds NaN"):
        estimate_energy(model, torch.rand(2, 1, 6, 6))


def test_nan_midway_names_the_layer_that_reads_it() -> None:
    model = net()
    with torch.no_grad():
        model[0].bias[0] = float("inf")
    with pytest.raises(SpikeLotteryError, match=r"layer '2': its input"):
        count_ops(model, torch.rand(2, 1, 6, 6))


@pytest.mark.parametrize("empty", [[], iter(()), torch.utils.data.DataLoader([])])
def test_empty_loader_names_the_argument(empty: object) -> None:
    with pytest.raises(ValueError, match="inputs yielded no batch"):
        estimate_energy(net(), empty)
