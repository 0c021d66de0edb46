"""Binary activations: the swap, its undo, what it cannot see, and the multi-prize presets.

The paper: multi-prize tickets "introduce the added benefit of binary weight and activation
representations", and MultiSp includes "ConvPEP activation binarization". biprop's 1/1
networks (``models/resnet_BinAct_v2.py``) put ``BiRealAct`` (sign forward, gradient
``2 * (1 - |x|)`` on ``|x| <= 1``) where the ReLUs were, the input and the logits real.
"""

from __future__ import annotations

import copy
import itertools
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from _engine_testing import tiny
from _networks import NETWORKS, Net
from spikelottery import (
    BinaryActivation,
    SpikeLotteryError,
    densify,
    load_ticket,
    read_ticket_info,
    save_ticket,
    sparsify,
)
from spikelottery.activations import (
    ACTIVATION_TYPES,
    binarize_activations,
    functional_activations,
    restore_activations,
)
from spikelottery.data import dataset_info
from spikelottery.engine import TrainConfig, run
from spikelottery.engine.build import build_model
from spikelottery.engine.presets import METHODS
from spikelottery.functional import kept_count
from spikelottery.layers import SubnetLayer
from spikelottery.neuron import LIFNeuron

_ACTS = [nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.ELU, nn.Tanh, nn.Hardtanh]


def _net(widths: list[int], acts: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(widths)):
        layers += [nn.Linear(a, b), nn.BatchNorm1d(b)]
        layers.append(_ACTS[acts[i % len(acts)] % len(_ACTS)]())
    layers.append(nn.Linear(widths[-1], 3))
    return nn.Sequential(*layers)


@settings(max_examples=40, deadline=None)
@given(
    widths=st.lists(st.integers(2, 9), min_size=2, max_size=5),
    acts=st.lists(st.integers(0, 20), min_size=1, max_size=4),
    seed=st.integers(0, 50),
)
def test_every_activation_module_becomes_binary_and_comes_back(
    widths: list[int], acts: list[int], seed: int
) -> None:
    torch.manual_seed(seed)
    net = _net(widths, acts).eval()
    x = torch.randn(4, widths[0])
    before = net(x)
    originals = [m for m in net if isinstance(m, ACTIVATION_TYPES)]
    names = binarize_activations(net)
    assert len(names) == len(originals) == len(widths) - 1
    assert not any(isinstance(m, ACTIVATION_TYPES) for m in net.modules())
    # Each hidden activation is now +-1: the input of each following linear is binary.
    seen: list[torch.Tensor] = []
    hooks = [
        m.register_forward_hook(lambda m, i, o: seen.append(o))
        for m in net
        if isinstance(m, BinaryActivation)
    ]
    out = net(x)
    for h in hooks:
        h.remove()
    assert seen and all(set(o.unique().tolist()) <= {-1.0, 1.0} for o in seen)
    assert (out.dtype == before.dtype and not torch.equal(out, before)) or len(seen) == 0
    assert binarize_activations(net) == []  # already binary: nothing more to do
    assert restore_activations(net) == names
    assert [m for m in net if isinstance(m, ACTIVATION_TYPES)] == originals  # the same objects
    assert torch.equal(net(x), before)


def test_the_gradient_is_approx_sign() -> None:
    act = BinaryActivation()
    x = torch.tensor([-2.0, -0.5, 0.0, 0.25, 1.5], requires_grad=True)
    act(x).sum().backward()
    assert x.grad is not None
    assert x.grad.tolist() == [0.0, 1.0, 2.0, 1.5, 0.0]  # 2 * (1 - |x|) on |x| <= 1


def test_a_module_registered_twice_becomes_one_binary_module() -> None:
    relu = nn.ReLU()
    net = nn.Sequential(nn.Linear(3, 3), relu, nn.Linear(3, 3), relu, nn.Linear(3, 2))
    assert binarize_activations(net) == ["1"]
    assert net[1] is net[3] and isinstance(net[1], BinaryActivation)
    assert restore_activations(net) == ["1"]
    assert net[1] is relu and net[3] is relu


def test_the_filter_chooses_the_activations() -> None:
    net = nn.Sequential(
        nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), nn.Sequential(nn.Conv2d(2, 2, 3), nn.ReLU())
    )
    assert binarize_activations(net, filter=r"^0\.") == ["0.1"]
    assert isinstance(net[1][1], nn.ReLU)
    with pytest.raises(TypeError, match="types must be nn.Module classes"):
        binarize_activations(net, types=(int,))  # type: ignore[arg-type]


def test_sparsify_binary_lists_each_swap_and_densify_keeps_the_ticket() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 5)
    )
    x = torch.randn(4, 3, 8, 8)
    net, report = sparsify(
        net, 0.4, mode="mp", activations="binary", return_report=True, example_inputs=x
    )
    assert report.binarized == ["2"] and report.functional_activations == {}
    assert "binary   2 (activation)" in str(report)
    net.eval()
    y = net(x)
    densify(net)
    assert isinstance(net[2], BinaryActivation) and type(net[0]) is nn.Conv2d
    assert torch.equal(net(x), y)  # the dense copy computes the ticket
    densify(net, activations="restore")
    assert type(net[2]) is nn.ReLU
    with pytest.raises(ValueError, match="activations must be 'keep' or 'restore'"):
        densify(net, activations="binary")


