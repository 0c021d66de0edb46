"""The memory-aware view in parts, with the assumptions behind each part and their sources.

Pure functions of a report's priced rows, measured counts and neurons: the weight reads,
the mask reads of a pruned layer, the membrane reads and writes and the spike traffic of
the SNN; the weight reads and the activation traffic of the ANN baselines; the storage
the model needs against the SRAM whose per-bit cost is assumed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .hardware import HARDWARE_PRESETS
from .options import PricingOptions
from .records import PJ_PER_MJ, LayerEnergy, NeuronCount, OpCount

__all__ = ["ASSUMPTIONS", "ann_memory_pj", "footprint_bits", "memory_parts", "sram_note"]

#: The assumptions of the memory-aware view: (part, assumption, source).
ASSUMPTIONS: tuple[tuple[str, str, str], ...] = (
    (
        "cost per bit",
        "e_mem_bit pJ per bit read or written, the same for every part (0.156 pJ: an 8 KB "
        "SRAM, 10 pJ per 64-bit read)",
        "Horowitz, ISSCC 2014, 45 nm",
    ),
    (
        "weights",
        "one weight read per synaptic operation (per spike and reached kept weight) at "
        "weight_bits; a binarised layer at 1 bit; no reuse from registers",
        "Lemaire et al., 2022 (memory accesses dominate SNN energy)",
    ),
    (
        "mask",
        "a pruned layer stores a 1-bit mask per dense weight; every connection a spike "
        "could reach has its bit read (synaptic ops / density); a dense layer has none",
        "this library's assumption (bitmap sparse format)",
    ),
    (
        "membranes",
        "one read and one write of state_bits per neuron update",
        "Lemaire et al., 2022",
    ),
    (
        "activations",
        "SNN: each neuron output written and read once at 1 bit; ANN: each activation "
        "written and read once at the preset's bits per pass",
        "this library's assumption (no on-chip reuse)",
    ),
)


def memory_parts(
    rows: Sequence[LayerEnergy],
    counts: Sequence[OpCount],
    neurons: Sequence[NeuronCount],
    options: PricingOptions,
    *,
    weight_bits: int | None = None,
) -> dict[str, float]:
    """The SNN's memory traffic per sample in pJ, by part.

    Args:
        rows: The priced rows (their weight reads).
        counts: The measured counts, in the order of ``rows`` (densities).
        neurons: The neurons' updates.
        options: Costs and bit widths.
        weight_bits: Read every weight at this many bits, binarised layers included (the
            like-for-like comparison); ``None`` keeps each layer's own (1 bit binarised).

    Returns:
        ``weights``, ``mask``, ``membranes`` and ``activations`` in pJ.

    >>> memory_parts([], [], [NeuronCount("lif", "LIFNeuron", 10.0, 4.0, 40.0)],
    ...              PricingOptions(e_mem_bit=1.0))["membranes"]
    2560.0
    """
    o = options
    weights = mask = 0.0
    for row, count in zip(rows, counts, strict=True):
        own = 1 if row.binarised else o.weight_bits
        bits = own if weight_bits is None else weight_bits
        reads = row.memory_pj / (own * o.e_mem_bit) if own and o.e_mem_bit else 0.0
        weights += reads * bits * o.e_mem_bit
        if count.weights and 0 < count.density < 1:
            mask += reads / count.density * o.e_mem_bit
    updates = math.fsum(n.updates for n in neurons)
    return {
        "weights": weights,
        "mask": mask,
        "membranes": updates * 2 * o.state_bits * o.e_mem_bit,
        "activations": updates * 2 * 1 * o.e_mem_bit,
    }


def ann_memory_pj(
    ann_macs: float, passes: float, neurons: Sequence[NeuronCount], preset: str, e_mem_bit: float
) -> dict[str, float]:
    """The memory traffic of a dense ANN baseline per sample in pJ: a weight read per MAC
    at the preset's bits, and each activation written and read once per pass.

    >>> ann_memory_pj(100.0, 1.0, [], "int8-45nm", 1.0)
    {'weights': 800.0, 'activations': 0.0}
    """
    bits = HARDWARE_PRESETS[preset].bits
    units = math.fsum(n.units for n in neurons)
    return {
        "weights": ann_macs * bits * e_mem_bit,
        "activations": units * passes * 2 * bits * e_mem_bit,
    }


def footprint_bits(
    counts: Sequence[OpCount], neurons: Sequence[NeuronCount], options: PricingOptions
) -> dict[str, float]:
    """What the model stores: weights (1 bit binarised), masks of pruned layers, membranes.

    >>> footprint_bits([], [NeuronCount("lif", "LIFNeuron", 10.0, 4.0, 40.0)], PricingOptions())
    {'weights': 0.0, 'mask': 0.0, 'membranes': 320.0}
    """
    weights = math.fsum(
        c.weights * (1 if c.binarised else options.weight_bits) for c in counts if c.weights
    )
    mask = math.fsum(float(c.weights) for c in counts if c.weights and 0 < c.density < 1)
    membranes = math.fsum(n.units for n in neurons) * options.state_bits
    return {"weights": weights, "mask": mask, "membranes": membranes}


def _kib(bits: float) -> str:
    kib = bits / 8 / 1024
    return f"{kib / 1024:.2f} MiB" if kib >= 1024 else f"{kib:.1f} KiB"


def sram_note(footprint: dict[str, float], options: PricingOptions) -> dict[str, Any]:
    """Whether the model fits the SRAM whose per-bit cost is assumed, and a sentence.

    >>> sram_note({"weights": 8 * 1024 * 8 * 2.0}, PricingOptions())["fits"]
    False
    """
    total = math.fsum(footprint.values())
    sram_bits = options.sram_kib * 1024 * 8
    fits = total <= sram_bits
    if fits:
        text = f"the model's {_kib(total)} fit the {options.sram_kib:g} KiB SRAM assumed"
    else:
        text = (
            f"the model's {_kib(total)} do not fit the {options.sram_kib:g} KiB SRAM whose "
            f"{options.e_mem_bit:.3g} pJ/bit is assumed: a larger SRAM, or off-chip DRAM, "
            "costs more per bit, so the memory figures are a lower bound"
        )
    return {"bits": total, "sram_bits": sram_bits, "fits": fits, "text": text}


def to_mj(parts: dict[str, float]) -> dict[str, float]:
    """pJ values in mJ."""
    return {k: v / PJ_PER_MJ for k, v in parts.items()}
