"""Paper Eq. 3-4 for one layer at a time: a pure function from an :class:`OpCount` to a
:class:`LayerEnergy` (no model, no report)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .options import PricingOptions
from .records import LayerEnergy, OpCount

__all__ = ["ann_passes_of", "exact_view", "first_as_mac", "price_layer", "price_layers"]


def price_layer(
    count: OpCount, options: PricingOptions, *, first: bool = False, frames: float = 1.0
) -> LayerEnergy:
    """The energy of one layer per sample, in the SNN and as an ANN.

    The per-layer terms of Eq. 3-4 that :func:`~spikelottery.energy.energy_from_counts`
    lists. With an ``attention_order`` other than ``"as_run"``, a row that has that
    alternative is priced as the alternative.

    Args:
        count: The measured layer.
        options: The pricing conventions.
        first: The layer is the network's first: a MAC per weight when its input is an
            image, once per distinct input frame; binary event frames are priced as
            spikes, as in any other layer (:func:`first_as_mac`).
        frames: Distinct input frames per sample (1 for a static input, ``T`` for event
            frames): the ANN reference's passes, and the first layer's with real input.

    >>> c = OpCount("fc", "linear", "Linear", "100 -> 10", 1000.0, 4.0, 0.5, True, 1.0)
    >>> row = price_layer(c, PricingOptions())
    >>> row.op, row.ops, round(row.snn_pj, 6), round(row.ann_pj, 6)  # 0.5 * 4 * 1000 ACs
    ('AC', 2000.0, 1800.0, 4600.0)
    """
    o = options
    as_run = count
    if o.attention_order != "as_run" and o.attention_order in count.alternatives:
        count = count.alternatives[o.attention_order]
    d = count.density if o.density_scaling else 1.0
    flops = count.macs * d
    passes = _passes(count, frames)
    if first_as_mac(count, first=first, frames=frames):
        op, ops = "MAC", flops * (count.steps if o.first_layer_times_t else passes)
    elif count.binary or not o.nonbinary_as_mac:
        op, ops = "AC", count.rate * count.steps * flops
    else:
        op, ops = "MAC", count.steps * flops
    ann_passes = ann_passes_of(count.steps, frames, o.ann_every_step)
    return LayerEnergy(
        name=count.name,
        kind=count.kind,
        shape=count.shape,
        macs=count.macs,
        steps=count.steps,
        rate=count.rate,
        binary=count.binary,
        density=count.density,
        op=op,
        ops=ops,
        snn_pj=(o.e_mac if op == "MAC" else o.e_ac) * ops,
        ann_pj=o.e_mac * flops * ann_passes,
        **exact_view(as_run, options, first=first, formula=(op, ops), frames=frames),
    )


def first_as_mac(count: OpCount, *, first: bool, frames: float) -> bool:
    """The layer is priced as the paper's first layer, in MACs: it is the first and its
    input is an image (real values, or any static input). A first layer fed binary event
    frames (``frames > 1``) is priced as spikes, as every other layer.

    >>> c = OpCount("stem", "conv", "Conv2d", "", 10.0, 4.0, 0.1, True, 1.0)
    >>> first_as_mac(c, first=True, frames=1.0), first_as_mac(c, first=True, frames=4.0)
    (True, False)
    """
    return first and (not count.binary or frames <= 1)


def _passes(count: OpCount, frames: float) -> float:
    """Passes of a layer that runs once per distinct input frame (at most its steps)."""
    return min(frames, count.steps) if frames > 1 else 1.0


def ann_passes_of(steps: float, frames: float, every_step: bool | None) -> float:
    """Passes of a layer of the ANN reference: one per distinct input frame (``None``),
    every step it ran (``True``) or one (``False``).

    >>> ann_passes_of(4.0, 4.0, None), ann_passes_of(4.0, 1.0, None), ann_passes_of(4.0, 1.0, True)
    (4.0, 1.0, 4.0)
    """
    if every_step is None:
        return min(frames, steps) if frames > 1 else 1.0
    return steps if every_step else 1.0


def exact_view(
    count: OpCount,
    options: PricingOptions,
    *,
    first: bool,
    formula: tuple[str, float],
    frames: float = 1.0,
) -> dict[str, Any]:
    """The exact and memory-aware columns of a layer (the :class:`LayerEnergy` fields
    ``exact_op``, ``exact_ops``, ``exact_pj``, ``memory_pj``, ``exact``, ``binarised``,
    ``per_step``).

    Exact: the counted synaptic operations, as MACs for a first layer fed an image
    (once per distinct input frame: the first step's count for a static image, unless
    ``first_layer_times_t``) and for non-binary inputs with ``nonbinary_as_mac``, else as
    ACs: a graded input weighted by its values, average-pooled spikes (with
    ``pooled_inputs="spikes"``) by the spikes behind each pooled value, each of which
    reaches the weights. A layer without an exact count keeps the formula's
    ``(op, ops)``. Memory: one weight read per synaptic op at ``weight_bits`` (1 bit for
    a binarised layer). ``per_step`` splits ``exact_ops`` over the steps: it sums to it.

    >>> c = OpCount("fc", "linear", "Linear", "", 100.0, 4.0, 0.5, True, 1.0, synops=120.0)
    >>> exact_view(c, PricingOptions(), first=False, formula=("AC", 200.0))["exact_pj"]
    108.0
    """
    o = options
    per_step = count.synops_per_step
    if count.synops is None:
        (op, ops), reads, exact = formula, formula[1], False
    else:
        reads, exact = count.synops, True
        if first_as_mac(count, first=first, frames=frames):
            op = "MAC"
            passes = count.steps if o.first_layer_times_t else _passes(count, frames)
            if passes < count.steps and count.steps:
                # Run once per distinct frame: a static image is processed at the first
                # step only (every step of it counts the same).
                reads = count.synops / count.steps * passes
                per_step = (reads, *([0.0] * (len(per_step) - 1))) if per_step else ()
            ops = reads
        elif count.binary:
            op, ops = "AC", count.synops
        elif o.nonbinary_as_mac:
            op, ops = "MAC", count.synops
        else:
            values = count.synops_values
            op, ops = "AC", count.synops if values is None else values
            if values is not None and count.synops_values_per_step:
                per_step = count.synops_values_per_step  # split what is priced
            if values is not None and count.pool_area > 1 and o.pooled_inputs == "spikes":
                # k spikes behind a pooled value k / area: each reaches (and reads) the weights.
                ops = reads = values * count.pool_area
                per_step = tuple(v * count.pool_area for v in per_step)
    bits = 1 if count.binarised else o.weight_bits
    return {
        "exact_op": op,
        "exact_ops": ops,
        "exact_pj": (o.e_mac if op == "MAC" else o.e_ac) * ops,
        "memory_pj": reads * bits * o.e_mem_bit,
        "exact": exact,
        "binarised": count.binarised,
        "per_step": per_step,
    }


def price_layers(
    counts: Sequence[OpCount], options: PricingOptions, *, frames: float = 1.0
) -> tuple[LayerEnergy, ...]:
    """:func:`price_layer` on every count; the first count is the network's first layer.

    >>> first = OpCount("stem", "conv", "Conv2d", "", 1e6, 4.0, 1.0, False, 1.0)
    >>> [r.op for r in price_layers([first, first], PricingOptions(nonbinary_as_mac=True))]
    ['MAC', 'MAC']
    """
    return tuple(price_layer(c, options, first=i == 0, frames=frames) for i, c in enumerate(counts))
