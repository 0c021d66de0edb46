"""Tickets that leave PyTorch: export to NIR, and NIR graphs as models to search.

NIR (the Neuromorphic Intermediate Representation, ``pip install spikelottery[nir]``) is
read by snnTorch, Norse, Sinabs, Rockpool, Lava and the toolchains of neuromorphic chips.

* :func:`export_nir` writes a ticket (its effective weights, BatchNorm folded) as a NIR file;
* :func:`load_nir` builds a PyTorch model from a NIR graph with the library's
  :class:`~spikelottery.neuron.LIFNeuron`, ready for :func:`~spikelottery.sparsify`;
* :mod:`spikelottery.nir.mapping` states how our discrete neuron becomes NIR's
  continuous-time one;
* :class:`NIRExportError` names what NIR cannot express (a Spikformer's attention, patch
  selection, max pooling, soft reset).
"""

from .errors import NIRExportError, NIRImportError
from .export import NIRExport, export_nir, nir_graph
from .load import NIRNetwork, load_nir
from .mapping import DEFAULT_DT, NeuronParams, neuron_from_nir, neuron_params, neuron_to_nir

__all__ = [
    "DEFAULT_DT",
    "NIRExport",
    "NIRExportError",
    "NIRImportError",
    "NIRNetwork",
    "NeuronParams",
    "export_nir",
    "load_nir",
    "neuron_from_nir",
    "neuron_params",
    "neuron_to_nir",
    "nir_graph",
]
