"""check_ticket: the opt-in guard that names every swapped layer the network bypasses."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from _networks import NETWORKS, Net
from spikelottery import SpikeLotteryError, check_ticket, sparsify
from spikelottery.layers import SubnetLayer


class ReadsRawWeight(nn.Module):
    """A parent that reads the stored parameter, not ``child.weight``: never runs fc."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(6, 6)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(torch.relu(self.inp(x)), self.fc._parameters["weight"], self.fc.bias)


class RawLinear(nn.Linear):
    """A layer whose own forward bypasses ``self.weight``."""

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self._parameters["weight"], self.bias)


class FastPathOnlyWithoutGrad(nn.Module):
    """Like a fused inference path: the dense weight is used only under no_grad."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 3)

    def forward(self, x: Tensor) -> Tensor:
        w = self.fc.weight if torch.is_grad_enabled() else self.fc._parameters["weight"]
        return F.linear(x, w, self.fc.bias)


class DeadBranch(nn.Module):
    """fc runs but its output is multiplied by zero; aux is never run (an eval-mode head)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 3)
        self.other = nn.Linear(6, 3)
        self.aux = nn.Linear(6, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x) * 0.0 + self.other(x)


X = torch.randn(4, 6)


def test_a_faithful_network_passes() -> None:
    net = sparsify(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)), 0.5)
    result = check_ticket(net, X)
    assert result.ok and result.layers == ["0", "2"]
    assert result.densify_error is not None and result.densify_error <= result.densify_tolerance
    assert "passed" in str(result)
    assert result.raise_if_failed() is result


# Networks whose convs standardise their weight: the removed zeros become -mean/std.
_STANDARDISED = {"subclass_forward": ["0"]}


@pytest.mark.parametrize("net", [n for n in NETWORKS if n.requires != "spikingjelly"][:8], ids=str)
def test_third_party_and_pattern_networks_pass(net: Net) -> None:
    model = sparsify(net.build(), 0.5)
    result = check_ticket(model, net.example())
    if net.name in _STANDARDISED:  # every other check passes; the operands are dense
        assert result.dense_operands == _STANDARDISED[net.name], str(result)
        result.dense_operands = []
    assert result.ok, str(result)


def test_parent_reading_the_stored_weight_is_caught_by_densify() -> None:
    model = sparsify(ReadsRawWeight(), 0.5)
    result = check_ticket(model, X)
    assert result.unused == ["fc"] and result.densify_mismatch and not result.ok
    with pytest.raises(SpikeLotteryError, match=r"(?s)densify\(\) copy.*layer\.weight"):
        result.raise_if_failed()


def test_layer_bypassing_its_weight_is_named() -> None:
    model = sparsify(nn.Sequential(nn.Linear(6, 6), nn.ReLU(), RawLinear(6, 3)), 0.5)
    result = check_ticket(model, X)
    assert result.no_gradient == ["2"] and not result.ok
    with pytest.raises(SpikeLotteryError, match="no gradient.*2"):
        result.raise_if_failed()


def test_separate_inference_path_is_named() -> None:
    model = sparsify(FastPathOnlyWithoutGrad(), 0.5)
    result = check_ticket(model, X)
    assert result.ignored_mask == ["fc"] and not result.ok


def test_inactive_and_unused_layers_warn_but_pass() -> None:
    model = sparsify(DeadBranch(), 0.5)
    result = check_ticket(model, X)
    assert result.inactive == ["fc"] and result.unused == ["aux"] and result.ok
    with pytest.warns(UserWarning, match="fc, aux"):
        result.raise_if_failed()


def test_pa_zero_layers_are_listed_as_fixed() -> None:
    model = sparsify(nn.Sequential(nn.Linear(6, 3)), 0.0)
    assert check_ticket(model, X).fixed == ["0"]


def test_the_model_is_left_exactly_as_it_was() -> None:
    model = sparsify(nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.5), nn.Linear(8, 3)), 0.5)
    model.train()
    model[0].scores.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    check_ticket(model, X)
    assert model.training and model[1].training
    assert not model[0].scores.requires_grad and model[2].scores.requires_grad
    assert model[0].scores.grad is None and model[2].scores.grad is None
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model[0]._forward_pre_hooks


def test_sparsify_with_example_inputs_checks_and_rolls_back() -> None:
    good = sparsify(nn.Sequential(nn.Linear(6, 3)), 0.5, example_inputs=X)
    assert isinstance(good[0], SubnetLayer)
    bad = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), RawLinear(6, 3))
    with pytest.raises(SpikeLotteryError, match="no gradient"):
        sparsify(bad, 0.5, example_inputs=X)
    assert not any(isinstance(m, SubnetLayer) for m in bad.modules())


