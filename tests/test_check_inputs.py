"""check_ticket and sparsify(example_inputs=...): NaN inputs, bad tolerances and weight copies."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spikelottery import SpikeLotteryError, check_ticket, sparsify
from spikelottery.layers import SubnetLayer

X = torch.randn(4, 6)


class CopiesTheWeight(nn.Module):
    """Keeps a plain tensor of fc's weight, taken before sparsify, and computes with it."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(6, 6)
        self.fc = nn.Linear(6, 3)
        self.wt = self.fc.weight.detach()

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(torch.relu(self.inp(x)), self.wt, self.fc.bias)


class Tied(nn.Module):
    """Two swapped layers that share one frozen weight (tied): neither bypasses anything."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 6)
        self.b = nn.Linear(6, 6)

    def forward(self, x: Tensor) -> Tensor:
        return self.b(torch.relu(self.a(x)))


def _plain() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def test_a_weight_copied_before_sparsify_fails_the_guard() -> None:
    torch.manual_seed(0)
    net = sparsify(CopiesTheWeight(), pa=0.5)
    result = check_ticket(net, X)
    assert not result.ok and result.reads_removed[0].startswith("wt (a tensor the shape of fc"), (
        str(result)
    )
    assert "copied from the layer before" in str(result)
    with pytest.raises(SpikeLotteryError, match="fc"):
        result.raise_if_failed()


def test_sparsify_with_example_inputs_refuses_a_weight_copy_and_rolls_back() -> None:
    torch.manual_seed(0)
    net = CopiesTheWeight()
    with pytest.raises(SpikeLotteryError, match="wt .a tensor the shape of fc"):
        sparsify(net, pa=0.5, example_inputs=X)
    assert not any(isinstance(m, SubnetLayer) for m in net.modules())


class ReadsFrozenWeight(nn.Module):
    """Computes with the swapped layer's dense frozen weight, never with its ticket."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(6, 6)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: Tensor) -> Tensor:
        fc = self.fc
        weight = fc.frozen_weight if isinstance(fc, SubnetLayer) else fc.weight
        return F.linear(torch.relu(self.inp(x)), weight.detach(), fc.bias)


def test_a_forward_on_the_dense_frozen_weight_fails_the_guard() -> None:
    torch.manual_seed(0)
    result = check_ticket(sparsify(ReadsFrozenWeight(), pa=0.5), X)
    assert not result.ok and result.reads_removed == ["fc"], str(result)


def test_the_removed_weights_check_restores_every_weight() -> None:
    net = sparsify(_plain(), pa=0.5)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert check_ticket(net, X).ok
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_tied_weights_are_not_a_false_alarm() -> None:
    torch.manual_seed(0)
    net = sparsify(Tied(), pa=0.5)
    net.b.frozen_weight = net.a.frozen_weight  # both layers compute with one weight
    assert check_ticket(net, X).reads_removed == []


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_nan_input_is_named(bad: float) -> None:
    net = sparsify(_plain(), pa=0.5)
    with pytest.raises(ValueError, match="NaN or infinite"):
        check_ticket(net, torch.full((4, 6), bad))
    fresh = _plain()
    with pytest.raises(ValueError, match="example_inputs"):
        sparsify(fresh, pa=0.5, example_inputs=torch.full((4, 6), bad))
    assert not any(isinstance(m, SubnetLayer) for m in fresh.modules())


def test_a_nan_output_is_named() -> None:
    class Nan(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(6, 3)

        def forward(self, x: Tensor) -> Tensor:
            return self.fc(x) * float("nan")

    with pytest.raises(SpikeLotteryError, match="output .* NaN"):
        check_ticket(sparsify(Nan(), pa=0.5), X)


@pytest.mark.parametrize(("name", "value"), [("rtol", -1.0), ("atol", -1e-5), ("rtol", "x")])
def test_bad_tolerances_are_named(name: str, value: object) -> None:
    net = sparsify(_plain(), pa=0.5)
    with pytest.raises(ValueError, match=name):
        check_ticket(net, X, **{name: value})  # type: ignore[arg-type]
