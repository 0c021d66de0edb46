"""Which axis of a batch is time and which is the batch: read from the spiking neurons.

A multi-step neuron (ours, SpikingJelly's with ``step_mode="m"``) is called with the whole
sequence ``[T, B, ...]``: its input's first dim is ``T``, its second ``B``. A single-step
neuron (SpikingJelly's ``step_mode="s"``, snnTorch's, Norse's cells, ours with
``step_mode="s"``) is
called once per step with ``[B, ...]``: its calls per batch are ``T``. The input's rank
alone cannot tell ``[T, B, F]`` from ``[B, N, F]``; the neurons can.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import LayoutError

__all__ = ["Layout", "read_layout"]

# What one neuron call saw: (module name, step mode "m" or "s", input shape).
Seen = tuple[str, str, tuple[int, ...]]

_ASK = "pass timesteps= and batch_size= to say which axis is which"


@dataclass(frozen=True)
class Layout:
    """``T`` and ``B`` of one batch, and who told.

    Attributes:
        timesteps: ``T`` (``None`` when no neuron ran and ``timesteps=`` was not given:
            the caller infers it from the convs).
        batch: ``B``, the samples of the batch.
        source: ``"neurons"``, ``"labels"``, ``"batch_size"`` or ``"input"`` (the
            first dim of a model input without neurons).
    """

    timesteps: int | None
    batch: int
    source: str


def _describe(seen: Sequence[Seen]) -> str:
    parts = []
    for name, mode, shape in seen[:4]:
        parts.append(f"{name!r} (step_mode={mode!r}, input {list(shape)})")
    more = f" and {len(seen) - 4} more" if len(seen) > 4 else ""
    return ", ".join(parts) + more


def read_layout(
    seen: Sequence[Seen],
    x_shape: tuple[int, ...],
    *,
    labels: int | None = None,
    batch_size: int | None = None,
    timesteps: int | None = None,
) -> Layout:
    """``T`` and ``B`` of a batch from what its neurons saw.

    Rules: ``T`` is the first dim of every multi-step neuron's input and the number of
    calls of every single-step neuron; they must agree. ``B`` is ``batch_size`` if given,
    else the number of labels (which must be a neurons' ``B`` when the first neuron's
    ``B`` is one of the input's first two dims: per-step labels ``[T, B]`` raise), else
    the second dim of a multi-step neuron's input or the first of a single-step one's
    (when neurons differ, the first neuron's ``B`` when every other is a multiple of it,
    e.g. attention heads folded into the batch), which must be one of the input's first
    two dims (tokens folded into every neuron's batch raise). Without
    neurons, ``B`` is the input's first dim, except for a 5-D input (``[T, B, C, H, W]``
    or ``[B, T, C, H, W]``: ambiguous) without ``timesteps`` matching one of its first
    two dims.

    Args:
        seen: ``(name, step_mode, input shape)`` of every neuron call of the batch.
        x_shape: The model input's shape.
        labels: The number of labels of an ``(x, y)`` batch.
        batch_size: ``B`` as the caller gave it.
        timesteps: ``T`` as the caller gave it.

    Returns:
        The :class:`Layout`.

    Raises:
        LayoutError: The neurons disagree on ``T`` or ``B``, contradict ``timesteps`` or
            the labels, or a neuron-less 5-D input does not say which axis is time.

    >>> read_layout([("1", "m", (3, 5, 20))], (3, 5, 12))
    Layout(timesteps=3, batch=5, source='neurons')
    >>> read_layout([("lif", "s", (5, 20))] * 4, (5, 12)).timesteps
    4
    """
    if timesteps is not None and batch_size is not None:
        return Layout(timesteps, batch_size, "batch_size")
    steps: dict[int, list[Seen]] = {}
    calls: dict[str, int] = {}
    first_single: dict[str, Seen] = {}
    batches: list[tuple[int, Seen]] = []
    for item in seen:
        name, mode, shape = item
        if mode == "m" and len(shape) >= 2:
            steps.setdefault(shape[0], []).append(item)
            batches.append((shape[1], item))
        elif mode == "s" and shape:
            calls[name] = calls.get(name, 0) + 1
            first_single.setdefault(name, item)
            batches.append((shape[0], item))
    for name, n in calls.items():
        steps.setdefault(n, []).append(first_single[name])
    if not steps:
        return _without_neurons(x_shape, labels, batch_size, timesteps)
    if len(steps) > 1:
        told = "; ".join(f"T={t}: {_describe(items)}" for t, items in sorted(steps.items()))
        raise LayoutError(
            f"the spiking neurons disagree on the number of time steps ({told}); {_ASK}"
        )
    t = next(iter(steps))
    if timesteps is not None and timesteps != t:
        raise LayoutError(
            f"timesteps={timesteps} but the spiking neurons see T={t} "
            f"({_describe(steps[t])}); {_ASK}, or drop timesteps="
        )
    if batch_size is not None:
        return Layout(t, batch_size, "batch_size")
    sizes = list(dict.fromkeys(b for b, _ in batches))
    if labels is not None:
        # Labels win (neurons may fold attention heads into the batch), unless the neurons
        # see a B that is a dim of the input and the labels count something else (per-step
        # labels [T, B] count T).
        if sizes and labels not in sizes and sizes[0] in x_shape[:2]:
            raise LayoutError(
                f"the batch has {labels} labels but the spiking neurons see B={sizes[0]} "
                f"({_describe([item for bb, item in batches if bb == sizes[0]])}); {_ASK}"
            )
        return Layout(t, labels, "labels")
    b = sizes[0]
    if len(sizes) > 1 and (any(s % b for s in sizes) or b not in x_shape[:2]):
        told = "; ".join(
            f"B={s}: {_describe([item for bb, item in batches if bb == s])}" for s in sizes
        )
        raise LayoutError(f"the spiking neurons disagree on the batch size ({told}); {_ASK}")
    if b not in x_shape[:2]:  # e.g. tokens folded into the batch: [T, B * N, D]
        raise LayoutError(
            f"the spiking neurons see B={b} ({_describe([item for _, item in batches])}), "
            f"which is not one of the input's first two dims {list(x_shape[:2])}; {_ASK} "
            "(or pass (x, y) batches)"
        )
    return Layout(t, b, "neurons")


def _without_neurons(
    x_shape: tuple[int, ...],
    labels: int | None,
    batch_size: int | None,
    timesteps: int | None,
) -> Layout:
    if batch_size is not None:
        return Layout(timesteps, batch_size, "batch_size")
    if labels is not None:
        return Layout(timesteps, labels, "labels")
    if len(x_shape) == 5:
        if timesteps is not None and x_shape[0] == timesteps:
            return Layout(timesteps, x_shape[1], "input")
        if timesteps is not None and x_shape[1] == timesteps:
            return Layout(timesteps, x_shape[0], "input")
        raise LayoutError(
            f"the input of shape {list(x_shape)} may be [T, B, C, H, W] or [B, T, C, H, W] "
            f"and no spiking neuron ran to tell; {_ASK} (or pass (x, y) batches)"
        )
    return Layout(timesteps, x_shape[0] if x_shape else 1, "input")