def test_errors_name_the_problem() -> None:
    with pytest.raises(SpikeLotteryError, match="sparsify"):
        check_ticket(nn.Linear(2, 2), torch.randn(1, 2))
    with pytest.raises(TypeError, match="nn.Module"):
        check_ticket("net", X)  # type: ignore[arg-type]

    class NoTensor(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(6, 3)

        def forward(self, x: Tensor) -> str:
            self.fc(x)
            return "done"

    with pytest.raises(SpikeLotteryError, match="no tensor"):
        check_ticket(sparsify(NoTensor(), 0.5), X)


def test_spiking_network_with_silent_layers_is_not_a_failure() -> None:
    pytest.importorskip("spikingjelly")
    from spikingjelly.activation_based import functional, layer, neuron

    net = nn.Sequential(
        layer.Linear(6, 6),
        neuron.LIFNode(v_threshold=1e6),  # never spikes
        layer.Linear(6, 3),
    )
    functional.set_step_mode(net, "m")
    sparsify(net, 0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = check_ticket(net, torch.rand(2, 4, 6)).raise_if_failed()
    assert "0" in result.inactive and result.ok


def test_batchnorm_statistics_are_restored_and_wake_a_silent_snn() -> None:
    from spikelottery import create_model

    model = sparsify(create_model("vgg_tiny", timesteps=2, img_size=8, in_channels=1), 0.4)
    model.eval()
    with torch.no_grad():  # running statistics that silence every neuron in eval mode
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_var.fill_(1e6)
    x = torch.rand(4, 1, 8, 8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with_stats = check_ticket(model, x)
    assert with_stats.ok and not with_stats.inactive, str(with_stats)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # On those running statistics the spiking network is silent: nothing verified.
    silent = check_ticket(model, x, batch_statistics=False)
    assert silent.ok and silent.inactive


# --- from test_review_cases.py: Regression tests for defects an independent review found on third-party networks.


def test_r2_check_ticket_restores_every_module_mode_and_the_rng() -> None:
    net = sparsify(
        nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 2)), 0.5
    )
    net.train()
    net[1].eval()  # frozen BatchNorm while fine-tuning
    net[2].eval()
    x = torch.randn(4, 6)
    state = torch.random.get_rng_state()
    check_ticket(net, x)
    assert net.training and not net[1].training and not net[2].training and net[3].training
    assert torch.equal(torch.random.get_rng_state(), state)


def test_r2_a_stochastic_encoder_is_not_a_false_alarm() -> None:
    class Poisson(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return (torch.rand_like(x) < x).float()

    net = sparsify(nn.Sequential(Poisson(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4)), 0.5)
    assert check_ticket(net, torch.rand(4, 16)).ok


# --- from test_bad_inputs.py: Bad inputs to the Python API, the engine and the model zoo: each one gets a named error.


@pytest.mark.parametrize("example", ["x", 3, None, ("a", 1)])
def test_check_ticket_needs_a_tensor(example: object) -> None:
    net = sparsify(nn.Sequential(nn.Linear(3, 3)), 0.5)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(TypeError, match="example_inputs must hold a tensor"):
        check_ticket(net, example)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


# --- from test_check_inputs.py: check_ticket and sparsify(example_inputs=...): NaN inputs, bad tolerances and weight copies.


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


class _ShiftedConv(nn.Conv2d):
    """A user's conv that transforms its weight first: removed zeros become 0.1."""

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.weight + 0.1, self.bias)


class _ScaledConv(nn.Conv2d):
    """A transform that keeps zeros zero: the ticket is still what runs."""

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, 2.0 * self.weight, self.bias)


def _weight_standardised() -> list[type[nn.Conv2d]]:
    from spikingjelly.activation_based import layer
    from timm.layers import StdConv2d

    return [StdConv2d, layer.WSConv2d, _ShiftedConv]


@pytest.mark.parametrize("conv", _weight_standardised(), ids=lambda c: c.__name__)
def test_a_forward_that_makes_removed_weights_nonzero_fails_the_guard(
    conv: type[nn.Conv2d],
) -> None:
    # Weight standardisation turns the removed zeros of W * M into -mean/std: the layer
    # computes with a dense weight while the ticket says it is sparse. Redrawing the
    # removed frozen weights cannot see it (W * M does not change), the operand check does.
    torch.manual_seed(0)
    net = nn.Sequential(
        conv(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)
    )
    sparsify(net, 0.5)
    result = check_ticket(net, torch.randn(4, 3, 8, 8))
    assert result.dense_operands == ["0"] and not result.ok
    assert "weight standardisation" in str(result)
    with pytest.raises(SpikeLotteryError, match="0"):
        result.raise_if_failed()


def test_operands_that_keep_removed_weights_zero_pass() -> None:
    torch.manual_seed(0)

    class Cross(nn.Module):  # q/k/v projections of other shapes, out_proj read by a parent
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, kdim=6, vdim=6)

        def forward(self, x: Tensor, y: Tensor) -> Tensor:
            return self.attn(x, y, y)[0]

    cases: list[tuple[nn.Module, tuple[Tensor, ...]]] = [
        (nn.Sequential(_ScaledConv(3, 4, 3), nn.Flatten()), (torch.randn(2, 3, 5, 5),)),
        (Cross(), (torch.randn(3, 2, 8), torch.randn(3, 2, 6))),
        (nn.TransformerEncoderLayer(8, 2, 16), (torch.randn(3, 2, 8),)),
    ]
    for net, args in cases:
        sparsify(net, 0.5)
        result = check_ticket(net, args)
        assert result.dense_operands == [] and result.ok, str(result)
