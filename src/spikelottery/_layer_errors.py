"""The error a score-mask layer raises for an input that does not fit it (not public API)."""

from __future__ import annotations

from typing import Any

from torch import Tensor

__all__ = ["input_error"]


def input_error(
    layer: Any, x: Tensor, exc: RuntimeError, size: str, axis: int, layouts: str
) -> RuntimeError:
    """``exc`` with the layer and what it takes, if ``x`` does not fit it; else ``exc`` itself.

    Called only once the op has failed, so a forward that works pays nothing. The error
    stays a ``RuntimeError``, as from the dense layer the score-mask layer replaces.
    """
    expected = getattr(layer, size)
    weight_dtype = layer.frozen_weight.dtype
    shape = tuple(x.shape)
    if x.dim() < -axis:
        what = (
            f"takes {layouts} input ({size}={expected} on axis {axis}), got a {x.dim()}-D "
            f"input of shape {shape}; add the missing axes (e.g. x.unsqueeze(0)), or use a "
            "linear layer for flat features"
        )
    elif shape[axis] != expected:
        what = f"takes {size}={expected} on axis {axis} ({layouts}), got input of shape {shape}"
    elif x.dtype != weight_dtype:
        what = f"takes {weight_dtype} input (its weight's dtype), got {x.dtype}"
    else:
        return exc  # out of memory, a device mismatch, ...: not about the input's shape
    return RuntimeError(f"{type(layer).__name__}({layer.extra_repr()}) {what}. torch: {exc}")
