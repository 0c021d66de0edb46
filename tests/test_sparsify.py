"""sparsify / densify / summary on user models, SpikingJelly networks, and every error path."""

from __future__ import annotations

import io
import logging

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given
from torch import nn

from spikelottery import SpikeLotteryError, SubnetConv, SubnetLinear, densify, sparsify, summary
from spikelottery.functional import kept_count
from spikelottery.layers import SubnetLayer
from spikelottery.summary import kept_fraction


class Custom(nn.Module):
    """A Sequential inside a ModuleDict inside a custom class."""

    def __init__(self) -> None:
        super().__init__()
        self.parts = nn.ModuleDict(
            {
                "features": nn.Sequential(
                    nn.Conv2d(3, 8, 3, padding=1),
                    nn.BatchNorm2d(8),
                    nn.ReLU(),
                    nn.AdaptiveAvgPool2d(2),
                ),
                "head": nn.Sequential(nn.Flatten(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4)),
            }
        )
        self.gate = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(self.parts["head"](self.parts["features"](x)))


NAMES = ["parts.features.0", "parts.head.1", "parts.head.3", "gate"]


def test_nested_user_model() -> None:
    model = Custom()
    out, report = sparsify(model, 0.4, return_report=True)
    assert out is model
    assert report.swapped == NAMES and not report.skipped
    assert "spikelottery_report" not in vars(model)  # no state hidden on the user's model
    for name in NAMES:
        layer = model.get_submodule(name)
        assert isinstance(layer, SubnetLayer) and layer.pa == 0.4
        assert not layer.frozen_weight.requires_grad and layer.scores.requires_grad
    assert isinstance(model.parts["features"][0], nn.Conv2d)  # still a Conv2d for user code
    x = torch.randn(2, 3, 8, 8)
    loss = model(x).sum()
    loss.backward()
    assert all(model.get_submodule(n).scores.grad is not None for n in NAMES)
    # non-swapped parameters (BatchNorm affine) still train
    assert model.parts["features"][1].weight.requires_grad


def test_twice_in_a_row_does_not_wrap_twice() -> None:
    model = sparsify(Custom(), 0.4)
    scores_before = model.gate.scores
    _, report = sparsify(model, 0.6, mode="mp", return_report=True)
    assert report.swapped == [] and report.updated == NAMES
    assert model.gate.scores is scores_before
    assert model.gate.pa == 0.6 and model.gate.mode == "mp"
    assert type(model.gate) is SubnetLinear
    assert not any(
        isinstance(c, SubnetLayer)
        for m in model.modules()
        if isinstance(m, SubnetLayer)
        for c in m.children()
    )


def test_spikingjelly_multistep_network() -> None:
    sj = pytest.importorskip("spikingjelly.activation_based")
    from spikingjelly.activation_based import functional, layer, neuron

    net = nn.Sequential(
        layer.Conv2d(2, 8, 3, padding=1, bias=False),
        layer.BatchNorm2d(8),
        neuron.LIFNode(tau=2.0),
        layer.Flatten(),
        layer.Linear(8 * 6 * 6, 5),
        neuron.LIFNode(tau=2.0),
    )
    functional.set_step_mode(net, "m")
    x = (torch.rand(4, 3, 2, 6, 6) > 0.7).float()  # [T, B, C, H, W]
    net(x)  # the reset cache is filled here
    functional.reset_net(net)
    sparsify(net, 0.5, mode="mp")
    assert isinstance(net[0], layer.Conv2d) and isinstance(net[0], SubnetConv)
    assert net[0].step_mode == "m" and isinstance(net[4], SubnetLinear)
    out = net(x)
    assert out.shape == (4, 3, 5)
    out.sum().backward()
    assert net[0].scores.grad is not None
    functional.reset_net(net)
    assert all(
        float(torch.as_tensor(m.v).abs().sum()) == 0 for m in net if isinstance(m, neuron.LIFNode)
    )
    assert sj is not None


def test_filter_by_regex_type_and_callable() -> None:
    model, report = sparsify(Custom(), 0.3, filter=r"^parts\.head", return_report=True)
    assert report.swapped == ["parts.head.1", "parts.head.3"]
    assert report.skipped["gate"] == "excluded by filter"
    assert type(model.gate) is nn.Linear and model.gate.weight.requires_grad

    _, report = sparsify(Custom(), 0.3, filter=nn.Conv2d, return_report=True)
    assert report.swapped == ["parts.features.0"]

    _, report = sparsify(
        Custom(), 0.3, filter=lambda m, name: name.endswith("3"), return_report=True
    )
    assert report.swapped == ["parts.head.3"]


