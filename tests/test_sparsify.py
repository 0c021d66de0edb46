"""sparsify / densify / summary on user models, SpikingJelly networks, and every error path."""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Callable
from typing import Any

import hypothesis.strategies as st
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from torch import Tensor, nn
from torch.nn.utils import prune

from _model_state import assert_unchanged, snapshot
from spikelottery import (
    SpikeLotteryError,
    SubnetConv,
    SubnetLinear,
    check_ticket,
    densify,
    sparsify,
    summary,
)
from spikelottery.functional import kept_count
from spikelottery.layers import SubnetLayer
from spikelottery.models import create_model, min_img_size
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


# --- from test_review_cases.py: Regression tests for defects an independent review found on third-party networks.


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(6, 6)
        self.b = nn.Linear(6, 6)
        self.b.weight = self.a.weight
        self.b.bias = self.a.bias

    def forward(self, x: Tensor) -> Tensor:
        return self.b(torch.tanh(self.a(x)))


def test_d3_tied_layers_are_updated_together_or_not_at_all() -> None:
    model = sparsify(Tied(), 0.5, mode="lt")
    with pytest.raises(SpikeLotteryError, match=r"'a', 'b' share.*update all"):
        sparsify(model, 0.8, filter="^a$")
    with pytest.raises(SpikeLotteryError, match="different pa or mode"):
        sparsify(model, 0.8, mode="lt", layer_mode={"b": "mp"})
    assert model.a.pa == model.b.pa == 0.5  # the failed calls changed nothing
    sparsify(model, 0.8, mode="mp")
    assert (model.a.pa, model.a.mode) == (model.b.pa, model.b.mode) == (0.8, "mp")
    x = torch.randn(3, 6)
    torch.testing.assert_close(densify(model)(x), model(x))


def test_d10_a_tied_bias_stays_tied() -> None:
    model = sparsify(Tied(), 0.5)
    assert model.a.bias is model.b.bias


def test_d4_assigning_weight_is_refused_and_frozen_weight_is_assignable() -> None:
    net = sparsify(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)), 0.5, mode="mp").eval()
    with pytest.raises(SpikeLotteryError, match=r"cannot assign `weight`.*densify"):
        torch.nn.utils.fusion.fuse_conv_bn_eval(net[0], net[1])
    fused = torch.nn.utils.fusion.fuse_conv_bn_eval(*densify(net))  # the documented way
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(fused(x), net(x), rtol=1e-4, atol=1e-5)

    layer = sparsify(nn.Sequential(nn.Linear(4, 3)), 0.5)[0]
    new = nn.Parameter(torch.ones(3, 4), requires_grad=False)
    layer.frozen_weight = new
    assert layer.frozen_weight is new and int((layer.weight == 1).sum()) == layer.kept
    with pytest.raises(ValueError, match="shape"):
        layer.frozen_weight = nn.Parameter(torch.ones(2, 2))
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    layer.load_state_dict(state, assign=True)  # assigning through load_state_dict is fine


def test_d5_the_densify_comparison_runs_on_spikingjelly_models() -> None:
    pytest.importorskip("spikingjelly")
    from spikingjelly.activation_based import functional, layer, neuron

    class SJNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = layer.Linear(8, 8, step_mode="m")
            self.sn = neuron.LIFNode(step_mode="m", v_threshold=0.2)
            self.fc2 = nn.Linear(8, 3)

        def forward(self, x: Tensor) -> Tensor:  # reads fc2's stored weight: a bypass
            return self.sn(self.fc1(x)).mean(0) @ self.fc2._parameters["weight"].t()

    net = sparsify(SJNet(), 0.5)
    result = check_ticket(net, torch.rand(4, 2, 8) * 3)
    functional.reset_net(net)
    assert result.densify_error is not None and result.densify_mismatch and not result.ok
    assert isinstance(net.fc2, SubnetLayer)  # the in-place comparison restored the layers


