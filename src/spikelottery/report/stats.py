"""Means, standard deviations and Student-t 95% intervals over seeds: pure functions.

The interval of a mean of ``n`` values is ``mean +- t(0.975, n-1) * std / sqrt(n)``, with
the sample standard deviation (``ddof=1``). The t quantile is computed here (no SciPy):
the two-sided probability ``P(|T| < t)`` of Student's t with ``k`` degrees of freedom has
a closed form for integer ``k`` (Abramowitz and Stegun 26.7.3-26.7.4), and bisection
inverts it.

>>> round(t_quantile(0.975, 4), 3)
2.776
>>> s = summarize([0.90, 0.92, 0.94])
>>> round(s.mean, 3), round(s.std, 3), s.n, round(s.ci_low, 4), round(s.ci_high, 4)
(0.92, 0.02, 3, 0.8703, 0.9697)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Summary", "summarize", "t_cdf_two_sided", "t_quantile"]


def t_cdf_two_sided(t: float, dof: int) -> float:
    """``P(|T| < t)`` for Student's t with ``dof`` (>= 1, integer) degrees of freedom.

    >>> round(t_cdf_two_sided(12.7062, 1), 4)
    0.95
    """
    if dof < 1:
        raise ValueError(f"dof must be >= 1, got {dof}")
    if t <= 0:
        return 0.0
    theta = math.atan(t / math.sqrt(dof))
    c2 = math.cos(theta) ** 2
    s = math.sin(theta)
    if dof % 2 == 1:  # odd: 2/pi * (theta + sin cos (1 + 2/3 c2 + 2*4/(3*5) c2^2 + ...))
        term, total = 1.0, 1.0 if dof > 1 else 0.0
        for k in range(1, (dof - 1) // 2):
            term *= c2 * (2 * k) / (2 * k + 1)
            total += term
        series = s * math.cos(theta) * total if dof > 1 else 0.0
        return 2.0 / math.pi * (theta + series)
    term, total = 1.0, 1.0  # even: sin (1 + 1/2 c2 + 1*3/(2*4) c2^2 + ...)
    for k in range(1, dof // 2):
        term *= c2 * (2 * k - 1) / (2 * k)
        total += term
    return s * total


def t_quantile(p: float, dof: int) -> float:
    """The ``p`` quantile (``p`` in ``(0.5, 1)``) of Student's t with ``dof`` degrees of freedom.

    >>> round(t_quantile(0.975, 1), 3), round(t_quantile(0.975, 30), 3)
    (12.706, 2.042)
    """
    if not 0.5 < p < 1.0:
        raise ValueError(f"p must be in (0.5, 1), got {p}")
    target = 2.0 * p - 1.0
    lo, hi = 0.0, 1.0
    while t_cdf_two_sided(hi, dof) < target:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf_two_sided(mid, dof) < target:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class Summary:
    """Mean, sample standard deviation, count and 95% interval of some values.

    ``std`` and the interval are ``nan`` for fewer than two values: one seed says
    nothing about the spread.
    """

    mean: float
    std: float
    n: int
    ci_low: float
    ci_high: float

    @property
    def half_width(self) -> float:
        """Half the width of the 95% interval."""
        return (self.ci_high - self.ci_low) / 2.0


def summarize(values: Sequence[float], confidence: float = 0.95) -> Summary:
    """:class:`Summary` of ``values`` (non-finite values are an error, not skipped).

    Raises:
        ValueError: ``values`` is empty or holds NaN or infinity.
    """
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("summarize needs at least one value")
    if not all(math.isfinite(x) for x in xs):
        raise ValueError(f"summarize got a non-finite value in {xs}")
    n = len(xs)
    try:
        mean = math.fsum(xs) / n  # exact sum, one rounding: between min and max
    except OverflowError:  # near the largest floats: x / n first (tiny ones may underflow)
        mean = math.fsum(x / n for x in xs)
    if n < 2:
        return Summary(mean, math.nan, n, math.nan, math.nan)
    # scaled by the largest deviation, so that squaring never overflows
    deviations = [x / 2 - mean / 2 for x in xs]
    scale = max(abs(d) for d in deviations) or 1.0
    std = 2 * scale * math.sqrt(math.fsum((d / scale) ** 2 for d in deviations) / (n - 1))
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * std / math.sqrt(n)
    return Summary(mean, std, n, mean - half, mean + half)
