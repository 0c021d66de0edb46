"""What an op's operands tell the recorder: spike statistics, weights and matmul shapes."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["Stats", "is_weight", "mm_base", "mm_macs", "mm_shape", "operand_stats", "virtual_stats"]

# (binary, sum of |values|, element count) of one operand: its rate is sum / count, the
# firing rate for spikes, the mean spike count for sums of spikes.
Stats = tuple[bool, float, int]


def operand_stats(t: Tensor) -> Stats:
    """``(binary, sum of |values|, numel)`` of one operand.

    Float reductions only (a bool reduction is several times slower on CPU): the range
    first; inside ``[0, 1]`` the operand is binary when ``sum(x * (1 - x)) == 0`` (every
    term is ``>= 0`` and a positive term cannot round the sum to zero), and its spikes
    are then its sum, exact below ``2**24``.

    >>> operand_stats(torch.tensor([0.0, 1.0, 1.0, 0.0]))
    (True, 2.0, 4)
    >>> operand_stats(torch.tensor([0.0, 0.5, 1.0]))
    (False, 1.5, 3)
    """
    n = t.numel()
    if n == 0:
        return False, 0.0, 0
    if t.dtype == torch.bool:
        return True, float(torch.count_nonzero(t)), n
    if not t.is_floating_point():
        lo, hi = torch.aminmax(t)
        if int(lo) >= 0 and int(hi) <= 1:
            return True, float(t.sum()), n
        return False, float(t.abs().sum(dtype=torch.float64)), n
    flat = t.reshape(-1)
    lo, hi = torch.aminmax(flat)
    low, high = float(lo), float(hi)
    if not (math.isfinite(low) and math.isfinite(high)):
        return False, math.nan, n  # NaN / inf: the caller names the layer
    if low >= 0 and high <= 1:
        if high == 0 or float(torch.dot(flat, 1 - flat)) == 0:
            total = flat.sum(dtype=torch.float64) if n >= _EXACT_F32 else flat.sum()
            return True, float(total), n
        if n < _EXACT_F32:
            return False, float(flat.sum()), n
    return False, float(flat.abs().sum(dtype=torch.float64)), n


# float32 sums small integers exactly below 2**24.
_EXACT_F32 = 2**24


def virtual_stats(numel: int) -> Stats:
    """An intermediate product the run never made: assumed non-binary, rate 1."""
    return False, float(numel), numel


def is_weight(t: Any) -> bool:
    """``t`` is a parameter, or a view of one."""
    return isinstance(t, nn.Parameter) or isinstance(getattr(t, "_base", None), nn.Parameter)


def mm_macs(a: Tensor, out: Tensor) -> int:
    """MACs of ``out = a @ b``: every output element reads a row of ``a``."""
    return out.numel() * a.shape[-1]


def mm_shape(a: Tensor, b: Tensor) -> str:
    """``"NxD @ DxM"``: the matrices of one product (the batch dims left out).

    >>> mm_shape(torch.zeros(2, 3, 4), torch.zeros(4, 5))
    '3x4 @ 4x5'
    """

    def mat(t: Tensor) -> str:
        return "x".join(str(s) for s in t.shape[-2:])

    return f"{mat(a)} @ {mat(b)}"


def mm_base(a: Tensor, b: Tensor) -> int | None:
    """MACs of one matrix product of ``a @ b`` (``None`` when an operand is a vector)."""
    if a.dim() < 2 or b.dim() < 2:
        return None
    return a.shape[-2] * a.shape[-1] * b.shape[-1]