def test_sparsify_refuses_a_bad_value_and_a_network_with_no_activation_module() -> None:
    with pytest.raises(ValueError, match="activations must be one of"):
        sparsify(nn.Sequential(nn.Linear(2, 2)), 0.5, activations="sign")
    net = nn.Sequential(nn.Linear(2, 2), LIFNeuron(step_mode="s"), nn.Linear(2, 2))
    with pytest.raises(SpikeLotteryError, match="spiking neurons are binary already"):
        sparsify(net, 0.5, activations="binary")
    assert type(net[0]) is nn.Linear  # rolled back


def test_a_failed_check_rolls_the_activations_back() -> None:
    class Bypass(nn.Module):  # reads a copy of the weight taken before sparsify
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 3)
            self.act = nn.ReLU()
            self.out = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(self.act(self.lin(x))).detach() * 0 + x[:, :2]

    net = Bypass()
    with pytest.raises(SpikeLotteryError):
        sparsify(net, 0.5, activations="binary", example_inputs=torch.randn(4, 3))
    assert type(net.act) is nn.ReLU and type(net.lin) is nn.Linear


def test_activations_called_as_functions_are_named_with_a_warning() -> None:
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.act = nn.ReLU()
            self.b = nn.Linear(4, 4)
            self.c = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.c(nn.functional.gelu(self.b(self.act(self.a(x)))).tanh())

    with pytest.warns(UserWarning, match=r"<model> \(gelu, tanh\)"):
        _, report = sparsify(
            Functional(),
            0.5,
            activations="binary",
            return_report=True,
            example_inputs=torch.randn(3, 4),
        )
    assert report.binarized == ["act"]
    assert report.functional_activations == {"": ["gelu", "tanh"]}
    # Without an example input the report says that it did not look.
    _, report = sparsify(Functional(), 0.5, activations="binary", return_report=True)
    assert report.functional_activations is None
    assert "were not looked for" in str(report)


def test_functional_activations_leaves_the_model_as_it_was() -> None:
    net = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.ReLU()).train()
    stats = net[1].running_mean.clone()
    assert functional_activations(net, torch.randn(5, 3)) == {}
    assert net.training and net[1].training and torch.equal(net[1].running_mean, stats)


@pytest.mark.parametrize(
    "net", [n for n in NETWORKS if n.requires in ("torchvision", "timm")], ids=lambda n: n.name
)
def test_third_party_networks_binary_where_they_have_modules_and_named_where_not(
    net: Net,
) -> None:
    model = net.build().eval()
    x = net.example()
    before = model(x)
    count = sum(1 for m in model.modules() if isinstance(m, ACTIVATION_TYPES))
    found = functional_activations(model, x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            _, report = sparsify(
                model,
                0.5,
                mode="mp",
                activations="binary",
                return_report=True,
                example_inputs=x,
                # weight-standardised convs compute with a dense weight: the guard refuses them
                filter=lambda module, name: "StdConv" not in type(module).__name__,
            )
        except SpikeLotteryError as exc:
            assert count == 0 and "found no activation module" in str(exc)
            assert found, "a network with no activation module calls them as functions"
            return
    assert len(report.binarized) >= 1
    assert not any(isinstance(m, ACTIVATION_TYPES) for m in model.modules())
    assert report.functional_activations == found  # the same calls, named before and after
    assert not torch.equal(model(x), before)


def test_a_ticket_file_keeps_its_binary_activations() -> None:
    def build() -> nn.Module:
        torch.manual_seed(3)
        return nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.GELU(), nn.Linear(8, 3))

    net = sparsify(build(), 0.4, mode="mp", activations="binary").eval()
    x = torch.randn(5, 6)

    def roundtrip(tmp: str) -> None:
        save_ticket(net, tmp)
        info = read_ticket_info(tmp)
        assert info.binary_activations == ["2"] and info.format_version == "2"
        loaded = load_ticket(build(), tmp).eval()
        assert isinstance(loaded[2], BinaryActivation) and torch.equal(loaded(x), net(x))
        other = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Identity(), nn.Linear(8, 3))
        with pytest.raises(SpikeLotteryError, match=r"module '2' is a Identity"):
            load_ticket(other, tmp)
        assert type(other[0]) is nn.Linear  # checked before anything changed

    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        roundtrip(f"{folder}/t.safetensors")
        plain = sparsify(build(), 0.4)
        save_ticket(plain, f"{folder}/p.safetensors")
        assert read_ticket_info(f"{folder}/p.safetensors").format_version == "1"


# -- the presets ------------------------------------------------------------------------


def _preset_model(method: str, **values: object) -> nn.Module:
    model = "spikformer_micro" if "pep" in method or "multisp" in method else "vgg_tiny"
    cfg = TrainConfig.for_method(
        method, model=model, dataset="digits", resolution=16, out=None, **values
    )
    return build_model(cfg, dataset_info("digits", resolution=16))


