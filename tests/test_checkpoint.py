"""Tests of checkpoints and random-generator state: resuming ends where an uninterrupted run does."""

from __future__ import annotations

import copy
import errno
import json
import pickle
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from _disk_testing import fill_disk
from _engine_testing import EAGER, strip_seconds, subnet_state, tiny
from _ticket_testing import state_copy
from spikelottery import SpikeLotteryError
from spikelottery.engine import CHECKPOINT_FILE, RESULTS_FILE, TrainConfig, Trainer, run
from spikelottery.engine.checkpoint import (
    CHECKPOINT_FORMAT,
    Checkpoint,
    load_checkpoint,
    load_for_resume,
    restore_optimizer,
    rng_state,
    save_checkpoint,
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


# --- from test_bad_inputs_files.py: Bad files and failed writes: tickets, checkpoints, ONNX export and the atomic writers.


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden temporaries included) and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _assert_disk_full_error(err: pytest.ExceptionInfo[OSError], path: Path) -> None:
    assert err.value.errno == errno.ENOSPC
    assert str(path) in str(err.value) and "space" in str(err.value)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainConfig, Path, Any]:
    """A two-epoch tiny run and its checkpoint (copied per test by ``run_copy``)."""
    out = tmp_path_factory.mktemp("run") / "r"
    cfg = tiny(out=str(out), epochs=2)
    result = run(cfg)
    return cfg, out, result.model


@pytest.fixture
def run_copy(
    finished_run: tuple[TrainConfig, Path, Any], tmp_path: Path
) -> tuple[TrainConfig, Path, nn.Module]:
    cfg, out, model = finished_run
    mine = tmp_path / "r"
    shutil.copytree(out, mine)
    (mine / RESULTS_FILE).unlink()
    return cfg.replace(out=str(mine), resume=True), mine / CHECKPOINT_FILE, copy.deepcopy(model)


def _edit(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, path)


def _refused_resume(cfg: TrainConfig, path: Path, match: str, model: nn.Module | None) -> None:
    folder = path.parent
    before = _files(folder)
    state = None if model is None else state_copy(model)
    with pytest.raises(SpikeLotteryError, match=match) as err:
        load_for_resume(cfg, model=model)
    assert str(path) in str(err.value) and "weights_only" not in str(err.value)
    assert _files(folder) == before
    if model is not None and state is not None:
        assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda state: state.pop(key)


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda state: state.__setitem__(key, value)


def _drop_nested(*keys: str) -> Callable[[dict[str, Any]], None]:
    def change(state: dict[str, Any]) -> None:
        for k in keys[:-1]:
            state = state[k]
        del state[keys[-1]]

    return change


def _model_entry(change: str) -> Callable[[dict[str, Any]], None]:
    def edit(state: dict[str, Any]) -> None:
        key = sorted(state["model"])[0]
        if change == "drop":
            del state["model"][key]
        elif change == "extra":
            state["model"]["ghost.weight"] = torch.zeros(1)
        else:
            state["model"][key] = torch.zeros(3, 1, 7)

    return edit


def _history(epochs: list[int]) -> Callable[[dict[str, Any]], None]:
    def edit(state: dict[str, Any]) -> None:
        records = json.loads(state["history"])
        state["history"] = json.dumps([{**records[0], "epoch": e} for e in epochs])

    return edit


BAD_CHECKPOINTS: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    **{
        f"missing-{key}": (_drop(key), f"the key '{key}' .* is missing")
        for key in sorted(FORMAT_1_KEYS - {"format"})
    },
    "epoch-as-text": (_set("epoch", "2"), "'epoch' is a str, not an int"),
    "epoch-as-bool": (_set("epoch", True), "'epoch' is a bool, not an int"),
    "model-as-list": (_set("model", []), "'model' is a list, not a state_dict"),
    "elapsed-nan": (_set("elapsed", float("nan")), "'elapsed' is nan"),
    "elapsed-negative": (_set("elapsed", -1.0), "'elapsed' is -1.0"),
    "config-not-json": (_set("config", "{oops"), "'config' is not valid JSON"),
    "history-an-object": (_set("history", "{}"), "'history' holds a dict, not a list"),
    "history-deep": (_set("history", "[" * 100_000 + "]" * 100_000), "'history' is not valid"),
    "config-huge-int": (_set("config", '{"seed": ' + "9" * 5000 + "}"), "'config' is not valid"),
    "history-of-ints": (_set("history", "[1, 2]"), "a record that is not an object"),
    "model-entry-text": (_set("model", {"x": "y"}), "'model' entry 'x' is not a tensor"),
    "optimizer-without-groups": (
        _drop_nested("optimizer", "param_groups"),
        "'optimizer.param_groups' is missing",
    ),
    "rng-without-numpy-state": (
        _drop_nested("rng", "numpy", "state"),
        "'rng.numpy.state' is missing",
    ),
    "rng-torch-as-list": (
        lambda s: s["rng"].__setitem__("torch", [1, 2]),
        "'rng.torch' is a list",
    ),
    "epoch-99-of-2": (_set("epoch", 99), "99 epochs were done, but this run plans 1 to 2"),
    "epoch-minus-3": (_set("epoch", -3), "-3 epochs were done"),
    "epoch-0": (_set("epoch", 0), "0 epochs were done"),
    "wrong-stage": (_set("stage", "finetune"), "belongs to stage 'search', but it says"),
    "history-repeated": (_history([1, 2, 1, 2]), r"epochs 1\.\.2, not \[1, 2, 1, 2\]"),
    "history-short": (_history([1]), r"epochs 1\.\.2, not \[1\]"),
    "model-key-missing": (_model_entry("drop"), "do not fit: it lacks the model's"),
    "model-key-extra": (_model_entry("extra"), "it has 'ghost.weight' the model lacks"),
    "model-shape": (_model_entry("shape"), r"has shape \(3, 1, 7\), the model's"),
}


