"""Pieces shared by the model zoo: input encoding, activations and conv/linear -> BN -> act blocks.

Every block works on the multi-step layout ``[T, B, ...]``. The spiking and the ANN
versions of a model are built from the same blocks; only the activation differs
(:class:`~spikelottery.neuron.LIFNeuron` or ``nn.ReLU``), so the two have the same
parameters under the same names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .._validation import check_int
from ..encoding import direct_encode
from ..multistep import SeqBatchNorm1d, SeqBatchNorm2d, seq_apply
from ..neuron import LIFNeuron
from ._input import InputSpec, check_input

__all__ = [
    "ConvBNAct",
    "LinearBNAct",
    "SpikingModel",
    "check_positive_int",
    "encode_input",
    "make_activation",
    "pair",
]


def check_positive_int(name: str, value: Any) -> int:
    """``value`` if it is a positive int (see :func:`spikelottery._validation.check_int`)."""
    checked = check_int(name, value)
    assert checked is not None
    return checked


def pair(name: str, value: int | tuple[int, int]) -> tuple[int, int]:
    """``img_size`` as ``(H, W)``: an int means a square image."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (check_positive_int(name, value),) * 2
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return (check_positive_int(name, value[0]), check_positive_int(name, value[1]))
    raise ValueError(
        f"{name} must be an int or a pair (H, W) of positive ints, got {name}={value!r}"
    )


