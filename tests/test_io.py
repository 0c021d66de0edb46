"""Atomic writes: the final name holds either the old or the new content, never a half file."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from _disk_testing import fill_disk
from spikelottery._io import atomic_open, atomic_write_bytes
from spikelottery.engine import RESULTS_FILE
from spikelottery.engine.results import write_json


def test_write_and_replace(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    atomic_write_bytes(target, b"first")
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_failure_mid_write_keeps_old_content(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="crash"), atomic_open(target, "w") as fh:
        fh.write("new, half")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_missing_folder_names_the_path(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "out.bin"
    with pytest.raises(OSError, match="out.bin"):
        atomic_write_bytes(target, b"x")


def test_bad_mode(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode"), atomic_open(tmp_path / "x", "a"):
        pass


# --- from test_bad_inputs_files.py: Bad files and failed writes: tickets, checkpoints, ONNX export and the atomic writers.


def _files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden temporaries included) and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _assert_disk_full_error(err: pytest.ExceptionInfo[OSError], path: Path) -> None:
    assert err.value.errno == errno.ENOSPC
    assert str(path) in str(err.value) and "space" in str(err.value)


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


def test_write_json_on_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / RESULTS_FILE
    fill_disk(monkeypatch, 5)
    with pytest.raises(OSError) as err:
        write_json(path, {"accuracy": 0.5})
    _assert_disk_full_error(err, path)
    assert _files(tmp_path) == {}
