"""spikelottery: lottery tickets in spiking neural networks.

The names users reach for first; the rest lives in the subpackages
(:mod:`spikelottery.engine`, :mod:`spikelottery.energy`, :mod:`spikelottery.tickets`, ...)
and the pure tensor functions in :mod:`spikelottery.functional`.

>>> from spikelottery import sparsify
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

from ._version import __version__
from .check import check_ticket
from .data import get_dataset
from .energy import estimate_energy
from .engine import TrainConfig, run
from .errors import SpikeLotteryError
from .layers import BinaryActivation, SubnetConv, SubnetLinear
from .models import create_model
from .neuron import LIFNeuron
from .patch import PatchSelector
from .sparsify import sparsify, summary
from .tickets import densify, export_onnx, load_ticket, read_ticket_info, save_ticket

__all__ = [
    "BinaryActivation",
    "LIFNeuron",
    "PatchSelector",
    "SpikeLotteryError",
    "SubnetConv",
    "SubnetLinear",
    "TrainConfig",
    "__version__",
    "check_ticket",
    "create_model",
    "densify",
    "estimate_energy",
    "export_onnx",
    "get_dataset",
    "load_ticket",
    "read_ticket_info",
    "run",
    "save_ticket",
    "sparsify",
    "summary",
]

#: Names that left the top level in 0.1 and their homes: they still work here, with a
#: ``FutureWarning``, until 0.2.
MOVED: dict[str, str] = {
    "DirectEncoder": "spikelottery.encoding",
    "EnergyReport": "spikelottery.energy",
    "EventFrames": "spikelottery.encoding",
    "MultiStep": "spikelottery.multistep",
    "Results": "spikelottery.engine",
    "SeqBatchNorm1d": "spikelottery.multistep",
    "SeqBatchNorm2d": "spikelottery.multistep",
    "SparsifyReport": "spikelottery.sparsify",
    "SubnetConv1d": "spikelottery.layers",
    "SubnetLayer": "spikelottery.layers",
    "TicketCheck": "spikelottery.check",
    "TicketInfo": "spikelottery.tickets",
    "TicketSummary": "spikelottery.summary",
    "Trainer": "spikelottery.engine",
    "approx_sign": "spikelottery.functional",
    "attach_patch_selector": "spikelottery.patch",
    "binarize_activations": "spikelottery.activations",
    "direct_encode": "spikelottery.functional",
    "encode": "spikelottery.functional",
    "export_dense": "spikelottery.tickets",
    "find_patch_selectors": "spikelottery.patch",
    "kept_count": "spikelottery.functional",
    "kept_fraction": "spikelottery.summary",
    "list_models": "spikelottery.models",
    "restore_activations": "spikelottery.activations",
    "select_patches": "spikelottery.functional",
    "subnet_weight": "spikelottery.functional",
    "topk_mask": "spikelottery.functional",
}


def __getattr__(name: str) -> Any:
    home = MOVED.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    hint = (
        "densify(model, copy=True, patches='remove')"
        if name == "export_dense"
        else f"from {home} import {name}"
    )
    warnings.warn(
        f"spikelottery.{name} moved: use {hint}; the top-level name goes in spikelottery 0.2",
        FutureWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(home), name)
