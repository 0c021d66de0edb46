"""What the energy counting derives from a weight alone (its non-zero count, whether it
is binarised, the reach maps of a conv), kept across measurements: a weight is read again
by the next estimate of the same model."""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from ..errors import SpikeLotteryError

__all__ = ["WeightCache"]

# What the counting derives from a weight alone, kept across measurements (a weight is
# read again by the next estimate of the same model): its facts by id(weight) (with a weak
# reference and its stamp (version, data_ptr, sum), which prove it is the same, unchanged
# tensor), and its conv reach maps by (id, stamp, sample shape, settings). Entries of
# freed weights are dropped by the weak references' callbacks.
_WEIGHT_FACTS: dict[int, tuple[weakref.ref[Tensor], tuple[int, int, float], tuple[int, bool]]] = {}
_WEIGHT_MAPS: dict[tuple[Any, ...], tuple[weakref.ref[Tensor], Tensor]] = {}


def _forget(key: Any, table: dict[Any, Any]) -> Any:
    def drop(_ref: Any) -> None:
        table.pop(key, None)

    return drop


class WeightCache:
    """The shared weight facts and reach maps, and the stamps of one measurement.

    A stamp ``(version, data_ptr, sum)`` proves that a weight did not change since its
    facts were counted (the sum also catches writes through ``.data``, which do not bump
    the version); it is taken once per tensor and version in a measurement.
    """

    def __init__(self) -> None:
        self._stamps: dict[int, tuple[weakref.ref[Tensor], tuple[int, int, float]]] = {}

    def stamp(self, weight: Tensor) -> tuple[int, int, float]:
        """``(version, data_ptr, sum)`` of a weight: what proves, across measurements, that
        its values did not change (the sum also catches writes through ``.data``, which
        do not bump the version); computed once per tensor and version in a measurement.

        Raises:
            RuntimeError: An inference tensor (no version counter).
        """
        hit = self._stamps.get(id(weight))
        if hit is not None and hit[0]() is weight and hit[1][0] == weight._version:
            return hit[1]
        found = (weight._version, weight.data_ptr(), float(weight.detach().sum()))
        self._stamps[id(weight)] = (weakref.ref(weight), found)
        return found

    def count(self, weight: Tensor, where: Callable[[], str]) -> tuple[int, int, bool]:
        """``(nonzero, numel, binarised)`` of a weight, counted once per tensor and version.

        Raises:
            SpikeLotteryError: The weight holds a NaN or an infinity (naming the layer).
        """
        try:
            version = self.stamp(weight)
        except (RuntimeError, TypeError):  # inference or traced tensors: no cache
            nnz, binarised = self._weight_facts(weight, where)
            return nnz, weight.numel(), binarised
        hit = _WEIGHT_FACTS.get(id(weight))
        if hit is not None and hit[0]() is weight and hit[1] == version:
            return hit[2][0], weight.numel(), hit[2][1]
        facts = self._weight_facts(weight, where)
        ref = weakref.ref(weight, _forget(id(weight), _WEIGHT_FACTS))
        _WEIGHT_FACTS[id(weight)] = (ref, version, facts)
        return facts[0], weight.numel(), facts[1]

    def _weight_facts(self, weight: Tensor, where: Callable[[], str]) -> tuple[int, bool]:
        # Float reductions for the checks: finite, non-zero count, one magnitude (binarised).
        nnz = int(torch.count_nonzero(weight))
        if not weight.is_floating_point():
            return nnz, False
        size = weight.abs()
        high = size.amax() if size.numel() else torch.zeros(())
        if not math.isfinite(float(high)):  # amax propagates NaN and inf
            raise SpikeLotteryError(
                f"layer {where()!r}: its weight holds NaN or infinite values; "
                "energy cannot be estimated (check the checkpoint or the training run)"
            )
        if not nnz:
            return 0, False
        # The smallest non-zero magnitude (every magnitude when nothing is pruned).
        low = size.amin() if nnz == weight.numel() else torch.where(weight != 0, size, high).amin()
        return nnz, bool((high - low) <= 1e-6 * high)

    def reach(
        self,
        weight: Tensor,
        sample: tuple[int, ...],
        settings: Mapping[str, Any],
        make: Callable[[], Tensor],
    ) -> Tensor:
        """The reach map of a conv (``make()``), once per weight version, sample shape and
        settings."""
        try:
            key = (id(weight), *self.stamp(weight), sample, repr(sorted(settings.items())))
        except (RuntimeError, TypeError):  # inference or traced tensors: no cache
            return make()
        hit = _WEIGHT_MAPS.get(key)
        if hit is None or hit[0]() is not weight:
            hit = (weakref.ref(weight, _forget(key, _WEIGHT_MAPS)), make())
            _WEIGHT_MAPS[key] = hit
        return hit[1]
