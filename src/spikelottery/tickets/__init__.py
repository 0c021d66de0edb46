"""Tickets as files: save a found ticket without pickle, load it back, export it.

A ticket file is a `safetensors <https://huggingface.co/docs/safetensors>`_ file: a JSON
header and raw tensor bytes, nothing that executes on load. Per score-mask layer it holds

* ``mask/<layer>``: the mask, bit-packed at 1 bit per weight (:func:`pack_bits`);
* mode ``"mp"``: ``sign/<layer>``, the signs of the KEPT weights at 1 bit each, and
  ``alpha/<layer>``, the layer's gain; so a binarised layer costs at most 2 bits per
  weight (``1 + (1 - pa)`` bits: 1.6 at ``pa = 0.4``, 20x smaller than float32);
* mode ``"lt"``: ``weight/<layer>``, the kept weights' values only (in the layer's dtype,
  or ``float16`` / ``bfloat16`` on request);

plus, under ``state/<key>``, every other entry of the model's ``state_dict`` (biases,
BatchNorm statistics, dense layers that were not sparsified) so that the loaded model
computes what the saved one did. Text metadata records the format and library versions,
``pa``, ``pb``, ``mode``, the patch embedding, each layer's name, class, shape, ``pa``,
mode and kept count, a SHA-256 of the tensors and metadata, and the user's own entries
(``user.*``).

The frozen weights outside the mask, and the random seed, are not part of a ticket:
PyTorch does not promise the same random streams across releases or devices, so weights
are never regenerated from a seed (a seed may be stored as metadata, for the record).

The modules: ``format`` (the format's name and version, bit packing, :class:`TicketInfo`
and reading a file), ``save`` (:func:`save_ticket`), ``load`` (:func:`load_ticket`) and
``export`` (:func:`densify`, :func:`export_onnx`).

>>> import os, tempfile, torch
>>> from torch import nn
>>> from spikelottery import sparsify
>>> def build():
...     return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1))
>>> net = sparsify(build(), pa=0.4, mode="mp")
>>> tmp = tempfile.TemporaryDirectory()
>>> path = save_ticket(net, os.path.join(tmp.name, "ticket.safetensors"))
>>> fresh = load_ticket(build(), path)  # a fresh dense model
>>> fresh[0].kept, torch.equal(fresh[0].effective_weight(), net[0].effective_weight())
(130, True)
>>> tmp.cleanup()
"""

from .export import densify, export_dense, export_onnx
from .format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    TicketInfo,
    pack_bits,
    read_ticket_info,
    unpack_bits,
)
from .load import load_ticket
from .save import save_ticket

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "TicketInfo",
    "densify",
    "export_dense",
    "export_onnx",
    "load_ticket",
    "pack_bits",
    "read_ticket_info",
    "save_ticket",
    "unpack_bits",
]
