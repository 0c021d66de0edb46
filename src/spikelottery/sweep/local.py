"""The local executor: a sweep's runs one after another, or in N worker processes.

Workers are :class:`concurrent.futures.ProcessPoolExecutor` processes (``spawn``), each
told that it shares the CPUs with the others (:func:`~spikelottery.threads.share_cpus`),
so that a run's ``threads="auto"`` takes its share and N runs do not fight over the
cores. A failed run does not stop the others; it is reported, and tried again by the
next sweep.
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import multiprocessing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..threads import share_cpus
from .plan import PlannedRun
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


def run_local(
    runs: Sequence[PlannedRun],
    *,
    workers: int = 1,
    runtime: dict[str, Any] | None = None,
    tensorboard: bool = False,
    on_done: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Run ``runs`` here; call ``on_done`` as each one ends.

    Args:
        runs: The runs to run (their folders hold ``settings.json``).
        workers: ``1``: one after another in this process; ``N > 1``: ``N`` processes,
            each run's ``threads="auto"`` taking ``1 / N`` of the usable CPUs.
        runtime: Runtime settings for every run (``device``, ``data_root``...).
        tensorboard: Also write each run's TensorBoard event files.
        on_done: Called with each :class:`Outcome`, in the order they end.

    Returns:
        The outcomes, in the order the runs ended.
    """
    report = on_done or (lambda outcome: None)
    outcomes: list[Outcome] = []
    runtime = dict(runtime or {})
    if workers <= 1:
        for r in runs:
            outcome = _outcome(r, functools.partial(run_task, r.folder, runtime, tensorboard))
            outcomes.append(outcome)
            report(outcome)
        return outcomes
    context = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(
        workers, mp_context=context, initializer=share_cpus, initargs=(workers,)
    ) as pool:
        futures = {pool.submit(run_task, str(r.folder), runtime, tensorboard): r for r in runs}
        for future in cf.as_completed(futures):
            outcome = _outcome(futures[future], future.result)
            outcomes.append(outcome)
            report(outcome)
    return outcomes
