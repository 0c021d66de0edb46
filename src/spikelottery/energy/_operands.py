"""What an op's operands tell the recorder: spike statistics, weights and matmul shapes."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["Stats", "is_weight", "mm_base", "mm_macs", "mm_shape", "operand_stats", "virtual_stats"]

# (binary, sum of |values|, element count) of one operand: its rate is sum / count, the
# firing rate for spikes, the mean spike count for sums of spikes.
Stats = tuple[bool, float, int]


def operand_stats(t: Tensor) -> Stats:
    """``(binary, sum of |values|, numel)`` of one operand.

    >>> operand_stats(torch.tensor([0.0, 1.0, 1.0, 0.0]))
    (True, 2.0, 4)
    """
    n = t.numel()
    if n == 0:
        return False, 0.0, 0
    if t.dtype == torch.bool:
        return True, float(torch.count_nonzero(t)), n
    binary = bool(((t == 0) | (t == 1)).all())
    total = float(torch.count_nonzero(t)) if binary else float(t.abs().sum(dtype=torch.float64))
    return binary, total, n


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
