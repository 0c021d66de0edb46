"""Random masks at given per-layer counts: the control for a found ticket."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from _engine_testing import tiny
from spikelottery import sparsify
from spikelottery.engine import ConfigError, run
from spikelottery.functional import kept_count
from spikelottery.layers import SubnetLayer
from spikelottery.masks import random_mask
from spikelottery.pruning import random_masks


def _layers(model: nn.Module) -> list[SubnetLayer]:
    return [m for m in model.modules() if isinstance(m, SubnetLayer)]


@settings(max_examples=50, deadline=None)
@given(
    shape=st.lists(st.integers(1, 6), min_size=1, max_size=3),
    data=st.data(),
    seed=st.integers(0, 99),
)
def test_random_mask_has_the_exact_count(shape: list[int], data: st.DataObject, seed: int) -> None:
    n = 1
    for s in shape:
        n *= s
    keep = data.draw(st.integers(0, n))
    mask = random_mask(tuple(shape), keep, generator=torch.Generator().manual_seed(seed))
    assert mask.dtype == torch.bool and tuple(mask.shape) == tuple(shape)
    assert int(mask.sum()) == keep


def test_random_mask_rejects_a_bad_count() -> None:
    with pytest.raises(ValueError, match="keep must be in"):
        random_mask((2, 2), 5)


def test_random_masks_keep_each_layers_count_even_under_a_global_scope() -> None:
    torch.manual_seed(0)
    net = sparsify(nn.Sequential(nn.Linear(20, 30), nn.Linear(30, 5)), 0.7, scope="global")
    with torch.no_grad():
        _layers(net)[0].scores.mul_(torch.rand_like(_layers(net)[0].scores))
    counts = [m.kept for m in _layers(net)]
    before = [m.mask() for m in _layers(net)]
    got = random_masks(net, torch.Generator().manual_seed(1))
    assert list(got.values()) == counts == [int(m.mask().sum()) for m in _layers(net)]
    assert any(not torch.equal(a, m.mask()) for a, m in zip(before, _layers(net), strict=True))
    assert all(m.__dict__.get("_scope") is None for m in _layers(net))  # the masks are fixed now
    # Same generator seed, same masks.
    again = sparsify(nn.Sequential(nn.Linear(20, 30), nn.Linear(30, 5)), 0.7)
    for layer, count in zip(_layers(again), counts, strict=True):
        layer.set_mask(random_mask(layer.scores.shape, count))
    random_masks(again, torch.Generator().manual_seed(1))
    assert all(
        torch.equal(a.mask(), b.mask()) for a, b in zip(_layers(net), _layers(again), strict=True)
    )


def test_set_mask_checks_its_argument() -> None:
    layer = sparsify(nn.Sequential(nn.Linear(3, 2)), 0.5)[0]
    with pytest.raises(ValueError, match="bool mask"):
        layer.set_mask(torch.ones(2, 3))
    with pytest.raises(ValueError, match="kept count"):
        layer.set_mask(torch.zeros(2, 3, dtype=torch.bool))


def test_engine_random_control_trains_kept_weights_above_chance() -> None:
    res = run(
        tiny(search="random", mode="lt", epochs=2, max_batches=None, batch_size=64, weight_lr=1e-2)
    )
    assert [h["stage"] for h in res.history] == ["train", "train"]
    assert res.accuracy > 0.3  # chance is 0.1
    for layer in _layers(res.model):
        assert int(layer.mask().sum()) == kept_count(layer.scores.numel(), 0.4)
        assert not layer.scores.requires_grad and layer.frozen_weight.requires_grad
    # The mask is drawn from the seed: the same run draws the same mask.
    again = run(tiny(search="random", mode="lt", epochs=0))
    assert all(
        torch.equal(a.mask(), b.mask())
        for a, b in zip(_layers(res.model), _layers(again.model), strict=True)
    )


def test_engine_random_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="scope"):
        tiny(search="random", mode="lt", scope="global")
    with pytest.raises(ConfigError, match="search"):
        tiny(search="random", mode="dense")


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 7),
    cols=st.integers(1, 7),
    seed=st.integers(0, 10_000),
    data=st.data(),
)
def test_set_mask_gives_back_any_mask(rows: int, cols: int, seed: int, data: st.DataObject) -> None:
    layer = sparsify(nn.Sequential(nn.Linear(cols, rows)), 0.5, mode="lt")[0]
    keep = data.draw(st.integers(1, rows * cols))
    mask = random_mask((rows, cols), keep, generator=torch.Generator().manual_seed(seed))
    layer.set_mask(mask)
    assert torch.equal(layer.mask(), mask)
    assert layer.kept == keep == kept_count(rows * cols, layer.pa)
    assert torch.equal(layer.weight, layer.frozen_weight * mask)
