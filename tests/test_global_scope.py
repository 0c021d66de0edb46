"""Global score threshold: the sort-based reference, normalisation, annealing, the engine."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from _engine_testing import tiny
from spikelottery import densify, load_ticket, save_ticket, sparsify, summary
from spikelottery import scope as scope_module
from spikelottery.engine import ConfigError, run
from spikelottery.functional import kept_count
from spikelottery.layers import SubnetLayer
from spikelottery.masks import top_count_mask, topk_mask
from spikelottery.scope import (
    GlobalScope,
    annealed_ratio,
    global_kept_counts,
    score_magnitudes,
    set_model_pa,
)
from spikelottery.summary import kept_fraction


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 4 * 4, 12), nn.Linear(12, 3)
    )


def _layers(model: nn.Module) -> list[SubnetLayer]:
    return [m for m in model.modules() if isinstance(m, SubnetLayer)]


def _reference_masks(scores: list[torch.Tensor], pa: float) -> list[torch.Tensor]:
    """The global selection by a full sort: each layer's best first, then the rest by value."""
    values = [score_magnitudes(s).flatten().double() for s in scores]
    total = sum(v.numel() for v in values)
    keep = kept_count(total, pa)
    reserved = [int(v.argmax()) for v in values]
    entries = []  # (reserved first, value descending, layer, position): one global order
    for layer, v in enumerate(values):
        for pos, x in enumerate(v.tolist()):
            entries.append((pos != reserved[layer], -x, layer, pos))
    entries.sort()
    masks = [torch.zeros(v.numel(), dtype=torch.bool) for v in values]
    for _, _, layer, pos in entries[:keep]:
        masks[layer][pos] = True
    return [m.view_as(s) for m, s in zip(masks, scores, strict=True)]


@pytest.mark.parametrize("pa", [0.0, 0.3, 0.5, 0.9, 0.99])
def test_global_masks_match_a_full_sort(pa: float) -> None:
    net = sparsify(_net(), pa, scope="global")
    layers = _layers(net)
    with torch.no_grad():  # give the layers very different scales: the threshold must not care
        for i, layer in enumerate(layers):
            layer.scores.mul_(10.0**i)
    expected = _reference_masks([m.scores.detach() for m in layers], pa)
    for layer, mask in zip(layers, expected, strict=True):
        assert torch.equal(layer.mask(), mask)
    total = sum(m.scores.numel() for m in layers)
    assert sum(int(m.mask().sum()) for m in layers) == kept_count(total, pa)


def test_normalisation_makes_the_threshold_scale_free() -> None:
    net = sparsify(_net(), 0.6, scope="global")
    before = [m.mask() for m in _layers(net)]
    with torch.no_grad():
        _layers(net)[0].scores.mul_(1e4)  # a layer whose scores are 10^4 times larger
    after = [m.mask() for m in _layers(net)]
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_counts_follow_the_scores_and_summary_shows_them() -> None:
    net = sparsify(_net(), 0.5, scope="global")
    first = _layers(net)[0]
    with torch.no_grad():  # one huge score: the rest of the layer looks small after scaling
        first.scores.zero_()
        first.scores.view(-1)[0] = 1.0
    rows = summary(net).rows
    assert rows[0]["kept"] == 1  # its best weight is kept, never none
    assert sum(r["kept"] for r in rows) == kept_count(sum(r["total"] for r in rows), 0.5)
    assert [r["kept"] for r in rows] == [m.kept for m in _layers(net)]
    assert kept_fraction(net) == pytest.approx(summary(net).kept_fraction)


