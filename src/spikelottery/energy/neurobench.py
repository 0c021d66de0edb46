"""Running a ticket through NeuroBench (the optional extra ``neurobench``), and the same
metrics read off our :class:`~spikelottery.energy.EnergyReport`.

NeuroBench 2.x reads a model's static metrics from its ``.weight`` tensors and its
workload metrics from hooks on the ``nn.Linear`` / ``nn.Conv*`` modules and on the
activation modules it knows. :func:`run_neurobench` therefore

* bakes a copy of the ticket (:func:`~spikelottery.densify`), so the connection sparsity
  counts the pruned weights and the footprint holds no scores or frozen dense weights;
* registers our :class:`~spikelottery.neuron.LIFNeuron` (and SpikingJelly's ``BaseNode``
  and snnTorch's ``SpikingNeuron`` when loaded) as activation modules, so activation
  sparsity sees the spikes;
* converts NeuroBench's batch-first ``[B, T, ...]`` batches to ``[T, B, ...]`` for a model
  that reads time first.
"""

from __future__ import annotations

import copy
import math
import sys
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .._compat import optional_import
from ..neuron import LIFNeuron
from .report import EnergyReport

__all__ = ["NEUROBENCH_METRICS", "neurobench_model", "neurobench_view", "run_neurobench"]

#: The NeuroBench metrics :func:`run_neurobench` runs by default: ``(static, workload)``.
NEUROBENCH_METRICS: tuple[tuple[str, ...], tuple[str, ...]] = (
    ("ParameterCount", "Footprint", "ConnectionSparsity"),
    ("ActivationSparsity", "SynapticOperations", "MembraneUpdates"),
)


def _require_neurobench() -> Any:
    nb = optional_import("neurobench.benchmarks")
    if nb is None:
        raise ImportError(
            "run_neurobench needs NeuroBench: pip install 'spikelottery[neurobench]' "
            "(or pip install neurobench)"
        )
    return nb


def neurobench_model(model: nn.Module, *, time_first: bool | None = None) -> Any:
    """Wrap a (baked) network as a NeuroBench ``TorchModel`` with our neurons registered.

    Args:
        model: The network; it is called with each batch's input.
        time_first: The network reads ``[T, B, ...]``: each NeuroBench batch ``[B, T, ...]``
            is transposed before the call. ``None`` reads the model's own ``time_first``
            attribute (the zoo's models take ``[B, T, ...]``), else ``False``.

    Returns:
        A ``neurobench.models.TorchModel``.

    Raises:
        ImportError: NeuroBench is not installed (the message names the extra).
    """
    _require_neurobench()
    from neurobench.models import TorchModel

    first = bool(getattr(model, "time_first", False)) if time_first is None else time_first

    class _SpikeLotteryModel(TorchModel):  # type: ignore[misc]
        """``TorchModel`` that moves NeuroBench's batch-first time axis where the net wants it."""

        def __call__(self, batch: Tensor) -> Tensor:
            if first and batch.dim() >= 3:
                batch = batch.transpose(0, 1).contiguous()
            with torch.no_grad():
                return self.net(batch)

    wrapped = _SpikeLotteryModel(model)
    wrapped.add_activation_module(LIFNeuron)
    sj = optional_import("spikingjelly.activation_based.neuron")
    if sj is not None:
        wrapped.add_activation_module(sj.BaseNode)
    # snnTorch's neurons, as NeuroBench's own SNNTorchModel registers them (a library the
    # user never imported cannot have made their neurons).
    snn = optional_import("snntorch") if "snntorch" in sys.modules else None
    if snn is not None:
        wrapped.add_activation_module(snn.SpikingNeuron)
    return wrapped


