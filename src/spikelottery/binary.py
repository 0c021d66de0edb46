"""``BinaryActivation``: the multi-prize binary activation, ``sign`` with the ApproxSign gradient."""

from __future__ import annotations

from torch import Tensor, nn

from .masks import approx_sign

__all__ = ["BinaryActivation"]


class BinaryActivation(nn.Module):
    """``sign(x)`` (``+1`` at 0) with the ApproxSign gradient ``2 * (1 - |x|)`` on ``|x| <= 1``.

    The multi-prize binary activation. In a spiking network the spikes are already binary,
    so it belongs in ANN twins and in non-spiking paths.
    :func:`~spikelottery.binarize_activations` puts one in place of each activation module
    of a network and remembers the module it replaced (``replaces``), so that
    :func:`~spikelottery.restore_activations` can put it back. It holds no parameter and no
    buffer: a ``state_dict`` is the same with or without it.

    Args:
        replaces: The activation module this one stands in for (kept outside the module
            tree: it is not a child, and ``named_modules()`` does not list it).

    >>> import torch
    >>> BinaryActivation()(torch.tensor([-2.0, 0.5])).tolist()
    [-1.0, 1.0]
    >>> BinaryActivation(replaces=nn.ReLU())
    BinaryActivation(replaces=ReLU())
    """

    def __init__(self, replaces: nn.Module | None = None) -> None:
        super().__init__()
        # Not a child module: the replaced activation must not be walked, swapped again,
        # moved between devices or saved. A plain attribute keeps it out of the tree.
        self.__dict__["replaces"] = replaces

    replaces: nn.Module | None

    def forward(self, x: Tensor) -> Tensor:
        return approx_sign(x)

    def extra_repr(self) -> str:
        replaced = self.__dict__.get("replaces")
        return "" if replaced is None else f"replaces={replaced!r}"
