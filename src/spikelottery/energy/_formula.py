"""Paper Eq. 3-4 for one layer at a time: a pure function from an :class:`OpCount` to a
:class:`LayerEnergy` (no model, no report)."""

from __future__ import annotations

from collections.abc import Sequence

from ._options import PricingOptions
from ._records import LayerEnergy, OpCount

__all__ = ["price_layer", "price_layers"]


def price_layer(count: OpCount, options: PricingOptions, *, first: bool = False) -> LayerEnergy:
    """The energy of one layer per sample, in the SNN and as an ANN.

    The per-layer terms of Eq. 3-4 that :func:`~spikelottery.energy.energy_from_counts`
    lists. With an ``attention_order`` other than ``"as_run"``, a row that has that
    alternative is priced as the alternative.

    Args:
        count: The measured layer.
        options: The pricing conventions.
        first: The layer is the network's first (always a MAC: its input is the image).

    >>> c = OpCount("fc", "linear", "Linear", "100 -> 10", 1000.0, 4.0, 0.5, True, 1.0)
    >>> row = price_layer(c, PricingOptions())
    >>> row.op, row.ops, round(row.snn_pj, 6), round(row.ann_pj, 6)  # 0.5 * 4 * 1000 ACs
    ('AC', 2000.0, 1800.0, 4600.0)
    """
    o = options
    if o.attention_order != "as_run" and o.attention_order in count.alternatives:
        count = count.alternatives[o.attention_order]
    d = count.density if o.density_scaling else 1.0
    flops = count.macs * d
    if first:
        op, ops = "MAC", flops * (count.steps if o.first_layer_times_t else 1.0)
    elif count.binary or not o.nonbinary_as_mac:
        op, ops = "AC", count.rate * count.steps * flops
    else:
        op, ops = "MAC", count.steps * flops
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
        ann_pj=o.e_mac * flops * (count.steps if o.ann_every_step else 1.0),
    )


def price_layers(counts: Sequence[OpCount], options: PricingOptions) -> tuple[LayerEnergy, ...]:
    """:func:`price_layer` on every count; the first count is the network's first layer.

    >>> first = OpCount("stem", "conv", "Conv2d", "", 1e6, 4.0, 1.0, False, 1.0)
    >>> [r.op for r in price_layers([first, first], PricingOptions(nonbinary_as_mac=True))]
    ['MAC', 'MAC']
    """
    return tuple(price_layer(c, options, first=i == 0) for i, c in enumerate(counts))
