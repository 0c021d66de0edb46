"""Which modules are spiking neurons, whose membrane updates the energy report counts."""

from __future__ import annotations

import sys

from torch import nn

from .._compat import optional_import
from ..neuron import LIFNeuron

__all__ = ["is_neuron", "step_mode"]


def is_neuron(module: nn.Module) -> bool:
    """``module`` is a spiking neuron: our :class:`~spikelottery.neuron.LIFNeuron`, a
    SpikingJelly ``BaseNode`` (when installed) or a snnTorch ``SpikingNeuron``.

    >>> is_neuron(LIFNeuron()), is_neuron(nn.ReLU())
    (True, False)
    """
    if isinstance(module, LIFNeuron):
        return True
    for path, name in (
        ("spikingjelly.activation_based.neuron", "BaseNode"),
        ("snntorch._neurons.neurons", "SpikingNeuron"),
    ):
        mod = optional_import(path) if _loaded(path) else None
        cls = getattr(mod, name, None) if mod is not None else None
        if cls is not None and isinstance(module, cls):
            return True
    return False


def _loaded(path: str) -> bool:
    # A library the user never imported cannot have made their neurons: skip its import.
    return path.split(".")[0] in sys.modules


def step_mode(module: nn.Module) -> str:
    """``"m"`` for a neuron that takes a whole sequence ``[T, B, ...]`` per call (ours and
    SpikingJelly's with ``step_mode="m"``), ``"s"`` for one that takes one step ``[B, ...]``
    per call (SpikingJelly's single-step nodes, snnTorch's neurons in a loop).

    >>> step_mode(LIFNeuron()), step_mode(LIFNeuron(step_mode="s"))
    ('m', 's')
    """
    return "m" if getattr(module, "step_mode", "s") == "m" else "s"
