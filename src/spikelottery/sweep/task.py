"""One run of a sweep, as every executor runs it: :func:`run_task` on a run folder.

The folder's ``settings.json`` (JSON, written by the sweep) says what to run; the engine
(:func:`spikelottery.engine.run`) runs it with ``resume=True`` into the same folder, so an
interrupted run continues from its checkpoint. A run that raises leaves ``failed.json``
(the error and its traceback) for ``spikelottery report`` and is tried again by the next
sweep. Under SLURM with several tasks per run (one per GPU), the process-group variables
that ``torchrun`` would set are exported from SLURM's, and the engine runs
DistributedDataParallel as it does under ``torchrun``.
"""

from __future__ import annotations

import json
import os
import platform
import time
import traceback
from pathlib import Path
from typing import Any

from .._io import atomic_write_bytes
from ..engine import TrainConfig, run
from ..errors import SpikeLotteryError
from .plan import FAILED_FILE, SETTINGS_FILE
from .registered import check_registered
from .tensorboard import write_events

__all__ = ["read_settings", "run_task"]


def read_settings(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``settings.json`` of a run folder.

    Raises:
        SpikeLotteryError: It is missing or not valid JSON (naming the file).
    """
    path = Path(folder) / SETTINGS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpikeLotteryError(
            f"{str(path)!r} does not exist: this is not a sweep's run folder"
        ) from None
    except (OSError, ValueError) as exc:
        raise SpikeLotteryError(f"cannot read {str(path)!r}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        raise SpikeLotteryError(f"{str(path)!r} has no 'config' table: not a sweep's settings")
    return data


def _export_slurm_process_group() -> None:
    """Set ``RANK``/``WORLD_SIZE``/``MASTER_ADDR``... from SLURM when a run has several tasks."""
    if int(os.environ.get("SLURM_NTASKS", "1")) <= 1 or "WORLD_SIZE" in os.environ:
        return
    from submitit.helpers import TorchDistributedEnvironment

    TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def _write_failure(folder: Path, exc: BaseException) -> None:
    record = {
        "error": type(exc).__name__,
        "message": str(exc),
        "traceback": traceback.format_exc(),
        "host": platform.node(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }
    atomic_write_bytes(folder / FAILED_FILE, (json.dumps(record, indent=2) + "\n").encode())


def run_task(
    folder: str | os.PathLike[str],
    runtime: dict[str, Any] | None = None,
    tensorboard: bool = False,
    expected: dict[str, dict[str, str]] | None = None,
) -> dict[str, Any]:
    """Run the sweep run whose settings are in ``folder``; return a short summary.

    Args:
        folder: ``DIR/runs/<id>``, holding ``settings.json``.
        runtime: Runtime settings that win over the recorded ones (``device``,
            ``data_root``, ``num_workers``...).
        tensorboard: Also write TensorBoard event files from the results
            (:func:`~spikelottery.sweep.tensorboard.write_events`).
        expected: The registered entries of the sweep's process
            (:func:`~spikelottery.sweep.registered.registered`): in another process, the
            run fails when a name it uses stands for another entry here.

    Returns:
        ``{"run_id", "accuracy", "seconds"}``.

    Raises:
        Whatever the run raises, after writing ``failed.json`` (rank 0 only; not for a
        ``KeyboardInterrupt``, after which the run is merely interrupted).
    """
    path = Path(folder)
    record = read_settings(path)
    values = {**record["config"], **record.get("runtime", {}), **(runtime or {})}
    values.update(out=str(path), resume=True, progress=False)
    _export_slurm_process_group()
    main = int(os.environ.get("RANK", "0")) == 0
    if main:
        (path / FAILED_FILE).unlink(missing_ok=True)
    try:
        if expected is not None:
            check_registered(values, expected)
        cfg = TrainConfig.from_record(values, source=str(path / SETTINGS_FILE))
        results = run(cfg)
    except Exception as exc:  # an interrupt is not a failure: the run resumes next time
        if main:
            _write_failure(path, exc)
        raise
    if tensorboard and main:
        write_events(path)
    return {
        "run_id": record.get("run_id", path.name),
        "accuracy": results.accuracy,
        "seconds": results.seconds,
    }
