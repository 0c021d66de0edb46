"""spikelottery: lottery tickets in spiking neural networks.

>>> from spikelottery import sparsify
"""

from ._validation import kept_count
from ._version import __version__
from .errors import SpikeLotteryError
from .layers import BinaryActivation, SubnetConv, SubnetConv1d, SubnetLayer, SubnetLinear
from .masks import approx_sign, subnet_weight, topk_mask
from .sparsify import SparsifyReport, TicketSummary, densify, kept_fraction, sparsify, summary

__all__ = [
    "BinaryActivation",
    "SparsifyReport",
    "SpikeLotteryError",
    "SubnetConv",
    "SubnetConv1d",
    "SubnetLayer",
    "SubnetLinear",
    "TicketSummary",
    "__version__",
    "approx_sign",
    "densify",
    "kept_count",
    "kept_fraction",
    "sparsify",
    "subnet_weight",
    "summary",
    "topk_mask",
]
