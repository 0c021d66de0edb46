"""Optional dependencies, imported in one place (not public API).

Each helper returns the module, or ``None`` when the optional extra is not installed, so
callers say in their own words what the missing extra would have given.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["optional_import", "spikingjelly_functional"]


def optional_import(name: str) -> ModuleType | None:
    """``importlib.import_module(name)``, or ``None`` if it (or one of its imports) is missing."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def spikingjelly_functional() -> ModuleType | None:
    """SpikingJelly's ``activation_based.functional``, or ``None`` without SpikingJelly."""
    return optional_import("spikingjelly.activation_based.functional")
