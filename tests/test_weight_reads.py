"""Issue 9: after sparsify, every read of a swapped layer's weight sees the ticket.

The property, checked on every network in ``_networks.NETWORKS`` (hand-written patterns and
torchvision, timm and SpikingJelly models at random init) with an implementation of its
own (not :func:`spikelottery.check_ticket`):

* for every swapped layer, redrawing its scores so that its mask changes changes the
  output, with gradients off (where PyTorch's fused inference paths run);
* every swapped layer's scores get a gradient;
* the sparse network computes what its ``densify()`` copy computes;
* its ticket round-trips bit-exactly through ``save_ticket`` / ``load_ticket``.
"""

from __future__ import annotations

import copy

import hypothesis.strategies as st
import pytest
import torch
from hypothesis import given, settings
from torch import Tensor, nn
from torch.nn.utils import prune

from _networks import NETWORKS, Net, SharedNet, TiedEmbeddingLM, TiedLinearNet, subclass_net
from spikelottery import (
    SpikeLotteryError,
    SubnetLinear,
    densify,
    load_ticket,
    save_ticket,
    sparsify,
    summary,
)
from spikelottery._state import reset_states
from spikelottery.layers import SubnetLayer

IDS = [n.name for n in NETWORKS]


def _out(model: nn.Module, x: Tensor) -> Tensor:
    reset_states(model)
    out = model(x)
    return out if isinstance(out, Tensor) else out[0]


def _subnets(model: nn.Module) -> list[tuple[str, SubnetLayer]]:
    seen: set[int] = set()
    found = []
    for name, m in model.named_modules():
        if isinstance(m, SubnetLayer) and id(m.scores) not in seen:
            seen.add(id(m.scores))
            found.append((name, m))
    return found


def _build(net: Net) -> nn.Module:
    if net.requires is not None:
        pytest.importorskip(net.requires)  # an optional extra (all in the dev extra)
    return net.build()


def _assert_ticket_holds(net: Net, pa: float, mode: str, seed: int) -> None:
    model = _build(net)
    x = net.example()
    sparsify(model, pa, mode=mode)
    model.eval()
    layers = _subnets(model)
    assert layers, "nothing was swapped"

    # every swapped layer's scores get a gradient
    out = _out(model, x)
    out.float().pow(2).sum().backward()
    no_grad = [name for name, layer in layers if layer.scores.grad is None]
    assert not no_grad, f"{net.name}: scores got no gradient: {no_grad}"

    gen = torch.Generator().manual_seed(seed)
    base_grad = _out(model, x).detach()
    with torch.no_grad():
        base = _out(model, x)
    changed: dict[str, bool] = {}
    for name, layer in layers:
        old = layer.scores.detach().clone()
        if layer.kept == old.numel():
            continue  # nothing removed at this pa: no other mask exists
        new = torch.randn(old.shape, generator=gen)
        if torch.equal(_mask_of(new, layer.pa), layer.mask()):
            new = -1.0 / (old.abs() + 1e-6)  # the reversed ranking
        with torch.no_grad():
            layer.scores.copy_(new)
        assert not torch.equal(layer.mask(), _mask_of(old, layer.pa)), name
        with torch.no_grad():
            changed[name] = not torch.equal(_out(model, x), base)
        # PyTorch's fused inference paths run only without gradients: both must agree.
        changed_with_grad = not torch.equal(_out(model, x).detach(), base_grad)
        with torch.no_grad():
            layer.scores.copy_(old)
        assert changed[name] == changed_with_grad, (
            f"{net.name}: changing the mask of {name!r} changed the output "
            f"{'only without' if changed[name] else 'only with'} gradients"
        )
    # A layer can be legitimately inactive on one input (saturated gates, silent neurons),
    # but a ticket whose masks mostly do not matter is a bypass.
    inactive = [n for n, c in changed.items() if not c]
    assert len(inactive) <= len(changed) // 4, f"{net.name}: masks ignored by {inactive}"
    with torch.no_grad():
        assert torch.equal(_out(model, x), base)  # the restores are exact

    dense = densify(copy.deepcopy(model)).eval()
    assert not any(isinstance(m, SubnetLayer) for m in dense.modules())
    with torch.no_grad():
        torch.testing.assert_close(_out(dense, x), base, rtol=1e-4, atol=1e-5)


def _mask_of(scores: Tensor, pa: float) -> Tensor:
    from spikelottery.functional import topk_mask

    return topk_mask(scores, pa)


