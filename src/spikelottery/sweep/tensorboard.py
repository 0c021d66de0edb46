"""TensorBoard event files of a finished run, written from its ``results.json``.

The engine's ``results.json`` stays the one source of truth; the events are a view of it
(one scalar per epoch: train and test loss and accuracy, the learning rate; the final
accuracy, kept fraction and energy as hyper-parameter metrics), written into
``<run>/tensorboard/`` after the run ends. Needs ``pip install "spikelottery[tensorboard]"``.

>>> write_events("runs/sweep/runs/3f9a0c1d2e4b")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from ..engine import RESULTS_FILE
from ..errors import SpikeLotteryError

__all__ = ["EVENTS_DIR", "write_events"]

EVENTS_DIR = "tensorboard"
_SCALARS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "lr")


def _hparam(value: Any) -> Any:
    if isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value)


def write_events(folder: str | os.PathLike[str]) -> Path:
    """Write ``folder/tensorboard/`` from ``folder/results.json`` (replacing earlier events).

    Raises:
        SpikeLotteryError: No ``results.json``, or tensorboard is not installed.
    """
    path = Path(folder) / RESULTS_FILE
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SpikeLotteryError(f"cannot read {str(path)!r}: {exc}") from None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise SpikeLotteryError(
            'TensorBoard event files need tensorboard: pip install "spikelottery[tensorboard]"'
        ) from None
    target = Path(folder) / EVENTS_DIR
    shutil.rmtree(target, ignore_errors=True)  # a view of results.json: rebuilt, never appended
    writer = SummaryWriter(log_dir=str(target))
    try:
        for record in results.get("history", []):
            step = int(record.get("epoch", 0))
            for key in _SCALARS:
                value = record.get(key)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    writer.add_scalar(key, value, step)
        metrics = {
            f"final/{k}": float(results[k])
            for k in ("accuracy", "kept_fraction", "energy_mj")
            if isinstance(results.get(k), (int, float))
        }
        config = {k: _hparam(v) for k, v in results.get("config", {}).items() if v is not None}
        writer.add_hparams(config, metrics, run_name=".")
    finally:
        writer.close()
    return target
