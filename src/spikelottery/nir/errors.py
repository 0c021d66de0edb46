"""The errors of the NIR exchange: what NIR cannot express, what a NIR file holds that we cannot run."""

from __future__ import annotations

from ..errors import SpikeLotteryError

__all__ = ["NO_ATTENTION", "NO_PATCH_SELECTION", "NIRExportError", "NIRImportError"]


#: Why a Spikformer cannot be exported.
NO_ATTENTION = (
    "NIR has no node for spike-spike attention: a Spikformer computes Q K^T V, a product of "
    "two activity tensors, and NIR's nodes are linear maps, convolutions, pools and neurons; "
    "export a convolutional ticket (VGG, ResNet) instead"
)

#: Why patch pruning cannot be exported.
NO_PATCH_SELECTION = (
    "keeping the top patches per sample is a data-dependent gather, which NIR has no node "
    "for; export the ticket without patch pruning (sparsify(..., pb=0)) or keep it in PyTorch"
)


class NIRExportError(SpikeLotteryError):
    """A model holds something that NIR (the Neuromorphic Intermediate Representation) cannot
    express, or that would only be exported approximately; the message names the module,
    what NIR lacks and what to do instead.

    Examples: a Spikformer's spike-spike attention (NIR has no product of two activity
    tensors), patch selection (NIR has no data-dependent gather), a max pool (no NIR node),
    a soft-reset neuron (NIR's neurons reset to a value).
    """


class NIRImportError(SpikeLotteryError):
    """A NIR graph holds a node, a parameter or a connection that :func:`load_nir` cannot
    build exactly; the message names the node and what it would need."""
