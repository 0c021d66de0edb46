"""Which modules are spiking neurons, whose membrane updates the energy report counts."""

from __future__ import annotations

import sys

from torch import nn

from .._compat import optional_import
from ..neuron import LIFNeuron

__all__ = ["is_neuron", "step_mode"]


def is_neuron(module: nn.Module) -> bool:
    """``module`` is a spiking neuron: our :class:`~spikelottery.neuron.LIFNeuron`, a
    SpikingJelly ``BaseNode``, a snnTorch ``SpikingNeuron`` or a Norse neuron (its
    ``SNNCell`` / ``SNNRecurrentCell`` for one step, ``SNN`` / ``SNNRecurrent`` for a
    sequence), when those libraries are loaded.

    >>> is_neuron(LIFNeuron()), is_neuron(nn.ReLU())
    (True, False)
    """
    if isinstance(module, LIFNeuron):
        return True
    for path, name in (
        ("spikingjelly.activation_based.neuron", "BaseNode"),
        ("snntorch._neurons.neurons", "SpikingNeuron"),
        *((_NORSE, name) for name in (*_NORSE_SEQUENCE, *_NORSE_STEP)),
    ):
        if _is_instance(module, path, name):
            return True
    return False


# Norse's neuron base classes: a whole sequence [T, B, ...] per call, or one step [B, ...].
_NORSE = "norse.torch.module.snn"
_NORSE_SEQUENCE = ("SNN", "SNNRecurrent")
_NORSE_STEP = ("SNNCell", "SNNRecurrentCell")


def _is_instance(module: nn.Module, path: str, name: str) -> bool:
    mod = optional_import(path) if _loaded(path) else None
    cls = getattr(mod, name, None) if mod is not None else None
    return cls is not None and isinstance(module, cls)


def _loaded(path: str) -> bool:
    # A library the user never imported cannot have made their neurons: skip its import.
    return path.split(".")[0] in sys.modules


def step_mode(module: nn.Module) -> str:
    """``"m"`` for a neuron that takes a whole sequence ``[T, B, ...]`` per call (ours and
    SpikingJelly's with ``step_mode="m"``, Norse's ``LIF``-style ``SNN`` modules), ``"s"``
    for one that takes one step ``[B, ...]`` per call (SpikingJelly's single-step nodes,
    snnTorch's neurons and Norse's cells in a loop).

    >>> step_mode(LIFNeuron()), step_mode(LIFNeuron(step_mode="s"))
    ('m', 's')
    """
    if any(_is_instance(module, _NORSE, name) for name in _NORSE_SEQUENCE):
        return "m"
    return "m" if getattr(module, "step_mode", "s") == "m" else "s"
