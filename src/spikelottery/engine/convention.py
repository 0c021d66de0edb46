"""How the engine calls a model: its input and output conventions.

The engine's contract is batch-first: ``model(x)`` with the data set's sample layout
(``[B, C, H, W]`` images, ``[B, T, C, H, W]`` event frames) returns ``[B, K]`` logits; the
spikelottery zoo follows it. SpikingJelly's convention is time-first: a multi-step network
takes ``[T, B, ...]`` and returns ``[T, B, K]``, averaged over ``T`` by the caller. Both
are accepted:

* ``model_input="auto"`` (the default) reads a model with SpikingJelly modules in
  multi-step mode (``step_mode == "m"``; not the spikelottery zoo, and not
  spikelottery's own neurons) as time-first, and any other model as batch-first;
  ``"time_first"`` and ``"batch_first"`` declare it. A wrong guess fails loudly at the
  first batch, with the contract in the error;
* outputs ``[B, K]``, ``[T, B, K]`` and ``[B, T, K]`` are all reduced to ``[B, K]`` by the
  mean over ``T``; anything else is an error that states the contract.

:class:`TimeFirst` wraps a time-first model for the engine's calls only: the model the
run returns, checkpoints and tickets are the user's own, with their own ``state_dict``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from ..errors import SpikeLotteryError

__all__ = [
    "INPUT_CONVENTIONS",
    "TimeFirst",
    "call_model",
    "engine_view",
    "is_time_first",
    "logits_of",
]

INPUT_CONVENTIONS = ("auto", "batch_first", "time_first")

_CONTRACT = (
    "The engine calls model(x) with the data set's batches ([B, C, H, W] images, [B, T, C, "
    "H, W] event frames) and expects logits [B, K]; a SpikingJelly multi-step model (input "
    "[T, B, ...], output [T, B, K]) is accepted too (TrainConfig.model_input='time_first')."
)


def is_time_first(model: nn.Module, declared: str) -> bool:
    """Whether the engine feeds ``model`` time-first ``[T, B, ...]`` input.

    >>> is_time_first(nn.Linear(2, 2), "auto"), is_time_first(nn.Linear(2, 2), "time_first")
    (False, True)
    """
    if declared != "auto":
        return declared == "time_first"
    if type(model).__module__.startswith("spikelottery.models"):
        return False
    return any(
        getattr(m, "step_mode", None) == "m" and type(m).__module__.startswith("spikingjelly.")
        for m in model.modules()
    )


def logits_of(out: Any, batch: int) -> Tensor:
    """``[B, K]`` logits from a model's output: ``[B, K]``, ``[T, B, K]`` or ``[B, T, K]``.

    Raises:
        SpikeLotteryError: The output is none of these, with the contract spelled out.

    >>> import torch
    >>> logits_of(torch.ones(4, 3, 10), batch=3).shape  # [T, B, K]
    torch.Size([3, 10])
    """
    if isinstance(out, Tensor):
        if out.ndim == 2 and out.shape[0] == batch:
            return out
        if out.ndim == 3 and out.shape[1] == batch:
            return out.mean(0)
        if out.ndim == 3 and out.shape[0] == batch:
            return out.mean(1)
    shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
    raise SpikeLotteryError(
        f"the model returned {shape} for a batch of {batch} samples; it must return logits "
        f"[B, K], [T, B, K] or [B, T, K]. {_CONTRACT}"
    )


def call_model(net: nn.Module, x: Tensor) -> Tensor:
    """``net(x)`` as ``[B, K]`` logits; a failure inside the model gets the contract as a note."""
    try:
        out = net(x)
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        note = f"spikelottery: the engine's call was model(x) with x {tuple(x.shape)}. {_CONTRACT}"
        if note not in getattr(exc, "__notes__", ()):
            exc.add_note(note)
        raise
    return logits_of(out, x.shape[0])


class TimeFirst(nn.Module):
    """A time-first model seen through the engine's batch-first contract.

    Args:
        model: Takes ``[T, B, ...]`` and returns ``[T, B, K]`` (or ``[B, K]``).
        timesteps: ``T`` for static samples, which are repeated over time (direct
            encoding); event samples ``[B, T, ...]`` bring their own ``T``.
        event: Whether the samples are event frames ``[B, T, C, H, W]``.

    >>> import torch
    >>> net = TimeFirst(nn.Linear(4, 2), timesteps=3, event=False)
    >>> net(torch.rand(5, 4)).shape
    torch.Size([5, 2])
    """

    def __init__(self, model: nn.Module, timesteps: int, event: bool) -> None:
        super().__init__()
        self.model = model
        self.timesteps = timesteps
        self.event = event

    def forward(self, x: Tensor) -> Tensor:
        batch = x.shape[0]
        seq = x.transpose(0, 1) if self.event else x.unsqueeze(0).expand(self.timesteps, *x.shape)
        return logits_of(self.model(seq), batch)

    def extra_repr(self) -> str:
        return f"timesteps={self.timesteps}, event={self.event}"


def engine_view(model: nn.Module, declared: str, *, timesteps: int, event: bool) -> nn.Module:
    """The module the engine calls: ``model`` itself, or a :class:`TimeFirst` around it."""
    if is_time_first(model, declared):
        return TimeFirst(model, timesteps, event)
    return model
