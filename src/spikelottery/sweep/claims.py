"""Who is running what: a sweep's lock and its per-run claims, so two sweeps never collide.

Two ``spikelottery sweep`` processes may meet on one folder (a second terminal, a
resubmitted job, two ``--shard`` processes, a sweep started by mistake). They split the
runs between them instead of running each twice:

* ``DIR/sweep.lock`` is held while a sweep writes its plan (and, for SLURM, while it
  checks and submits its jobs); a second sweep waits for it, a few seconds at most.
* ``DIR/runs/<id>/claim.lock`` is held by the sweep process that runs ``<id>`` (the
  driver: with ``--workers N`` the driver claims each run before handing it to a worker)
  from just before the run starts until it ends. Another sweep skips a claimed run and
  says who holds it; a run that finished meanwhile is seen to be done.

Both are files locked with :func:`fcntl.flock` and naming their holder (host, pid, start
time), so the lock dies with its process: a crashed or killed sweep leaves the file, whose
lock any later sweep takes over, and nothing to clean up by hand. Where ``flock`` is not
available (Windows, a file system without locks), a claim is a file created with
``O_EXCL``; such a claim left by a dead process is taken over when its holder ran on this
host, and otherwise named with the advice to delete it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import SpikeLotteryError

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["CLAIM_FILE", "LOCK_FILE", "Claim", "Holder", "claim_run", "sweep_lock"]

CLAIM_FILE = "claim.lock"
LOCK_FILE = "sweep.lock"
#: errnos of a file system that does not lock files.
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


@dataclass(frozen=True)
class Holder:
    """The process that holds a lock or a claim, as its file names it."""

    host: str
    pid: int
    started: str

    def describe(self) -> str:
        """``pid 4242 on node7 since 2026-12-07T06:30:00+0000``."""
        return f"{self.process()} since {self.started}"

    def process(self) -> str:
        """``pid 4242 on node7``: the process, without the time it took this lock."""
        return f"pid {self.pid} on {self.host}"

    @classmethod
    def me(cls) -> Holder:
        """This process."""
        return cls(platform.node(), os.getpid(), time.strftime("%Y-%m-%dT%H:%M:%S%z"))


def _read_holder(path: Path) -> Holder | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Holder(str(data["host"]), int(data["pid"]), str(data["started"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None  # gone, or being written


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists but is someone else's
        return True
    return True


def _open_error(exc: OSError, path: Path) -> SpikeLotteryError:
    return SpikeLotteryError(
        f"cannot write {str(path)!r}: {exc.strerror or exc}; a sweep needs a folder it can "
        "write (give --out a writable folder)"
    )


class Claim:
    """A held lock file; :meth:`release` (or leaving its ``with`` block) lets it go."""

    def __init__(self, path: Path, fd: int | None) -> None:
        self.path = path
        self._fd = fd

    def release(self) -> None:
        """Remove the file (when it is still ours) and unlock it. Idempotent."""
        if self._fd is None and not self.path.exists():
            return
        try:
            mine = self._fd is None or os.stat(self.path).st_ino == os.fstat(self._fd).st_ino
            if mine:
                self.path.unlink()
        except OSError:
            pass
        if self._fd is not None:
            os.close(self._fd)  # closing the last descriptor unlocks
            self._fd = None

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _write_holder(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    h = Holder.me()
    os.write(fd, json.dumps({"host": h.host, "pid": h.pid, "started": h.started}).encode())
    os.fsync(fd)


def _try_flock(path: Path, *, block: bool) -> Claim | Holder | None:
    """The lock on ``path``, its holder, or ``None`` when the file system has no locks."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise _open_error(exc, path) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return _read_holder(path) or Holder("?", -1, "?")
        except OSError as exc:
            os.close(fd)
            if exc.errno in _NO_LOCKS:
                return None
            raise _open_error(exc, path) from None
        try:  # the holder we waited for may have removed the file meanwhile
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            _write_holder(fd)
            return Claim(path, fd)
        os.close(fd)


def _try_exclusive(path: Path) -> Claim | Holder:
    """A claim made by creating ``path`` (no locks here); stale ones of this host taken over."""
    for _ in range(3):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = _read_holder(path)
            if holder is None or holder.host != platform.node() or _pid_alive(holder.pid):
                return holder or Holder("?", -1, "?")
            with contextlib.suppress(FileNotFoundError):  # its holder is gone: take it over
                path.unlink()
            continue
        except OSError as exc:
            raise _open_error(exc, path) from None
        _write_holder(fd)
        os.close(fd)
        return Claim(path, None)
    return _read_holder(path) or Holder("?", -1, "?")


def claim_run(folder: str | os.PathLike[str]) -> Claim | Holder:
    """Claim the run folder ``folder`` for this process, or name who has it.

    Returns:
        A :class:`Claim` to release when the run ends, or the :class:`Holder` of the
        claim (another live sweep).

    Raises:
        SpikeLotteryError: The folder cannot be written.
    """
    path = Path(folder) / CLAIM_FILE
    if fcntl is not None:
        got = _try_flock(path, block=False)
        if got is not None:
            return got
    return _try_exclusive(path)


@contextlib.contextmanager
def sweep_lock(
    folder: str | os.PathLike[str], *, say: Callable[[str], None] | None = None
) -> Iterator[None]:
    """Hold ``DIR/sweep.lock`` for the block (waiting for another sweep to release it).

    Raises:
        SpikeLotteryError: The folder cannot be written.
    """
    path = Path(folder) / LOCK_FILE
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _open_error(exc, Path(folder)) from None
    claim: Claim | Holder | None = None
    if fcntl is not None:
        claim = _try_flock(path, block=False)
        if isinstance(claim, Holder):
            if say is not None:
                say(f"waiting for the sweep of {claim.describe()} to write its plan")
            claim = _try_flock(path, block=True)
    if not isinstance(claim, Claim):  # no locks here: the run claims alone keep runs apart
        yield
        return
    try:
        yield
    finally:
        claim.release()
