"""Theoretical energy of a network on neuromorphic hardware (paper Eq. 3-4, Appendix A).

The estimate follows the paper:

.. math::

    E_\\text{ANN} = e_\\text{MAC} \\sum_l \\text{FLOPs}_l, \\qquad
    E_\\text{SNN} = e_\\text{MAC}\\,\\text{FLOPs}_1
        + e_\\text{AC} \\sum_{l \\ge 2} \\text{fr}_l \\, T \\, \\text{FLOPs}_l,

with ``e_MAC = 4.6 pJ`` and ``e_AC = 0.9 pJ`` (45 nm), ``FLOPs_l`` the multiply-accumulates
of layer ``l`` for one sample and one time step and ``fr_l`` the firing rate of the layer's
binary input, measured on real data (a layer whose input is not binary, e.g. average-pooled
spikes, is priced at its input's mean absolute value). ``E_ANN``, the ANN reference, is the
same network as a dense ANN, one pass per distinct input frame: once on a static image (the
paper's), ``T`` passes on event frames, where a first layer fed binary events is priced as
spikes too. ``T`` and the batch size are read from the spiking neurons. Conv, linear and
attention matmuls count; BatchNorm is folded into the preceding layer; pooling, residual
additions, normalisation and neurons are free.

The operations are found on any model (ours, SpikingJelly's, a user's own) by watching the
functional calls (``F.conv*``, ``F.linear``, matmuls, ``einsum``, scaled-dot-product and
multi-head attention) while the model runs, and naming each after the innermost module
that issued it. :func:`estimate_energy` runs the model and prices the result;
:func:`count_ops` only counts, and :func:`energy_from_counts` is the formula on its own, so
one measurement can be priced under several conventions (:class:`PricingOptions`).

Besides the formula, every report counts the **exact synaptic operations** (each non-zero
input times its kept, non-zero outgoing weights: :func:`conv_synops`,
:func:`linear_synops`, :func:`matmul_synops`; average-pooled spikes at one accumulate
per pre-pool spike and reached weight), per layer and per time step, the neurons'
membrane updates, and a **memory-aware** estimate (weight reads at the ticket's bit
width, the mask of a pruned layer, membrane reads and writes, spikes), shown in parts
with its assumptions. Costs come from a named :data:`HARDWARE_PRESETS` entry (fp32,
fp16, int8 at 45 nm) or custom values; every printed report ends with one disclosure
line naming the preset and the conventions.
"""

import warnings
from typing import Any

from . import hardware, options, report
from .counting import count_ops
from .estimate import estimate_energy
from .hardware import HARDWARE_PRESETS, HardwarePreset, register_hardware_preset
from .neurobench import neurobench_model, neurobench_view, run_neurobench
from .options import PricingOptions
from .pricing import energy_from_counts
from .records import LayerEnergy, NeuronCount, OpCount
from .report import EnergyReport
from .synops import conv_synops, linear_synops, matmul_synops

# The constants are defined in options; their documentation lives here, where Sphinx
# reads a module's ``#:`` comments.

#: Energy of one 32-bit float multiply-accumulate at 45 nm, in pJ (Horowitz, ISSCC 2014).
E_MAC_PJ = options.E_MAC_PJ
#: Energy of one 32-bit float accumulate at 45 nm, in pJ.
E_AC_PJ = options.E_AC_PJ
#: Values of ``attention_order``: keep the order the model ran, or re-cost a spiking
#: attention as ``(Q K^T) V`` (``"qk_first"``) or ``Q (K^T V)`` (``"kv_first"``).
ATTENTION_ORDERS: tuple[str, ...] = options.ATTENTION_ORDERS
#: pJ per bit read or written in an 8 KB SRAM at 45 nm (Horowitz 2014: 10 pJ per 64-bit
#: read), the default memory cost of the memory-aware view.
E_SRAM_BIT_PJ = hardware.E_SRAM_BIT_PJ
#: The ANN references every report compares with: dense fp32 and an int8 equivalent.
ANN_BASELINES: tuple[str, ...] = hardware.ANN_BASELINES
#: The three views of :meth:`EnergyReport.views`: the paper's formula, the exact
#: synaptic operations, and the memory-aware estimate.
VIEWS: tuple[str, ...] = report.VIEWS

__all__ = [
    "ANN_BASELINES",
    "ATTENTION_ORDERS",
    "E_AC_PJ",
    "E_MAC_PJ",
    "E_SRAM_BIT_PJ",
    "HARDWARE_PRESETS",
    "VIEWS",
    "EnergyReport",
    "HardwarePreset",
    "LayerEnergy",
    "NeuronCount",
    "OpCount",
    "PricingOptions",
    "conv_synops",
    "count_ops",
    "energy_from_counts",
    "estimate_energy",
    "linear_synops",
    "matmul_synops",
    "neurobench_model",
    "neurobench_view",
    "register_hardware_preset",
    "run_neurobench",
]


def __getattr__(name: str) -> Any:
    if name == "PRESETS":  # one meaning per name: PRESETS also named the method presets
        warnings.warn(
            "spikelottery.energy.PRESETS is renamed HARDWARE_PRESETS "
            "(from spikelottery.energy import HARDWARE_PRESETS); the old name goes in 0.2",
            FutureWarning,
            stacklevel=2,
        )
        return HARDWARE_PRESETS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
