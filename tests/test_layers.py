"""SubnetConv / SubnetConv1d / SubnetLinear / BinaryActivation."""

from __future__ import annotations

from collections.abc import Callable

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given
from torch import nn

import spikelottery.subnet as subnet_mod
from _model_state import assert_unchanged, snapshot
from spikelottery import BinaryActivation, SubnetConv, SubnetLinear
from spikelottery.functional import kept_count
from spikelottery.layers import SubnetConv1d, SubnetLayer, init_weight_, subnet_class_for

ratios = st.floats(0.0, 0.99).map(lambda p: round(p, 2))


@given(
    cin_g=st.integers(1, 4),
    cout_g=st.integers(1, 4),
    groups=st.integers(1, 3),
    k=st.sampled_from([1, 3]),
    pa=ratios,
    mode=st.sampled_from(["lt", "mp"]),
)
def test_conv_kept_count_grouped(
    cin_g: int, cout_g: int, groups: int, k: int, pa: float, mode: str
) -> None:
    conv = SubnetConv(
        cin_g * groups, cout_g * groups, k, groups=groups, padding=k // 2, pa=pa, mode=mode
    )
    assert int(conv.mask().sum()) == kept_count(conv.weight.numel(), pa) == conv.kept
    out = conv(torch.randn(2, cin_g * groups, 5, 5))
    assert out.shape == (2, cout_g * groups, 5, 5)
    w = conv.effective_weight()
    assert int((w != 0).sum()) == conv.kept
    if mode == "mp":
        alpha = conv.alpha()
        assert alpha is not None
        torch.testing.assert_close(alpha, conv.frozen_weight.abs()[conv.mask()].mean())
        assert torch.allclose(w[conv.mask()].abs(), alpha.expand(conv.kept))
    else:
        assert conv.alpha() is None


def test_depthwise_conv() -> None:
    conv = SubnetConv(8, 8, 3, groups=8, padding=1, pa=0.5)
    assert conv(torch.randn(1, 8, 6, 6)).shape == (1, 8, 6, 6)
    assert conv.kept == kept_count(8 * 9, 0.5)


@pytest.mark.parametrize(
    "dense",
    [lambda: nn.Conv2d(3, 5, 3, padding=1), lambda: nn.Linear(7, 4), lambda: nn.Conv1d(4, 6, 1)],
)
def test_lt_at_pa_zero_equals_dense(dense) -> None:
    layer = dense()
    sub = subnet_class_for(type(layer)).from_dense(layer, pa=0.0, mode="lt", init="keep")
    x = (
        torch.randn(2, 3, 6, 6)
        if isinstance(layer, nn.Conv2d)
        else torch.randn(2, 4, 5)
        if isinstance(layer, nn.Conv1d)
        else torch.randn(3, 7)
    )
    torch.testing.assert_close(sub(x), layer(x))


def test_from_dense_copies_unless_shared() -> None:
    dense = nn.Linear(4, 4)
    before = dense.weight.detach().clone()
    sub = SubnetLinear.from_dense(dense, 0.5)  # re-initialises its own copy
    torch.testing.assert_close(dense.weight.detach(), before)
    assert dense.weight.requires_grad
    assert not sub.frozen_weight.requires_grad and sub.scores.requires_grad
    assert sub.bias is not None and not sub.bias.requires_grad


def test_to_dense_roundtrip_and_keys() -> None:
    sub = SubnetConv(3, 4, 3, pa=0.6, mode="mp")
    dense = sub.to_dense()
    assert type(dense) is nn.Conv2d
    assert set(dense.state_dict()) == {"weight", "bias"}
    x = torch.randn(2, 3, 7, 7)
    torch.testing.assert_close(dense(x), sub(x))
    assert dense.weight.requires_grad