def test_layer_pa_overrides() -> None:
    model = sparsify(Custom(), 0.5, layer_pa={"gate": 0.1, r"parts\.head\.\d": 0.8})
    assert model.gate.pa == 0.1
    assert model.parts["head"][1].pa == 0.8 and model.parts["head"][3].pa == 0.8
    assert model.parts["features"][0].pa == 0.5


def test_batchnorm_nonaffine() -> None:
    model = sparsify(Custom(), 0.5, batchnorm="nonaffine")
    bn = model.parts["features"][1]
    assert not bn.weight.requires_grad and torch.all(bn.weight == 1) and torch.all(bn.bias == 0)
    assert "weight" in bn.state_dict()  # keys stay: densify still loads strictly
    x = torch.randn(4, 3, 8, 8)
    model.train()
    model(x)
    assert bn.num_batches_tracked.item() == 1  # running statistics still update


def test_state_dict_roundtrip_weights_only(tmp_path) -> None:
    torch.manual_seed(1)
    model = sparsify(Custom(), 0.4, mode="mp")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, SubnetLayer):
                m.scores.normal_()
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    fresh = sparsify(Custom(), 0.4, mode="mp")
    fresh.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 8, 8)
    model.eval()
    fresh.eval()
    torch.testing.assert_close(fresh(x), model(x))
    for name in NAMES:
        assert torch.equal(fresh.get_submodule(name).mask(), model.get_submodule(name).mask())


@pytest.mark.parametrize("mode", ["lt", "mp"])
def test_densify_equivalence_and_strict_load(mode: str) -> None:
    model = sparsify(Custom(), 0.4, mode=mode)
    model.eval()
    x = torch.randn(3, 3, 8, 8)
    expected = model(x)
    densify(model)
    assert not any(isinstance(m, SubnetLayer) for m in model.modules())
    torch.testing.assert_close(model(x), expected)
    original = Custom().eval()
    original.load_state_dict(model.state_dict(), strict=True)
    torch.testing.assert_close(original(x), expected)
    assert int((original.gate.weight != 0).sum()) == kept_count(16, 0.4)


def test_densify_spikingjelly_restores_class() -> None:
    pytest.importorskip("spikingjelly")
    from spikingjelly.activation_based import layer

    net = nn.Sequential(layer.Conv2d(2, 3, 3, step_mode="m"))
    densify(sparsify(net, 0.5))
    assert type(net[0]) is layer.Conv2d and net[0].step_mode == "m"


@given(pa=st.floats(0.0, 0.95).map(lambda p: round(p, 2)), mode=st.sampled_from(["lt", "mp"]))
def test_summary_counts(pa: float, mode: str) -> None:
    model = sparsify(Custom(), pa, mode=mode)
    s = summary(model)
    sizes = {
        "parts.features.0": 8 * 3 * 9,
        "parts.head.1": 32 * 16,
        "parts.head.3": 16 * 4,
        "gate": 16,
    }
    assert [r["name"] for r in s.rows] == NAMES
    for row in s.rows:
        assert row["kept"] == kept_count(sizes[row["name"]], pa)
        assert (row["alpha"] is not None) == (mode == "mp")
    assert s.kept_weights == sum(kept_count(n, pa) for n in sizes.values())
    assert s.total_weights == sum(sizes.values())
    assert abs(kept_fraction(model) - s.kept_fraction) < 1e-12
    text = str(s)
    assert "gate" in text and "sparsity" in text
    assert s.to_dict()["kept_weights"] == s.kept_weights


def test_report_logged_and_printed(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    with caplog.at_level(logging.INFO, logger="spikelottery"):
        sparsify(Custom(), 0.4, verbose=True)
    assert "4 swapped" in caplog.text
    assert "swapped  parts.head.1" in capsys.readouterr().out


def test_multihead_attention_in_proj_and_out_proj_masked() -> None:
    class Attn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.mha = nn.MultiheadAttention(8, 2)
            self.fc = nn.Linear(8, 2)

    model, report = sparsify(Attn(), 0.5, return_report=True)
    assert "mha.out_proj" in report.swapped
    assert isinstance(model.mha.out_proj, nn.modules.linear.NonDynamicallyQuantizableLinear)
    assert isinstance(model.mha.out_proj, SubnetLinear)
    assert "mha" in report.swapped and not report.skipped
    assert model.mha.masked_names == ("in_proj_weight",)
    assert model.mha.out_proj is model.mha._modules["out_proj"]


# -- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arg,value", [("pa", 1.0), ("pa", -0.2), ("pb", 1.0), ("pb", float("nan"))]
)
def test_ratio_errors(arg: str, value: float) -> None:
    kwargs = {"pa": 0.5, "pb": 0.0, arg: value}
    with pytest.raises(ValueError, match=rf"{arg}.*{value}"):
        sparsify(Custom(), kwargs["pa"], kwargs["pb"])


