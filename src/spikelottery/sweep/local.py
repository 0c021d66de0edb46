"""The local executor: a sweep's runs one after another, or in N worker processes.

Workers are :class:`concurrent.futures.ProcessPoolExecutor` processes (``spawn``), each
told that it shares the CPUs with the others (:func:`~spikelottery.threads.share_cpus`),
so that a run's ``threads="auto"`` takes its share and N runs do not fight over the
cores, and ended when the sweep process dies (a killed sweep leaves no worker writing a
run that the next sweep claims). A failed run does not stop the others; it is reported,
and tried again by the next sweep.
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import functools
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..threads import share_cpus
from .plan import PlannedRun
from .registered import registered
from .task import run_task

__all__ = ["Outcome", "run_local"]


@dataclass(frozen=True)
class Outcome:
    """How one run ended: ``accuracy`` and ``seconds``, or the ``error`` it raised."""

    run: PlannedRun
    accuracy: float | None = None
    seconds: float | None = None
    error: str | None = None


def _outcome(run: PlannedRun, call: Callable[[], dict[str, Any]]) -> Outcome:
    """How ``call`` (the run, or waiting for it) ended: its summary, or the error it raised."""
    try:
        summary = call()
    except Exception as exc:  # reported, and retried by the next sweep
        return Outcome(run, error=f"{type(exc).__name__}: {exc}")
    return Outcome(run, summary["accuracy"], summary["seconds"])


def _die_with(parent: int) -> None:
    """End this worker when the sweep process ``parent`` dies.

    A killed sweep (``SIGKILL``, an out-of-memory kill) cannot stop its workers, and its
    claims die with it: a worker left running would go on writing a run folder that the
    next sweep has claimed and runs again. Linux kills the worker with its parent
    (``PR_SET_PDEATHSIG``); elsewhere a thread watches for the parent to go.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # pragma: no cover - no libc prctl
            pass
    if os.getppid() != parent:  # it died before the line above took effect
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, name="spikelottery-parent-watch", daemon=True).start()


def _worker_init(workers: int, parent: int) -> None:
    _die_with(parent)
    share_cpus(workers)


def run_local(
    runs: Sequence[PlannedRun],
    *,
    workers: int = 1,
    runtime: dict[str, Any] | None = None,
    tensorboard: bool = False,
    on_done: Callable[[Outcome], None] | None = None,
    claim: Callable[[PlannedRun], Callable[[], None] | None] | None = None,
) -> list[Outcome]:
    """Run ``runs`` here; call ``on_done`` as each one ends.

    Args:
        runs: The runs to run (their folders hold ``settings.json``).
        workers: ``1``: one after another in this process; ``N > 1``: ``N`` processes,
            each run's ``threads="auto"`` taking ``1 / N`` of the usable CPUs.
        runtime: Runtime settings for every run (``device``, ``data_root``...).
        tensorboard: Also write each run's TensorBoard event files.
        on_done: Called with each :class:`Outcome`, in the order they end.
        claim: Called just before a run starts, in this process: a function that lets
            the run go when it has ended, or ``None`` to skip the run (another sweep
            has it, or it is done). The sweep passes its per-run claims
            (:mod:`~spikelottery.sweep.claims`) here.

    Returns:
        The outcomes, in the order the runs ended (skipped runs have none).
    """
    report = on_done or (lambda outcome: None)
    take = claim or (lambda run: lambda: None)
    outcomes: list[Outcome] = []
    runtime = dict(runtime or {})

    def finish(outcome: Outcome, release: Callable[[], None]) -> None:
        release()
        outcomes.append(outcome)
        report(outcome)

    if workers <= 1:
        for r in runs:
            release = take(r)
            if release is None:
                continue
            try:
                call = functools.partial(run_task, r.folder, runtime, tensorboard)
                outcome = _outcome(r, call)
            finally:
                release()
            finish(outcome, release)
        return outcomes
    context = multiprocessing.get_context("spawn")
    expected = registered()  # what the workers must see behind the runs' names
    running: dict[cf.Future[dict[str, Any]], tuple[PlannedRun, Callable[[], None]]] = {}

    def collect(futures: Iterable[cf.Future[dict[str, Any]]]) -> None:
        for future in futures:
            run, release = running.pop(future)
            finish(_outcome(run, future.result), release)

    try:
        with cf.ProcessPoolExecutor(
            workers, mp_context=context, initializer=_worker_init, initargs=(workers, os.getpid())
        ) as pool:
            for r in runs:
                # claim a run only when a worker is free for it, so that another sweep
                # on this folder can take the runs this one has not started
                while len(running) >= workers:
                    collect(cf.wait(running, return_when=cf.FIRST_COMPLETED).done)
                release = take(r)
                if release is not None:
                    future = pool.submit(run_task, str(r.folder), runtime, tensorboard, expected)
                    running[future] = (r, release)
            collect(cf.as_completed(list(running)))
    finally:  # after the pool has shut down: no claimed run is still running
        for _, release in running.values():
            release()
    return outcomes
