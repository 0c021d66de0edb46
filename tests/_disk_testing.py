"""A disk that fills up, for tests of failed writes: :func:`fill_disk`."""

from __future__ import annotations

import errno
import os
from typing import Any

import pytest
import torch


class _FullFile:
    """A file object whose disk is full after ``room`` more bytes."""

    def __init__(self, fh: Any, room: int) -> None:
        self._fh, self._room = fh, room

    def write(self, data: Any) -> int:
        raw = data if isinstance(data, str) else bytes(memoryview(data).cast("B"))
        if len(raw) > self._room:
            self._fh.write(raw[: self._room])  # what fits, as a real disk would
            self._room = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self._room -= len(raw)
        return self._fh.write(raw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fh, name)

    def __enter__(self) -> _FullFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()


def fill_disk(monkeypatch: pytest.MonkeyPatch, room: int) -> None:
    """Files opened for writing from now on fill the disk after ``room`` bytes.

    Covers :func:`os.fdopen` (spikelottery's atomic writers) and the ``open`` of
    ``torch.serialization`` (what :func:`torch.onnx.export` writes through); the
    ``monkeypatch`` fixture undoes it after the test.
    """
    real_fdopen, real_open = os.fdopen, open

    def fdopen(fd: int, *args: Any, **kwargs: Any) -> _FullFile:
        return _FullFile(real_fdopen(fd, *args, **kwargs), room)

    def open_(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        fh = real_open(file, mode, *args, **kwargs)
        return _FullFile(fh, room) if "w" in mode else fh

    monkeypatch.setattr(os, "fdopen", fdopen)
    monkeypatch.setattr(torch.serialization, "open", open_, raising=False)
