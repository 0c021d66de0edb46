"""Argument checks shared by every public entry point (the ratio checks live in
:mod:`spikelottery.ratios`, their public home)."""

from __future__ import annotations

from .ratios import check_ratio, kept_count, ratio_for_count

__all__ = [
    "check_int",
    "check_ratio",
    "kept_count",
    "nonfinite_scores_error",
    "ratio_for_count",
]


def check_int(name: str, value: object, *, minimum: int = 1, optional: bool = False) -> int | None:
    """Return ``value`` if it is an ``int`` (not a bool) of at least ``minimum``.

    Args:
        name: The argument's name, used in the error message.
        value: The value to check.
        minimum: The smallest value allowed (1: a positive int).
        optional: Also accept ``None`` (returned as is).

    Raises:
        ValueError: ``value`` is not such an int.

    >>> check_int("epochs", 3)
    3
    """
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(
            f"{name} must be {what}{' or None' if optional else ''}, got {name}={value!r}"
        )
    return value


def nonfinite_scores_error(bad: int, n: int) -> ValueError:
    """The error for scores holding ``bad`` NaN or infinite values of ``n``."""
    return ValueError(
        f"the scores hold {bad} NaN or infinite value(s) of {n}: their ranking is "
        "undefined, so no mask is exact. The search diverged: lower the learning rate "
        "or check the loss for NaN"
    )