_PAPER_BINARY = {"mplt": None, "pepsp-lt": "patch_embed", "multisp-lt": "patch_embed"}


@pytest.mark.parametrize("method", list(METHODS))
def test_each_preset_builds_the_activations_and_counts_it_says(method: str) -> None:
    preset = METHODS[method]
    values = {"search_timesteps": 2} if preset.early_time else {}
    model = _preset_model(method, **values)
    binary = [n for n, m in model.named_modules() if isinstance(m, BinaryActivation)]
    relus = [n for n, m in model.named_modules() if isinstance(m, nn.ReLU)]
    neurons = [n for n, m in model.named_modules() if isinstance(m, LIFNeuron)]
    if method in _PAPER_BINARY:
        where = _PAPER_BINARY[method]
        assert binary, f"{method}: the paper's multi-prize ANN ticket has binary activations"
        if where is None:  # every hidden activation: no ReLU between binarised layers
            assert relus == []
        else:  # the ConvPEP's activations binary, the rest of the ANN transformer ReLU
            assert all(n.startswith(where) for n in binary)
            assert not [n for n in relus if n.startswith(where)]
            assert relus, "the blocks after the patch embedding keep their ReLUs"
    else:
        assert binary == []
        if preset.fixed["spiking"]:
            assert neurons and relus == []
        else:
            assert relus and neurons == []
    for name, layer in model.named_modules():
        if isinstance(layer, SubnetLayer):
            assert layer.mode == preset.fixed["mode"]
            if preset.fixed.get("scope", "layer") == "layer":
                n = layer.scores.numel()
                assert int(layer.mask().sum()) == kept_count(n, 0.4) == layer.kept, name


def test_the_relu_variants_differ_from_the_paper_presets_only_in_activations() -> None:
    for name in ("mplt", "pepsp-lt", "multisp-lt"):
        paper, relu = METHODS[name], METHODS[f"{name}-relu"]
        assert paper.fixed["activations"] == "binary" and relu.fixed["activations"] == "keep"
        assert {k: v for k, v in paper.fixed.items() if k != "activations"} == {
            k: v for k, v in relu.fixed.items() if k != "activations"
        }
        assert paper.defaults == relu.defaults


def test_a_spiking_run_refuses_binary_activations() -> None:
    with pytest.raises(ValueError, match="spikes are binary already"):
        TrainConfig(activations="binary", spiking=True, out=None)


def test_runs_recorded_before_binary_activations_are_read_as_they_ran() -> None:
    old = TrainConfig.for_method("mplt-relu", out=None).to_dict()
    del old["activations"]
    old["method"] = "mplt"
    cfg = TrainConfig.from_record(old)
    assert cfg.method == "mplt-relu" and cfg.activations == "keep"
    assert TrainConfig.from_record(TrainConfig.for_method("mplt", out=None).to_dict()).method == (
        "mplt"
    )


def test_the_old_random_name_warns_and_means_random_trained() -> None:
    with pytest.warns(FutureWarning, match="'random-trained'"):
        cfg = TrainConfig.for_method("random", out=None)
    assert cfg.method == "random-trained" and cfg.search == "random"


# -- the control ------------------------------------------------------------------------


def _tiny_method(method: str, **changes: object) -> TrainConfig:
    """The quick test run as a run of ``method`` (the preset's settings win)."""
    values = {
        k: v for k, v in tiny().to_dict().items() if k not in {*METHODS[method].fixed, "method"}
    }
    values.update(changes)
    return TrainConfig.for_method(method, **values)


def test_random_frozen_trains_nothing_the_search_does_not() -> None:
    res = run(_tiny_method("random-frozen", epochs=1))
    layers = [m for m in res.model.modules() if isinstance(m, SubnetLayer)]
    assert layers and all(not m.scores.requires_grad for m in layers)
    assert all(not m.frozen_weight.requires_grad for m in layers)
    for layer in layers:
        assert int(layer.mask().sum()) == kept_count(layer.scores.numel(), 0.4)
    trained = {n for n, p in res.model.named_parameters() if p.requires_grad}
    assert trained and all(".bn." in n or n.startswith("bn") or "head.bias" in n for n in trained)


def test_the_score_search_beats_its_frozen_random_control_on_the_digits() -> None:
    """edge-popup's control: a random subnetwork of the same frozen weights is near chance."""
    common = {"epochs": 2, "max_batches": None, "batch_size": 64, "timesteps": 2}
    searched = run(_tiny_method("slt", **common))
    control = run(_tiny_method("random-frozen", **common))
    assert control.accuracy < 0.35  # chance is 0.10
    assert searched.accuracy > control.accuracy + 0.3


def test_copies_of_binary_activations_are_independent() -> None:
    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    binarize_activations(net)
    twin = copy.deepcopy(net)
    restore_activations(twin)
    assert isinstance(net[1], BinaryActivation) and type(twin[1]) is nn.ReLU
