"""Collect runs for a report: every ``results.json`` under some folders, and the runs without one.

A row is one run: its settings (the :class:`~spikelottery.engine.TrainConfig` fields that
change what it computes), its method, its status and its metrics. A sweep's run folder
that has ``settings.json`` but no ``results.json`` is a row too, with the status
``failed`` (and the error of ``failed.json``), ``interrupted`` (a checkpoint) or
``missing``, so that a report lists it instead of silently averaging without it. A
``results.json`` whose accuracy is not a fraction in [0, 1] (NaN, text, ``1e308``, ``-5``)
is a row with the status ``invalid``, listed and left out of the summary for the same
reason; other metrics that are not numbers are left out of their means and named.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..engine import CHECKPOINT_FILE, RESULTS_FILE, TrainConfig
from ..engine.config import field_defaults, runtime_fields
from ..engine.presets import METHODS as PRESETS
from ..engine.presets import RENAMED_METHODS, preset_problem
from ..errors import SpikeLotteryError
from ..sweep import FAILED_FILE, JOBS_FILE, SETTINGS_FILE
from .environment import ENVIRONMENT_KEY, environment_columns

__all__ = [
    "BAD_VALUES_KEY",
    "CONVENTIONS_KEY",
    "ENERGY_VIEWS",
    "LAYERS_KEY",
    "METRICS",
    "SETTING_COLUMNS",
    "collect_runs",
    "infer_method",
    "varying_axes",
]

#: The metric columns of a row, in order.
_RESULTS_METRICS = (
    "accuracy",
    "loss",
    "kept_fraction",
    "energy_mj",
    "energy_sparse_mj",
    "ann_reference_mj",
    # The name of a results.json written before ann_reference_mj: an SNN's reference
    # counted once even on event frames, an ANN run's all its frames. Read as recorded.
    "ann_energy_mj",
    "firing_rate",
    "seconds",
)
#: The other energy views of results.json's ``energy.totals``: column -> key there.
ENERGY_VIEWS = {
    "energy_exact_mj": "exact_snn_mj",
    "energy_memory_mj": "memory_snn_mj",
    "ann_int8_energy_mj": "ann_int8_mj",
}
#: The views that price a spiking network (left empty for an ANN run).
_SNN_VIEWS = ("energy_exact_mj", "energy_memory_mj")
#: ``epochs_run``: the epochs the run trained (all its stages); ``epochs`` is a setting.
METRICS = (*_RESULTS_METRICS, *ENERGY_VIEWS, "epochs_run", "seconds_per_epoch")
#: The key of a row's per-layer energy table (a list of dicts; not a CSV column).
LAYERS_KEY = "energy_layers"
#: The key of a row's metrics that are not finite numbers (``["loss=nan"]``; not a column).
BAD_VALUES_KEY = "bad_values"
#: The key of a row's energy disclosure line (the estimator's conventions; not a CSV column).
CONVENTIONS_KEY = "energy_conventions"
_RUNTIME = runtime_fields()
#: The setting columns of a row: every field that changes what a run computes.
SETTING_COLUMNS = tuple(f for f in TrainConfig.__dataclass_fields__ if f not in _RUNTIME)


def infer_method(config: Mapping[str, Any]) -> str:
    """The preset a run's settings match (its recorded ``method`` first), else ``"custom"``.

    >>> infer_method({"spiking": True, "mode": "mp", "filter": None, "pb": 0.0})
    'mpslt'
    >>> infer_method({"spiking": True, "mode": "mp", "filter": "patch_embed", "pb": 0.3})
    'multisp-slt'
    >>> infer_method({"method": "mplt", "spiking": False, "mode": "mp"})  # before activations
    'mplt-relu'
    """
    if config.get("method"):
        method = str(config["method"])
        # Recorded before `activations` existed: those runs kept their ReLUs.
        if "activations" not in config and method in RENAMED_METHODS:
            return RENAMED_METHODS[method]
        return method
    values = field_defaults() | dict(config)  # an older results.json may lack a setting
    for name in PRESETS:
        if preset_problem(name, values) is None:
            return name
    return "custom"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SpikeLotteryError(f"cannot read {str(path)!r}: {exc}") from None


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _bad_values(data: Mapping[str, Any]) -> list[str]:
    """The metrics of ``data`` that are there but not finite numbers (``"loss=nan"``)."""
    return [
        f"{k}={data[k]!r}"
        for k in _RESULTS_METRICS
        if data.get(k) is not None and _finite(data.get(k)) is None
    ]


def _accuracy_problem(value: Any) -> str | None:
    """Why a recorded accuracy cannot be averaged, or ``None``."""
    number = _finite(value)
    if number is None:
        return f"its accuracy {value!r} is not a number"
    if not 0.0 <= number <= 1.0:
        return f"its accuracy {value!r} is not a fraction in [0, 1]"
    return None


def _row_from_results(path: Path, data: Mapping[str, Any]) -> dict[str, Any]:
    config = data.get("config") if isinstance(data, dict) else None
    if not isinstance(config, dict):
        raise SpikeLotteryError(f"{str(path)!r} has no 'config' table: not a run's results.json")
    history = data.get("history") or []
    seconds = [h.get("seconds") for h in history if isinstance(h, dict)]
    per_epoch = [s for s in (_finite(v) for v in seconds) if s is not None]
    row: dict[str, Any] = {
        "run": str(path.parent),
        "status": "done",
        "method": infer_method(config),
    }
    row.update({k: config.get(k) for k in SETTING_COLUMNS if k != "method"})
    if row["activations"] is None:  # recorded before the setting: the model's own
        row["activations"] = "keep"
    row.update({k: _finite(data.get(k)) for k in _RESULTS_METRICS})
    problem = _accuracy_problem(data.get("accuracy"))
    if problem is not None:  # not averaged: listed, with the reason, as a run left out
        row["status"] = "invalid"
        row["error"] = f"{path.name} is damaged: {problem}"
        row["accuracy"] = None
    bad = [b for b in _bad_values(data) if not b.startswith("accuracy=")]
    if bad:
        row[BAD_VALUES_KEY] = bad
    energy = data.get("energy")
    energy = energy if isinstance(energy, dict) else {}
    totals = energy.get("totals")
    totals = totals if isinstance(totals, dict) else {}
    row.update({col: _finite(totals.get(key)) for col, key in ENERGY_VIEWS.items()})
    layers = energy.get("rows")
    layers = layers if isinstance(layers, list) else []
    if config.get("spiking") is False:
        # An ANN run's energy is its ANN figure (energy_mj at fp32, and the int8 view); the
        # estimator's SNN views and per-layer rows price its ReLU outputs as spikes.
        row.update(dict.fromkeys(_SNN_VIEWS))
        layers = []
    row[LAYERS_KEY] = [
        {
            "name": str(r.get("name")),
            "snn_mj": _finite(r.get("snn_mj")),
            "exact_mj": _finite(r.get("exact_mj")),
        }
        for r in layers
        if isinstance(r, dict)
    ]
    conventions = energy.get("conventions")
    row[CONVENTIONS_KEY] = conventions if isinstance(conventions, str) else None
    row["epochs_run"] = len(history)
    row["seconds_per_epoch"] = sum(per_epoch) / len(per_epoch) if per_epoch else None
    environment = data.get(ENVIRONMENT_KEY)  # None in a results.json older than the record
    row[ENVIRONMENT_KEY] = environment if isinstance(environment, dict) else None
    row.update(environment_columns(row[ENVIRONMENT_KEY]))
    return row


def _row_without_results(folder: Path, jobs: Mapping[str, str]) -> dict[str, Any]:
    settings = _read_json(folder / SETTINGS_FILE)
    config = settings.get("config", {}) if isinstance(settings, dict) else {}
    row: dict[str, Any] = {"run": str(folder), "method": infer_method(config)}
    row.update({k: config.get(k) for k in SETTING_COLUMNS if k != "method"})
    if row["activations"] is None:  # recorded before the setting: the model's own
        row["activations"] = "keep"
    row.update(dict.fromkeys(METRICS))
    if (folder / FAILED_FILE).is_file():
        failure = _read_json(folder / FAILED_FILE)
        row["status"] = "failed"
        row["error"] = f"{failure.get('error', '?')}: {failure.get('message', '')}".strip()
    elif (folder / CHECKPOINT_FILE).is_file():
        row["status"] = "interrupted"
    else:
        row["status"] = "missing"
    if folder.name in jobs:
        row["slurm_job"] = jobs[folder.name]
    return row


def _slurm_jobs(root: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for path in sorted(root.rglob(JOBS_FILE)):
        data = _read_json(path)
        for sub in data if isinstance(data, list) else []:
            out.update(sub.get("tasks", {}))
    return out


def collect_runs(dirs: Sequence[str | os.PathLike[str]]) -> list[dict[str, Any]]:
    """Every run under ``dirs``: one row per ``results.json`` and per unfinished sweep run.

    Raises:
        SpikeLotteryError: A folder does not exist, or a ``results.json`` is unreadable
            (naming it).
    """
    rows: list[dict[str, Any]] = []
    seen: set[Path] = set()
    for d in dirs:
        root = Path(d)
        if not root.is_dir():
            raise SpikeLotteryError(f"report: {str(root)!r} is not a folder of runs")
        jobs = _slurm_jobs(root)
        for path in sorted(root.rglob(RESULTS_FILE)):
            folder = path.parent.resolve()
            if folder in seen:
                continue
            seen.add(folder)
            data = _read_json(path)
            if isinstance(data, list):  # `spikelottery demo`'s list of its runs (in subfolders)
                continue
            row = _row_from_results(path, data)
            if path.parent.name in jobs:
                row["slurm_job"] = jobs[path.parent.name]
            rows.append(row)
        for path in sorted(root.rglob(SETTINGS_FILE)):
            folder = path.parent.resolve()
            if folder in seen or (path.parent / RESULTS_FILE).is_file():
                continue
            seen.add(folder)
            rows.append(_row_without_results(path.parent, jobs))
    return rows


def varying_axes(rows: Iterable[Mapping[str, Any]], *, exclude: Iterable[str] = ()) -> list[str]:
    """The setting columns (and ``method``) that take more than one value over ``rows``.

    A setting that method presets fix (``spiking``, ``mode``, ``filter``...) and that
    takes one value per method is decided by the method, not an axis of its own.

    >>> rows = [{"method": "mplt", "spiking": False, "pa": 0.2},
    ...         {"method": "mpslt", "spiking": True, "pa": 0.4}]
    >>> varying_axes(rows)
    ['method', 'pa']
    """
    rows = list(rows)
    skip = set(exclude)

    def distinct(key: str, members: list[Mapping[str, Any]]) -> int:
        return len({json.dumps(r.get(key), sort_keys=True) for r in members})

    by_method: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        by_method.setdefault(str(r.get("method")), []).append(r)
    method_varies = len(by_method) > 1
    decided = {k for preset in PRESETS.values() for k in preset.fixed}  # spiking, mode, ...
    out = []
    for key in ("method", *SETTING_COLUMNS):
        if key in skip or key in out or distinct(key, rows) < 2:
            continue
        if (
            key in decided
            and method_varies
            and all(distinct(key, members) == 1 for members in by_method.values())
        ):
            continue  # decided by the method
        out.append(key)
    return out
