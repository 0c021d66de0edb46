"""Atomic file writes: nothing is ever left half-written under its final name."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_open", "atomic_write_bytes"]


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
        OSError: The folder is missing or not writable; the message names ``path``.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open supports mode 'w' or 'wb', got {mode!r}")
    path = Path(path)
    folder = path.parent
    tmp = folder / f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as exc:
        raise type(exc)(
            exc.errno,
            f"cannot write {str(path)!r}: {exc.strerror}; check that the folder {str(folder)!r} "
            "exists and is writable",
            str(path),
        ) from exc
    try:
        with os.fdopen(fd, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)