def test_mask_recomputed_once_per_score_change(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = scope_module.global_kept_counts
    monkeypatch.setattr(
        scope_module, "global_kept_counts", lambda *a: calls.append(1) or original(*a)
    )
    net = sparsify(_net(), 0.5, scope="global")
    x = torch.randn(4, 2, 6, 6)
    for _ in range(3):  # three forwards (as T timesteps would be): one selection
        net(x)
    assert len(calls) == 1
    opt = torch.optim.SGD([m.scores for m in _layers(net)], lr=0.1)
    net(x).sum().backward()
    opt.step()
    net(x)
    net(x)
    assert len(calls) == 2


def test_training_moves_the_counts_and_densify_agrees() -> None:
    net = sparsify(_net(), 0.7, scope="global")
    x = torch.randn(8, 2, 6, 6)
    before = [m.kept for m in _layers(net)]
    opt = torch.optim.Adam([m.scores for m in _layers(net)], lr=0.5)
    for _ in range(5):
        opt.zero_grad()
        (net(x) ** 2).sum().backward()
        opt.step()
    after = [m.kept for m in _layers(net)]
    assert after != before and sum(after) == sum(before)
    out = net(x)
    assert torch.allclose(densify(net)(x), out, atol=1e-6)


def test_ticket_of_a_global_search_loads_with_its_counts(tmp_path: Path) -> None:
    net = sparsify(_net(), 0.8, scope="global")
    with torch.no_grad():
        _layers(net)[1].scores.mul_(torch.rand_like(_layers(net)[1].scores))
    masks = [m.mask() for m in _layers(net)]
    save_ticket(net, tmp_path / "t.safetensors")
    loaded = load_ticket(_net(), tmp_path / "t.safetensors")
    assert all(torch.equal(m.mask(), k) for m, k in zip(_layers(loaded), masks, strict=True))


def test_sparsify_scope_errors_and_report() -> None:
    with pytest.raises(ValueError, match="scope must be one of"):
        sparsify(_net(), 0.5, scope="model")
    with pytest.raises(ValueError, match="layer_pa"):
        sparsify(_net(), 0.5, scope="global", layer_pa={"1": 0.2})
    with pytest.raises(ValueError, match="one weight per layer"):
        sparsify(nn.Sequential(nn.Linear(1, 1), nn.Linear(1, 1)), 0.9, scope="global")
    _, report = sparsify(_net(), 0.5, scope="global", return_report=True)
    assert "scope='global'" in str(report)
    # Back to layer scope: each layer keeps its own count again.
    net = sparsify(_net(), 0.5, scope="global")
    sparsify(net, 0.5)
    assert [m.kept for m in _layers(net)] == [
        kept_count(m.scores.numel(), 0.5) for m in _layers(net)
    ]


def test_annealing_never_empties_a_layer() -> None:
    net = sparsify(_net(), 0.95, scope="global")
    with torch.no_grad():  # one layer's scores nearly all tiny next to one outlier
        layer = _layers(net)[2]
        layer.scores.fill_(1e-6)
        layer.scores.view(-1)[3] = 1.0
    total = sum(m.scores.numel() for m in _layers(net))
    for epoch in range(6):
        pa = annealed_ratio(0.95, epoch, 4)
        set_model_pa(net, pa)
        kept = [int(m.mask().sum()) for m in _layers(net)]
        assert min(kept) >= 1
        assert sum(kept) == kept_count(total, pa)
    assert annealed_ratio(0.95, 0, 4) == 0.5 and annealed_ratio(0.95, 4, 4) == 0.95


def test_annealing_layer_scope_sets_each_layer() -> None:
    net = sparsify(_net(), 0.8)
    set_model_pa(net, annealed_ratio(0.8, 1, 2))
    assert all(m.pa == pytest.approx(0.65) for m in _layers(net))


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 12), min_size=1, max_size=5),
    data=st.data(),
)
def test_global_counts_property(sizes: list[int], data: st.DataObject) -> None:
    # Small integer values make ties common: the counts must still be exact.
    values = [
        torch.tensor(data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n))).double()
        for n in sizes
    ]
    keep = data.draw(st.integers(len(sizes), sum(sizes)))
    counts = global_kept_counts(values, keep)
    assert sum(counts) == keep
    assert all(1 <= c <= n for c, n in zip(counts, sizes, strict=True))
    # The reference: a full sort, each layer's first maximum reserved, ties by position.
    entries = []
    for layer, v in enumerate(values):
        best = int(v.argmax())
        entries += [(pos != best, -float(x), layer, pos) for pos, x in enumerate(v.tolist())]
    entries.sort()
    expected = [0] * len(sizes)
    for _, _, layer, _ in entries[:keep]:
        expected[layer] += 1
    assert counts == expected


def test_global_scope_object() -> None:
    net = sparsify(_net(), 0.5, scope="global")
    found = {id(m._scope) for m in _layers(net)}
    assert len(found) == 1
    shared = _layers(net)[0]._scope
    assert isinstance(shared, GlobalScope) and "layers=3" in repr(shared)
    with pytest.raises(ValueError, match="pa"):
        shared.set_pa(1.0)


# --------------------------------------------------------------------------- the engine


def test_engine_global_search_finds_a_ticket_above_chance() -> None:
    res = run(
        tiny(mode="lt", scope="global", anneal_epochs=1, epochs=2, max_batches=None, batch_size=64)
    )
    assert res.accuracy > 0.3  # chance is 0.1 on the 10 digits
    assert res.kept_fraction == pytest.approx(kept_count(6032, 0.4) / 6032)
    counts = [m.kept for m in _layers(res.model)]
    assert counts != [kept_count(m.scores.numel(), 0.4) for m in _layers(res.model)]


def test_engine_global_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="anneal_epochs"):
        tiny(mode="lt", anneal_epochs=2, epochs=2)
    with pytest.raises(ConfigError, match="scope"):
        tiny(mode="dense", scope="global")
    with pytest.raises(ConfigError, match="anneal_epochs"):
        tiny(mode="lt", search="imp", anneal_epochs=1, epochs=2)


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.integers(-4, 4), min_size=1, max_size=40),
    pa=st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.7, 0.99]),
)
def test_top_count_mask_is_topk_mask_at_the_same_count(values: list[int], pa: float) -> None:
    # The count-based selection the global threshold uses agrees with the layer's own mask,
    # ties included.
    scores = torch.tensor(values, dtype=torch.float32)
    assert torch.equal(
        top_count_mask(scores.abs(), kept_count(len(values), pa)), topk_mask(scores, pa)
    )


def test_a_copy_has_its_own_threshold() -> None:
    net = sparsify(_net(), 0.6, scope="global")
    twin = copy.deepcopy(net)
    layers, twins = _layers(net), _layers(twin)
    assert twins[0]._scope is twins[1]._scope is not layers[0]._scope
    before = [m.kept for m in layers]
    with torch.no_grad():
        twins[0].scores.mul_(torch.rand_like(twins[0].scores))
    assert [m.kept for m in layers] == before
    assert sum(m.kept for m in twins) == sum(before)
    assert not hasattr(densify(twin)[0], "_scope")
