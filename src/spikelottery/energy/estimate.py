""":func:`estimate_energy`: run the model (:func:`count_ops`), then price what it did
(:func:`energy_from_counts`)."""

from __future__ import annotations

import warnings
from typing import Any

from torch import nn

from ..errors import NoSpikingLayerWarning
from .counting import measure
from .options import PricingOptions, merge_options
from .pricing import energy_from_counts
from .report import EnergyReport

__all__ = ["estimate_energy"]


def estimate_energy(
    model: nn.Module,
    inputs: Any,
    *,
    timesteps: int | None = None,
    batch_size: int | None = None,
    max_batches: int | None = None,
    options: PricingOptions | None = None,
    synops: bool = True,
    **pricing: Any,
) -> EnergyReport:
    """Estimate the energy per sample of ``model`` as an SNN and as an ANN (paper Eq. 3-4).

    Runs the model on real ``inputs`` (see :func:`count_ops` for how batches, ``B`` and
    ``T`` are read), measures each conv / linear / matmul layer's MACs, input firing rate
    and weight density, and prices them with :func:`energy_from_counts`. The defaults are
    the paper's conventions.

    Args:
        model: Any ``nn.Module`` (ours, SpikingJelly's, a user's own).
        inputs: One batch (``x`` or ``(x, y)``) or an iterable of batches.
        timesteps: ``T``; read from the spiking neurons when ``None``.
        batch_size: Samples per batch; read from the labels or the neurons when ``None``.
        max_batches: Stop after this many batches.
        options: The pricing conventions (default: the paper's).
        synops: Count the exact synaptic operations too (the exact and memory-aware
            views); ``False`` skips the extra counting pass and those views fall back to
            the formula's counts.
        **pricing: :class:`PricingOptions` fields as keywords (``e_ac=0.03``,
            ``nonbinary_as_mac=True``, ...), or ``preset="int8"`` (a named
            :data:`~spikelottery.energy.HARDWARE_PRESETS` entry), overriding ``options``.

    Returns:
        An :class:`EnergyReport`; ``print`` it for a table.

    Warns:
        NoSpikingLayerWarning: No spiking neuron ran (an ANN): the SNN figures price its
            activations as if they were spikes.

    Raises:
        LayoutError: The neurons disagree on ``T`` or ``B`` (pass ``timesteps=`` and
            ``batch_size=``).
        SpikeLotteryError: An input or a weight holds NaN or infinite values (the
            message names the layer), or nothing countable ran.
        ValueError: ``inputs`` yielded no batch (an empty loader).

    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 10))
    >>> import warnings
    >>> with warnings.catch_warnings():  # no spiking layer: an ANN
    ...     warnings.simplefilter("ignore")
    ...     report = estimate_energy(net, torch.rand(4, 3, 4, 4))
    >>> report.macs, round(report.ann_mj * 1e9, 1)  # 48*32 + 32*10 MACs, pJ
    (1856.0, 8537.6)
    """
    # Check the pricing options before running the model.
    opts = merge_options(options, pricing, caller="estimate_energy")
    found = measure(
        model,
        inputs,
        timesteps=timesteps,
        batch_size=batch_size,
        max_batches=max_batches,
        synops=synops,
    )
    if not found.spiking:
        warnings.warn(
            f"no spiking neuron ran in {type(model).__name__} (of the kinds the estimator "
            "knows: spikelottery's LIFNeuron, SpikingJelly's nodes, snnTorch's and Norse's "
            "neurons; a neuron class of your own is not one of them): the SNN figures price "
            "its activations as if they were spikes; for an ANN read report.ann_mj",
            NoSpikingLayerWarning,
            stacklevel=2,
        )
    return energy_from_counts(
        found.counts,
        options=opts,
        timesteps=found.timesteps,
        samples=found.samples,
        neurons=found.neurons,
        frames=found.frames,
        spiking=found.spiking,
    )