def test_filter_matching_nothing() -> None:
    with pytest.raises(SpikeLotteryError, match="matched no"):
        sparsify(Custom(), 0.5, filter="does_not_exist")
    with pytest.raises(SpikeLotteryError, match="matched no"):
        sparsify(nn.Sequential(nn.ReLU()), 0.5)


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="mode"):
        sparsify(Custom(), 0.5, mode="bin")
    with pytest.raises(ValueError, match="init"):
        sparsify(Custom(), 0.5, init="xavier")
    with pytest.raises(ValueError, match="batchnorm"):
        sparsify(Custom(), 0.5, batchnorm="drop")
    with pytest.raises(ValueError, match="regular expression"):
        sparsify(Custom(), 0.5, filter="(")
    with pytest.raises(TypeError, match="filter"):
        sparsify(Custom(), 0.5, filter=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="nn.Module"):
        sparsify("model", 0.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="patch_embed"):
        sparsify(Custom(), 0.5, patch_embed="x")
    with pytest.raises(ValueError, match=r"layer_pa\['gate'\]"):
        sparsify(Custom(), 0.5, layer_pa={"gate": 2.0})
    with pytest.raises(SpikeLotteryError, match="matches no"):
        sparsify(Custom(), 0.5, layer_pa={"nothing": 0.2})


def test_failure_rolls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    import spikelottery.layers as layers_mod

    model = Custom()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    real = layers_mod.SubnetLayer.from_dense.__func__
    calls = {"n": 0}

    def flaky(cls, module, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("boom")
        return real(cls, module, *args, **kwargs)

    monkeypatch.setattr(layers_mod.SubnetLayer, "from_dense", classmethod(flaky))
    with pytest.raises(RuntimeError, match="boom"):
        sparsify(model, 0.5)
    assert not any(isinstance(m, SubnetLayer) for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_summary_without_subnet_layers() -> None:
    with pytest.raises(SpikeLotteryError, match="sparsify"):
        summary(Custom())


def test_pb_zero_removes_the_patch_selector_and_none_leaves_it() -> None:
    from spikelottery import create_model
    from spikelottery.patch import find_patch_selectors

    model = create_model("spikformer_micro", timesteps=1)
    _, report = sparsify(model, 0.4, 0.3, filter="patch_embed", return_report=True)
    assert [name for name, _ in find_patch_selectors(model)] == ["patch_embed"]
    assert report.patch_embed == "patch_embed"
    sparsify(model, 0.5, filter="patch_embed")  # pb not given: the selector is not touched
    assert [sel.pb for _, sel in find_patch_selectors(model)] == [0.3]
    sparsify(model, 0.4, 0.0, filter="patch_embed")
    assert find_patch_selectors(model) == []
    assert "patch_selector" not in dict(model.patch_embed.named_children())
    model.eval()
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_layer_mode_overrides() -> None:
    model = sparsify(Custom(), 0.5, mode="mp", layer_mode={"gate": "lt", r"parts\.head\.\d": "lt"})
    assert model.gate.mode == "lt" and model.parts["head"][1].mode == "lt"
    assert model.parts["features"][0].mode == "mp"
    with pytest.raises(ValueError, match=r"layer_mode\['gate'\]"):
        sparsify(Custom(), 0.5, layer_mode={"gate": "binary"})


@pytest.mark.parametrize("fn", [summary, densify, kept_fraction])
def test_non_modules_are_a_type_error_naming_the_argument(fn) -> None:
    with pytest.raises(TypeError, match=r"model must be an nn.Module, got str"):
        fn("x")


def test_a_bare_layer_is_explained() -> None:
    with pytest.raises(TypeError, match=r"itself a layer.*nn.Sequential\(layer\)"):
        sparsify(nn.Linear(3, 2), 0.5)
