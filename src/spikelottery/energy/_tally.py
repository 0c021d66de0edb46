"""Running totals of one layer (:class:`Tally`) and of one neuron module
(:class:`NeuronTally`) while the model runs."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from ._operands import Stats
from .synops import matmul_synops

__all__ = ["NeuronTally", "Steps", "SynCount", "Tally", "matmul_count"]

# The exact synaptic operations of one call (``_synops``): the non-zero-pair count per
# leading row (at most two leading dims kept, e.g. ``[T * B]`` or ``[T, B]``) and the
# count weighted by the input's absolute values, per row as well (``None`` when equal).
SynCount = tuple[Tensor, Tensor | None]

# Sample-steps of one call: a conv's batch dim, or (leading dims, batch index) of a
# linear / matmul output, resolved by lead_sample_steps (in _counting) once the batch's B
# (read from the neurons after the call) and T are known.
Steps = float | tuple[tuple[int, ...], int]


@dataclass
class Tally:
    """Running totals of one layer over all calls and batches."""

    module: str
    label: str
    custom_label: bool
    kind: str
    module_type: str
    seq: int
    shape: str
    base_macs: int | None
    macs: int = 0
    sample_steps: float = 0.0  # convs: their batch dim, summed
    leads: dict[tuple[tuple[int, ...], int], int] = field(default_factory=dict)  # -> calls
    calls: int = 0
    binary: bool = True
    spike_operand: str = ""
    spike_sum: float = 0.0
    spike_numel: int = 0
    act_sum: float = 0.0
    act_numel: int = 0
    w_nnz: int | None = None
    w_numel: int | None = None
    w_binarised: bool = False
    # Exact synaptic operations: (call index in its batch, count shape, batch index) ->
    # summed counts (the batch's B is read after its run, from the neurons).
    syn_steps: dict[tuple[int, tuple[int, ...], int], Tensor] = field(default_factory=dict)
    syn_values: Tensor | None = None
    # The same split of the counts weighted by the input's absolute values.
    syn_value_steps: dict[tuple[int, tuple[int, ...], int], Tensor] = field(default_factory=dict)
    syn_missing: bool = False
    batch_id: int = -1
    batch_calls: int = 0
    # Area of the pooling window in front of an average-pooled spike input (1.0 if none):
    # a pooled value of k/area is k spikes, each reaching the layer's weights.
    pool_area: float = 1.0
    weights: int = 0  # entries of the weight (0 for activation-activation matmuls)
    # Issued by a torch.nn Linear / Conv1d-3d module in its own forward: the layers whose
    # inputs NeuroBench hooks.
    neurobench: bool = False
    # In-range (input, weight) pairs of all calls, every weight and input counted
    # (NeuroBench's "Dense": padded taps left out).
    taps: float = 0.0

    def add_synops(self, syn: SynCount | None, batch_id: int) -> None:
        """Add one call's exact count (``None``: this op has no exact count)."""
        if batch_id != self.batch_id:
            self.batch_id, self.batch_calls = batch_id, 0
        index = self.batch_calls
        self.batch_calls += 1
        if syn is None:
            self.syn_missing = True
            return
        events, values = syn
        if events.dim() > 2:
            events = events.flatten(2).sum(dim=2)
        if values is None:
            values = events
        elif values.dim() > 2:
            values = values.flatten(2).sum(dim=2)
        key = (index, tuple(events.shape), batch_id)
        for steps, rows in ((self.syn_steps, events), (self.syn_value_steps, values)):
            prev = steps.get(key)
            steps[key] = rows if prev is None else prev + rows
        total = values.sum()
        self.syn_values = total if self.syn_values is None else self.syn_values + total

    def add(
        self,
        macs: int,
        steps: Steps,
        left: Stats,
        right: Stats | None,
        weight: tuple[int, int] | None,
        *,
        right_is_weight: bool = False,
    ) -> None:
        """Add one call; ``weight`` is the ``(nonzero, numel)`` count of its weight."""
        self.calls += 1
        self.macs += macs
        if isinstance(steps, tuple):
            self.leads[steps] = self.leads.get(steps, 0) + 1
        else:
            self.sample_steps += steps
        if right is None:  # conv / linear: the left operand is the input
            spike, which = (left if left[0] else None), "input"
        elif left[0]:
            spike, which = left, ("both" if right[0] and not right_is_weight else "left")
        elif right[0] and not right_is_weight:
            spike, which = right, "right"
        else:
            spike, which = None, ""
        if spike is None:
            self.binary = False
        else:
            self.spike_sum += spike[1]
            self.spike_numel += spike[2]
            self.spike_operand = self.spike_operand or which
        self.act_sum += left[1]
        self.act_numel += left[2]
        if weight is not None:
            self.w_nnz, self.w_numel = weight
            self.weights = weight[1]


def matmul_count(a: Tensor, b: Tensor, spike_driven: bool) -> SynCount:
    """The :data:`SynCount` of ``a @ b``: non-zero pairs per product, and, when neither
    operand is binary, the pairs weighted by ``|a|`` (the graded input), per product too.

    >>> import torch
    >>> ev, vals = matmul_count(torch.ones(2, 3), torch.ones(3, 4), True)
    >>> float(ev), vals
    (24.0, None)
    """
    events = matmul_synops(a, b)
    return events, (None if spike_driven else matmul_synops(a, b, values_of="a"))


@dataclass
class NeuronTally:
    """Membrane updates of one neuron module: output elements (and non-zeros) of all calls."""

    module: str
    module_type: str
    seq: int
    updates: int = 0
    spikes: int = 0
    calls: int = 0
