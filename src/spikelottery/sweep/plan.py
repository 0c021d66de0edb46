"""The plan of a sweep: one content-addressed folder per run, and what each folder holds.

A run's folder is ``DIR/runs/<id>``, where ``<id>`` is a hash of the run's settings: the
:class:`~spikelottery.engine.TrainConfig` fields that change what the run computes (not
the runtime ones: ``out``, ``device``, ``data_root``, ...) and differ from their defaults.
The same settings always give the same folder, so a sweep started again finds its runs:

* ``done``: ``results.json`` is there, written by the same settings;
* ``interrupted``: a checkpoint but no results (the run resumes from it);
* ``failed``: the run raised; ``failed.json`` holds the error (the run is tried again);
* ``pending``: nothing yet;
* ``stale``: ``results.json`` of other settings (refused: move the folder away);
* ``damaged``: a ``results.json`` that cannot be read (truncated, not JSON, no
  ``config``): refused, naming the file and what is wrong with it.

>>> cfg = TrainConfig(pa=0.5, out=None)
>>> run_id(cfg) == run_id(TrainConfig(pa=0.5, out="elsewhere", device="cpu"))
True
>>> run_id(cfg) == run_id(TrainConfig(pa=0.4, out=None))
False
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..engine import CHECKPOINT_FILE, RESULTS_FILE, ConfigError, TrainConfig
from ..engine.config import field_defaults, runtime_fields
from ..errors import SpikeLotteryError
from .spec import SpecError, SweepSpec, expand

__all__ = [
    "FAILED_FILE",
    "PLAN_FILE",
    "RUNS_DIR",
    "SETTINGS_FILE",
    "STATUSES",
    "PlannedRun",
    "describe",
    "parse_shard",
    "plan_runs",
    "results_problem",
    "run_id",
    "run_key",
    "run_status",
    "select_shard",
    "settings_record",
    "status_counts",
]

RUNS_DIR = "runs"
SETTINGS_FILE = "settings.json"
FAILED_FILE = "failed.json"
PLAN_FILE = "sweep.json"
STATUSES = ("done", "interrupted", "failed", "pending", "stale", "damaged")

#: Settings the sweep itself decides for every run.
_SWEEP_OWNED = ("out", "resume", "progress")


_IDENTITY: dict[type, tuple[dict[str, Any], frozenset[str]]] = {}


def _identity(cls: type[TrainConfig]) -> tuple[dict[str, Any], frozenset[str]]:
    """The defaults and the runtime fields of ``cls`` (looked up once: a plan has many runs)."""
    if cls not in _IDENTITY:
        _IDENTITY[cls] = (field_defaults(cls), runtime_fields(cls))
    return _IDENTITY[cls]


def run_key(cfg: TrainConfig) -> dict[str, Any]:
    """The settings that identify a run: non-runtime fields that differ from the defaults."""
    defaults, skip = _identity(type(cfg))
    values = cfg.to_dict()
    return {k: v for k, v in sorted(values.items()) if k not in skip and v != defaults[k]}


def run_id(cfg: TrainConfig) -> str:
    """A run's folder name: the first 12 hex digits of the SHA-256 of :func:`run_key`."""
    text = json.dumps(run_key(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep.

    Attributes:
        run_id: The folder name (:func:`run_id`).
        config: The validated settings, with ``out`` set to :attr:`folder`.
        axes: The values of the SPEC's varying settings for this run (for messages).
        folder: ``DIR/runs/<run_id>``.
        status: One of :data:`STATUSES` when the plan was made.
    """

    run_id: str
    config: TrainConfig
    axes: Mapping[str, Any]
    folder: Path
    status: str = "pending"


def describe(axes: Mapping[str, Any]) -> str:
    """``method=mpslt pa=0.4 seed=1``: a run's axis values on one line."""
    return " ".join(f"{k}={v}" for k, v in axes.items()) or "(base settings)"


def results_problem(folder: Path) -> str | None:
    """Why ``folder``'s ``results.json`` cannot be read, or ``None`` when it can."""
    try:
        data = json.loads((folder / RESULTS_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        return f"cannot be read ({exc})"
    except ValueError as exc:
        return f"is not valid JSON (truncated?): {exc}"
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        return "has no 'config' table"
    try:
        TrainConfig.from_record(data["config"])
    except (ValueError, KeyError, TypeError, SpikeLotteryError) as exc:
        return f"holds settings this version cannot read: {exc}"
    return None


def _stored_key(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / RESULTS_FILE).read_text(encoding="utf-8"))
        return run_key(TrainConfig.from_record(data["config"]))
    except (OSError, ValueError, KeyError, TypeError, SpikeLotteryError):
        return None


def run_status(folder: Path, cfg: TrainConfig) -> str:
    """What ``folder`` holds for the run ``cfg`` (see the module docstring)."""
    if (folder / RESULTS_FILE).is_file():
        key = _stored_key(folder)
        if key is None:
            return "damaged"
        return "done" if key == run_key(cfg) else "stale"
    if (folder / FAILED_FILE).is_file():
        return "failed"
    if (folder / CHECKPOINT_FILE).is_file():
        return "interrupted"
    return "pending"


def plan_runs(
    spec: SweepSpec, out: str | Path, *, runtime: Mapping[str, Any] | None = None
) -> list[PlannedRun]:
    """Expand ``spec`` into validated runs under ``out`` and find what each folder holds.

    Args:
        spec: The sweep.
        out: The sweep's folder ``DIR``.
        runtime: Runtime settings for every run (``device``, ``data_root``, ...), which
            do not change a run's id.

    Raises:
        SpecError: A run's settings are invalid (naming the run's axis values and the
            setting), or the SPEC sets what the sweep decides (``out``, ``resume``).
    """
    owned = [k for k in _SWEEP_OWNED if k in spec.base or any(k in g for g in spec.grids)]
    if owned:
        raise SpecError(
            f"{spec.source}: the sweep sets {', '.join(owned)} for every run; remove it from "
            "the SPEC (each run writes to DIR/runs/<id>)"
        )
    root = Path(out) / RUNS_DIR
    try:  # only the folders that exist need looking into (a fresh plan has none)
        existing = set(os.listdir(root))
    except OSError:
        existing = set()
    axes = spec.axes
    runs: dict[str, PlannedRun] = {}
    sweep_owned = {"resume": True, "progress": False}
    for settings in expand(spec):
        point = {k: settings[k] for k in axes if k in settings}
        try:
            cfg = TrainConfig.from_dict(
                {**settings, **(runtime or {}), **sweep_owned}, source=spec.source
            )
        except ConfigError as exc:
            raise SpecError(f"{spec.source}: run {describe(point)}: {exc}") from None
        except (SpikeLotteryError, TypeError, ValueError) as exc:
            raise SpecError(f"{spec.source}: run {describe(point)}: {exc}") from None
        rid = run_id(cfg)
        if rid in runs:
            continue
        folder = root / rid
        cfg.out = str(folder)  # a runtime setting: neither the id nor the checks depend on it
        status = run_status(folder, cfg) if rid in existing else "pending"
        runs[rid] = PlannedRun(rid, cfg, point, folder, status)
    return list(runs.values())


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/4"`` -> ``(2, 4)``: the second of four shares (1-based).

    >>> parse_shard("1/3")
    (1, 3)
    """
    try:
        i, n = (int(part) for part in str(text).split("/"))
    except ValueError:
        raise SpikeLotteryError(f"--shard must be I/N (e.g. 2/4), got {text!r}") from None
    if n < 1 or not 1 <= i <= n:
        raise SpikeLotteryError(f"--shard I/N needs 1 <= I <= N, got {text!r}")
    return i, n


def select_shard(runs: Sequence[PlannedRun], shard: tuple[int, int] | None) -> list[PlannedRun]:
    """Share ``i`` of ``n`` (1-based) of the whole plan: every ``n``-th run from the ``i``-th.

    The shares are taken over the whole plan, done runs included, so that each run
    belongs to the same share however far the sweep has got.
    """
    if shard is None:
        return list(runs)
    i, n = shard
    return [r for k, r in enumerate(runs) if k % n == i - 1]


def settings_record(run: PlannedRun, spec: SweepSpec) -> dict[str, Any]:
    """What ``settings.json`` holds: the run's id, axes, full settings and the SPEC's name."""
    runtime = runtime_fields(type(run.config))
    config = run.config.to_dict()
    return {
        "run_id": run.run_id,
        "axes": dict(run.axes),
        "sweep": spec.name,
        "config": {k: v for k, v in config.items() if k not in runtime},
        "runtime": {k: v for k, v in config.items() if k in runtime},
    }


def status_counts(runs: Iterable[PlannedRun]) -> dict[str, int]:
    """How many runs have each status."""
    out = dict.fromkeys(STATUSES, 0)
    for r in runs:
        out[r.status] += 1
    return out
