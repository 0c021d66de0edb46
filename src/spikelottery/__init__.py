"""spikelottery: lottery tickets in spiking neural networks.

>>> from spikelottery import sparsify
"""

from ._validation import kept_count
from ._version import __version__
from .activations import binarize_activations, restore_activations
from .check import TicketCheck, check_ticket
from .encoding import DirectEncoder, EventFrames, direct_encode, encode
from .energy import EnergyReport, estimate_energy
from .engine import Results, TrainConfig, Trainer, run
from .errors import SpikeLotteryError
from .layers import BinaryActivation, SubnetConv, SubnetConv1d, SubnetLayer, SubnetLinear
from .masks import approx_sign, subnet_weight, topk_mask
from .models import create_model, list_models
from .multistep import MultiStep, SeqBatchNorm1d, SeqBatchNorm2d
from .neuron import LIFNeuron
from .patch import PatchSelector, attach_patch_selector, find_patch_selectors, select_patches
from .sparsify import SparsifyReport, TicketSummary, densify, kept_fraction, sparsify, summary
from .tickets import (
    TicketInfo,
    export_dense,
    export_onnx,
    load_ticket,
    read_ticket_info,
    save_ticket,
)

__all__ = [
    "BinaryActivation",
    "DirectEncoder",
    "EnergyReport",
    "EventFrames",
    "LIFNeuron",
    "MultiStep",
    "PatchSelector",
    "Results",
    "SeqBatchNorm1d",
    "SeqBatchNorm2d",
    "SparsifyReport",
    "SpikeLotteryError",
    "SubnetConv",
    "SubnetConv1d",
    "SubnetLayer",
    "SubnetLinear",
    "TicketCheck",
    "TicketInfo",
    "TicketSummary",
    "TrainConfig",
    "Trainer",
    "__version__",
    "approx_sign",
    "attach_patch_selector",
    "binarize_activations",
    "check_ticket",
    "create_model",
    "densify",
    "direct_encode",
    "encode",
    "estimate_energy",
    "export_dense",
    "export_onnx",
    "find_patch_selectors",
    "kept_count",
    "kept_fraction",
    "list_models",
    "load_ticket",
    "read_ticket_info",
    "restore_activations",
    "run",
    "save_ticket",
    "select_patches",
    "sparsify",
    "subnet_weight",
    "summary",
    "topk_mask",
]
