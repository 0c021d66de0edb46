"""TensorBoard event files of a run, written from its results.json (the one source of truth)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spikelottery.errors import SpikeLotteryError
from spikelottery.sweep.tensorboard import EVENTS_DIR, write_events

pytest.importorskip("tensorboard")  # the optional [tensorboard] extra (in [dev])


def test_events_hold_every_epoch(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    history = [
        {"epoch": e, "train_loss": 2.0 / e, "test_accuracy": 0.3 * e, "lr": 0.1} for e in (1, 2, 3)
    ]
    results = {
        "accuracy": 0.9,
        "kept_fraction": 0.6,
        "energy_mj": 1e-3,
        "history": history,
        "config": {"pa": 0.4, "method": "mpslt", "model_kwargs": {}, "filter": None},
    }
    (tmp_path / "results.json").write_text(json.dumps(results))
    target = write_events(tmp_path)
    assert target == tmp_path / EVENTS_DIR
    events = EventAccumulator(str(target))
    events.Reload()
    losses = [(s.step, s.value) for s in events.Scalars("train_loss")]
    assert losses == [(1, pytest.approx(2.0)), (2, pytest.approx(1.0)), (3, pytest.approx(2 / 3))]
    assert [s.value for s in events.Scalars("test_accuracy")] == pytest.approx([0.3, 0.6, 0.9])
    write_events(tmp_path)  # rebuilt, not appended
    events = EventAccumulator(str(target))
    events.Reload()
    assert len(events.Scalars("train_loss")) == 3


def test_no_results(tmp_path: Path) -> None:
    with pytest.raises(SpikeLotteryError, match="results.json"):
        write_events(tmp_path)
    assert not (tmp_path / EVENTS_DIR).exists()