def test_mask_cached_until_scores_change(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = subnet_mod.topk_mask
    monkeypatch.setattr(
        subnet_mod, "topk_mask", lambda s, p, **kw: calls.append(1) or real(s, p, **kw)
    )
    conv = SubnetConv(4, 4, 3, padding=1, pa=0.5)
    opt = torch.optim.SGD([conv.scores], lr=1.0)
    x = torch.randn(2, 4, 5, 5)
    for _ in range(4):  # T calls of a spiking step: one mask
        conv(x).sum().backward()
    assert len(calls) == 1
    opt.step()  # in-place update of the scores
    conv(x)
    assert len(calls) == 2
    # The training path keeps no bool mask (memory): asking for it costs one top-k, and
    # it is then kept until the scores change.
    old = conv.mask().clone()
    conv(x)
    conv.mask()
    assert len(calls) == 3
    conv.load_state_dict({**conv.state_dict(), "scores": torch.randn_like(conv.scores)})
    assert not torch.equal(conv.mask(), old) and len(calls) == 4
    conv.set_pa(0.2)
    assert int(conv.mask().sum()) == kept_count(conv.weight.numel(), 0.2)


def test_multistep_inputs() -> None:
    conv = SubnetConv(3, 4, 3, padding=1, pa=0.3)
    x = torch.randn(4, 2, 3, 6, 6)
    torch.testing.assert_close(conv(x), conv(x.flatten(0, 1)).unflatten(0, (4, 2)))
    c1 = SubnetConv1d(3, 5, 1, pa=0.3)
    assert c1(torch.randn(4, 2, 3, 10)).shape == (4, 2, 5, 10)
    fc = SubnetLinear(6, 2, pa=0.3)
    assert fc(torch.randn(4, 2, 9, 6)).shape == (4, 2, 9, 2)


def test_extra_repr_shows_settings() -> None:
    text = repr(SubnetLinear(10, 10, pa=0.4, mode="mp"))
    assert "pa=0.4" in text and "mode='mp'" in text and "kept=60/100" in text


def test_constructor_errors() -> None:
    with pytest.raises(ValueError, match="pa"):
        SubnetLinear(3, 3, pa=1.0)
    with pytest.raises(ValueError, match="mode"):
        SubnetLinear(3, 3, mode="binary")
    with pytest.raises(ValueError, match="init"):
        SubnetLinear(3, 3, init="xavier")
    with pytest.raises(TypeError, match=r"nn\.Conv1d, nn\.Conv2d, nn\.Conv3d, .*nn\.GRU"):
        subnet_class_for(nn.Embedding)
    with pytest.raises(TypeError):
        SubnetLinear.from_dense(nn.Conv2d(1, 1, 1), 0.5)


def test_signed_constant_init() -> None:
    w = init_weight_(torch.empty(16, 8, 3, 3), "signed_constant")
    assert torch.unique(w.abs()).numel() == 1
    assert {-1.0, 1.0} == set(torch.sign(w).unique().tolist())


def test_spikingjelly_multistep_conv_keeps_working() -> None:
    sj_layer = pytest.importorskip("spikingjelly.activation_based.layer")
    conv = sj_layer.Conv2d(2, 4, 3, padding=1, step_mode="m")
    sub = SubnetConv.from_dense(conv, 0.5)
    assert isinstance(sub, sj_layer.Conv2d) and isinstance(sub, SubnetConv)
    x = torch.randn(3, 2, 2, 5, 5)
    y = sub(x)
    assert y.shape == (3, 2, 4, 5, 5)
    y.sum().backward()
    assert sub.scores.grad is not None and sub.scores.grad.abs().sum() > 0
    dense = sub.to_dense()
    assert type(dense) is sj_layer.Conv2d and dense.step_mode == "m"
    torch.testing.assert_close(dense(x), y.detach())


def test_binary_activation() -> None:
    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0], requires_grad=True)
    y = BinaryActivation()(x)
    assert y.tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0]
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 2.0, 1.0, 0.0]


def _toy_problem(n: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 16, generator=g)
    y = ((x[:, 0] + x[:, 1]) > 0).long()
    return x, y


@pytest.mark.parametrize("mode", ["lt", "mp"])
def test_score_search_learns_forwards(mode: str) -> None:
    """Only scores train; with the right gradient sign the ticket beats chance by far."""
    x, y = _toy_problem()
    net = nn.Sequential(
        SubnetLinear(16, 128, pa=0.5, mode=mode), nn.ReLU(), SubnetLinear(128, 2, pa=0.5, mode=mode)
    )
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=0.05)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    acc = (net(x).argmax(1) == y).float().mean().item()
    assert acc > 0.85, acc