def test_d6_a_detached_read_is_no_gradient_not_unused() -> None:
    class Detached(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(6, 6)
            self.out = nn.Linear(6, 2)

        def forward(self, x: Tensor) -> Tensor:
            return self.out(F.linear(x, self.fc.weight.detach(), self.fc.bias))

    result = check_ticket(sparsify(Detached(), 0.5), torch.randn(4, 6))
    assert result.no_gradient == ["fc"] and not result.ok


def test_d8_a_pruned_bias_is_refused_by_name() -> None:
    net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    prune.l1_unstructured(net[1], "bias", 0.5)
    with pytest.raises(SpikeLotteryError, match=r"layer '1' computes its bias"):
        sparsify(net, 0.5)


def test_d9_weights_left_dense_are_all_reported() -> None:
    class LoRALinear(nn.Linear):
        def __init__(self) -> None:
            super().__init__(6, 6)
            self.lora_a = nn.Linear(6, 2, bias=False)

    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv3d = nn.Conv3d(1, 2, 3)
            self.deconv = nn.ConvTranspose2d(2, 2, 3)
            self.rnn = nn.LSTM(4, 4)
            self.emb = nn.Embedding(10, 4)
            self.lora = LoRALinear()
            self.fc = nn.Linear(4, 2)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, report = sparsify(Mixed(), 0.5, return_report=True)
    # Conv3d, transposed convs and recurrent layers are masked since issue 26.
    assert report.swapped == ["conv3d", "deconv", "rnn", "lora", "fc"]
    assert "stay" in report.skipped["lora.lora_a"]
    assert "emb" not in report.skipped  # a lookup table, not a synaptic layer


def test_r2_dtype_round_trips_refresh_the_cache() -> None:
    from spikelottery import SubnetLinear
    from spikelottery.functional import topk_mask

    for seed in range(40):
        torch.manual_seed(seed)
        layer = SubnetLinear(16, 16, pa=0.5, mode="lt")
        with torch.no_grad():
            layer.frozen_weight.mul_(1.0001)
        _ = layer.weight
        layer.half()
        layer.float()
        with torch.no_grad():
            want = layer.frozen_weight * topk_mask(layer.scores, 0.5)
            assert torch.equal(layer.weight, want)
        assert torch.equal(layer.mask(), topk_mask(layer.scores, 0.5))


def test_r2_writing_the_returned_mask_does_not_change_the_ticket() -> None:
    net = sparsify(nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)), 0.5)
    x = torch.randn(3, 8)
    y = net(x)
    m = net[0].mask()
    m[0] = ~m[0]
    net[0].frozen_weight.requires_grad_(True)  # forces the effective weight to be rebuilt
    assert torch.equal(net(x), y)


def test_r2_densify_keeps_a_tied_bias_tied() -> None:
    model = densify(sparsify(Tied(), 0.5))
    assert model.a.bias is model.b.bias


def test_r2_dataparallel_replicas_compute_the_ticket() -> None:
    layer = sparsify(nn.Sequential(nn.Linear(6, 4)), 0.5)[0]
    x = torch.randn(3, 6)
    replica = layer._replicate_for_data_parallel()
    for name in ("weight", "bias", "scores"):  # what torch.nn.parallel.replicate does
        setattr(replica, name, layer._parameters[name])
    torch.testing.assert_close(replica(x), layer(x))


def test_tied_layers_count_once_in_summary_and_kept_fraction() -> None:
    # Third review: two Linear layers tied to one weight were counted twice in the totals.
    torch.manual_seed(0)
    a, b = nn.Linear(8, 16), nn.Linear(8, 16)
    b.weight = a.weight
    net = nn.ModuleDict({"a": a, "b": b, "c": nn.Linear(16, 4)})
    sparsify(net, 0.6)
    unique = 16 * 8 + 4 * 16
    kept = (16 * 8 - int(0.6 * 16 * 8)) + (4 * 16 - int(0.6 * 4 * 16))
    s = summary(net)
    assert [r["name"] for r in s.rows] == ["a", "b", "c"]  # each tied layer listed
    assert (s.total_weights, s.kept_weights) == (unique, kept)
    assert kept_fraction(net) == kept / unique


# --- from test_bad_inputs.py: Bad inputs to the Python API, the engine and the model zoo: each one gets a named error.


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: summary("x"),
            TypeError,
            r"summary\(model\): model must be an nn\.Module, got str",
        ),
        (
            lambda: densify("x"),
            TypeError,
            r"densify\(model\): model must be an nn\.Module, got str",
        ),
        (
            lambda: sparsify(nn.Linear(4, 3), 0.4),
            TypeError,
            r"Linear is itself a layer: wrap it \(nn\.Sequential\(layer\)\)",
        ),
        (
            lambda: create_model("vgg_tiny", depht=3),
            TypeError,
            r"create_model\('vgg_tiny'\): unknown argument\(s\) 'depht' of VGG; valid ones: config",
        ),
        (lambda: min_img_size("vgg11"), ValueError, r"unknown model name 'vgg11'"),
    ],
    ids=[
        "summary-str",
        "densify-str",
        "sparsify-bare-linear",
        "create_model-kwarg",
        "min_img_size",
    ],
)
def test_api_arguments(call: Callable[[], Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call()


def test_bare_linear_is_not_modified_by_sparsify() -> None:
    layer = nn.Linear(4, 3)
    before = snapshot(layer)
    with pytest.raises(TypeError, match="SubnetConv/SubnetLinear.from_dense"):
        sparsify(layer, 0.4)
    assert type(layer) is nn.Linear and not hasattr(layer, "scores")
    assert_unchanged(layer, before)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_kept_fraction_refuses_non_finite_scores(value: float) -> None:
    net = sparsify(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), 0.5)
    with torch.no_grad():
        net[2].scores[0, 0] = value
    with pytest.raises(SpikeLotteryError, match="layer '2' has NaN or infinite scores"):
        kept_fraction(net)
