"""Turn a batch of inputs into a time-first sequence ``[T, B, ...]`` for a spiking network.

* Direct encoding (RGB images, digits): the same analog input is presented at each of the
  T time steps; the first layer's conv turns it into currents and its LIF into spikes.
* Event frames (DVS data): datasets store ``[B, T, 2, H, W]`` (two polarity channels per
  frame); the network wants time first, ``[T, B, 2, H, W]``.

Example:
    >>> import torch
    >>> encode(torch.rand(8, 3, 32, 32), timesteps=4).shape
    torch.Size([4, 8, 3, 32, 32])
    >>> encode(torch.rand(8, 10, 2, 32, 32)).shape
    torch.Size([10, 8, 2, 32, 32])
"""

from __future__ import annotations

from torch import Tensor, nn

from ._validation import check_int

__all__ = ["DirectEncoder", "EventFrames", "direct_encode", "encode", "event_frames_to_seq"]


def _check_timesteps(timesteps: object) -> int:
    checked = check_int("timesteps", timesteps)
    assert checked is not None
    return checked


def direct_encode(x: Tensor, timesteps: int) -> Tensor:
    """Repeat a batch ``[B, ...]`` over time: ``[T, B, ...]``.

    Args:
        x: A batch of analog inputs, e.g. images ``[B, C, H, W]``.
        timesteps: Number of time steps T.

    Returns:
        A new tensor of shape ``[timesteps, *x.shape]``; gradients flow back to ``x``.

    >>> direct_encode(torch.rand(2, 3, 8, 8), 4).shape
    torch.Size([4, 2, 3, 8, 8])
    """
    timesteps = _check_timesteps(timesteps)
    if not isinstance(x, Tensor) or x.ndim < 1:
        raise ValueError(f"x must be a batch tensor [B, ...], got {type(x).__name__}")
    return x.unsqueeze(0).repeat(timesteps, *([1] * x.ndim))


def event_frames_to_seq(x: Tensor) -> Tensor:
    """Reorder event frames from dataset layout ``[B, T, 2, H, W]`` to ``[T, B, 2, H, W]``.

    Args:
        x: Event frames with two polarity channels, batch first.

    Returns:
        The same frames, time first (a contiguous copy).

    Raises:
        ValueError: ``x`` is not 5-D or its channel dimension (dim 2) is not 2.

    >>> event_frames_to_seq(torch.rand(8, 16, 2, 32, 32)).shape
    torch.Size([16, 8, 2, 32, 32])
    """
    if not isinstance(x, Tensor) or x.ndim != 5 or x.shape[2] != 2:
        shape = tuple(getattr(x, "shape", ()))
        raise ValueError(
            "event frames must be [B, T, 2, H, W] (batch, time, ON/OFF polarity, height, "
            f"width), got shape {shape}"
            + (f"; dim 2 has {shape[2]} channels, expected 2 polarities" if len(shape) == 5 else "")
        )
    return x.transpose(0, 1).contiguous()


def encode(x: Tensor, timesteps: int | None = None) -> Tensor:
    """Encode a batch for a multi-step network: direct for images, reorder for events.

    A 5-D batch is event frames ``[B, T, 2, H, W]`` and is reordered to time first (if
    ``timesteps`` is given it must equal T). Any other batch ``[B, ...]`` (images
    ``[B, C, H, W]``, vectors ``[B, D]``) is direct-encoded over ``timesteps`` steps.

    Args:
        x: The batch as a data loader yields it.
        timesteps: T for direct encoding; optional check for event frames.

    Returns:
        The input sequence ``[T, B, ...]``.

    >>> encode(torch.rand(8, 1, 8, 8), timesteps=4).shape
    torch.Size([4, 8, 1, 8, 8])
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a tensor, got {type(x).__name__}")
    if x.ndim == 5:
        seq = event_frames_to_seq(x)
        if timesteps is not None and _check_timesteps(timesteps) != seq.shape[0]:
            raise ValueError(
                f"event frames carry T={seq.shape[0]} time steps (dim 1 of {tuple(x.shape)}) "
                f"but timesteps={timesteps}; make the dataset's frame count equal timesteps"
            )
        return seq
    if timesteps is None:
        raise ValueError(
            f"timesteps is required to direct-encode a batch of shape {tuple(x.shape)}"
        )
    if x.ndim < 2:
        raise ValueError(f"x must be a batch [B, ...] with at least 2 dims, got {tuple(x.shape)}")
    return direct_encode(x, timesteps)


class DirectEncoder(nn.Module):
    """Module form of :func:`direct_encode`: ``[B, ...] -> [T, B, ...]``.

    Args:
        timesteps: Number of time steps T.

    Example:
        >>> DirectEncoder(4)(torch.rand(2, 3, 8, 8)).shape
        torch.Size([4, 2, 3, 8, 8])
    """

    def __init__(self, timesteps: int) -> None:
        super().__init__()
        self.timesteps = _check_timesteps(timesteps)

    def forward(self, x: Tensor) -> Tensor:
        """Repeat ``x`` over ``timesteps`` steps."""
        return direct_encode(x, self.timesteps)

    def extra_repr(self) -> str:
        return f"timesteps={self.timesteps}"


class EventFrames(nn.Module):
    """Module form of :func:`event_frames_to_seq`: ``[B, T, 2, H, W] -> [T, B, 2, H, W]``.

    Example:
        >>> EventFrames()(torch.rand(2, 16, 2, 32, 32)).shape
        torch.Size([16, 2, 2, 32, 32])
    """

    def forward(self, x: Tensor) -> Tensor:
        """Reorder event frames to time first."""
        return event_frames_to_seq(x)
