"""The SLURM executor: one job array through submitit, one array task per run.

submitit (``pip install "spikelottery[slurm]"``) writes the ``sbatch`` script, submits the
array and runs :func:`~spikelottery.sweep.task.run_task` in each task. A run that needs
several GPUs (``SlurmOptions(gpus=N)``) gets one SLURM task per GPU, and the engine's
DistributedDataParallel path runs across them.
The job ids go to ``DIR/slurm_jobs.json``; submitit's own files (the script, the logs,
the pickled call) to ``DIR/slurm/``. A run whose job is still pending or running is not
submitted again; a run that failed on the cluster is, by the next sweep.

>>> SlurmOptions(partition="gpu", gpus=2).submitit_parameters()["tasks_per_node"]
2
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._io import atomic_write_bytes
from ..errors import SpikeLotteryError
from .plan import PlannedRun
from .registered import registered
from .task import run_task

__all__ = ["JOBS_FILE", "SLURM_DIR", "SlurmOptions", "queued_runs", "recorded_jobs", "submit_slurm"]

JOBS_FILE = "slurm_jobs.json"
SLURM_DIR = "slurm"
#: SLURM job states in which a run must not be submitted again.
_ALIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED"}


@dataclass(frozen=True)
class SlurmOptions:
    """What each array task asks SLURM for.

    Attributes:
        partition: ``--partition`` (``None``: the cluster's default).
        gpus: GPUs per run; more than one starts one task per GPU, and the run uses
            DistributedDataParallel across them.
        cpus_per_task: CPUs of each task (each GPU's process).
        mem_gb: Memory per node in GB (``None``: the cluster's default).
        time_min: Time limit of each task, in minutes.
        array_parallelism: How many tasks of the array run at once.
        setup: Shell lines run before each task (``module load cuda``, ``source venv``).
        job_name: The job's name in ``squeue``.
        extra: More ``sbatch`` options, as submitit's ``slurm_additional_parameters``
            (e.g. ``{"account": "lab"}``).
    """

    partition: str | None = None
    gpus: int = 0
    cpus_per_task: int = 4
    mem_gb: float | None = None
    time_min: int = 240
    array_parallelism: int = 64
    setup: Sequence[str] = ()
    job_name: str = "spikelottery"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("gpus", "cpus_per_task", "time_min", "array_parallelism"):
            value = getattr(self, name)
            low = 0 if name == "gpus" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise SpikeLotteryError(
                    f"SLURM option {name} must be an int >= {low}, got {value!r}"
                )

    def submitit_parameters(self) -> dict[str, Any]:
        """The options as :meth:`submitit.AutoExecutor.update_parameters` arguments."""
        params: dict[str, Any] = {
            "name": self.job_name,
            "timeout_min": self.time_min,
            "nodes": 1,
            "tasks_per_node": max(1, self.gpus),
            "cpus_per_task": self.cpus_per_task,
            "slurm_array_parallelism": self.array_parallelism,
        }
        if self.gpus:
            params["gpus_per_node"] = self.gpus
        if self.partition:
            params["slurm_partition"] = self.partition
        if self.mem_gb is not None:
            params["mem_gb"] = self.mem_gb
        if self.setup:
            params["slurm_setup"] = list(self.setup)
        if self.extra:
            params["slurm_additional_parameters"] = dict(self.extra)
        return params


def _submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise SpikeLotteryError(
            '--executor slurm needs submitit: pip install "spikelottery[slurm]"'
        ) from None
    return submitit


def recorded_jobs(out: str | Path) -> dict[str, str]:
    """The latest SLURM job id of every run submitted from ``out`` (run id -> job id)."""
    latest: dict[str, str] = {}
    for sub in _submissions(out):
        latest.update(sub.get("tasks", {}))
    return latest


def _submissions(out: str | Path) -> list[dict[str, Any]]:
    path = Path(out) / JOBS_FILE
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SpikeLotteryError(f"cannot read {str(path)!r}: {exc}; repair or remove it") from None
    if not isinstance(data, list):
        raise SpikeLotteryError(
            f"{str(path)!r} must hold a list of submissions; repair or remove it"
        )
    return data


def queued_runs(out: str | Path, runs: Sequence[PlannedRun]) -> set[str]:
    """The ids of ``runs`` whose latest SLURM job is still pending or running (per ``sacct``)."""
    jobs = recorded_jobs(out)
    wanted = {r.run_id: jobs[r.run_id] for r in runs if r.run_id in jobs}
    if not wanted:
        return set()
    submitit = _submitit()
    folder = Path(out) / SLURM_DIR / "%j"
    alive = set()
    for rid, job_id in wanted.items():
        state = submitit.SlurmJob(folder=folder, job_id=job_id).state
        if str(state).split()[0].upper() in _ALIVE:
            alive.add(rid)
    return alive


def submit_slurm(
    runs: Sequence[PlannedRun],
    out: str | Path,
    options: SlurmOptions,
    *,
    runtime: dict[str, Any] | None = None,
    tensorboard: bool = False,
) -> list[str]:
    """Submit ``runs`` as one SLURM job array; record and return the job ids.

    Args:
        runs: The runs (their folders hold ``settings.json``).
        out: The sweep's folder; ``slurm_jobs.json`` and ``slurm/`` are written there.
        options: What each task asks for.
        runtime: Runtime settings for every run (``device``, ``data_root``...).
        tensorboard: Also write each run's TensorBoard event files.

    Returns:
        One job id per run (``<array id>_<index>``), in the order of ``runs``.
    """
    if not runs:
        return []
    _submissions(out)  # a damaged record must stop us before we submit, not after
    submitit = _submitit()
    executor = submitit.AutoExecutor(folder=Path(out) / SLURM_DIR / "%j", cluster="slurm")
    executor.update_parameters(**options.submitit_parameters())
    folders = [str(r.folder) for r in runs]
    expected = registered()  # what the tasks must see behind the runs' names
    jobs = executor.map_array(
        run_task,
        folders,
        [dict(runtime or {})] * len(runs),
        [tensorboard] * len(runs),
        [expected] * len(runs),
    )
    ids = [str(job.job_id) for job in jobs]
    _record(out, runs, ids, options)
    return ids


def _record(
    out: str | Path, runs: Sequence[PlannedRun], ids: list[str], options: SlurmOptions
) -> None:
    path = Path(out) / JOBS_FILE
    submissions = _submissions(out)
    submissions.append(
        {
            "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "array_job_id": ids[0].split("_")[0],
            "options": {k: v for k, v in options.__dict__.items() if k != "setup"}
            | {"setup": list(options.setup)},
            "tasks": {r.run_id: job_id for r, job_id in zip(runs, ids, strict=True)},
        }
    )
    atomic_write_bytes(path, (json.dumps(submissions, indent=2) + "\n").encode("utf-8"))
