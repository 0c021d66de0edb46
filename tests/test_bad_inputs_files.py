"""Bad files and failed writes: tickets, checkpoints, ONNX export and the atomic writers.

Each case checks the exception type, that the message names the file, key or layer, and
that nothing was written half or changed: the files keep their bytes, no temporary file
is left, the model keeps its state.
"""

from __future__ import annotations

import copy
import errno
import json
import os
import pickle
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from _disk_testing import fill_disk
from _engine_testing import tiny
from _ticket_testing import assert_untouched, rewrite_ticket, save_cnn_ticket, small_cnn, state_copy
from spikelottery import SpikeLotteryError
from spikelottery._io import atomic_open, atomic_write_bytes
from spikelottery.engine import CHECKPOINT_FILE, RESULTS_FILE, TrainConfig, Trainer, run
from spikelottery.engine.checkpoint import (
    load_checkpoint,
    load_for_resume,
    restore_optimizer,
    save_checkpoint,
)
from spikelottery.engine.results import write_json
from spikelottery.tickets import export_onnx, load_ticket, read_ticket_info, save_ticket


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden temporaries included) and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _assert_disk_full_error(err: pytest.ExceptionInfo[OSError], path: Path) -> None:
    assert err.value.errno == errno.ENOSPC
    assert str(path) in str(err.value) and "space" in str(err.value)


# --- atomic writers -------------------------------------------------------------------------


@pytest.mark.parametrize("room", [0, 3], ids=["nothing-fits", "half-fits"])
@pytest.mark.parametrize("existing", [False, True], ids=["new-file", "replaces-a-file"])
def test_atomic_write_on_a_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, room: int, existing: bool
) -> None:
    target = tmp_path / "out.bin"
    if existing:
        target.write_bytes(b"old content")
    before = _files(tmp_path)
    fill_disk(monkeypatch, room)
    with pytest.raises(OSError) as err:
        atomic_write_bytes(target, b"new content")
    _assert_disk_full_error(err, target)
    assert _files(tmp_path) == before  # the old file intact, no temporary left


@pytest.mark.parametrize(
    ("step", "error"),
    [
        ("fsync", OSError(errno.EIO, "Input/output error")),
        ("replace", PermissionError(errno.EACCES, "Permission denied", "x.tmp", "x")),
    ],
    ids=["fsync-fails", "rename-fails"],
)
def test_atomic_open_names_the_target_when_finishing_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str, error: OSError
) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    before = _files(tmp_path)

    def fail(*args: Any, **kwargs: Any) -> None:
        if step == "replace":
            error.filename = str(args[0])  # os.replace names its source, the temporary
        raise error

    monkeypatch.setattr(os, step, fail)
    with pytest.raises(type(error)) as err, atomic_open(target, "w") as fh:
        fh.write("new")
    assert err.value.errno == error.errno and str(target) in str(err.value)
    monkeypatch.undo()
    assert _files(tmp_path) == before


def test_atomic_open_passes_on_errors_about_other_files(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    with pytest.raises(FileNotFoundError) as err, atomic_open(target, "w") as fh:
        fh.write("new")
        (tmp_path / "elsewhere.txt").read_text()  # the block's own error, not a write error
    assert "elsewhere.txt" in str(err.value) and "out.txt" not in str(err.value)
    assert _files(tmp_path) == {}


def test_save_ticket_on_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    net, path = save_cnn_ticket(tmp_path)
    before = _files(tmp_path)
    fill_disk(monkeypatch, 100)
    with pytest.raises(OSError) as err:
        save_ticket(net, path)
    _assert_disk_full_error(err, path)
    assert _files(tmp_path) == before


def test_write_json_on_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / RESULTS_FILE
    fill_disk(monkeypatch, 5)
    with pytest.raises(OSError) as err:
        write_json(path, {"accuracy": 0.5})
    _assert_disk_full_error(err, path)
    assert _files(tmp_path) == {}


@pytest.mark.parametrize("existing", [False, True], ids=["new-file", "replaces-a-file"])
def test_export_onnx_on_a_full_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool
) -> None:
    pytest.importorskip("onnx")
    net, _ = save_cnn_ticket(tmp_path)
    (tmp_path / "cnn.safetensors").unlink()
    path = tmp_path / "cnn.onnx"
    if existing:
        path.write_bytes(b"an older export")
    before, state = _files(tmp_path), state_copy(net)
    fill_disk(monkeypatch, 0)
    with pytest.raises(OSError) as err:
        export_onnx(net, path, torch.rand(1, 3, 8, 8), dynamo=False)
    _assert_disk_full_error(err, path)
    assert _files(tmp_path) == before  # no 0-byte file, no temporary
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())


