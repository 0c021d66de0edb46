"""Tests of checkpoints and random-generator state: resuming ends where an uninterrupted run does."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from _engine_testing import EAGER, strip_seconds, subnet_state, tiny
from spikelottery import SpikeLotteryError
from spikelottery.engine import CHECKPOINT_FILE, RESULTS_FILE, Trainer, run
from spikelottery.engine.checkpoint import (
    CHECKPOINT_FORMAT,
    Checkpoint,
    load_checkpoint,
    load_for_resume,
    rng_state,
    set_rng_state,
)

# The keys of a format-1 checkpoint: files written before the engine became a package
# must still resume, so the format must not drift.
FORMAT_1_KEYS = {
    "format",
    "epoch",
    "stage",
    "model",
    "optimizer",
    "scheduler",
    "rng",
    "config",
    "history",
    "elapsed",
}


class _Kill(RuntimeError):
    pass


def _kill_after(n: int):
    def hook(record: dict[str, Any]) -> None:
        if record["epoch"] == n:
            raise _Kill(f"killed after epoch {n}")

    return hook


@pytest.mark.parametrize(
    "changes",
    [
        {"epochs": 2},  # killed in the middle of stage 1
        {"epochs": 1, "finetune_epochs": 1, "mode": "lt"},  # killed at the stage boundary
        # Magnitude pruning: killed inside round 0, at the end of round 0 (the next round
        # prunes the checkpoint's weights), inside round 1, and after the rewind point.
        {"epochs": 2, "search": "imp", "mode": "lt", "imp_rounds": 2, "kill": 1},
        {"epochs": 2, "search": "imp", "mode": "lt", "imp_rounds": 2, "kill": 2},
        {"epochs": 2, "search": "imp", "mode": "lt", "imp_rounds": 2, "kill": 3},
        {"epochs": 2, "search": "imp", "mode": "lt", "rewind_epoch": 1, "kill": 4},
        {"epochs": 2, "search": "random", "mode": "lt"},
    ],
    ids=[
        "mid-stage",
        "stage-boundary",
        "imp-round0",
        "imp-boundary",
        "imp-round1",
        "imp-rewind-epoch",
        "random",
    ],
)
def test_resume_reaches_the_uninterrupted_result(tmp_path: Path, changes: dict[str, Any]) -> None:
    kill = changes.pop("kill", 1)
    whole = run(tiny(out=str(tmp_path / "whole"), **changes))

    cut = tiny(out=str(tmp_path / "cut"), **changes)
    with pytest.raises(_Kill):
        Trainer(cut, on_epoch_end=_kill_after(kill)).run()
    ckpt = torch.load(tmp_path / "cut" / CHECKPOINT_FILE, weights_only=True)
    assert ckpt["epoch"] == kill and isinstance(ckpt["rng"]["torch"], torch.Tensor)
    assert not (tmp_path / "cut" / RESULTS_FILE).exists()

    resumed = run(cut.replace(resume=True))
    s1, s2 = subnet_state(whole.model), subnet_state(resumed.model)
    assert s1.keys() == s2.keys()
    for name in s1:
        for key in ("scores", "mask", "weight"):
            assert torch.equal(s1[name][key], s2[name][key]), (name, key)
    for (k1, v1), (k2, v2) in zip(
        whole.model.state_dict().items(), resumed.model.state_dict().items()
    ):
        assert k1 == k2 and torch.equal(v1, v2), k1
    assert resumed.accuracy == whole.accuracy
    assert strip_seconds(resumed.history) == strip_seconds(whole.history)


def _count_optimizer_steps() -> tuple[list[int], Any]:
    steps = [0]

    def hook(optimizer: Any, args: Any, kwargs: Any) -> None:
        steps[0] += 1

    return steps, register_optimizer_step_pre_hook(hook)


def test_resume_of_a_finished_run_and_of_nothing(tmp_path: Path) -> None:
    cfg = tiny(out=str(tmp_path / "r"), resume=True, epochs=2)  # no checkpoint yet: starts afresh
    epochs: list[dict[str, Any]] = []
    steps, handle = _count_optimizer_steps()
    try:
        first = run(cfg, on_epoch_end=epochs.append)
        assert [e["epoch"] for e in epochs] == [1, 2] and steps[0] == 2 * cfg.max_batches
        path = tmp_path / "r" / CHECKPOINT_FILE
        written = (path.stat().st_mtime_ns, path.read_bytes())

        epochs.clear()
        steps[0] = 0
        again = run(cfg, on_epoch_end=epochs.append)  # every epoch done: only evaluates
    finally:
        handle.remove()
    assert epochs == [] and steps[0] == 0  # not one epoch, not one optimizer step ran
    assert (path.stat().st_mtime_ns, path.read_bytes()) == written  # nor a new checkpoint
    assert again.accuracy == first.accuracy
    assert strip_seconds(again.history) == strip_seconds(first.history)
    assert again.history[0]["seconds"] == first.history[0]["seconds"]  # the saved records
    saved = torch.load(path, weights_only=True)["elapsed"]
    assert again.seconds > saved > 0  # the wall time of both sessions


def test_resume_refuses_a_different_experiment(tmp_path: Path) -> None:
    run(tiny(out=str(tmp_path / "r")))
    with pytest.raises(SpikeLotteryError, match=r"different experiment.*pa: 0.4 -> 0.5"):
        run(tiny(out=str(tmp_path / "r"), pa=0.5, resume=True))
    # runtime fields may change
    assert load_for_resume(tiny(out=str(tmp_path / "r"), resume=True, num_workers=1)) is not None


def test_resume_accepts_tuples_in_model_kwargs(tmp_path: Path) -> None:
    kwargs = {"config": (8, "A", 16, "A"), **EAGER}
    first = run(tiny(out=str(tmp_path / "r"), model_kwargs=kwargs))
    again = run(tiny(out=str(tmp_path / "r"), model_kwargs=kwargs, resume=True))
    assert again.accuracy == first.accuracy


def test_checkpoint_format_is_unchanged(tmp_path: Path) -> None:
    res = run(tiny(out=str(tmp_path / "r")))
    path = tmp_path / "r" / CHECKPOINT_FILE
    state = torch.load(path, weights_only=True)
    assert set(state) == FORMAT_1_KEYS and state["format"] == CHECKPOINT_FORMAT == 1
    assert isinstance(state["config"], str) and json.loads(state["config"]) == res.config
    assert isinstance(state["history"], str) and json.loads(state["history"]) == res.history
    assert (state["epoch"], state["stage"]) == (1, "search")
    assert Checkpoint.from_state(state).to_state().keys() == state.keys()


def test_a_checkpoint_without_a_newer_field_resumes(tmp_path: Path) -> None:
    # A field added after the checkpoint was written had its default then.
    cfg = tiny(out=str(tmp_path / "r"), resume=True)
    run(cfg.replace(resume=False))
    path = tmp_path / "r" / CHECKPOINT_FILE
    state = torch.load(path, weights_only=True)
    saved = json.loads(state["config"])
    del saved["sync_batchnorm"]
    state["config"] = json.dumps(saved)
    torch.save(state, path)
    assert load_for_resume(cfg) is not None
    with pytest.raises(SpikeLotteryError, match="sync_batchnorm: None -> True"):
        load_for_resume(cfg.replace(sync_batchnorm=True))


def test_bad_checkpoint_files_are_refused(tmp_path: Path) -> None:
    path = tmp_path / CHECKPOINT_FILE
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(SpikeLotteryError, match="cannot read checkpoint"):
        load_checkpoint(path)
    torch.save({"format": 99}, path)
    with pytest.raises(SpikeLotteryError, match="format 1"):
        load_checkpoint(path)


def test_rng_state_roundtrip_is_weights_only_safe(tmp_path: Path) -> None:
    state = rng_state()
    torch.save(state, tmp_path / "rng.pt")
    draws = (torch.rand(3), np.random.rand(3), random.random())
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(draws[0], again[0])
    assert np.array_equal(draws[1], again[1]) and draws[2] == again[2]
