"""What a zoo model accepts as input, checked once at the top of its ``forward``.

:func:`check_input` is a pure function of the input's type, shape and dtype and an
:class:`InputSpec`: a few integer comparisons, no tensor is read, so it costs nothing next
to the first conv and traces into no graph op (``torch.compile``, ``torch.export`` and
``torch.jit.trace`` see only the shapes they already specialise on, and the tracer's
warnings about them are silenced). A wrong input then
fails with the model's name and the shape it expects, not with torch's message from a
layer deep inside.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["InputSpec", "check_input"]

# Devices where torch.autocast exists (and may legitimately feed a dtype other than the
# parameters'); elsewhere the dtype is not checked.
_AUTOCAST_DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class InputSpec:
    """The inputs a zoo model takes.

    Attributes:
        model: The model's name, for messages (``"VGG"``).
        in_channels: ``C``.
        time_first: A 5-D input is ``[T, B, C, H, W]`` (else ``[B, T, C, H, W]``).
        img_size: ``(H, W)`` the model was built for, when only that size works (a
            classifier that reads a fixed number of features); ``None``: any size from
            ``min_size`` on.
        min_size: The smallest ``(H, W)`` the model takes.
        why: Why the size is fixed or bounded, for messages.
    """

    model: str
    in_channels: int
    time_first: bool = False
    img_size: tuple[int, int] | None = None
    min_size: tuple[int, int] = (1, 1)
    why: str = ""

    def layouts(self) -> str:
        """The accepted layouts, in words."""
        five = "[T, B, C, H, W] (time_first=True)" if self.time_first else "[B, T, C, H, W]"
        size = f"H x W = {_hw(self.img_size)}" if self.img_size else "H, W"
        return (
            f"[B, C, H, W] (a static image, repeated T times) or {five} (event frames), "
            f"with C = {self.in_channels} and {size}"
        )


def _hw(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def _move_hint(shape: tuple[int, ...], spec: InputSpec) -> str:
    """A ``movedim`` that would put the one other axis of size ``C`` where ``C`` belongs."""
    channel_axis = len(shape) - 3
    batch_axis = 1 if len(shape) == 5 and spec.time_first else 0
    candidates = [
        i
        for i, n in enumerate(shape)
        if n == spec.in_channels and i not in (channel_axis, batch_axis)
    ]
    if len(candidates) != 1:
        return ""
    axis = candidates[0]
    return (
        f"if axis {axis} holds the channels, x.movedim({axis}, {channel_axis}) puts them in place"
    )


def check_input(x: Any, spec: InputSpec, dtype: torch.dtype | None = None) -> None:
    """Raise if ``x`` is not an input the model of ``spec`` takes; return ``None`` if it is.

    Args:
        x: The model's input.
        spec: What the model takes.
        dtype: The model's parameter dtype: a floating input of another dtype is refused
            (outside ``torch.autocast``); integer and bool input (event counts) is cast by
            the model. ``None``: not checked.

    Raises:
        TypeError: ``x`` is not a tensor, is complex, or its float dtype is not the model's.
        ValueError: The number of dimensions, ``C``, ``H`` or ``W`` does not fit, or an axis
            is empty. The message names the model and the expected layout.

    >>> spec = InputSpec("VGG", 3, img_size=(32, 32))
    >>> check_input(torch.zeros(2, 3, 32, 32), spec)
    >>> check_input(torch.zeros(2, 3, 16, 16), spec)
    Traceback (most recent call last):
    ...
    ValueError: VGG was built for 32x32 images, but the input of shape (2, 3, 16, 16) is 16x16; ...
    """
    if torch.jit.is_tracing():
        # The tracer records sizes as tensors and warns on each comparison; its trace
        # specialises on these shapes anyway, so the check stays and the warnings go.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            _check(x, spec, dtype)
    else:
        _check(x, spec, dtype)


def _check(x: Any, spec: InputSpec, dtype: torch.dtype | None) -> None:
    name = spec.model
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} takes a torch.Tensor {spec.layouts()}; got {type(x).__name__}")
    shape = tuple(x.shape)
    if x.dim() not in (4, 5):
        hint = "; add the batch axis for one image: x.unsqueeze(0)" if x.dim() == 3 else ""
        raise ValueError(
            f"{name} takes {spec.layouts()}; got a {x.dim()}-D tensor of shape {shape}{hint}"
        )
    if 0 in shape:
        raise ValueError(f"{name} got an empty input of shape {shape}; it takes {spec.layouts()}")
    channel_axis = x.dim() - 3
    if shape[channel_axis] != spec.in_channels:
        read_as = (
            "[B, C, H, W]"
            if x.dim() == 4
            else ("[T, B, C, H, W]" if spec.time_first else "[B, T, C, H, W]")
        )
        hint = _move_hint(shape, spec)
        raise ValueError(
            f"{name} expects in_channels={spec.in_channels}, but the input of shape {shape}, read "
            f"as {read_as}, has C={shape[channel_axis]}; {hint + '; else ' if hint else ''}"
            f"build the model with in_channels={shape[channel_axis]} or check the input layout "
            f"(time_first={spec.time_first})"
        )
    hw = (shape[-2], shape[-1])
    why = f" ({spec.why})" if spec.why else ""
    if spec.img_size is not None and hw != spec.img_size:
        raise ValueError(
            f"{name} was built for {_hw(spec.img_size)} images, but the input of shape {shape} "
            f"is {_hw(hw)}{why}; resize the input or build the model with img_size={hw}"
        )
    if hw[0] < spec.min_size[0] or hw[1] < spec.min_size[1]:
        raise ValueError(
            f"{name} takes images of at least {_hw(spec.min_size)}{why}, but the input of shape "
            f"{shape} is {_hw(hw)}"
        )
    if x.is_complex():
        raise TypeError(f"{name} takes real-valued input, got dtype {x.dtype}")
    if (
        dtype is not None
        and x.is_floating_point()
        and x.dtype != dtype
        and x.device.type in _AUTOCAST_DEVICES
        and not torch.is_autocast_enabled(x.device.type)
    ):
        raise TypeError(
            f"{name} has {dtype} parameters but the input is {x.dtype}; convert the input "
            f"(x.to({dtype})) or the model (model.to({x.dtype}))"
        )
