"""Iterative magnitude pruning with rewinding: exact counts per round, rewinding, the engine."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from _engine_testing import tiny
from spikelottery import load_ticket, sparsify
from spikelottery.engine import TICKET_FILE, ConfigError, run
from spikelottery.engine.build import zoo_model
from spikelottery.engine.imp import ImpRounds, imp_kept_counts, imp_round
from spikelottery.functional import kept_count
from spikelottery.layers import SubnetLayer
from spikelottery.pruning import magnitude_masks, prune_by_magnitude


def _layers(model: nn.Module) -> list[SubnetLayer]:
    return [m for m in model.modules() if isinstance(m, SubnetLayer)]


def _net() -> nn.Module:
    torch.manual_seed(0)
    return sparsify(nn.Sequential(nn.Linear(13, 11), nn.ReLU(), nn.Linear(11, 7)), 0.0)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 60),
    fraction=st.sampled_from([0.0, 0.1, 0.2, 0.29, 0.5, 0.9]),
    rounds=st.integers(1, 5),
    seed=st.integers(0, 999),
)
def test_layer_rounds_keep_exact_counts_and_the_largest_weights(
    n: int, fraction: float, rounds: int, seed: int
) -> None:
    weight = torch.randn(n, generator=torch.Generator().manual_seed(seed))
    mask = torch.ones(n, dtype=torch.bool)
    for expected in imp_kept_counts(n, fraction, rounds):
        new = magnitude_masks([weight], [mask], fraction)[0]
        assert int(new.sum()) == expected == kept_count(int(mask.sum()), fraction)
        assert not bool((new & ~mask).any())  # a removed weight stays removed
        if bool(new.any()) and bool((mask & ~new).any()):
            assert weight[new].abs().min() >= weight[mask & ~new].abs().max()
        mask = new


def test_global_rounds_keep_the_total_and_every_layer() -> None:
    net = _net()
    total = sum(m.scores.numel() for m in _layers(net))
    expected = total
    for _ in range(4):
        counts = prune_by_magnitude(net, 0.5, scope="global")
        expected = kept_count(expected, 0.5)
        assert sum(counts.values()) == expected
        assert min(counts.values()) >= 1
    # The reference: the largest |W| over both layers, by a full sort (no ties in randn).
    weights = [m.frozen_weight.detach() for m in _layers(net)]
    masks = [torch.ones_like(w, dtype=torch.bool) for w in weights]
    got = magnitude_masks(weights, masks, 0.75, scope="global")
    everything = torch.cat([w.abs().flatten() for w in weights])
    keep = kept_count(everything.numel(), 0.75)
    threshold = everything.sort(descending=True).values[keep - 1]
    for w, m in zip(weights, got, strict=True):
        assert torch.equal(m, w.abs() >= threshold)


def test_layer_scope_counts_per_round_on_a_model() -> None:
    net = _net()
    for r in range(1, 4):
        counts = prune_by_magnitude(net, 0.3)
        assert counts == {
            "0": imp_kept_counts(143, 0.3, r)[-1],
            "2": imp_kept_counts(77, 0.3, r)[-1],
        }


def test_rewinding_restores_the_recorded_weights() -> None:
    net = _net()
    rounds = ImpRounds(fraction=0.5, rewind_epoch=0)
    rounds.enter(net, 0)  # dense masks, records the initial values
    initial = {k: v.clone() for k, v in net.state_dict().items() if not k.endswith("scores")}
    assert all(int(m.mask().sum()) == m.scores.numel() for m in _layers(net))
    assert all(m.frozen_weight.requires_grad and not m.scores.requires_grad for m in _layers(net))
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.5)
    net(torch.randn(5, 13)).square().sum().backward()
    opt.step()
    trained = [m.frozen_weight.detach().clone() for m in _layers(net)]
    assert not torch.equal(trained[0], initial["0.weight"])
    rounds.enter(net, 1)  # prune by the TRAINED magnitudes, then rewind
    for layer, w in zip(_layers(net), trained, strict=True):
        assert int(layer.mask().sum()) == kept_count(w.numel(), 0.5)
        assert torch.equal(
            layer.mask(), magnitude_masks([w], [torch.ones_like(w, dtype=torch.bool)], 0.5)[0]
        )
    state = net.state_dict()
    for key, value in initial.items():
        assert torch.equal(state[key], value), key


def test_rewind_point_after_an_epoch() -> None:
    net = _net()
    rounds = ImpRounds(fraction=0.5, rewind_epoch=2)
    rounds.enter(net, 0)
    assert rounds.rewind_state is None
    with torch.no_grad():
        _layers(net)[0].frozen_weight.add_(1.0)
    rounds.after_epoch(net, 0, 1)
    assert rounds.rewind_state is None
    rounds.after_epoch(net, 0, 2)
    recorded = _layers(net)[0].frozen_weight.detach().clone()
    with torch.no_grad():
        _layers(net)[0].frozen_weight.mul_(3.0)
    rounds.enter(net, 1)
    assert torch.equal(_layers(net)[0].frozen_weight, recorded)


def test_imp_round_names() -> None:
    assert [imp_round(s) for s in ("imp0", "imp12", "search", "impx")] == [0, 12, None, None]


# --------------------------------------------------------------------------- the engine


def test_engine_imp_finds_a_ticket_above_chance(tmp_path: Path) -> None:
    cfg = tiny(
        search="imp",
        mode="lt",
        imp_rounds=2,
        imp_fraction=0.5,
        epochs=2,
        max_batches=None,
        batch_size=64,
        weight_lr=1e-2,
        out=str(tmp_path),
    )
    res = run(cfg)
    assert [h["stage"] for h in res.history] == ["imp0", "imp0", "imp1", "imp1", "imp2", "imp2"]
    assert res.accuracy > 0.3  # chance is 0.1
    for layer in _layers(res.model):
        assert layer.kept == imp_kept_counts(layer.scores.numel(), 0.5, 2)[-1]
    assert res.kept_fraction == pytest.approx((36 + 1152 + 320) / 6032)
    # The ticket is an ordinary ticket file.
    from spikelottery.data import dataset_info

    dense = zoo_model(cfg, dataset_info("digits", resolution=8))
    loaded = load_ticket(dense, tmp_path / TICKET_FILE)
    for a, b in zip(_layers(loaded), _layers(res.model), strict=True):
        assert torch.equal(a.mask(), b.mask())
        assert torch.equal(a.effective_weight(), b.effective_weight())


def test_engine_imp_global_scope() -> None:
    res = run(tiny(search="imp", mode="lt", scope="global", imp_rounds=2, imp_fraction=0.5))
    total = sum(m.scores.numel() for m in _layers(res.model))
    kept = [m.kept for m in _layers(res.model)]
    assert sum(kept) == kept_count(kept_count(total, 0.5), 0.5) and min(kept) >= 1


def test_engine_imp_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="mode='lt'"):
        tiny(search="imp", mode="mp")
    with pytest.raises(ConfigError, match="rewind_epoch"):
        tiny(search="imp", mode="lt", epochs=1, rewind_epoch=2)
    with pytest.raises(ConfigError, match="search"):
        tiny(search="imp", mode="dense")
