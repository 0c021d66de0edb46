"""The pure tensor functions of spikelottery: masks, binarisation, the LIF update, encoding,
patch selection and the kept-count rule.

The layers and modules hold parameters and call these; each is a function of tensors
(and numbers) only, easy to test and to reuse in another network's ``forward``.

>>> import torch
>>> from spikelottery import functional as F
>>> F.kept_count(10, 0.4), int(F.topk_mask(torch.arange(10.0), 0.4).sum())
(6, 6)
"""

from __future__ import annotations

from .encoding import direct_encode, encode
from .masks import approx_sign, mp_alpha, subnet_weight, topk_mask
from .neuron import lif_multistep
from .patch import select_patches
from .ratios import kept_count, ratio_for_count
from .surrogate import atan_surrogate, heaviside, sigmoid_surrogate

__all__ = [
    "approx_sign",
    "atan_surrogate",
    "direct_encode",
    "encode",
    "heaviside",
    "kept_count",
    "lif_multistep",
    "mp_alpha",
    "ratio_for_count",
    "select_patches",
    "sigmoid_surrogate",
    "subnet_weight",
    "topk_mask",
]