def test_inference_mode_then_training() -> None:
    fc = SubnetLinear(6, 3, pa=0.5, mode="mp")
    x = torch.randn(4, 6)
    with torch.inference_mode():
        expected = fc(x)
    out = fc(x)  # the cache built under inference mode must not leak into autograd
    out.sum().backward()
    torch.testing.assert_close(out.detach(), expected)
    assert fc.scores.grad is not None


def test_data_writes_need_invalidate() -> None:
    fc = SubnetLinear(8, 8, pa=0.5, mode="mp")
    fc.mask()
    new_scores = torch.randn_like(fc.scores)
    fc.scores.data.copy_(new_scores)  # bypasses the version counter
    fc.frozen_weight.data.mul_(3)
    fc.invalidate()
    torch.testing.assert_close(fc.alpha(), fc.frozen_weight.abs()[fc.mask()].mean())
    assert torch.equal(fc.mask(), subnet_mod.topk_mask(new_scores, 0.5))


def test_fine_tuning_weights_keeps_the_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = subnet_mod.topk_mask
    monkeypatch.setattr(
        subnet_mod, "topk_mask", lambda s, p, **kw: calls.append(1) or real(s, p, **kw)
    )
    fc = SubnetLinear(6, 4, pa=0.5)
    fc.scores.requires_grad_(False)
    fc.frozen_weight.requires_grad_(True)
    opt = torch.optim.SGD([fc.frozen_weight], lr=0.1)
    before = fc.frozen_weight.detach().clone()
    for _ in range(3):
        opt.zero_grad()
        fc(torch.randn(5, 6)).pow(2).sum().backward()
        opt.step()
    assert len(calls) == 1  # the weights changed three times, the scores never
    removed = ~fc.mask()
    assert torch.equal(fc.frozen_weight.detach()[removed], before[removed])  # only kept learn
    assert not torch.equal(fc.frozen_weight.detach()[~removed], before[~removed])


def test_pickle_and_deepcopy_drop_the_cache() -> None:
    import copy
    import io
    import pickle

    conv = SubnetConv(4, 8, 3, pa=0.4, mode="mp")
    x = torch.randn(2, 4, 6, 6)
    before = io.BytesIO()
    torch.save(conv, before)
    expected = conv(x)
    assert conv._caches["weight"].pre is not None
    clone = copy.deepcopy(conv)
    assert clone._caches["weight"].pre is None and conv._caches["weight"].pre is not None
    torch.testing.assert_close(clone(x), expected)
    restored = pickle.loads(pickle.dumps(conv))
    torch.testing.assert_close(restored(x), expected)
    after = io.BytesIO()
    torch.save(conv, after)
    assert abs(after.tell() - before.tell()) < 200  # no weight-sized cache tensors saved


