"""The library's one meaning of a ratio: ``pa`` and ``pb`` are fractions REMOVED.

A set of ``n`` items at ratio ``p`` keeps exactly ``n - floor(p * n)`` of them
(:func:`kept_count`); ``p`` is in ``[0, 1)`` (:func:`check_ratio`), so 0 keeps everything
and any ratio keeps at least one item.

>>> kept_count(64, 0.3), ratio_for_count(10, 7)
(45, 0.3)
"""

from __future__ import annotations

import math
from fractions import Fraction

__all__ = ["check_ratio", "kept_count", "ratio_for_count"]


def check_ratio(name: str, value: float) -> float:
    """Return ``value`` as a float if it is a pruning ratio in ``[0, 1)``.

    Args:
        name: The argument's name, used in the error message (``"pa"``, ``"pb"``).
        value: The fraction REMOVED.

    Raises:
        ValueError: ``value`` is not a finite number in ``[0, 1)``.
    """
    if isinstance(value, (bool, str, bytes)):
        raise ValueError(f"{name} must be a number in [0, 1) (the fraction removed), got {value!r}")
    if not isinstance(value, (int, float)):
        try:
            value = float(value)  # numpy / torch scalars
        except (TypeError, ValueError):
            raise ValueError(
                f"{name} must be a number in [0, 1) (the fraction removed), got {value!r}"
            ) from None
    value = float(value)
    if not math.isfinite(value) or not 0.0 <= value < 1.0:
        raise ValueError(
            f"{name} must be in [0, 1): it is the fraction REMOVED (0 keeps everything), "
            f"got {name}={value!r}"
        )
    return value


def kept_count(n: int, ratio: float) -> int:
    """Number of items kept when the fraction ``ratio`` of ``n`` items is removed.

    The count is exact: ``n - floor(ratio * n)``, with the product taken on the decimal
    value as written (``0.29`` of 100 removes 29 items, where float arithmetic would give
    ``floor(28.999999999999996) = 28``). So ``ratio = 0`` keeps all ``n`` and any
    ``ratio < 1`` keeps at least one item of a non-empty set.

    >>> kept_count(64, 0.3)
    45
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    ratio = check_ratio("ratio", ratio)
    return n - math.floor(Fraction(repr(ratio)) * n)


def ratio_for_count(n: int, kept: int) -> float:
    """The ratio ``pa`` whose :func:`kept_count` of ``n`` items is exactly ``kept``.

    ``(n - kept) / n`` where that float gives the count back (nearly always), else the
    middle of the interval of ratios that do: a layer given a mask of ``kept`` entries
    gets a ``pa`` that reproduces it exactly.

    Raises:
        ValueError: ``kept`` is not in ``[1, n]`` (a ratio below 1 keeps at least one).

    >>> ratio_for_count(10, 7), kept_count(10, ratio_for_count(10, 7))
    (0.3, 7)
    """
    if not 1 <= kept <= n:
        raise ValueError(f"a kept count must be in [1, n={n}], got kept={kept}")
    ratio = (n - kept) / n
    if kept_count(n, ratio) != kept:
        ratio = (n - kept + 0.5) / n
    assert kept_count(n, ratio) == kept
    return ratio