def test_export_onnx_into_a_missing_folder(tmp_path: Path) -> None:
    net, _ = save_cnn_ticket(tmp_path)
    before = _files(tmp_path)
    path = tmp_path / "missing" / "cnn.onnx"
    with pytest.raises(FileNotFoundError, match="missing/cnn.onnx"):
        export_onnx(net, path, torch.rand(1, 3, 8, 8), dynamo=False)
    assert _files(tmp_path) == before


# --- tickets ----------------------------------------------------------------------------------


@pytest.fixture
def cnn_ticket(tmp_path: Path) -> tuple[nn.Module, Path]:
    return save_cnn_ticket(tmp_path)


def _refused_load(path: Path, match: str) -> None:
    """``load_ticket`` and ``read_ticket_info`` refuse ``path``; model and file unchanged."""
    data = path.read_bytes()
    model = small_cnn()
    before = state_copy(model)
    with pytest.raises(SpikeLotteryError, match=match) as err:
        load_ticket(model, path)
    assert str(path) in str(err.value)
    assert_untouched(model, before)
    with pytest.raises(SpikeLotteryError, match=match):
        read_ticket_info(path)
    assert path.read_bytes() == data


RESIGNED = {
    "pa": ({"pa": "0.6"}, r"pa=0\.6 but its layers' pa is mostly 0\.4"),
    "mode": ({"mode": "lt"}, "mode='lt' but its layers' mode is mostly 'mp'"),
    "both": ({"pa": "0.0", "mode": "lt"}, r"pa=0\.0 .* and mode='lt'"),
}


@pytest.mark.parametrize(("changes", "match"), RESIGNED.values(), ids=RESIGNED.keys())
def test_resigned_header_that_disagrees_with_its_layers(
    cnn_ticket: tuple[nn.Module, Path], tmp_path: Path, changes: dict[str, str], match: str
) -> None:
    _, path = cnn_ticket
    bad = rewrite_ticket(path, tmp_path / "resigned.safetensors", **changes)
    _refused_load(bad, match)


def _with_header_key(path: Path, out: Path, key: str, value: str) -> Path:
    """``path`` with one more top-level header entry, spliced in as raw JSON text."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = data[8 : 8 + n].rstrip()
    assert header.endswith(b"}")
    new = header[:-1] + f',"{key}":{value}}}'.encode()
    out.write_bytes(struct.pack("<Q", len(new)) + new + data[8 + n :])
    return out


@pytest.mark.parametrize("depth", [17, 100_000], ids=["past-the-bound", "past-python-recursion"])
def test_deeply_nested_header_json(
    cnn_ticket: tuple[nn.Module, Path], tmp_path: Path, depth: int
) -> None:
    _, path = cnn_ticket
    bad = _with_header_key(path, tmp_path / "deep.safetensors", "x", "[" * depth + "]" * depth)
    _refused_load(bad, "header nests JSON more than 16 levels deep")


@pytest.mark.parametrize("depth", [17, 100_000], ids=["past-the-bound", "past-python-recursion"])
def test_deeply_nested_layer_table(
    cnn_ticket: tuple[nn.Module, Path], tmp_path: Path, depth: int
) -> None:
    _, path = cnn_ticket
    bad = rewrite_ticket(path, tmp_path / "deep.safetensors", layers="[" * depth + "]" * depth)
    _refused_load(bad, "valid spikelottery ticket: its layer table nests JSON more than 16 levels")


def test_header_json_with_a_huge_integer(
    cnn_ticket: tuple[nn.Module, Path], tmp_path: Path
) -> None:
    _, path = cnn_ticket
    bad = _with_header_key(path, tmp_path / "huge.safetensors", "x", "1" * 5000)
    _refused_load(bad, "header is not valid JSON")


@pytest.mark.parametrize("table", ['{"0": 1}', "[1, 2]", '"text"'], ids=["object", "ints", "str"])
def test_layer_table_of_the_wrong_type(
    cnn_ticket: tuple[nn.Module, Path], tmp_path: Path, table: str
) -> None:
    _, path = cnn_ticket
    bad = rewrite_ticket(path, tmp_path / "table.safetensors", layers=table)
    _refused_load(bad, "layer table are malformed")


@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_save_ticket_with_non_finite_scores_writes_nothing(
    cnn_ticket: tuple[nn.Module, Path], value: float
) -> None:
    net, path = cnn_ticket
    before = _files(path.parent)
    with torch.no_grad():
        net[3].scores[0, 0, 0, 0] = value
    state = state_copy(net)
    with pytest.raises(SpikeLotteryError, match=r"layer '3' has no valid mask.*NaN or infinite"):
        save_ticket(net, path)
    assert _files(path.parent) == before  # the saved ticket is intact, nothing else written
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0, equal_nan=True)
    assert read_ticket_info(path).layers[1]["name"] == "3"  # and still loads


# --- checkpoints ------------------------------------------------------------------------------


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
        for key in (
            "epoch",
            "stage",
            "model",
            "optimizer",
            "scheduler",
            "rng",
            "config",
            "history",
            "elapsed",
        )
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
