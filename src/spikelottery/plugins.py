"""Plugins: modules that register models, data sets, methods and hardware presets.

A plugin is an ordinary module whose import registers things
(:func:`~spikelottery.models.register_model`, :func:`~spikelottery.data.register_dataset`,
:func:`~spikelottery.engine.register_search`, :func:`~spikelottery.engine.register_method`,
:func:`~spikelottery.energy.hardware.register_hardware_preset`). The command line loads:

* the modules named by ``--plugin MODULE`` (repeatable, anywhere on the command line);
* the modules in the environment variable ``SPIKELOTTERY_PLUGINS`` (comma-separated), which
  ``--plugin`` also sets, so that a sweep's worker processes load the same plugins;
* every entry point of the group ``spikelottery.plugins`` of the installed packages (in a
  ``pyproject.toml``: ``[project.entry-points."spikelottery.plugins"] mine = "mypkg.plugin"``;
  an entry point that names a function is called).

A registry lookup that misses loads them too (once), so a name registered by a plugin
resolves in any process that has the environment variable or the entry point.

>>> load_plugins(["json"])  # any importable module
['json']
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from importlib.metadata import entry_points

from .errors import SpikeLotteryError

__all__ = ["ENTRY_POINT_GROUP", "ENV_VAR", "load_plugins", "loaded_plugins", "remember"]

#: The entry-point group whose entries are loaded as plugins.
ENTRY_POINT_GROUP = "spikelottery.plugins"
#: The environment variable of comma-separated plugin modules.
ENV_VAR = "SPIKELOTTERY_PLUGINS"

_LOADED: list[str] = []
_SCANNED = False


def loaded_plugins() -> list[str]:
    """The plugins loaded so far in this process (modules and entry points)."""
    return list(_LOADED)


def _import(module: str, origin: str) -> None:
    try:
        importlib.import_module(module)
    except Exception as exc:
        raise SpikeLotteryError(
            f"plugin {module!r} ({origin}) failed to import: {type(exc).__name__}: {exc}"
        ) from exc


def load_plugins(
    modules: Sequence[str] = (), *, environment: bool = True, installed: bool = True
) -> list[str]:
    """Import plugin modules; return those loaded by this call.

    Args:
        modules: Module paths (``"mypkg.plugin"``).
        environment: Also load the modules of :data:`ENV_VAR` (once per process).
        installed: Also load the :data:`ENTRY_POINT_GROUP` entry points (once per process).

    Raises:
        ~spikelottery.errors.SpikeLotteryError: A plugin fails to import (naming it).
    """
    global _SCANNED
    wanted = [(m.strip(), "--plugin") for m in modules if m.strip()]
    scan = not _SCANNED and (environment or installed)
    if scan:
        _SCANNED = True
        if environment:
            text = os.environ.get(ENV_VAR, "")
            wanted += [(m.strip(), ENV_VAR) for m in text.split(",") if m.strip()]
    new = []
    for module, origin in wanted:
        if module not in _LOADED:
            _import(module, origin)
            _LOADED.append(module)
            new.append(module)
    if scan and installed:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            key = f"{ep.name} = {ep.value}"
            if key in _LOADED:
                continue
            try:
                obj = ep.load()
            except Exception as exc:
                raise SpikeLotteryError(
                    f"plugin entry point {key!r} ({ENTRY_POINT_GROUP}) failed to load: "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            if callable(obj):
                obj()
            _LOADED.append(key)
            new.append(key)
    return new


def remember(modules: Sequence[str]) -> None:
    """Add ``modules`` to :data:`ENV_VAR`, so that worker processes load them too."""
    present = [m for m in os.environ.get(ENV_VAR, "").split(",") if m]
    os.environ[ENV_VAR] = ",".join([*present, *(m for m in modules if m not in present)])
