"""Argument checks shared by the data modules.

Unlike :func:`spikelottery._validation.check_int`, a value of the wrong type raises
``TypeError`` and only an out-of-range one ``ValueError``; numpy integers and floats pass.

>>> check_int("seed", 0, minimum=0), check_split("test"), check_fraction("test_fraction", 0.2)
(0, 'test', 0.2)
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["SPLITS", "check_fraction", "check_int", "check_split"]

SPLITS: tuple[str, ...] = ("train", "test")


def check_int(name: str, value: Any, *, minimum: int = 1) -> int:
    """``value`` as an ``int`` if it is an integer (not a bool) of at least ``minimum``.

    Raises:
        TypeError: ``value`` is not an ``int`` or numpy integer.
        ValueError: ``value`` is below ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {name}={value!r}")
    return int(value)


def check_split(split: Any) -> str:
    """``split`` if it is one of ``SPLITS``, else ``ValueError``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got split={split!r}")
    return split


def check_fraction(name: str, value: Any) -> float:
    """``value`` as a ``float`` if it is a number strictly between 0 and 1.

    Raises:
        TypeError: ``value`` is not a number (a bool is not one).
        ValueError: ``value`` is not in ``(0, 1)``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
        raise TypeError(f"{name} must be a float in (0, 1), got {value!r}")
    value = float(value)
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must be in (0, 1) (the fraction held out), got {name}={value!r}")
    return value
