""":func:`energy_from_counts`: measured op counts priced into an :class:`EnergyReport`
(paper Eq. 3-4 and the exact and memory-aware views), no model needed."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ._formula import price_layers
from .options import PricingOptions, merge_options
from .records import PJ_PER_MJ, NeuronCount, OpCount
from .report import EnergyReport

__all__ = ["energy_from_counts"]


def energy_from_counts(
    counts: Sequence[OpCount],
    *,
    options: PricingOptions | None = None,
    timesteps: float | None = None,
    samples: int = 0,
    neurons: Sequence[NeuronCount] = (),
    frames: float = 1.0,
    spiking: bool = True,
    **pricing: Any,
) -> EnergyReport:
    """Price measured op counts with paper Eq. 3-4 (the pure formula, no model needed).

    The first count is the first layer. Per layer, with ``d`` the weight density when
    ``density_scaling`` (else 1) and ``F = macs * d``:

    * ANN: ``e_mac * F`` per distinct input frame (once on a static input, ``steps``
      times on event frames); ``ann_every_step=True`` / ``False`` forces ``steps`` / one.
    * SNN, first layer with real input: ``e_mac * F`` per distinct input frame (times its
      time steps with ``first_layer_times_t``); with binary (event) input, as below.
    * SNN, binary input: ``e_ac * rate * steps * F`` (the synaptic operations).
    * SNN, non-binary input: ``e_ac * rate * steps * F`` with ``rate`` the input's mean
      absolute value (the paper: every layer after the first is priced in SOPs), or
      ``e_mac * steps * F`` with ``nonbinary_as_mac=True``.

    Args:
        counts: :class:`OpCount` rows in execution order (from :func:`count_ops` or
            :attr:`EnergyReport.counts`).
        options: The pricing conventions (default: the paper's).
        timesteps: ``T`` for the report (default: the largest ``steps``).
        samples: Samples measured, for the report.
        neurons: The membrane updates of the neurons (for the memory-aware view).
        frames: Distinct input frames per sample (1: a static input; ``T``: event frames).
        spiking: A spiking neuron ran (for the report's warning).
        **pricing: :class:`PricingOptions` fields as keywords (``e_ac=0.03``,
            ``nonbinary_as_mac=True``, ...), overriding ``options``.

    Returns:
        An :class:`EnergyReport`.

    >>> c = OpCount("fc", "linear", "Linear", "100 -> 10", macs=1000, steps=4, rate=0.5,
    ...             binary=True, density=1.0)
    >>> first = OpCount("stem", "conv", "Conv2d", "...", 1e6, 4, 1.0, False, 1.0)
    >>> round(energy_from_counts([first, c]).snn_mj * 1e9)  # 4.6e6 + 0.9 * 0.5 * 4 * 1000 pJ
    4601800
    """
    opts = merge_options(options, pricing, caller="energy_from_counts")
    counts = tuple(counts)
    if not counts:
        raise ValueError("counts is empty: there is no layer to price")
    rows = price_layers(counts, opts, frames=frames)
    ann_pj = math.fsum(r.ann_pj for r in rows)
    snn_pj = math.fsum(r.snn_pj for r in rows)
    spike_work = math.fsum(r.steps * r.macs for r in rows if r.binary)
    mean_rate = (
        math.fsum(r.rate * r.steps * r.macs for r in rows if r.binary) / spike_work
        if spike_work
        else math.nan
    )
    return EnergyReport(
        rows=rows,
        ann_mj=ann_pj / PJ_PER_MJ,
        snn_mj=snn_pj / PJ_PER_MJ,
        ratio=snn_pj / ann_pj if ann_pj else math.nan,
        macs=math.fsum(r.macs for r in rows),
        sops=math.fsum(r.ops for r in rows if r.op == "AC"),
        snn_macs=math.fsum(r.ops for r in rows if r.op == "MAC"),
        mean_rate=mean_rate,
        timesteps=float(timesteps) if timesteps is not None else max(c.steps for c in counts),
        samples=int(samples),
        attention_pairs=sum(1 for c in counts if c.alternatives) // 2,
        options=opts.to_dict(),
        counts=counts,
        neurons=tuple(neurons),
        frames=float(frames),
        spiking=bool(spiking),
    )
