"""Atomic file writes: nothing is ever left half-written under its final name.

Every file spikelottery writes goes through :func:`atomic_open`, :func:`atomic_write_bytes`
or :func:`atomic_path`: the data goes to a hidden temporary file beside the target
(``.name.<12 hex digits>.tmp``), is flushed to disk, and only then renamed over the
target. A failed write (a full disk, a kill) leaves the old file, or none; an error
names the target and says what to do; :func:`remove_stale_temps` removes what a killed
process left behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "TEMP_PATTERN",
    "atomic_open",
    "atomic_path",
    "atomic_write_bytes",
    "remove_stale_temps",
    "temp_path",
]

#: The names of the temporary files written here (``.checkpoint.pt.3f9a0c1d2e4b.tmp``).
TEMP_PATTERN = re.compile(r"\..+\.[0-9a-f]{12}\.tmp")


def temp_path(path: Path) -> Path:
    """A fresh temporary name beside ``path`` that matches :data:`TEMP_PATTERN`."""
    return path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"


def _write_error(exc: OSError, path: Path) -> OSError:
    """``exc`` as an :class:`OSError` (same errno, so the same subclass) naming ``path``."""
    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG):
        hint = "free some space (or quota) on the disk that holds it, or write elsewhere"
    else:
        hint = f"check that the folder {str(path.parent)!r} exists and is writable"
    reason = exc.strerror or str(exc) or type(exc).__name__
    message = f"cannot write {str(path)!r}: {reason}; {hint}"
    if exc.errno is None:
        return OSError(message)
    return OSError(exc.errno, message, str(path))


def _ours(exc: BaseException, tmp: Path) -> bool:
    """Whether ``exc`` is a write error on ``tmp`` (not an error about some other file)."""
    return isinstance(exc, OSError) and exc.filename in (None, str(tmp), tmp)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _finishing(tmp: Path, path: Path) -> Iterator[None]:
    """Around writing ``tmp`` and renaming it over ``path``: on any failure, remove ``tmp``;
    a write error on ``tmp`` is raised again naming ``path``."""
    try:
        yield
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if _ours(exc, tmp):
            assert isinstance(exc, OSError)
            raise _write_error(exc, path) from exc
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb", **kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success fsync it and rename it over ``path``.

    If the block raises (or the process dies) the temporary file is removed (or left as a
    hidden ``.name.*.tmp``) and ``path`` keeps its old content. Permissions follow the
    umask, as :func:`open` would give.

    Args:
        path: The final file name; its folder must exist.
        mode: ``"wb"`` or ``"w"``; extra keyword arguments go to :func:`os.fdopen`
            (``newline=""``, ``encoding=``).

    Raises:
        OSError: The folder is missing or not writable, or the disk is full; the message
            names ``path`` and the errno is kept (so ``FileNotFoundError``,
            ``PermissionError``... stay what they were). No temporary file is left.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open supports mode 'w' or 'wb', got {mode!r}")
    path = Path(path)
    tmp = temp_path(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as exc:
        raise _write_error(exc, path) from exc
    with _finishing(tmp, path):
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path beside ``path`` for a writer that wants a file name (not a handle).

    The block writes the file at the yielded path; on success it is fsynced and renamed
    over ``path``; on failure it is removed and ``path`` keeps its old content.

    >>> with atomic_path("model.onnx") as tmp:  # doctest: +SKIP
    ...     torch.onnx.export(model, args, str(tmp))

    Raises:
        OSError: As :func:`atomic_open`, naming ``path``.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(
            errno.ENOENT,
            f"cannot write {str(path)!r}: the folder {str(path.parent)!r} does not exist",
            str(path),
        )
    tmp = temp_path(path)
    with _finishing(tmp, path):
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(errno.ENOENT, "the writer produced no file", str(tmp))
        _fsync(tmp)
        os.replace(tmp, path)


def remove_stale_temps(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files that killed writers left in ``folder``; return them.

    Only names matching :data:`TEMP_PATTERN` (what this module writes) are touched;
    a missing folder is not an error.
    """
    removed = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(folder):
            if TEMP_PATTERN.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes | bytearray | memoryview) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)
