"""Surrogate gradients for the spike's Heaviside step.

A spike is ``H(V - threshold)``, whose derivative is zero almost everywhere. A surrogate
keeps the step in forward and uses a smooth bump in backward, so the loss reaches the
weights (arc tangent by default, as in SpikingJelly).

Each surrogate maps ``V - threshold`` (any shape) to spikes (0/1) of the same shape, and
passes back the bump's value where autograd would see zero:

>>> x = torch.tensor([-1.0, 0.0, 0.5], requires_grad=True)
>>> atan_surrogate(x).sum().backward()
>>> x.grad  # alpha / 2 = 1 at the threshold
tensor([0.0920, 1.0000, 0.2884])
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "SurrogateFn",
    "atan_surrogate",
    "heaviside",
    "sigmoid_surrogate",
    "surrogate_grad",
]

SurrogateFn = Callable[[Tensor], Tensor]
"""A callable mapping ``V - threshold`` to spikes with a surrogate gradient."""


def heaviside(x: Tensor) -> Tensor:
    """Unit step: 1 where ``x >= 0``, else 0, in the dtype of ``x`` (no surrogate).

    >>> heaviside(torch.tensor([-0.5, 0.0, 2.0]))
    tensor([0., 1., 1.])
    """
    return (x >= 0).to(x.dtype)


def surrogate_grad(x: Tensor, name: str, alpha: float) -> Tensor:
    """The derivative that the surrogate ``name`` uses for the step at ``x``.

    Args:
        x: Membrane potential minus threshold, any shape.
        name: ``"atan"`` or ``"sigmoid"`` (any other name is taken as ``"sigmoid"``).
        alpha: Sharpness.

    Returns:
        The gradient of the spike with respect to ``x``, with the shape of ``x``.

    >>> surrogate_grad(torch.tensor([0.0]), "atan", 2.0)
    tensor([1.])
    """
    # Same expressions as SpikingJelly's surrogate kernels, so gradients agree to rounding.
    if name == "atan":
        z = x * (math.pi / 2 * alpha)
        return (alpha / 2) / (1 + z * z)
    s = torch.sigmoid(x * alpha)
    return (1 - s) * s * alpha


class _SpikeFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, name: str, alpha: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.name = name
        ctx.alpha = alpha
        return heaviside(x)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, None, None]:
        (x,) = ctx.saved_tensors
        return grad_output * surrogate_grad(x, ctx.name, ctx.alpha), None, None


def atan_surrogate(x: Tensor, alpha: float = 2.0) -> Tensor:
    """Heaviside forward, arc-tangent surrogate gradient backward.

    The gradient is ``alpha / 2 / (1 + (pi / 2 * alpha * x) ** 2)``, SpikingJelly's
    ``surrogate.ATan(alpha=2.0)``.

    Args:
        x: Membrane potential minus threshold, any shape.
        alpha: Sharpness; larger is closer to the true step.

    Returns:
        Spikes (0/1) with the shape and dtype of ``x``.

    >>> x = torch.tensor([-1.0, 0.5], requires_grad=True)
    >>> atan_surrogate(x).sum().backward()
    >>> x.grad.shape
    torch.Size([2])
    """
    return _SpikeFunction.apply(x, "atan", float(alpha))


def sigmoid_surrogate(x: Tensor, alpha: float = 4.0) -> Tensor:
    """Heaviside forward, sigmoid-derivative surrogate gradient backward.

    The gradient is ``alpha * sigmoid(alpha * x) * (1 - sigmoid(alpha * x))``,
    SpikingJelly's ``surrogate.Sigmoid(alpha=4.0)``.

    Args:
        x: Membrane potential minus threshold, any shape.
        alpha: Sharpness; larger is closer to the true step.

    Returns:
        Spikes (0/1) with the shape and dtype of ``x``.

    >>> sigmoid_surrogate(torch.tensor([-1.0, 0.5]))
    tensor([0., 1.])
    """
    return _SpikeFunction.apply(x, "sigmoid", float(alpha))
