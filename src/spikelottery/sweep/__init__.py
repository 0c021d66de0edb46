"""Experiments at scale: a SPEC of runs, content-addressed run folders, local and SLURM executors.

``spikelottery sweep SPEC --out DIR`` (or :func:`sweep`) expands a SPEC file
(:mod:`~spikelottery.sweep.spec`: ``[base]`` settings, ``[grid]`` axes, ``[[zip]]`` axes
varied together) into runs, one folder per run under ``DIR/runs/<id>`` where ``<id>`` hashes
the run's settings (:mod:`~spikelottery.sweep.plan`), and runs those not done yet: here,
one after another or in worker processes (:mod:`~spikelottery.sweep.local`), or as one
SLURM job array through submitit (:mod:`~spikelottery.sweep.slurm`). Each run is the
engine's own run (:mod:`~spikelottery.sweep.task`): its ``results.json`` stays the one
source of truth, which ``spikelottery report`` reads. Sweeps that meet on one folder split
its runs through lock files that name their holder (:mod:`~spikelottery.sweep.claims`).
"""

from __future__ import annotations

from .local import Outcome, run_local
from .plan import (
    FAILED_FILE,
    PLAN_FILE,
    RUNS_DIR,
    SETTINGS_FILE,
    PlannedRun,
    parse_shard,
    plan_runs,
    run_id,
    run_key,
    run_status,
)
from .runner import EXECUTORS, SweepResult, sweep
from .slurm import JOBS_FILE, SlurmOptions, submit_slurm
from .spec import SpecError, SweepSpec, expand, load_spec
from .task import run_task

__all__ = [
    "EXECUTORS",
    "FAILED_FILE",
    "JOBS_FILE",
    "PLAN_FILE",
    "RUNS_DIR",
    "SETTINGS_FILE",
    "Outcome",
    "PlannedRun",
    "SlurmOptions",
    "SpecError",
    "SweepResult",
    "SweepSpec",
    "expand",
    "load_spec",
    "parse_shard",
    "plan_runs",
    "run_id",
    "run_key",
    "run_local",
    "run_status",
    "run_task",
    "submit_slurm",
    "sweep",
]