def make_activation(
    spiking: bool,
    *,
    beta: float = 0.99,
    neuron_kwargs: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> nn.Module:
    """A multi-step LIF neuron (``spiking=True``) or a ``nn.ReLU`` (the ANN twin).

    Args:
        spiking: Build a :class:`~spikelottery.neuron.LIFNeuron` or a ``nn.ReLU``.
        beta: Membrane decay (the paper's lambda).
        neuron_kwargs: Further :class:`~spikelottery.neuron.LIFNeuron` arguments
            (``surrogate``, ``alpha``, ``threshold``, ``detach_reset``, ``backend``, ...).
        **overrides: Arguments that win over ``neuron_kwargs`` for this one neuron (the
            attention neuron's ``threshold=0.5``).

    >>> make_activation(False)
    ReLU()
    """
    if not spiking:
        return nn.ReLU()
    kwargs = {**dict(neuron_kwargs or {}), **overrides}
    if kwargs.pop("step_mode", "m") != "m":
        raise ValueError(
            "the model zoo runs whole sequences [T, B, ...]: neurons need step_mode='m'"
        )
    return LIFNeuron(beta=beta, step_mode="m", **kwargs)


def encode_input(
    x: Tensor, timesteps: int, in_channels: int, *, time_first: bool = False
) -> Tensor:
    """Bring a model input to the multi-step layout ``[T, B, C, H, W]``.

    * ``[B, C, H, W]``: a static image, repeated ``timesteps`` times (direct encoding).
    * ``[B, T, C, H, W]``: event frames as a ``DataLoader`` batches them (``time_first=False``).
    * ``[T, B, C, H, W]``: already time-first (``time_first=True``).

    Non-float input (``bool`` / ``uint8`` event counts) is cast to the default float dtype.

    Args:
        x: The input batch.
        timesteps: ``T`` for direct encoding of a 4-D input; a 5-D input brings its own ``T``.
        in_channels: Expected ``C``; a mismatch is a ``ValueError`` naming both shapes.
        time_first: Read a 5-D input as ``[T, B, ...]`` instead of ``[B, T, ...]``.

    Returns:
        ``[T, B, C, H, W]``.

    >>> encode_input(torch.zeros(8, 3, 32, 32), 4, 3).shape
    torch.Size([4, 8, 3, 32, 32])
    >>> encode_input(torch.zeros(8, 10, 2, 48, 48), 4, 2).shape
    torch.Size([10, 8, 2, 48, 48])
    """
    check_input(x, InputSpec("the model", in_channels, time_first))
    return _time_first(x, timesteps, time_first)


def _time_first(x: Tensor, timesteps: int, time_first: bool) -> Tensor:
    """A checked 4-D or 5-D input as ``[T, B, C, H, W]`` (see :func:`encode_input`)."""
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    if x.dim() == 4:
        return direct_encode(x, timesteps)
    return x if time_first else x.transpose(0, 1)


def _parameter_dtype(model: nn.Module) -> torch.dtype | None:
    """The dtype of the model's first parameter (``None`` if it holds none, e.g. a replica)."""
    for p in model.parameters():
        return p.dtype
    return None


class ConvBNAct(nn.Module):
    """``Conv2d(bias=False) -> BatchNorm2d -> activation`` on ``[T, B, C, H, W]``.

    The conv is a plain ``nn.Conv2d`` child named ``conv`` (so :func:`~spikelottery.sparsify`
    can swap it); T is merged into the batch around it.

    >>> block = ConvBNAct(3, 8, nn.ReLU())
    >>> block(torch.zeros(2, 4, 3, 16, 16)).shape
    torch.Size([2, 4, 8, 16, 16])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        act: nn.Module | None,
        *,
        kernel_size: int = 3,
        stride: int = 1,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False
        )
        self.bn = SeqBatchNorm2d(out_channels)
        self.act = act if act is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(seq_apply(self.conv, x)))


class LinearBNAct(nn.Module):
    """``Linear(bias=False) -> BatchNorm over the features -> activation`` on ``[T, B, ..., D]``.

    Works on ``[T, B, D]`` (a classifier's hidden layer) and on the token layout
    ``[T, B, N, D]`` for any ``N``.

    >>> block = LinearBNAct(16, 32, nn.ReLU())
    >>> block(torch.zeros(2, 4, 7, 16)).shape
    torch.Size([2, 4, 7, 32])
    """

    def __init__(self, in_features: int, out_features: int, act: nn.Module | None) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=False)
        self.bn = SeqBatchNorm1d(out_features)
        self.act = act if act is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        y = self.linear(x)
        if y.dim() == 3:  # [T, B, D]: give the BN a token axis of length 1
            return self.act(self.bn(y.unsqueeze(2)).squeeze(2))
        return self.act(self.bn(y))


class SpikingModel(nn.Module):
    """Common base of the zoo: input encoding, the ``timesteps`` attribute, the T average.

    Subclasses implement ``forward_features`` and ``forward_head``. The neurons are
    multi-step, so each ``forward`` is one whole sequence that starts at rest: outputs
    depend on the input only (``functional.reset_net(model)`` is harmless, never needed).

    Attributes:
        spiking: ``True`` for the SNN, ``False`` for the ANN twin.
        timesteps: ``T`` used to repeat a static ``[B, C, H, W]`` input (1 for the ANN twin).
        time_first: Read a 5-D input as ``[T, B, ...]`` instead of ``[B, T, ...]``.
    """

    def __init__(
        self,
        *,
        spiking: bool,
        in_channels: int,
        num_classes: int,
        timesteps: int,
        beta: float,
        time_first: bool,
    ) -> None:
        super().__init__()
        self.spiking = bool(spiking)
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.num_classes = check_positive_int("num_classes", num_classes)
        check_positive_int("timesteps", timesteps)
        # A ReLU network is stateless: repeating a static image T times only repeats the work.
        self.timesteps = timesteps if self.spiking else 1
        if not 0.0 <= float(beta) <= 1.0:
            raise ValueError(f"beta (membrane decay) must be in [0, 1], got beta={beta!r}")
        self.beta = float(beta)
        self.time_first = bool(time_first)

    def input_spec(self) -> InputSpec:
        """What :meth:`forward` takes: ``C``, the layout and the image sizes (see :class:`InputSpec`)."""
        return InputSpec(type(self).__name__, self.in_channels, self.time_first)

    def encode(self, x: Tensor) -> Tensor:
        """The input, checked against :meth:`input_spec`, as ``[T, B, C, H, W]``.

        Integer and bool input (event counts) is cast to the parameters' dtype.

        Raises:
            TypeError: ``x`` is not a real tensor of the parameters' float dtype.
            ValueError: Its layout, channels or image size does not fit the model; the
                message names the model and the shape it takes.
        """
        dtype = _parameter_dtype(self)
        check_input(x, self.input_spec(), dtype)
        if dtype is not None and not x.is_floating_point():
            x = x.to(dtype)
        return _time_first(x, self.timesteps, self.time_first)

    def forward_features(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_head(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``[B, num_classes]``, averaged over the timesteps."""
        return self.forward_head(self.forward_features(self.encode(x))).mean(0)

    def extra_repr(self) -> str:
        kind = (
            f"spiking=True, timesteps={self.timesteps}, beta={self.beta:g}"
            if self.spiking
            else "spiking=False"
        )
        return f"{kind}, in_channels={self.in_channels}, num_classes={self.num_classes}"
