"""Optional dependencies, imported in one place (not public API).

Each helper returns the module, or ``None`` when the optional extra is not installed, so
callers say in their own words what the missing extra would have given.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import sys
from collections.abc import Iterator
from types import ModuleType

__all__ = ["optional_import", "quiet_cuda_home_probe", "spikingjelly_functional"]


def optional_import(name: str) -> ModuleType | None:
    """``importlib.import_module(name)``, or ``None`` if it (or one of its imports) is missing."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def spikingjelly_functional() -> ModuleType | None:
    """SpikingJelly's ``activation_based.functional``, or ``None`` without SpikingJelly."""
    return optional_import("spikingjelly.activation_based.functional")


# torch.compile's C++ backend imports torch.utils.cpp_extension, which logs at import, on
# every machine without a CUDA toolkit: "No CUDA runtime is found, using CUDA_HOME=...".
_CPP_EXTENSION = "torch.utils.cpp_extension"


@contextlib.contextmanager
def quiet_cuda_home_probe() -> Iterator[None]:
    """Hide torch's "No CUDA runtime is found" log line while the block first compiles.

    The line comes from ``torch.utils.cpp_extension``'s import (it looks for a CUDA toolkit
    even when compiling for the CPU) and says nothing about the run. Once that module is
    imported the block runs as is: the logger's level is set only around the import.
    """
    if _CPP_EXTENSION in sys.modules:
        yield
        return
    logger = logging.getLogger(_CPP_EXTENSION)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
