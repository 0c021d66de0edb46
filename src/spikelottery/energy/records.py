"""The measured and the priced row of one layer: :class:`OpCount` and :class:`LayerEnergy`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["PJ_PER_MJ", "LayerEnergy", "NeuronCount", "OpCount", "plain_number"]

PJ_PER_MJ = 1e9


@dataclass(frozen=True)
class OpCount:
    """What one layer did, per sample, measured on real inputs.

    Attributes:
        name: Qualified module name (``features.0.conv``), or module name plus the op's
            index when a module issues several ops (``blocks.0.attn.matmul0``).
        kind: ``"conv"``, ``"linear"`` or ``"matmul"``.
        module: Class name of the module that issued the op.
        shape: Human-readable shape of one sample at one time step.
        macs: Dense multiply-accumulates per sample per time step (``FLOPs_l``).
        steps: Time steps the layer ran per sample (``T`` for almost every layer).
        rate: Firing rate of the binary input (fraction of ones over time, batch and
            units); for a non-binary input, its mean absolute value (the mean spike count
            of a sum of spikes, the pre-pooling rate of average-pooled spikes).
        binary: The input was binary (all values in {0, 1}) on every call; for a matmul,
            one operand was (a product with a 0/1 factor is an accumulate).
        density: Fraction of non-zero weight entries (1 for activation-activation matmuls).
        spike_operand: ``"input"`` (conv, linear), ``"left"``, ``"right"`` or ``"both"``
            (matmul; the rate is the left operand's when it is binary), ``""`` if none.
        calls: Number of calls recorded.
        alternatives: For the two matmuls of a spiking attention, the same row costed in
            each :data:`ATTENTION_ORDERS` entry (empty otherwise).
        synops: Exact synaptic operations per sample over all its steps: every non-zero
            input times its kept, non-zero outgoing weights (an accumulate for a spike, an
            effective MAC for a real value); ``None`` when the op could not be counted
            exactly (an ``einsum``, a fused attention) or counting was off.
        synops_values: The same with each input weighted by its absolute value (a sum
            of ``k`` spikes reaches its weights ``k`` times); equals ``synops`` for a
            binary input.
        synops_per_step: ``synops`` split over the time steps ``0 .. T-1`` (empty when
            not counted).
        synops_values_per_step: ``synops_values`` split the same way.
        binarised: Every non-zero weight has the same magnitude (a binarised ``"mp"``
            ticket): stored at 1 bit in the memory-aware view.
        pool_area: The input is average-pooled spikes over windows of this many inputs
            (1.0 when it is not): a pooled value ``k / pool_area`` is ``k`` spikes, each
            of which reaches the layer's weights on an event-driven chip.
        weights: Entries of the layer's weight (0 for activation-activation matmuls).
        neurobench: Issued by a ``torch.nn`` ``Linear`` or ``Conv1d/2d/3d`` module (or a
            subclass) in its own forward: a layer NeuroBench counts.
        taps: In-range (input, weight) pairs per sample over all steps, every input and
            weight counted and padded taps left out (NeuroBench's ``Dense``).

    >>> OpCount("fc", "linear", "Linear", "100 -> 10", 1000.0, 4.0, 0.5, True, 1.0).kind
    'linear'
    """

    name: str
    kind: str
    module: str
    shape: str
    macs: float
    steps: float
    rate: float
    binary: bool
    density: float
    spike_operand: str = ""
    calls: int = 1
    alternatives: Mapping[str, OpCount] = field(default_factory=dict, compare=False, repr=False)
    synops: float | None = None
    synops_values: float | None = None
    synops_per_step: tuple[float, ...] = ()
    binarised: bool = False
    synops_values_per_step: tuple[float, ...] = ()
    pool_area: float = 1.0
    weights: int = 0
    neurobench: bool = False
    taps: float = 0.0


@dataclass(frozen=True)
class NeuronCount:
    """The membrane updates of one spiking neuron module, per sample.

    Attributes:
        name: Qualified module name.
        module: Class name.
        units: Neurons updated per time step (``updates / steps``).
        steps: ``T``.
        updates: Membrane updates per sample over all time steps (``units * T``).
        spikes: Non-zero outputs (spikes) per sample over all time steps.

    >>> NeuronCount("lif1", "LIFNeuron", 100.0, 4.0, 400.0, 50.0).updates
    400.0
    """

    name: str
    module: str
    units: float
    steps: float
    updates: float
    spikes: float = 0.0


@dataclass(frozen=True)
class LayerEnergy:
    """One row of an :class:`EnergyReport`: a layer and its energy per sample.

    ``name``, ``kind``, ``shape``, ``macs``, ``steps``, ``rate``, ``binary`` and
    ``density`` are as in :class:`OpCount` (``macs`` is the dense count; ``density``
    scales it only with ``density_scaling=True``).

    Attributes:
        op: How the SNN pays for the layer: ``"MAC"`` (the first layer; non-binary inputs
            with ``nonbinary_as_mac=True``) or ``"AC"`` (accumulates).
        ops: Operations per sample over all time steps: the synaptic operations
            ``SOPs = fr * T * FLOPs`` for an ``"AC"`` row, the MACs for a ``"MAC"`` row.
        snn_pj: Energy of the layer in the SNN, pJ per sample.
        ann_pj: Energy of the layer as an ANN, pJ per sample: run once (``e_mac * FLOPs``),
            or on each of its ``steps`` with ``ann_every_step=True``.
        exact_op: How the exact view pays for the layer (``"AC"`` or ``"MAC"``, as ``op``).
        exact_ops: Exact synaptic operations per sample that the exact view charges (the
            first layer's per step unless ``first_layer_times_t``); ``ops`` when the layer
            could not be counted exactly (see ``exact``).
        exact_pj: Energy of the layer in the SNN from the exact count, pJ per sample.
        memory_pj: Weight reads of the exact count, pJ per sample: one weight per
            synaptic op at ``weight_bits`` (1 bit when ``binarised``) times ``e_mem_bit``.
        exact: The layer was counted exactly (else the exact view uses ``ops``).
        binarised: The weights are binarised (read at 1 bit).
        per_step: The exact view's operations per time step: ``exact_ops`` split over
            the steps (a graded input weighted by its values, as ``exact_ops``), the first
            layer at every step it ran (empty when not counted).
    """

    name: str
    kind: str
    shape: str
    macs: float
    steps: float
    rate: float
    binary: bool
    density: float
    op: str
    ops: float
    snn_pj: float
    ann_pj: float
    exact_op: str = ""
    exact_ops: float = 0.0
    exact_pj: float = 0.0
    memory_pj: float = 0.0
    exact: bool = False
    binarised: bool = False
    per_step: tuple[float, ...] = ()

    @property
    def exact_mj(self) -> float:
        """:attr:`exact_pj` in mJ."""
        return self.exact_pj / PJ_PER_MJ

    @property
    def snn_mj(self) -> float:
        """:attr:`snn_pj` in mJ."""
        return self.snn_pj / PJ_PER_MJ

    @property
    def ann_mj(self) -> float:
        """:attr:`ann_pj` in mJ."""
        return self.ann_pj / PJ_PER_MJ


def plain_number(v: float) -> str:
    """``v`` without decimals when it is a whole number, else to 3 significant digits.

    >>> plain_number(4.0), plain_number(2.5), plain_number(1 / 3)
    ('4', '2.5', '0.333')
    """
    return f"{v:.0f}" if abs(v - round(v)) < 1e-9 else f"{v:.3g}"
