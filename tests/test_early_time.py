"""Early-Time tickets: search at ``search_timesteps``, train and evaluate at ``timesteps``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from _engine_testing import tiny
from spikelottery.engine import RESULTS_FILE, ConfigError, Trainer, evaluate
from spikelottery.engine.build import build_loaders, dataset_split
from spikelottery.engine.distributed import DistInfo
from spikelottery.engine.search import forward_seconds, set_timesteps


def _test_loader(cfg: Any) -> Any:
    train, test = dataset_split(cfg, "train"), dataset_split(cfg, "test")
    return build_loaders(cfg, train, test, dist=DistInfo(), device=torch.device("cpu")).test


def _timesteps_per_epoch(cfg: Any) -> tuple[Any, list[tuple[str, int]]]:
    seen: list[tuple[str, int]] = []
    trainer = Trainer(cfg)

    def hook(record: dict[str, Any]) -> None:
        seen.append((record["stage"], trainer.model.timesteps))  # type: ignore[union-attr]

    trainer.on_epoch_end = hook
    return trainer.run(), seen


def test_score_search_at_small_t_then_evaluation_at_large_t(tmp_path: Path) -> None:
    cfg = tiny(
        mode="lt",
        search_timesteps=1,
        timesteps=4,
        epochs=2,
        max_batches=None,
        batch_size=64,
        out=str(tmp_path),
    )
    res, seen = _timesteps_per_epoch(cfg)
    assert seen == [("search", 1), ("search", 1)]
    assert res.model.timesteps == 4  # type: ignore[union-attr]
    early = res.early_time
    assert early is not None
    assert (early["search_timesteps"], early["timesteps"], early["search_epochs"]) == (1, 4, 2)
    # The figures are those of the returned ticket at each T.
    loader = _test_loader(cfg)
    assert res.accuracy == early["accuracy"] == evaluate(res.model, loader)[0]
    res.model.timesteps = 1  # type: ignore[union-attr]
    assert early["search_accuracy"] == evaluate(res.model, loader)[0]
    assert early["search_accuracy"] > 0.3 and res.accuracy > 0.3  # chance is 0.1
    assert early["search_seconds"] == pytest.approx(sum(h["seconds"] for h in res.history))
    assert early["time_ratio"] > 0
    assert early["seconds_saved"] == pytest.approx(
        early["search_seconds_at_timesteps"] - early["search_seconds"]
    )
    assert json.loads((tmp_path / RESULTS_FILE).read_text())["early_time"] == early


def test_imp_rounds_at_small_t_and_the_last_round_at_large_t() -> None:
    cfg = tiny(
        search="imp", mode="lt", imp_rounds=2, imp_fraction=0.5, search_timesteps=1, timesteps=3
    )
    res, seen = _timesteps_per_epoch(cfg)
    assert seen == [("imp0", 1), ("imp1", 1), ("imp2", 3)]
    early = res.early_time
    assert early is not None and early["search_epochs"] == 2
    assert res.history[1]["early_time"] == early  # kept in the history: a resume keeps it


def test_search_then_finetune_at_large_t() -> None:
    res, seen = _timesteps_per_epoch(
        tiny(mode="mp", search_timesteps=2, timesteps=3, finetune_epochs=1)
    )
    assert seen == [("search", 2), ("finetune", 3)]
    assert res.early_time is not None
    assert res.accuracy == res.history[-1]["test_accuracy"]


def test_no_early_time_without_the_setting() -> None:
    assert Trainer(tiny(mode="lt")).run().early_time is None


def test_early_time_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="search_timesteps"):
        tiny(mode="lt", spiking=False, search_timesteps=1)
    with pytest.raises(ConfigError, match="search_timesteps"):
        tiny(search="random", mode="lt", search_timesteps=1)
    with pytest.raises(ConfigError, match="search_timesteps"):
        tiny(mode="dense", search_timesteps=1)
    with pytest.raises(ConfigError, match="event frames"):
        Trainer(tiny(mode="lt", dataset="digits_dvs", search_timesteps=1)).run()


def test_set_timesteps_needs_a_timesteps_attribute() -> None:
    with pytest.raises(ConfigError, match="search_timesteps"):
        set_timesteps((nn.Linear(2, 2),), 3)


def test_forward_seconds_restores_the_mode() -> None:
    net = nn.Sequential(nn.Linear(4, 2), nn.BatchNorm1d(2))
    assert forward_seconds(net, [torch.randn(3, 4)], repeats=2) >= 0
    assert net.training