@pytest.mark.parametrize("net", NETWORKS, ids=IDS)
@pytest.mark.parametrize("mode", ["lt", "mp"])
def test_every_weight_read_sees_the_ticket(net: Net, mode: str) -> None:
    _assert_ticket_holds(net, 0.5, mode, seed=0)


@settings(max_examples=12)
@given(
    net=st.sampled_from(NETWORKS[:5] + NETWORKS[11:13]),
    pa=st.floats(0.1, 0.9),
    mode=st.sampled_from(["lt", "mp"]),
    seed=st.integers(0, 2**16),
)
def test_ticket_holds_for_any_ratio_and_redraw(net: Net, pa: float, mode: str, seed: int) -> None:
    _assert_ticket_holds(net, pa, mode, seed)


@pytest.mark.parametrize("net", NETWORKS, ids=IDS)
def test_ticket_round_trips_bit_exactly(net: Net, tmp_path) -> None:
    model = sparsify(_build(net), 0.4, mode="mp").eval()
    x = net.example()
    with torch.no_grad():
        for _, layer in _subnets(model):  # a found ticket, not the initial one
            layer.scores.copy_(torch.randn_like(layer.scores))
        want = _out(model, x)
    path = save_ticket(model, tmp_path / "t.safetensors")
    fresh = load_ticket(_build(net), path).eval()
    with torch.no_grad():
        assert torch.equal(_out(fresh, x), want)


# -- the patterns one by one --------------------------------------------------------------


def test_subclass_forward_reads_the_effective_weight() -> None:
    from _networks import WSConv2d

    model = sparsify(subclass_net(), 0.5)
    ws = model[0]
    assert isinstance(ws, WSConv2d) and isinstance(ws, SubnetLayer)
    assert torch.equal(ws.weight, ws.effective_weight())
    assert not torch.equal(ws.weight, ws.frozen_weight)
    assert int((ws.weight != 0).sum()) == ws.kept


def test_multihead_attention_out_proj_is_masked_in_the_fused_path() -> None:
    mha = nn.Sequential(nn.Linear(4, 8))
    mha.attn = nn.MultiheadAttention(8, 2, batch_first=True)
    model, report = sparsify(mha, 0.5, return_report=True)
    assert "attn.out_proj" in report.swapped
    x = torch.randn(2, 3, 8)
    model.eval()
    with torch.no_grad():  # the native fast path of nn.MultiheadAttention
        fast = model.attn(x, x, x, need_weights=False)[0]
    slow = model.attn(x, x, x, need_weights=False)[0]
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)
    dense = densify(copy.deepcopy(model)).eval()
    with torch.no_grad():
        torch.testing.assert_close(dense.attn(x, x, x, need_weights=False)[0], fast)


def test_module_registered_twice_is_swapped_once_and_stays_shared() -> None:
    model, report = sparsify(SharedNet(), 0.5, return_report=True)
    assert model.block is model.again and isinstance(model.block, SubnetLinear)
    assert report.swapped == ["inp", "block", "out"] and report.aliases == {"again": "block"}
    assert [r["name"] for r in summary(model).rows] == ["inp", "block", "out"]
    model(torch.randn(2, 8)).sum().backward()
    assert model.block.scores.grad is not None
    densify(model)
    assert model.block is model.again and type(model.block) is nn.Linear


def test_tied_linear_layers_share_weight_and_scores() -> None:
    model, report = sparsify(TiedLinearNet(), 0.5, return_report=True)
    assert report.tied == {"enc": ["dec"]}
    assert model.enc.frozen_weight is model.dec.frozen_weight
    assert model.enc.scores is model.dec.scores
    assert torch.equal(model.enc.weight, model.dec.weight)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(torch.randn(4, 12)).sum().backward()
    opt.step()
    assert torch.equal(model.enc.mask(), model.dec.mask())
    densify(model)
    assert model.enc.weight is model.dec.weight  # the tie survives baking


def test_weight_tied_to_an_embedding_is_skipped_and_the_tie_holds() -> None:
    model, report = sparsify(TiedEmbeddingLM(), 0.5, return_report=True)
    assert "emb.weight" in report.skipped["lm_head"] and "tie" in report.skipped["lm_head"]
    assert type(model.lm_head) is nn.Linear and isinstance(model.mix, SubnetLinear)
    assert model.lm_head.weight is model.emb.weight and model.emb.weight.requires_grad
    dense = densify(model)
    fresh = TiedEmbeddingLM()
    fresh.load_state_dict(dense.state_dict())
    tokens = torch.randint(0, 20, (2, 5))
    assert torch.equal(fresh(tokens), dense(tokens))


