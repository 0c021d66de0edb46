"""Run ordinary layers on multi-step spike tensors ``[T, B, ...]`` without reshaping.

A spiking block is conv -> BN -> LIF on a time-first tensor. Stateless layers treat the
T time steps as extra batch entries, so :class:`MultiStep` folds ``[T, B]`` into one batch
dimension, runs the layer and unfolds the result. The BatchNorm variants do the same
inside ``forward`` but subclass the real ``nn.BatchNorm1d`` / ``nn.BatchNorm2d``, so their
``state_dict`` keys stay plain (``bn.weight``) and code that looks for BatchNorm layers
(e.g. ``sparsify(..., batchnorm="nonaffine")``) still finds them.

Example:
    >>> from spikelottery.neuron import LIFNeuron
    >>> block = nn.Sequential(
    ...     MultiStep(nn.Conv2d(3, 8, 3, padding=1)),
    ...     SeqBatchNorm2d(8),
    ...     LIFNeuron(),
    ...     MultiStep(nn.AvgPool2d(2)),
    ... )
    >>> block(torch.rand(4, 2, 3, 8, 8)).shape
    torch.Size([4, 2, 8, 4, 4])
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["MultiStep", "SeqBatchNorm1d", "SeqBatchNorm2d", "seq_apply"]


def seq_apply(module: nn.Module, x_seq: Tensor) -> Tensor:
    """Apply a stateless ``module`` to every time step of ``x_seq`` in one call.

    Args:
        module: Any module that takes a batch first tensor (conv, pooling, linear, ...).
        x_seq: Input ``[T, B, ...]``.

    Returns:
        ``module(x_seq.flatten(0, 1))`` unflattened to ``[T, B, ...]``.

    >>> seq_apply(nn.AvgPool2d(2), torch.rand(4, 2, 3, 8, 8)).shape
    torch.Size([4, 2, 3, 4, 4])
    """
    if not isinstance(x_seq, Tensor) or x_seq.ndim < 2:
        raise ValueError(
            f"{type(module).__name__} on multi-step input expects [T, B, ...], got shape "
            f"{tuple(getattr(x_seq, 'shape', ()))}"
        )
    t, b = x_seq.shape[:2]
    y = module(x_seq.flatten(0, 1))
    if not isinstance(y, Tensor):
        raise TypeError(
            f"MultiStep expects {type(module).__name__} to return one tensor, "
            f"got {type(y).__name__}"
        )
    return y.unflatten(0, (t, b))


class MultiStep(nn.Module):
    """Wrap a stateless layer so it takes multi-step input ``[T, B, ...]``.

    The T time steps are folded into the batch dimension, the layer runs once, and the
    output is unfolded again. Do not wrap layers with state across time (neurons).

    Args:
        module: The layer to apply at every time step.

    Example:
        >>> pool = MultiStep(nn.AvgPool2d(2))
        >>> pool(torch.rand(4, 2, 3, 8, 8)).shape
        torch.Size([4, 2, 3, 4, 4])
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"MultiStep wraps an nn.Module, got {type(module).__name__}")
        self.module = module

    def forward(self, x_seq: Tensor) -> Tensor:
        """Run the wrapped layer on ``[T, B, ...]``."""
        return seq_apply(self.module, x_seq)

    def extra_repr(self) -> str:
        return "input [T, B, ...]"


class SeqBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` that also takes multi-step input ``[T, B, C, H, W]``.

    Statistics are taken over time, batch and space together (as SpikingJelly's
    multi-step ``BatchNorm2d``). A 4-D input ``[B, C, H, W]`` behaves exactly as in
    ``nn.BatchNorm2d``. Arguments are those of ``nn.BatchNorm2d``.

    Example:
        >>> SeqBatchNorm2d(8)(torch.rand(4, 2, 8, 5, 5)).shape
        torch.Size([4, 2, 8, 5, 5])
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() not in (4, 5):
            raise ValueError(
                f"SeqBatchNorm2d expects [T, B, C, H, W] or [B, C, H, W], got shape "
                f"{tuple(input.shape)}"
            )

    def forward(self, input: Tensor) -> Tensor:
        """Normalise ``[T, B, C, H, W]`` (or ``[B, C, H, W]``) over channel C."""
        self._check_input_dim(input)
        if input.dim() == 5:
            return super().forward(input.flatten(0, 1)).unflatten(0, input.shape[:2])
        return super().forward(input)


class SeqBatchNorm1d(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` over the LAST dimension, for features-last tensors.

    Normalises ``D`` in token layouts ``[T, B, N, D]``, ``[T, B, D]``, ``[B, N, D]`` or
    ``[B, D]``: every leading dimension counts as batch. Note the difference to
    ``nn.BatchNorm1d``, whose 3-D input is channels-first ``[B, C, L]``. Arguments are
    those of ``nn.BatchNorm1d``.

    Example:
        >>> SeqBatchNorm1d(16)(torch.rand(4, 2, 10, 16)).shape
        torch.Size([4, 2, 10, 16])
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(
                f"SeqBatchNorm1d expects features last ([..., D]) with at least 2 dims, "
                f"got shape {tuple(input.shape)}"
            )

    def forward(self, input: Tensor) -> Tensor:
        """Normalise the last dimension of ``[..., D]``."""
        self._check_input_dim(input)
        if input.shape[-1] != self.num_features:
            raise ValueError(
                f"SeqBatchNorm1d({self.num_features}) normalises the last dimension, "
                f"got input of shape {tuple(input.shape)}"
            )
        flat = input.reshape(-1, input.shape[-1])
        return super().forward(flat).reshape(input.shape)