def test_torch_func_grad_matches_autograd() -> None:
    from torch.func import functional_call, grad

    fc = SubnetLinear(5, 3, pa=0.4, mode="mp")
    x = torch.randn(7, 5)
    params = {"scores": fc.scores.detach().clone()}

    def loss(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return functional_call(fc, p, (x,)).pow(2).sum()

    g = grad(loss)(params)["scores"]
    fc(x).pow(2).sum().backward()
    torch.testing.assert_close(g, fc.scores.grad)


def _cached_bytes(layer: SubnetLayer) -> int:
    seen: set[int] = set()
    total = 0
    cached = [getattr(c, slot) for c in layer._caches.values() for slot in c.__slots__]
    for value in [*vars(layer).values(), *cached]:
        items = value if isinstance(value, (tuple, list)) else (value,)
        for t in items:
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in seen:
                seen.add(t.untyped_storage().data_ptr())
                total += t.untyped_storage().nbytes()
    return total


@pytest.mark.parametrize("mode", ["lt", "mp"])
def test_a_search_caches_only_the_effective_weight(mode: str) -> None:
    fc = SubnetLinear(64, 32, pa=0.5, mode=mode)
    opt = torch.optim.Adam([fc.scores], lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        fc(torch.randn(4, 64)).pow(2).sum().backward()
        opt.step()
    fc(torch.randn(4, 64))
    n = fc.frozen_weight.numel()
    assert _cached_bytes(fc) <= 4 * n + 64  # the effective weight (and a 0-d alpha)
    # Fine-tuning the kept weights also keeps the straight-through factor.
    fc.scores.requires_grad_(False)
    fc.frozen_weight.requires_grad_(True)
    fc(torch.randn(4, 64)).sum().backward()
    assert _cached_bytes(fc) <= 8 * n + 64
    assert fc.frozen_weight.grad is not None
    assert int((fc.frozen_weight.grad != 0).sum()) <= fc.kept  # only kept weights learn


def test_a_layer_pickled_before_the_generic_mechanism_loads() -> None:
    # Earlier releases kept `mode` and six cache attributes on the layer itself.
    conv = SubnetConv(2, 3, 3, pa=0.5, mode="mp")
    x = torch.randn(1, 2, 5, 5)
    expected = conv(x)
    state = dict(conv.__dict__)
    del state["_masked"], state["_caches"]
    state["mode"] = state.pop("_mask_mode")
    state.update(dict.fromkeys(("_mask_key", "_pre_key", "_mask", "_alpha", "_pre"), None))
    old = SubnetConv.__new__(SubnetConv)
    old.__setstate__(state)
    assert old.mode == "mp" and old.masked_names == ("weight",)
    assert torch.equal(old(x), expected)


# --- from test_bad_inputs.py: Bad inputs to the Python API, the engine and the model zoo: each one gets a named error.


LAYER_CASES: list[tuple[Callable[[], nn.Module], Callable[[], torch.Tensor], str]] = [
    (
        lambda: SubnetConv(3, 8, 3, pa=0.4),
        lambda: torch.rand(2, 5, 8, 8),
        r"SubnetConv\(3, 8, .*\) takes in_channels=3 .*shape \(2, 5, 8, 8\)",
    ),
    (
        lambda: SubnetConv(3, 8, 3, pa=0.4),
        lambda: torch.rand(4, 2, 5, 8, 8),  # multi-step
        r"SubnetConv\(3, 8, .*\) takes in_channels=3 .*\[T, B, C, H, W\]",
    ),
    (
        lambda: SubnetConv1d(4, 3, 1, pa=0.4),
        lambda: torch.rand(2, 5, 7),
        r"SubnetConv1d\(4, 3, .*\) takes in_channels=4 on axis -2",
    ),
    (
        lambda: SubnetLinear(4, 3, pa=0.4),
        lambda: torch.rand(2, 5),
        r"SubnetLinear\(in_features=4, .*\) takes in_features=4 on axis -1.*shape \(2, 5\)",
    ),
    (
        lambda: SubnetLinear(4, 3, pa=0.4),
        lambda: torch.rand(2, 4, dtype=torch.float64),
        r"SubnetLinear\(.*\) takes torch\.float32 input.*got torch\.float64",
    ),
]


@pytest.mark.parametrize(("make_layer", "make_input", "match"), LAYER_CASES)
def test_swapped_layers_name_themselves_and_what_they_take(
    make_layer: Callable[[], nn.Module], make_input: Callable[[], torch.Tensor], match: str
) -> None:
    layer = make_layer()
    before = snapshot(layer)
    with pytest.raises(RuntimeError, match=match) as info:  # a RuntimeError, as from nn.Conv2d
        layer(make_input())
    assert "torch: " in str(info.value)  # torch's own words are kept after ours
    assert_unchanged(layer, before)


def test_swapped_layers_pass_other_errors_through_unchanged(monkeypatch) -> None:
    layer = SubnetConv(3, 8, 3, pa=0.4)
    error = RuntimeError("out of memory")
    monkeypatch.setattr(layer, "_conv_forward", lambda *a: (_ for _ in ()).throw(error))
    with pytest.raises(RuntimeError) as info:
        layer(torch.rand(1, 3, 8, 8))  # the input fits: the error is not about it
    assert info.value is error
