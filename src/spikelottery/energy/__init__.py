"""Theoretical energy of a network on neuromorphic hardware (paper Eq. 3-4, Appendix A).

The estimate follows the paper:

.. math::

    E_\\text{ANN} = e_\\text{MAC} \\sum_l \\text{FLOPs}_l, \\qquad
    E_\\text{SNN} = e_\\text{MAC}\\,\\text{FLOPs}_1
        + e_\\text{AC} \\sum_{l \\ge 2} \\text{fr}_l \\, T \\, \\text{FLOPs}_l,

with ``e_MAC = 4.6 pJ`` and ``e_AC = 0.9 pJ`` (45 nm), ``FLOPs_l`` the multiply-accumulates
of layer ``l`` for one sample and one time step (``E_ANN`` is the same network run once,
as an ANN on a static input; ``ann_every_step=True`` charges an ANN that really runs ``T``
steps, e.g. on event frames, for each of them) and ``fr_l`` the firing rate of the layer's
binary input, measured on real data (a layer whose input is not binary, e.g. average-pooled
spikes, is priced at its input's mean absolute value). Conv, linear and attention matmuls
count; BatchNorm is folded into the preceding layer; pooling, residual additions,
normalisation and neurons are free.

The operations are found on any model (ours, SpikingJelly's, a user's own) by watching the
functional calls (``F.conv*``, ``F.linear``, matmuls, ``einsum``, scaled-dot-product and
multi-head attention) while the model runs, and naming each after the innermost module
that issued it. :func:`estimate_energy` runs the model and prices the result;
:func:`count_ops` only counts, and :func:`energy_from_counts` is the formula on its own, so
one measurement can be priced under several conventions (:class:`PricingOptions`).
"""

from . import _options
from ._counting import count_ops
from ._estimate import estimate_energy
from ._options import PricingOptions
from ._records import LayerEnergy, OpCount
from ._report import EnergyReport, energy_from_counts

# The constants are defined in _options; their documentation lives here, where Sphinx
# reads a module's ``#:`` comments.

#: Energy of one 32-bit float multiply-accumulate at 45 nm, in pJ (Horowitz, ISSCC 2014).
E_MAC_PJ = _options.E_MAC_PJ
#: Energy of one 32-bit float accumulate at 45 nm, in pJ.
E_AC_PJ = _options.E_AC_PJ
#: Values of ``attention_order``: keep the order the model ran, or re-cost a spiking
#: attention as ``(Q K^T) V`` (``"qk_first"``) or ``Q (K^T V)`` (``"kv_first"``).
ATTENTION_ORDERS: tuple[str, ...] = _options.ATTENTION_ORDERS

__all__ = [
    "ATTENTION_ORDERS",
    "E_AC_PJ",
    "E_MAC_PJ",
    "EnergyReport",
    "LayerEnergy",
    "OpCount",
    "PricingOptions",
    "count_ops",
    "energy_from_counts",
    "estimate_energy",
]
