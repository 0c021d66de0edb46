"""How many intra-op CPU threads a run uses: what the process may use, and what is fastest.

PyTorch starts one intra-op thread per core of the machine. On a machine shared with
other work (a laptop with a browser, a SLURM node, a CI runner) those threads wait on
each other at every parallel operation: on 2 cores beside three busy processes a small
network trained 3.8 times slower at 2 threads than at 1 (``benchmarks/bench_threads.py``).
The policy here chooses, in this order:

1. an explicit count: the ``threads`` run setting (``--threads N``);
2. a count the process was given: ``torch.set_num_threads`` called before the run, else
   ``OMP_NUM_THREADS``;
3. ``"auto"``: the CPUs the process may really use (CPU affinity, the cgroup CPU quota,
   SLURM's ``SLURM_CPUS_PER_TASK``, never more than torch's own count) divided among the
   sweep's worker processes (:func:`share_cpus`) or ``torchrun``'s local processes; then
   1 when the machine's load leaves less than one CPU free (the load is read
   only where the process may use every CPU of the machine: in a container or a SLURM
   allocation it describes other people's CPUs); else the engine times a forward pass
   and a few training steps of the run's model at 1 and at ``N`` threads
   (:func:`time_counts`, on a copy of the model with the random generators restored
   afterwards, so the run computes the same numbers whatever the timing found) and keeps
   the faster (:meth:`ThreadChoice.settle`: more threads only when more than 5% faster).

The thread count can change float summation order: a run at 1 thread and the same run at
2 threads may differ in the last bits (measured: 5 of 15 study runs; 3 accuracies moved
by a test image or two), so the count used and how it was chosen are recorded in
``results.json`` (:meth:`ThreadChoice.to_dict`). Pin it (``--threads 1``) to repeat a run
bit for bit.

>>> cpus = Cpus(machine=2, affinity=2, load=3.1)
>>> choice = choose_threads("auto", cpus)
>>> choice.count, choice.reason
(1, 'auto (affinity 2, load 3.1 -> 1)')
>>> choose_threads(4, cpus).reason
'threads=4 (the threads setting, --threads)'
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from .errors import SpikeLotteryError

__all__ = [
    "AUTO",
    "Cpus",
    "ThreadChoice",
    "check_threads",
    "choose_threads",
    "current_choice",
    "read_cpus",
    "share_cpus",
    "thread_scope",
    "time_counts",
    "timed_choice",
    "usable_cpus",
]

#: The ``threads`` value that lets the library choose.
AUTO = "auto"
#: More threads are kept only when they are faster than fewer by more than this fraction.
FASTER_BY = 0.05
#: Free CPUs (the machine's count less the load of other processes) below which ``auto``
#: takes one thread without timing: a second thread would share a core with other work.
#: From there up the run's model is timed at 1 and at the free CPUs rounded up (a load
#: average of 0.7 left by a command that just ended, or by the machine's own daemons,
#: must not keep an idle 2-core machine at one thread: the demo took 1.6x as long).
MIN_FREE_FOR_MORE = 1.0
#: Seconds after which the engine times the thread counts again for the same model.
PROBE_TTL = 120.0

# torch's count when this module was imported: a different count later means that the
# user called torch.set_num_threads.
_INITIAL_THREADS = torch.get_num_threads()
_STARTED = time.monotonic()
_CPU_AT_START = time.process_time()
_share = 1  # this process's share of the CPUs: 1 / (worker processes of a sweep)


def check_threads(name: str, value: Any) -> int | str:
    """A ``threads`` value: ``"auto"`` or an int >= 1 (a numeric string is converted).

    Raises:
        ValueError: Anything else, naming ``name`` and what to pass.

    >>> check_threads("threads", "2"), check_threads("threads", "AUTO")
    (2, 'auto')
    """
    if isinstance(value, str):
        text = value.strip().lower()
        if text == AUTO:
            return AUTO
        if text.lstrip("+").isdigit():
            value = int(text)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return int(value)
    raise ValueError(
        f"{name} must be 'auto' or a number of CPU threads >= 1, got {name}={value!r}; "
        "pass e.g. 1 (one thread: steadiest on a busy machine) or auto"
    )


def _omp_threads(text: str | None) -> int | None:
    """``OMP_NUM_THREADS`` as a count (its first level), ``None`` if unset or empty."""
    if text is None or not text.strip():
        return None
    first = text.split(",")[0].strip()
    if first.isdigit() and int(first) >= 1:
        return int(first)
    raise SpikeLotteryError(
        f"OMP_NUM_THREADS={text!r} is not a number of threads >= 1; set it to an int "
        "(e.g. export OMP_NUM_THREADS=1), unset it, or pass --threads N, which wins over it"
    )


@dataclass(frozen=True)
class Cpus:
    """What this process may use of the machine's CPUs, and how busy the machine is.

    Attributes:
        machine: The machine's CPUs (``os.cpu_count()``).
        affinity: CPUs this process may run on (``os.sched_getaffinity``); ``None``:
            unknown (not Linux).
        quota: The cgroup CPU quota in CPUs (``1.5``: 150 ms per 100 ms); ``None``: none.
        slurm: ``SLURM_CPUS_PER_TASK`` (the CPUs SLURM allotted each task); ``None``: not
            under SLURM.
        load: The 1-minute load average (runnable processes); ``None``: unknown.
        own_load: This process's estimated part of ``load``.
    """

    machine: int
    affinity: int | None = None
    quota: float | None = None
    slurm: int | None = None
    load: float | None = None
    own_load: float = 0.0


def usable_cpus(cpus: Cpus) -> int:
    """The CPUs the process may really use: the smallest of the machine, affinity, quota, SLURM.

    A fractional quota is rounded down (a thread beyond it is throttled), never below 1.

    >>> usable_cpus(Cpus(machine=64, affinity=8, quota=2.5))
    2
    """
    limits: list[float] = [cpus.machine]
    limits += [v for v in (cpus.affinity, cpus.quota, cpus.slurm) if v is not None]
    return max(1, math.floor(min(limits)))


def _cpus_text(cpus: Cpus, workers: int, torch_threads: int | None) -> list[str]:
    parts = [f"affinity {cpus.affinity}" if cpus.affinity is not None else f"cpus {cpus.machine}"]
    if cpus.quota is not None:
        parts.append(f"quota {cpus.quota:g}")
    if cpus.slurm is not None:
        parts.append(f"slurm {cpus.slurm}")
    if workers > 1:
        parts.append(f"{workers} workers")
    if torch_threads is not None and torch_threads < usable_cpus(cpus) // max(1, workers):
        parts.append(f"torch {torch_threads}")
    return parts


@dataclass(frozen=True)
class ThreadChoice:
    """A run's intra-op thread count and how it was chosen.

    Attributes:
        count: The threads to use (before any timing: the largest candidate).
        source: ``"setting"`` (``threads=N``, ``--threads N``), ``"torch.set_num_threads"``,
            ``"OMP_NUM_THREADS"`` or ``"auto"``.
        reason: One line for people: ``"auto (affinity 2, load 3.1 -> 1)"``.
        candidates: The counts worth timing (one: nothing to time).
        timings: Seconds per step at each timed count (after :meth:`settle`).
    """

    count: int
    source: str
    reason: str
    candidates: tuple[int, ...] = ()
    timings: Mapping[int, float] | None = None

    @property
    def needs_timing(self) -> bool:
        """Whether several counts are worth timing before the run."""
        return len(self.candidates) > 1

    def settle(self, timings: Mapping[int, float]) -> ThreadChoice:
        """The choice after timing: the fewest threads within :data:`FASTER_BY` of the fastest.

        >>> c = ThreadChoice(2, "auto", "auto (affinity 2 -> 2)", (1, 2))
        >>> c.settle({1: 0.0100, 2: 0.0098}).reason
        'auto (affinity 2; timed 1: 10.0 ms, 2: 9.8 ms -> 1)'
        """
        if not timings:
            return self
        best = min(timings.values())
        count = min(c for c, t in timings.items() if t <= best * (1 + FASTER_BY))
        timed = ", ".join(f"{c}: {1000 * t:.1f} ms" for c, t in sorted(timings.items()))
        head = self.reason.rsplit(" -> ", 1)[0]
        return replace(
            self, count=count, reason=f"{head}; timed {timed} -> {count})", timings=dict(timings)
        )

    def to_dict(self) -> dict[str, Any]:
        """The record in ``results.json``: ``count``, ``source``, ``reason``, ``timings``."""
        timings = None
        if self.timings is not None:
            timings = {str(c): round(t, 6) for c, t in sorted(self.timings.items())}
        return {
            "count": self.count,
            "source": self.source,
            "reason": self.reason,
            "timings": timings,
        }


def choose_threads(
    setting: int | str,
    cpus: Cpus,
    *,
    workers: int = 1,
    omp: str | None = None,
    torch_threads: int | None = None,
    torch_initial: int | None = None,
) -> ThreadChoice:
    """Choose the intra-op thread count of a run (pure: it reads nothing itself).

    Args:
        setting: The ``threads`` setting: a count (used as is) or ``"auto"``.
        cpus: What the process may use and the machine's load (see :func:`read_cpus`).
        workers: Processes sharing those CPUs (a sweep's workers, ``torchrun``'s local
            processes).
        omp: ``OMP_NUM_THREADS`` as set in the environment (``None``: unset).
        torch_threads: ``torch.get_num_threads()`` now; it also caps ``auto``.
        torch_initial: ``torch.get_num_threads()`` when the library was imported; a
            different ``torch_threads`` means ``torch.set_num_threads`` was called.

    Returns:
        The choice; when :attr:`ThreadChoice.needs_timing`, time its candidates
        (:func:`time_counts`) and :meth:`~ThreadChoice.settle` it.

    Raises:
        ValueError: A bad ``setting`` or ``OMP_NUM_THREADS``, naming it.

    >>> choose_threads("auto", Cpus(machine=2, affinity=2, load=0.2)).candidates
    (1, 2)
    >>> choose_threads("auto", Cpus(machine=2), omp="1").reason
    'OMP_NUM_THREADS=1'
    """
    setting = check_threads("threads", setting)
    if isinstance(setting, int):
        return ThreadChoice(
            setting, "setting", f"threads={setting} (the threads setting, --threads)"
        )
    if torch_threads is not None and torch_initial is not None and torch_threads != torch_initial:
        return ThreadChoice(
            torch_threads,
            "torch.set_num_threads",
            f"torch.set_num_threads({torch_threads}) before the run",
        )
    from_env = _omp_threads(omp)
    if from_env is not None:
        return ThreadChoice(from_env, "OMP_NUM_THREADS", f"OMP_NUM_THREADS={from_env}")
    workers = max(1, workers)
    usable = usable_cpus(cpus)
    n = max(1, usable // workers)
    if torch_threads is not None:
        n = min(n, max(1, torch_threads))
    parts = _cpus_text(cpus, workers, torch_threads)
    # The load average counts the whole machine's runnable processes: it says something
    # about our CPUs only when we may use all of them.
    if n > 1 and cpus.load is not None and usable >= cpus.machine and cpus.quota is None:
        parts.append(f"load {cpus.load:.1f}")
        free = cpus.machine - max(0.0, cpus.load - cpus.own_load)
        if free < MIN_FREE_FOR_MORE:
            n = 1
        else:
            n = min(n, max(1, math.ceil(free)))
    reason = f"auto ({', '.join(parts)} -> {n})"
    return ThreadChoice(n, AUTO, reason, (1, n) if n > 1 else (1,))


def share_cpus(workers: int) -> None:
    """Declare that this process shares its CPUs with ``workers - 1`` others (a sweep's workers).

    The local executor calls it in each worker process; ``auto`` then divides the usable
    CPUs by ``workers``.
    """
    global _share
    _share = max(1, int(workers))


def _cgroup_paths() -> dict[str, str]:
    """This process's cgroup path per controller (``""`` for cgroup v2), from /proc."""
    paths: dict[str, str] = {}
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return paths
    for line in lines:
        _, controllers, path = [*line.split(":", 2), "", ""][:3]
        for c in controllers.split(",") if controllers else [""]:
            paths[c] = path
    return paths


def _read_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The cgroup CPU quota in CPUs (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), ``None`` if none."""
    paths = _cgroup_paths()
    v2 = [root / paths.get("", "/").lstrip("/") / "cpu.max", root / "cpu.max"]
    for f in v2:
        with contextlib.suppress(OSError, ValueError):
            quota, period = f.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
    v1_dirs = [root / "cpu" / paths.get("cpu", "/").lstrip("/"), root / "cpu", root / "cpu,cpuacct"]
    for d in v1_dirs:
        with contextlib.suppress(OSError, ValueError):
            quota_us = int((d / "cpu.cfs_quota_us").read_text())
            period_us = int((d / "cpu.cfs_period_us").read_text())
            return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    return None


def _own_load() -> float:
    """This process's estimated part of the 1-minute load average (its CPU use so far).

    The load average decays with a one-minute time constant; a process that started
    ``age`` seconds ago and has kept ``r`` CPUs busy adds about ``r * (1 - exp(-age/60))``.
    """
    age = max(1e-3, time.monotonic() - _STARTED)
    busy = (time.process_time() - _CPU_AT_START) / age  # CPU time of all our threads
    return busy * (1.0 - math.exp(-age / 60.0))


def read_cpus() -> Cpus:
    """What this process may use of the machine now (affinity, quota, SLURM, load)."""
    machine = os.cpu_count() or 1
    affinity = None
    with contextlib.suppress(AttributeError, OSError):
        affinity = len(os.sched_getaffinity(0))
    slurm = None
    with contextlib.suppress(ValueError):
        slurm = int(os.environ.get("SLURM_CPUS_PER_TASK", "")) or None
    load = None
    with contextlib.suppress(AttributeError, OSError):
        load = os.getloadavg()[0]
    return Cpus(machine, affinity, _read_quota(), slurm, load, _own_load())


def _local_processes() -> int:
    """This process's CPU-sharing siblings: ``torchrun``'s local processes (not under SLURM,
    whose ``SLURM_CPUS_PER_TASK`` is already per task)."""
    if "SLURM_CPUS_PER_TASK" in os.environ:
        return 1
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def current_choice(setting: int | str = AUTO) -> ThreadChoice:
    """:func:`choose_threads` for this process now: its CPUs, its environment, its share.

    >>> current_choice(1).count
    1
    """
    return choose_threads(
        setting,
        read_cpus(),
        workers=_share * _local_processes(),
        omp=os.environ.get("OMP_NUM_THREADS"),
        torch_threads=torch.get_num_threads(),
        torch_initial=_INITIAL_THREADS,
    )


def time_counts(
    step: Callable[[], object],
    counts: Sequence[int],
    *,
    first: Callable[[], object] | None = None,
    rounds: int = 3,
    clear: float = 1.5,
) -> dict[int, float]:
    """The median seconds of ``step()`` at each thread count, the counts interleaved.

    A first call of ``first`` (a cheaper part of ``step``, such as its forward pass;
    default: ``step``) per count, in order, warms caches and lazy initialisation; when
    one of them already takes ``clear`` times the first count's (which carries the
    one-off costs), that is the verdict: on a busy machine a thrashing count costs one
    short call, not several steps. Otherwise up to ``rounds`` rounds of one ``step`` per
    count, stopping once one count is ``clear`` times faster than another. torch's
    thread count is restored afterwards.

    >>> sorted(time_counts(lambda: torch.ones(8).sum(), [1, 2], rounds=1))
    [1, 2]
    """
    before = torch.get_num_threads()
    warm: dict[int, float] = {}
    times: dict[int, list[float]] = {c: [] for c in counts}
    try:
        for c in counts:
            torch.set_num_threads(c)
            t0 = time.perf_counter()
            (first or step)()
            warm[c] = time.perf_counter() - t0
            if warm[c] > clear * warm[counts[0]]:
                return warm
        for _ in range(max(1, rounds)):
            for c in counts:
                torch.set_num_threads(c)
                t0 = time.perf_counter()
                step()
                times[c].append(time.perf_counter() - t0)
            medians = [statistics.median(v) for v in times.values()]
            if max(medians) > clear * min(medians):
                break
    finally:
        torch.set_num_threads(before)
    return {c: statistics.median(v) for c, v in times.items()}


# Timing results by what was timed (a model's description and the candidates), with when.
_timed: dict[Any, tuple[float, dict[int, float]]] = {}


def timed_choice(
    choice: ThreadChoice,
    key: Any,
    build: Callable[[], tuple[Callable[[], object], Callable[[], object]]],
) -> ThreadChoice:
    """``choice`` settled by :func:`time_counts`, reusing a timing of ``key``.

    ``build()`` returns the ``first`` and the ``step`` functions to time; it is called
    only when needed: a timing of the same ``key`` (not ``None``) and candidates less
    than :data:`PROBE_TTL` seconds old is reused (a sweep's runs of one model time it
    once).
    """
    if not choice.needs_timing:
        return choice
    full_key = (key, choice.candidates)
    now = time.monotonic()
    cached = _timed.get(full_key) if key is not None else None
    if cached is not None and now - cached[0] < PROBE_TTL:
        return choice.settle(cached[1])
    first, step = build()
    timings = time_counts(step, choice.candidates, first=first)
    if key is not None:
        _timed[full_key] = (now, timings)
    return choice.settle(timings)


@contextlib.contextmanager
def thread_scope() -> Iterator[None]:
    """Restore torch's intra-op thread count on exit, whatever was set inside."""
    before = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
