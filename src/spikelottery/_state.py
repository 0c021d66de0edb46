"""Small helpers shared by the engine and the energy estimator (not public API).

* :func:`reset_states`: forget every neuron's membrane state before a new batch (defined
  in :mod:`spikelottery.neuron`, its public home);
* :func:`unwrap`: the model inside a ``DistributedDataParallel`` / ``DataParallel``;
* :func:`split_batch`: ``x`` and ``y`` of a batch (a tensor or an ``(x, y, ...)`` pair);
* :func:`finite_or_none`: ``nan`` and infinities become ``None`` (JSON has neither).
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor, nn

from .neuron import reset_states

__all__ = ["finite_or_none", "reset_states", "split_batch", "unwrap"]


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` or ``DataParallel`` wrapper (else ``model``).

    >>> unwrap(nn.DataParallel(nn.Linear(2, 2)))
    Linear(in_features=2, out_features=2, bias=True)
    """
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


def split_batch(batch: Any) -> tuple[Tensor, Any]:
    """``(x, y)`` of a batch: a tensor ``x`` (``y`` is ``None``) or a sequence ``(x, y, ...)``.

    Raises:
        TypeError: ``batch`` is neither a tensor nor a sequence whose first item is one.

    >>> x, y = split_batch((torch.zeros(2, 3), torch.tensor([0, 1])))
    >>> x.shape, y.tolist()
    (torch.Size([2, 3]), [0, 1])
    """
    if isinstance(batch, Tensor):
        return batch, None
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
        return batch[0], (batch[1] if len(batch) > 1 else None)
    raise TypeError(
        "a batch must be a tensor x or an (x, y) pair whose first item is a tensor, "
        f"got {type(batch).__name__}"
    )


def finite_or_none(value: Any) -> Any:
    """``value``, or ``None`` when it is a float ``nan`` or infinity (for JSON output).

    >>> finite_or_none(float("nan")), finite_or_none(0.5), finite_or_none("x")
    (None, 0.5, 'x')
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
