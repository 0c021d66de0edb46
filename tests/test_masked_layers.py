"""Every layer kind of ``LAYER_KINDS`` beyond conv2d/linear: the ticket is really used.

For Conv3d, the transposed convs, Bilinear, MultiheadAttention (packed and separate
projections) and RNN/LSTM/GRU: the sparse model equals its ``densify()`` copy, every set
of scores gets a gradient, tickets round-trip bit-exactly, and noise written into the
masked-out entries of the frozen weights leaves the output unchanged (while noise in the
kept entries changes it): the independent check that the forward computes with the mask.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import Tensor, nn
from torch.nn.utils import parametrizations, prune

from spikelottery import SpikeLotteryError, densify, sparsify, summary
from spikelottery.functional import kept_count
from spikelottery.layers import LAYER_KINDS, SubnetLayer, masked_names, subnet_class_for
from spikelottery.subnet import scores_name
from spikelottery.tickets import load_ticket, save_ticket

# PyTorch's own note for LSTM(proj_size=...) on CPU; not about the ticket.
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections:UserWarning")


class Wrap(nn.Module):
    """One layer behind a forward that returns one tensor."""

    def __init__(self, layer: nn.Module, call: Callable[[nn.Module, tuple[Tensor, ...]], Tensor]):
        super().__init__()
        self.layer = layer
        self.call = call

    def forward(self, *xs: Tensor) -> Tensor:
        return self.call(self.layer, xs)


def _first(layer: nn.Module, xs: tuple[Tensor, ...]) -> Tensor:
    return layer(*xs)


def _self_attention(layer: nn.Module, xs: tuple[Tensor, ...]) -> Tensor:
    return layer(xs[0], xs[0], xs[0])[0]


def _cross_attention(layer: nn.Module, xs: tuple[Tensor, ...]) -> Tensor:
    return layer(xs[0], xs[1], xs[1])[0]


def _recurrent(layer: nn.Module, xs: tuple[Tensor, ...]) -> Tensor:
    return layer(xs[0])[0]


# name -> (layer factory, forward, input shapes)
CASES: dict[str, tuple[Callable[[], nn.Module], Callable[..., Tensor], list[tuple[int, ...]]]] = {
    "conv3d": (lambda: nn.Conv3d(2, 4, 3, padding=1), _first, [(2, 2, 4, 5, 5)]),
    "conv_transpose1d": (lambda: nn.ConvTranspose1d(3, 4, 3, stride=2), _first, [(2, 3, 7)]),
    "conv_transpose2d": (
        lambda: nn.ConvTranspose2d(3, 4, 3, stride=2, groups=1),
        _first,
        [(2, 3, 5, 5)],
    ),
    "conv_transpose3d": (lambda: nn.ConvTranspose3d(2, 3, 2), _first, [(1, 2, 3, 3, 3)]),
    "bilinear": (lambda: nn.Bilinear(5, 6, 4), _first, [(3, 5), (3, 6)]),
    "mha_in_proj": (
        lambda: nn.MultiheadAttention(8, 2, batch_first=True),
        _self_attention,
        [(2, 5, 8)],
    ),
    "mha_qkv": (
        lambda: nn.MultiheadAttention(8, 2, kdim=6, vdim=6, bias=False),
        _cross_attention,
        [(5, 2, 8), (4, 2, 6)],
    ),
    "rnn": (lambda: nn.RNN(4, 6, nonlinearity="relu"), _recurrent, [(5, 2, 4)]),
    "lstm": (
        lambda: nn.LSTM(4, 6, num_layers=2, bidirectional=True, batch_first=True),
        _recurrent,
        [(2, 5, 4)],
    ),
    "lstm_proj": (lambda: nn.LSTM(4, 6, proj_size=3), _recurrent, [(5, 2, 4)]),
    "gru": (lambda: nn.GRU(4, 6, num_layers=2, bidirectional=True), _recurrent, [(5, 2, 4)]),
}


def _model(case: str) -> tuple[nn.Module, tuple[Tensor, ...]]:
    make, call, shapes = CASES[case]
    return Wrap(make(), call), tuple(torch.randn(*s) for s in shapes)


def _noise_masked_out(layer: SubnetLayer, kept: bool = False) -> None:
    """Write noise into the masked-out (or, with ``kept``, the kept) frozen entries."""
    with torch.no_grad():
        for name in layer.masked_names:
            where = layer.mask(name)
            where = where if kept else ~where
            weight = layer.frozen_of(name)
            noise = torch.randn_like(weight) * 10
            weight[where] = weight[where] + noise[where]


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("mode", ["lt", "mp"])
def test_swapped_and_equal_to_its_densified_copy(case: str, mode: str) -> None:
    model, xs = _model(case)
    dense_cls = type(model.layer)
    names = masked_names(model.layer)
    _, report = sparsify(model, 0.4, mode=mode, return_report=True, example_inputs=xs)
    layer = model.layer
    assert isinstance(layer, SubnetLayer) and isinstance(layer, dense_cls)
    assert "layer" in report.swapped and "layer" not in report.skipped
    assert layer.masked_names == names and names
    for name in layer.masked_names:
        n = layer.frozen_of(name).numel()
        assert int(layer.mask(name).sum()) == kept_count(n, 0.4)  # per weight tensor
    out = model(*xs)
    dense = densify(copy.deepcopy(model))
    assert type(dense.layer) is dense_cls
    assert torch.equal(dense(*xs), out)
    fresh = Wrap(CASES[case][0](), CASES[case][1])
    fresh.load_state_dict(dense.state_dict())  # strict: the original architecture's keys
    assert torch.equal(fresh(*xs), out)


@pytest.mark.parametrize("case", list(CASES))
def test_every_set_of_scores_gets_a_gradient(case: str) -> None:
    model, xs = _model(case)
    sparsify(model, 0.5)
    model(*xs).pow(2).sum().backward()
    layer = model.layer
    for name in layer.masked_names:
        grad = layer.scores_of(name).grad
        assert grad is not None and bool(grad.abs().sum() > 0), name
        assert layer.frozen_of(name).grad is None  # the weights stay frozen
    assert all(
        p.grad is None for n, p in layer.named_parameters(recurse=False) if "scores" not in n
    )


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("mode", ["lt", "mp"])
def test_noise_in_masked_out_weights_changes_nothing(case: str, mode: str) -> None:
    model, xs = _model(case)
    sparsify(model, 0.5, mode=mode)
    layer = model.layer
    before = model(*xs)
    model.eval()
    with torch.no_grad():  # PyTorch's fused inference paths (MHA's fast path)
        before_eval = model(*xs)
    _noise_masked_out(layer)
    assert torch.equal(model(*xs), before)
    with torch.no_grad():
        assert torch.equal(model(*xs), before_eval)
    _noise_masked_out(layer, kept=True)  # the check can fail: kept weights do matter
    with torch.no_grad():
        assert not torch.allclose(model(*xs), before_eval)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("mode", ["lt", "mp"])
@pytest.mark.parametrize("include_scores", [False, True])
def test_ticket_round_trip_is_bit_exact(
    case: str, mode: str, include_scores: bool, tmp_path: Path
) -> None:
    model, xs = _model(case)
    sparsify(model, 0.3, mode=mode)
    with torch.no_grad():
        for name in model.layer.masked_names:
            model.layer.scores_of(name).normal_()
    path = save_ticket(model, tmp_path / "t.safetensors", include_scores=include_scores)
    fresh = load_ticket(Wrap(CASES[case][0](), CASES[case][1]), path)
    layer, other = model.layer, fresh.layer
    assert type(other) is type(layer) and other.masked_names == layer.masked_names
    for name in layer.masked_names:
        assert torch.equal(other.mask(name), layer.mask(name))
        # equal values (a masked-out entry may be -0.0 in one and 0.0 in the other)
        assert torch.equal(other.effective_weight(name), layer.effective_weight(name))
        if include_scores:
            assert torch.equal(other.scores_of(name), layer.scores_of(name))
    assert torch.equal(fresh(*xs), model(*xs))
    # and into a model sparsified with other settings
    again = load_ticket(sparsify(Wrap(CASES[case][0](), CASES[case][1]), 0.7), path)
    assert torch.equal(again(*xs), model(*xs))
    # a densified copy bakes the same ticket
    assert torch.equal(densify(model, copy=True, patches="remove")(*xs), model(*xs))


def test_ticket_of_another_configuration_is_refused(tmp_path: Path) -> None:
    model, _ = _model("lstm")
    path = save_ticket(sparsify(model, 0.5), tmp_path / "t.safetensors")
    other = Wrap(nn.LSTM(4, 6, num_layers=1, bidirectional=True, batch_first=True), _recurrent)
    with pytest.raises(SpikeLotteryError, match="weight_ih_l1"):
        load_ticket(other, path)


def test_state_dict_keys_and_summary_rows() -> None:
    model, _ = _model("gru")
    sparsify(model, 0.5)
    keys = set(model.state_dict())
    assert {"layer.weight_ih_l0", "layer.weight_ih_l0_scores", "layer.bias_hh_l1_reverse"} <= keys
    rows = {r["name"] for r in summary(model).rows}
    assert rows == {f"layer.{n}" for n in model.layer.masked_names}
    assert scores_name("weight_hh_l0") == "weight_hh_l0_scores"


def test_recurrent_layer_keeps_working_after_to_and_flatten() -> None:
    model, xs = _model("lstm")
    sparsify(model, 0.5)
    model.layer.flatten_parameters()  # a no-op: a flat copy would bypass the mask
    out = model(*xs)
    model.double()
    assert torch.allclose(model(*(x.double() for x in xs)), out.double(), atol=1e-5)
    assert model.layer.mode == "LSTM" and model.layer.mask_mode == "mp"  # the default


def test_attention_out_proj_is_its_own_masked_layer_and_fast_path_sees_both() -> None:
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    model = sparsify(Wrap(mha, _self_attention), 0.5)
    assert model.layer.masked_names == ("in_proj_weight",)
    assert isinstance(model.layer.out_proj, SubnetLayer)
    x = torch.randn(2, 5, 8)
    model.eval()
    with torch.no_grad():
        before = model(x)
        _noise_masked_out(model.layer.out_proj)
        assert torch.equal(model(x), before)


def test_global_scope_refuses_layers_with_several_masked_tensors() -> None:
    model, _ = _model("gru")
    with pytest.raises(SpikeLotteryError, match="scope='layer'"):
        sparsify(model, 0.5, scope="global")
    assert not isinstance(model.layer, SubnetLayer)  # rolled back


def test_one_list_of_supported_types() -> None:
    from spikelottery._modules import CONVERTIBLE
    from spikelottery.tickets._common import DENSE_BASES

    dense = tuple(k.dense for k in LAYER_KINDS)
    assert CONVERTIBLE == dense == DENSE_BASES
    for cls in dense:
        sub = subnet_class_for(cls)
        assert issubclass(sub, cls) and issubclass(sub, SubnetLayer)


def test_energy_counts_the_new_kinds() -> None:
    from spikelottery.energy import estimate_energy

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.LSTM(4, 6)
            self.bil = nn.Bilinear(6, 6, 3)

        def forward(self, x: Tensor) -> Tensor:
            y = self.rnn(x)[0]
            return self.bil(y, y)

    net = Net()
    x = torch.randn(5, 2, 4)
    dense = estimate_energy(net, x)
    sparse = estimate_energy(sparsify(net, 0.5), x)
    assert dense.macs == sparse.macs > 0
    rows = [r for r in sparse.rows if r.name.startswith(("rnn", "bil"))]
    assert len(rows) == 3 and all(r.density == pytest.approx(0.5, abs=0.02) for r in rows)


# --------------------------------------------------------------------------- properties


@given(
    cin=st.integers(1, 3),
    cout=st.integers(1, 4),
    k=st.integers(1, 3),
    pa=st.floats(0.0, 0.95),
    mode=st.sampled_from(["lt", "mp"]),
    transposed=st.booleans(),
)
def test_property_conv3d_and_transposed(
    cin: int, cout: int, k: int, pa: float, mode: str, transposed: bool
) -> None:
    conv = (nn.ConvTranspose3d if transposed else nn.Conv3d)(cin, cout, k)
    model = sparsify(nn.Sequential(conv), pa, mode=mode)
    x = torch.randn(2, cin, k + 1, k + 1, k + 1)
    layer = model[0]
    assert int(layer.mask().sum()) == kept_count(layer.frozen_weight.numel(), pa)
    out = model(x)
    assert torch.equal(densify(copy.deepcopy(model))(x), out)
    _noise_masked_out(layer)
    assert torch.equal(model(x), out)


@given(
    kind=st.sampled_from([nn.RNN, nn.LSTM, nn.GRU]),
    fin=st.integers(1, 5),
    hidden=st.integers(1, 5),
    layers=st.integers(1, 2),
    bidirectional=st.booleans(),
    pa=st.floats(0.0, 0.95),
    mode=st.sampled_from(["lt", "mp"]),
)
def test_property_recurrent(
    kind: type[nn.Module],
    fin: int,
    hidden: int,
    layers: int,
    bidirectional: bool,
    pa: float,
    mode: str,
) -> None:
    rnn = kind(fin, hidden, num_layers=layers, bidirectional=bidirectional)
    model = sparsify(Wrap(rnn, _recurrent), pa, mode=mode)
    layer = model.layer
    assert len(layer.masked_names) == 2 * layers * (2 if bidirectional else 1)
    for name in layer.masked_names:
        assert int(layer.mask(name).sum()) == kept_count(layer.frozen_of(name).numel(), pa)
    x = torch.randn(3, 2, fin)
    out = model(x)
    assert torch.equal(densify(copy.deepcopy(model))(x), out)
    _noise_masked_out(layer)
    assert torch.equal(model(x), out)


@given(
    heads=st.integers(1, 3),
    head_dim=st.integers(1, 4),
    kdim=st.one_of(st.none(), st.integers(1, 5)),
    pa=st.floats(0.0, 0.95),
    mode=st.sampled_from(["lt", "mp"]),
)
def test_property_attention(
    heads: int, head_dim: int, kdim: int | None, pa: float, mode: str
) -> None:
    e = heads * head_dim
    mha = nn.MultiheadAttention(e, heads, kdim=kdim, vdim=kdim)
    model = sparsify(Wrap(mha, _cross_attention), pa, mode=mode)
    layer = model.layer
    expected = (
        ("in_proj_weight",)
        if kdim is None or kdim == e
        else ("q_proj_weight", "k_proj_weight", "v_proj_weight")
    )
    assert layer.masked_names == expected
    q, kv = torch.randn(4, 2, e), torch.randn(3, 2, kdim or e)
    out = model(q, kv)
    assert torch.equal(densify(copy.deepcopy(model))(q, kv), out)
    _noise_masked_out(layer)
    assert torch.equal(model(q, kv), out)


def test_set_mask_on_a_layer_with_several_masked_tensors() -> None:
    model, _ = _model("gru")
    sparsify(model, 0.5)
    layer = model.layer
    name = layer.masked_names[1]
    n = layer.frozen_of(name).numel()
    mask = torch.zeros(layer.frozen_of(name).shape, dtype=torch.bool)
    mask.view(-1)[: kept_count(n, 0.5)] = True
    layer.set_mask(mask, name)
    assert torch.equal(layer.mask(name), mask) and layer.pa == 0.5
    with pytest.raises(ValueError, match="set_pa first"):
        layer.set_mask(torch.ones_like(mask), name)
    layer.set_pa(0.0)
    for other in layer.masked_names:
        layer.set_mask(torch.ones_like(layer.mask(other)), other)
    assert layer.kept == layer.masked_numel


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.filterwarnings("ignore:Exporting a model to ONNX with a batch_size")
# Not nn.Bilinear and nn.MultiheadAttention: torch's TorchScript exporter has no ONNX op
# for aten::bilinear nor for the attention fast path, dense layers included.
@pytest.mark.parametrize("case", ["conv3d", "conv_transpose2d", "mha_qkv", "lstm", "gru"])
def test_export_onnx_computes_the_ticket(case: str, tmp_path: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    from spikelottery.tickets import export_onnx

    model, xs = _model(case)
    sparsify(model, 0.5, mode="mp").eval()
    names = [f"x{i}" for i in range(len(xs))]
    path = export_onnx(model, tmp_path / "t.onnx", xs, dynamo=False, input_names=names)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    got = ReferenceEvaluator(proto).run(None, {n: x.numpy() for n, x in zip(names, xs)})[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), model(*xs), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case", ["mha_in_proj", "mha_qkv", "gru", "conv3d"])
def test_dataparallel_replicas_compute_the_ticket(case: str) -> None:
    model, xs = _model(case)
    sparsify(model, 0.5)
    layer = model.layer
    replica = layer._replicate_for_data_parallel()
    for name, p in layer._parameters.items():  # what torch.nn.parallel.replicate does
        setattr(replica, name, None if p is None else p * 1.0)
    call = CASES[case][1]
    assert torch.equal(call(replica, xs), call(layer, xs))
    with torch.no_grad():  # the replica's own frozen tensors: noise where the mask is off
        for name in layer.masked_names:
            replica.frozen_of(name)[~layer.mask(name)] += 100.0
    assert torch.equal(call(replica, xs), call(layer, xs))


# ------------------------------------------------- the engine over several masked tensors


def _lstm_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential()
    net.add_module("rnn", nn.LSTM(6, 8, num_layers=2))
    return sparsify(net, 0.5)


def test_search_and_finetune_stages_see_every_masked_tensor() -> None:
    from spikelottery.engine import TrainConfig
    from spikelottery.engine.stages import freeze_masks, make_optimizer, train_kept_weights

    net = _lstm_net()
    rnn = net.rnn
    names = rnn.masked_names
    assert len(names) == 4  # weight_ih/hh of two layers: each its own scores
    cfg = TrainConfig(model="vgg_tiny", dataset="digits")
    opt, _ = make_optimizer(net, cfg, stage="search", steps=1)
    optimised = {id(p) for g in opt.param_groups for p in g["params"]}
    assert all(id(rnn.scores_of(n)) in optimised for n in names)
    train_kept_weights(net)
    assert not any(rnn.scores_of(n).requires_grad for n in names)
    assert all(rnn.frozen_of(n).requires_grad for n in names)
    assert all(p.requires_grad for n, p in rnn.named_parameters() if n.startswith("bias_"))
    freeze_masks(net)
    assert not any(rnn.scores_of(n).requires_grad for n in names)


def test_random_and_restored_masks_fix_every_masked_tensor() -> None:
    from spikelottery.pruning import random_masks, restore_fixed_masks

    net = _lstm_net()
    rnn = net.rnn
    before = {n: rnn.kept_of(n) for n in rnn.masked_names}
    counts = random_masks(net, torch.Generator().manual_seed(0))
    assert counts == {f"rnn.{n}": k for n, k in before.items()}
    masks = {n: rnn.mask(n) for n in rnn.masked_names}
    assert {n: int(m.sum()) for n, m in masks.items()} == before
    state = net.state_dict()
    rnn.set_pa(0.0)
    net.load_state_dict(state)
    assert restore_fixed_masks(net) == counts
    assert all(torch.equal(rnn.mask(n), masks[n]) for n in rnn.masked_names)


def test_magnitude_pruning_refuses_layers_with_several_masked_tensors() -> None:
    from spikelottery.pruning import prune_by_magnitude

    with pytest.raises(SpikeLotteryError, match=r"rnn \(weight_ih_l0, weight_hh_l0"):
        prune_by_magnitude(_lstm_net(), 0.2)


@pytest.mark.parametrize(
    ("make", "tensor"),
    [
        (lambda: nn.MultiheadAttention(6, 2, kdim=3, vdim=4), "k_proj_weight"),
        (lambda: nn.MultiheadAttention(6, 2), "in_proj_weight"),
        (lambda: nn.LSTM(4, 6, proj_size=3), "weight_hr_l0"),
    ],
    ids=["attention-k", "attention-in_proj", "lstm-hr"],
)
@pytest.mark.parametrize("how", ["prune", "parametrization"])
def test_a_computed_masked_tensor_is_refused_not_left_out(make, tensor: str, how: str) -> None:
    """One masked tensor computed by torch.nn.utils.prune or a parametrization: the layer
    is refused naming that tensor. The attention was swapped with its k projection left
    out of the mask (pruned by its own hook, outside the ticket and its kept count)."""
    layer = make()
    if how == "prune":
        prune.l1_unstructured(layer, tensor, 0.5)
    else:
        parametrizations.spectral_norm(layer, tensor)
    model = nn.Sequential(layer)
    with pytest.raises(SpikeLotteryError, match=rf"(?s)layer '0'.*{tensor}.*filter"):
        sparsify(model, 0.5)
    assert not any(isinstance(m, SubnetLayer) for m in model.modules())


def test_from_dense_of_an_attention_copies_its_out_proj() -> None:
    """``from_dense`` without ``share`` is a copy: its ``out_proj`` was the original's own
    module, so sparsifying a model holding the copy swapped the ORIGINAL attention's
    ``out_proj`` for a score-mask layer with new random weights, without a word."""
    torch.manual_seed(0)
    original = nn.MultiheadAttention(8, 2).eval()
    x = torch.randn(3, 1, 8)
    with torch.no_grad():
        before = original(x, x, x)[0]
    layer = SubnetLayer.from_dense(original, 0.5, init="keep")
    assert layer.out_proj is not original.out_proj
    model = sparsify(nn.Sequential(layer), 0.5)
    assert type(original.out_proj) is nn.modules.linear.NonDynamicallyQuantizableLinear
    with torch.no_grad():
        assert torch.equal(original(x, x, x)[0], before)
    assert isinstance(model[0].out_proj, SubnetLayer)  # the copy's own out_proj is masked


def test_to_dense_of_an_attention_bakes_its_out_proj() -> None:
    """``layer.to_dense()`` is a plain attention: its ``out_proj`` was the score-mask layer
    itself (``out_proj.scores`` in its ``state_dict``), in a children dict shared with the
    score-mask layer, so replacing one's ``out_proj`` replaced the other's."""
    torch.manual_seed(0)
    model = sparsify(nn.Sequential(nn.MultiheadAttention(8, 2, kdim=5, vdim=3)), 0.5).eval()
    dense = model[0].to_dense()
    assert type(dense.out_proj) is nn.modules.linear.NonDynamicallyQuantizableLinear
    assert dense._modules is not model[0]._modules
    original = nn.MultiheadAttention(8, 2, kdim=5, vdim=3).eval()
    original.load_state_dict(dense.state_dict(), strict=True)
    q, k, v = torch.randn(4, 2, 8), torch.randn(6, 2, 5), torch.randn(6, 2, 3)
    with torch.no_grad():
        assert torch.equal(original(q, k, v)[0], model[0](q, k, v)[0])
    dense.out_proj = nn.Linear(8, 8)
    assert isinstance(model[0].out_proj, SubnetLayer)
