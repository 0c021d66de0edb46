"""The output folder of a run, checked before any work: writable, and not another run's.

A run writes ``results.json``, ``checkpoint.pt`` and its ticket into ``out`` only at the
end of an epoch or of the run, so a folder it cannot write, or one whose results it
would replace, must be refused before the data sets are read and the first epoch runs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .checkpoint import CHECKPOINT_FILE
from .config import ConfigError, TrainConfig, field_defaults, runtime_fields
from .results import RESULTS_FILE

__all__ = ["check_out", "config_differences"]


def config_differences(saved: Mapping[str, Any], config: TrainConfig) -> list[str]:
    """The fields that make ``config`` a different experiment from the ``saved`` config dict.

    Runtime fields (where and how fast a run goes) do not count; a field that ``saved``
    lacks (written by an older version) had its default.

    >>> config_differences(TrainConfig(out=None).to_dict(), TrainConfig(pa=0.5, out="x"))
    ['pa: 0.4 -> 0.5']
    """
    mine = json.loads(json.dumps(config.to_dict()))  # tuples compare as JSON lists
    defaults = json.loads(json.dumps(field_defaults(type(config))))
    runtime = runtime_fields(type(config))
    return [
        f"{k}: {saved.get(k, defaults.get(k))!r} -> {mine[k]!r}"
        for k in sorted(mine)
        if k not in runtime and saved.get(k, defaults.get(k)) != mine[k]
    ]


def _existing_ancestor(path: Path) -> Path:
    """``path`` or the nearest of its parents that exists."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_earlier_run(config: TrainConfig, out: Path) -> None:
    found = [name for name in (RESULTS_FILE, CHECKPOINT_FILE) if (out / name).exists()]
    if not found or config.overwrite:
        return
    where = f"out folder {str(out)!r}"
    if not config.resume:
        raise ConfigError(
            "out",
            f"{where} already holds a run ({', '.join(found)}); continue it with resume=True "
            "(--resume), replace it with overwrite=True (--overwrite), or choose another out",
        )
    if CHECKPOINT_FILE in found:
        return  # resuming: load_for_resume compares the checkpoint's config with this one
    # resume=True but only results.json: the run starts afresh, so its results must be
    # those of this very experiment.
    try:
        saved = json.loads((out / RESULTS_FILE).read_text(encoding="utf-8"))["config"]
        diff = config_differences(saved, config)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        diff = [f"its config cannot be read: {exc!r}"]
    if diff:
        raise ConfigError(
            "out",
            f"{where} holds {RESULTS_FILE} of a different experiment ({'; '.join(diff)}); "
            "replace it with overwrite=True (--overwrite) instead of resume, or choose another out",
        )


def check_out(config: TrainConfig) -> None:
    """Refuse an ``out`` the run could not write, or whose results it would replace.

    Reads nothing but the folder's entries (and ``results.json``'s config when resuming
    without a checkpoint); writes nothing. The trainer calls it first thing.

    Args:
        config: The run; nothing is checked when ``config.out`` is ``None``.

    Raises:
        ~spikelottery.engine.ConfigError: (field ``out``) ``out`` is a file or lies under one; it cannot be
            written (no permission, a read-only file system); it holds ``results.json`` or
            ``checkpoint.pt`` of an earlier run and neither ``resume`` nor ``overwrite``
            is set; or, with ``resume`` and no checkpoint, its ``results.json`` is of a
            different experiment.

    >>> check_out(TrainConfig(out=None))
    """
    if config.out is None:
        return
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(
            "out",
            f"out={str(out)!r} is a file; a run writes {RESULTS_FILE}, {CHECKPOINT_FILE} and "
            "its ticket into a folder: choose a folder",
        )
    existing = _existing_ancestor(out)
    if not existing.is_dir():
        raise ConfigError("out", f"out={str(out)!r} cannot be created: {str(existing)!r} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            "out",
            f"out={str(out)!r} cannot be written: no permission to write in {str(existing)!r} "
            "(or a read-only file system); choose another folder",
        )
    if existing == out:
        _check_earlier_run(config, out)
