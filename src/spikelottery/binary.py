"""``BinaryActivation``: the multi-prize binary activation, ``sign`` with the ApproxSign gradient."""

from __future__ import annotations

from torch import Tensor, nn

from .masks import approx_sign

__all__ = ["BinaryActivation"]


class BinaryActivation(nn.Module):
    """``sign(x)`` (``+1`` at 0) with the ApproxSign gradient ``2 * (1 - |x|)`` on ``|x| <= 1``.

    The multi-prize binary activation. In a spiking network the spikes are already binary,
    so it belongs in ANN twins and in non-spiking paths.

    >>> import torch
    >>> BinaryActivation()(torch.tensor([-2.0, 0.5])).tolist()
    [-1.0, 1.0]
    """

    def forward(self, x: Tensor) -> Tensor:
        return approx_sign(x)
