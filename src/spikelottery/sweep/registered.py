"""What a sweep's registered names stand for, checked again in the process that runs it.

A run names its model, data set, search method, method and hardware preset; the entries
behind the names live in open registries (:mod:`spikelottery.registry`). A worker process
(``--workers N``, a SLURM task) starts from a fresh interpreter and registers what its
imports and plugins register: an entry registered or replaced (``overwrite=True``) only in
the sweep's own process (a notebook cell, code under ``if __name__ == "__main__":``)
would silently be a different one there, e.g. the built-in ``fp32-45nm`` costs instead of
the replaced ones. :func:`registered` describes the entries in the sweep's process;
:func:`check_registered` compares them with the worker's before the run starts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ..errors import SpikeLotteryError

__all__ = ["check_registered", "registered"]


def _registries() -> dict[str, Any]:
    """The run setting that names an entry -> the registry that holds it."""
    from ..data import DATASETS
    from ..energy.hardware import HARDWARE_PRESETS
    from ..engine import METHODS, SEARCH_METHODS
    from ..models import MODELS

    return {
        "model": MODELS,
        "dataset": DATASETS,
        "search": SEARCH_METHODS,
        "method": METHODS,
        "energy_preset": HARDWARE_PRESETS,
    }


def _identity(obj: Any) -> str:
    """A text that is the same in two processes exactly when ``obj`` is the same entry:
    functions and classes by module and name, dataclasses by their fields."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        fields = ", ".join(
            f"{f.name}={_identity(getattr(obj, f.name))}" for f in dataclasses.fields(obj)
        )
        return f"{_identity(type(obj))}({fields})"
    if isinstance(obj, Mapping):
        return "{" + ", ".join(f"{k!r}: {_identity(v)}" for k, v in obj.items()) + "}"
    if isinstance(obj, (list, tuple)):
        return "(" + ", ".join(_identity(v) for v in obj) + ")"
    module, name = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if isinstance(module, str) and isinstance(name, str):
        # spawn imports the parent's main module as __mp_main__
        return f"{'__main__' if module == '__mp_main__' else module}.{name}"
    return repr(obj)


def registered() -> dict[str, dict[str, str]]:
    """Every registered entry of this process: setting -> name -> identity."""
    return {
        setting: {name: _identity(registry[name]) for name in registry}
        for setting, registry in _registries().items()
    }


def check_registered(values: Mapping[str, Any], expected: Mapping[str, Mapping[str, str]]) -> None:
    """Raise when a name the run uses stands for another entry here than in ``expected``.

    Args:
        values: The run's settings.
        expected: :func:`registered` of the sweep's process.

    Raises:
        SpikeLotteryError: An entry differs (naming it and what to do).
    """
    for setting, registry in _registries().items():
        name = values.get(setting)
        theirs = expected.get(setting, {}).get(name) if isinstance(name, str) else None
        if theirs is None or name not in registry:
            continue  # unknown here: the run's own check names it
        ours = _identity(registry[name])
        if ours != theirs:
            raise SpikeLotteryError(
                f"{setting} {name!r} is {theirs} in the sweep's process but {ours} in this "
                "worker process: an entry registered or replaced only in the sweep's process "
                "(a notebook, code under if __name__ == '__main__') is not seen by its "
                "workers; register it in a module the workers import (--plugin MODULE or "
                "SPIKELOTTERY_PLUGINS), or run the sweep with workers=1"
            )