@pytest.mark.parametrize(
    ("change", "match"), BAD_CHECKPOINTS.values(), ids=list(BAD_CHECKPOINTS.keys())
)
def test_damaged_checkpoints_are_refused_by_name(
    run_copy: tuple[TrainConfig, Path, nn.Module],
    change: Callable[[dict[str, Any]], None],
    match: str,
) -> None:
    cfg, path, model = run_copy
    _edit(path, change)
    _refused_resume(cfg, path, match, model)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("kind", ["pickle-payload", "garbage", "truncated"])
def test_unreadable_checkpoints_never_suggest_weights_only_false(
    run_copy: tuple[TrainConfig, Path, nn.Module], kind: str
) -> None:
    cfg, path, model = run_copy
    marker = path.parent.parent / "pwned"
    if kind == "pickle-payload":
        torch.save({"format": 1, "x": _Payload(marker)}, path)
    elif kind == "garbage":
        path.write_bytes(pickle.dumps("not a checkpoint") + b"junk")
    else:
        path.write_bytes(path.read_bytes()[:500])
    _refused_resume(cfg, path, "cannot read checkpoint", model)
    with pytest.raises(SpikeLotteryError, match="cannot read checkpoint") as err:
        load_checkpoint(path)
    assert "weights_only" not in str(err.value) and not marker.exists()


@pytest.mark.parametrize("epoch", [99, -3], ids=["99-of-2", "minus-3"])
def test_resume_refuses_an_epoch_outside_the_plan_before_training(
    run_copy: tuple[TrainConfig, Path, nn.Module], epoch: int
) -> None:
    cfg, path, _ = run_copy
    _edit(path, _set("epoch", epoch))
    before = _files(path.parent)
    trainer = Trainer(cfg)
    with pytest.raises(SpikeLotteryError, match=f"{epoch} epochs were done") as err:
        trainer.run()
    assert str(path) in str(err.value)
    assert _files(path.parent) == before  # not retrained, no results, no new checkpoint
    assert not (path.parent / RESULTS_FILE).exists()


def test_restore_optimizer_names_a_state_that_does_not_fit(
    run_copy: tuple[TrainConfig, Path, nn.Module],
) -> None:
    _, path, _ = run_copy
    checkpoint = load_checkpoint(path)
    other = nn.Linear(2, 2)
    opt = torch.optim.Adam(other.parameters())
    sched = torch.optim.lr_scheduler.StepLR(opt, 1)
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(SpikeLotteryError, match="its optimizer state does not fit") as err:
        restore_optimizer(path, checkpoint, opt, sched)
    assert str(path) in str(err.value)
    assert opt.state_dict() == before


def test_stale_temporaries_are_removed_on_the_next_start(
    run_copy: tuple[TrainConfig, Path, nn.Module],
) -> None:
    cfg, path, _ = run_copy
    folder = path.parent
    ours = [".checkpoint.pt.0123456789ab.tmp", ".results.json.abcdef012345.tmp"]
    theirs = [".notes.tmp", "checkpoint.pt.tmp", ".checkpoint.pt.xyz.tmp", "keep.0123456789ab.tmp"]
    for name in ours + theirs:
        (folder / name).write_bytes(b"partial")
    before = _files(folder)
    assert load_for_resume(cfg.replace(resume=False)) is None
    after = _files(folder)
    assert set(before) - set(after) == set(ours)  # only our own pattern, nothing else
    assert all(after[k] == before[k] for k in after)


def test_save_checkpoint_on_a_full_disk(
    run_copy: tuple[TrainConfig, Path, nn.Module], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, path, _ = run_copy
    checkpoint = load_checkpoint(path)
    before = _files(path.parent)
    fill_disk(monkeypatch, 1000)
    with pytest.raises(OSError) as err:
        save_checkpoint(path, checkpoint)
    _assert_disk_full_error(err, path)
    assert _files(path.parent) == before