def run_neurobench(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    metrics: tuple[Sequence[str], Sequence[str]] = NEUROBENCH_METRICS,
    time_first: bool | None = None,
    bake: bool = True,
    quiet: bool = True,
) -> dict[str, Any]:
    """NeuroBench's ``Benchmark`` on a ticket: static and workload metrics.

    The model is copied (the user's stays as it is), baked with
    :func:`~spikelottery.densify` when ``bake``, put in eval mode and run on ``loader``
    (a ``DataLoader`` whose dataset has a length, batches ``(x, y)``). Neuron states are
    reset before every batch.

    Args:
        model: A network or a ticket (score-mask layers are baked into dense ones).
        loader: Test batches; NeuroBench reads ``x`` as ``[B, T, ...]`` (or ``[B, ...]``).
        metrics: Names of NeuroBench's static and workload metric classes.
        time_first: See :func:`neurobench_model`.
        bake: Densify the copy (turn off only for a model that is already dense).
        quiet: Silence NeuroBench's progress output.

    Returns:
        NeuroBench's results by metric name (``connection_sparsity``,
        ``activation_sparsity``, ``synaptic_operations`` with ``Effective_MACs``,
        ``Effective_ACs`` and ``Dense`` per sample, ...).

    Raises:
        ImportError: NeuroBench is not installed (the message names the extra).
        ValueError: ``loader`` is empty, or a metric name is unknown.

    Example (needs ``pip install 'spikelottery[neurobench]'``)::

        results = run_neurobench(ticket, test_loader)
        results["connection_sparsity"], results["synaptic_operations"]["Effective_ACs"]
    """
    nb = _require_neurobench()
    from neurobench.metrics import static as nb_static
    from neurobench.metrics import workload as nb_workload

    from .._state import reset_states
    from ..sparsify import densify

    static_cls: list[type] = []
    workload_cls: list[type] = []
    for names, module, out in (
        (metrics[0], nb_static, static_cls),
        (metrics[1], nb_workload, workload_cls),
    ):
        for name in names:
            cls = getattr(module, name, None)
            if cls is None:
                raise ValueError(f"metrics: NeuroBench has no metric {name!r} in {module.__name__}")
            out.append(cls)
    if not hasattr(loader, "dataset"):
        raise TypeError("loader must be a torch DataLoader (NeuroBench reads len(loader.dataset))")
    if len(loader.dataset) == 0:  # type: ignore[attr-defined, arg-type]
        raise ValueError("loader is empty: NeuroBench needs at least one batch")
    net = copy.deepcopy(model)
    if bake:
        net = densify(nn.Sequential(net))[0]  # densify needs a container
    net.eval()

    def reset(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        reset_states(net)  # a preprocessor: runs before every batch
        return batch

    wrapped = neurobench_model(net, time_first=time_first)
    bench = nb.Benchmark(wrapped, loader, [reset], [], [static_cls, workload_cls])
    return dict(bench.run(quiet=quiet))


def neurobench_view(report: EnergyReport) -> dict[str, Any]:
    """Our report's figures under NeuroBench's definitions, per sample, and what ours adds.

    NeuroBench 2.x counts the layers it hooks: ``nn.Linear`` and ``nn.Conv1d/2d/3d``
    modules (subclasses included), on their inputs, every call. On those rows:

    * ``effective_acs``: exact synaptic operations of the rows with binary input, over
      all time steps (NeuroBench's ``Effective_ACs``).
    * ``effective_macs``: those of the rows with real input (the first layer, pooled
      spikes), every time step (``Effective_MACs``; our exact view charges a first layer
      fed an image once per distinct frame).
    * ``dense``: every input through every weight, padded taps left out (``Dense``).
    * ``activation_sparsity``: zero outputs of the neurons over all their outputs.

    What ours adds, under ``added``: the rows NeuroBench does not see (transposed convs,
    attention matmuls, functional calls such as ``nn.MultiheadAttention``'s projections),
    by name with their exact operations; and ``dense_flops``, the paper's dense FLOPs
    over all steps (padded taps included).

    Raises:
        ValueError: A counted row has no exact count (measure with ``synops=True``).

    >>> neurobench_view(report)  # doctest: +SKIP
    """
    counted = [c for c in report.counts if c.neurobench]
    missing = [c.name for c in counted if c.synops is None]
    if missing:
        raise ValueError(
            f"layers {missing} have no exact count: measure with estimate_energy(..., synops=True)"
        )
    others = [c for c in report.counts if not c.neurobench]
    return {
        "effective_acs": math.fsum(c.synops or 0.0 for c in counted if c.binary),
        "effective_macs": math.fsum(c.synops or 0.0 for c in counted if not c.binary),
        "dense": math.fsum(c.taps for c in counted),
        "activation_sparsity": report.activation_sparsity,
        "added": {
            "layers": {c.name: c.synops for c in others},
            "synops": math.fsum(c.synops for c in others if c.synops is not None),
            "dense_flops": math.fsum(c.macs * c.steps for c in report.counts),
        },
    }