@pytest.mark.parametrize(
    "wrap,match",
    [
        (lambda m: nn.utils.parametrizations.weight_norm(m), "parametrization"),
        (lambda m: nn.utils.parametrizations.spectral_norm(m), "parametrization"),
        (lambda m: nn.utils.weight_norm(m), "no weight parameter of its own"),
        (lambda m: prune.l1_unstructured(m, "weight", 0.3) and m, "no weight parameter"),
    ],
    ids=["weight_norm", "spectral_norm", "old_weight_norm", "prune"],
)
def test_layers_that_compute_their_weight_are_refused_by_name(wrap, match: str) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch deprecates the old weight_norm
        model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), wrap(nn.Linear(4, 2)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(SpikeLotteryError, match=rf"(?s)layer '2'.*{match}.*filter"):
        sparsify(model, 0.5)
    assert not any(isinstance(m, SubnetLayer) for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    sparsify(model, 0.5, filter=lambda m, name: name != "2")  # excluded: fine
    assert isinstance(model[0], SubnetLayer)


def test_transformer_fused_inference_path_uses_the_ticket() -> None:
    from _networks import transformer_encoder

    model = sparsify(transformer_encoder(), 0.5).eval()
    x = torch.randn(2, 5, 8)
    with torch.no_grad():
        fast = model(x)
    slow = model(x)  # gradients on: the Python path
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-5)


def test_in_place_write_to_weight_is_refused_and_frozen_weight_is_the_way() -> None:
    model = sparsify(nn.Sequential(nn.Linear(6, 4)), 0.5)
    x = torch.randn(3, 6)
    with torch.no_grad():
        model[0].weight.fill_(1.0)
    with pytest.raises(SpikeLotteryError, match="frozen_weight"):
        model(x)
    model(x)  # the cache was rebuilt: the ticket is intact
    with pytest.raises(RuntimeError, match="view"):
        model[0].weight.mul_(2)  # with gradients on, PyTorch refuses at once
    before = model(x)
    with torch.no_grad():
        model[0].frozen_weight.mul_(2)
    torch.testing.assert_close(model(x) - model[0].bias, 2 * (before - model[0].bias))


def test_torch_func_and_export_see_the_ticket() -> None:
    model = sparsify(subclass_net(), 0.5).eval()
    x = torch.randn(2, 3, 16, 16)
    want = model(x)
    params = {k: v.detach() for k, v in model.named_parameters()}
    got = torch.func.functional_call(model, params, (x,))
    torch.testing.assert_close(got, want)
    exported = torch.export.export(model, (x,))
    torch.testing.assert_close(exported.module()(x), want)


def test_requires_grad_on_weight_is_refused_not_silently_lost() -> None:
    model = sparsify(nn.Sequential(nn.Linear(6, 4)), 0.5)
    model[0].scores.requires_grad_(False)  # a fine-tuning stage: masks fixed
    model[0].weight.requires_grad_(True)  # the old habit: would train a temporary tensor
    with pytest.raises(SpikeLotteryError, match=r"requires_grad.*frozen_weight\.requires_grad_"):
        model(torch.randn(2, 6))
    model[0].frozen_weight.requires_grad_(True)  # the way
    model(torch.randn(2, 6)).sum().backward()
    assert model[0].frozen_weight.grad is not None


def test_a_lost_write_is_reported_even_after_the_scores_changed() -> None:
    model = sparsify(nn.Sequential(nn.Linear(6, 4)), 0.5)
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].scores.add_(1.0)  # an optimizer step in between
    with pytest.raises(SpikeLotteryError, match="modified in place"):
        model(torch.randn(2, 6))


def test_torch_compile_sees_the_ticket_and_follows_score_changes() -> None:
    model = sparsify(subclass_net(), 0.5).eval()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=False)
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(compiled(x), model(x))
    with torch.no_grad():
        model[0].scores.copy_(torch.randn_like(model[0].scores))  # a new mask
    torch.testing.assert_close(compiled(x), model(x))
    dense = densify(copy.deepcopy(model))
    torch.testing.assert_close(compiled(x), dense(x), rtol=1e-4, atol=1e-5)
