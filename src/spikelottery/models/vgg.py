"""Spiking VGG (the paper's VGG-9) and its ANN twin."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from ..multistep import MultiStep
from ._input import InputSpec
from .blocks import (
    ConvBNAct,
    LinearBNAct,
    SpikingModel,
    check_positive_int,
    make_activation,
    pair,
)

__all__ = ["VGG", "VGG9_CONFIG"]

#: The paper's VGG-9 feature extractor: ints are 3x3 conv widths, ``"A"`` a 2x2 average pool.
VGG9_CONFIG: tuple[int | str, ...] = (64, 64, "A", 128, 128, "A", 256, 256, 256, "A")


class VGG(SpikingModel):
    """Spiking VGG: ``[conv3x3 -> BN -> LIF]`` stages with average pooling, then an MLP head.

    The defaults are the paper's **VGG-9**:
    ``64C3-64C3-AP2-128C3-128C3-AP2-256C3-256C3-256C3-AP2-FC128-FC10``; at 32x32 the
    first hidden layer reads ``256 * 4 * 4 = 4096`` features (2,262,474 parameters with
    ``num_classes=10``, BatchNorm included). Convs have no bias (a BatchNorm follows);
    a hidden FC is ``Linear(bias=False) -> BN -> LIF``; the last FC has a bias and no
    activation. The classifier's input size follows ``img_size``: at 48x48 it reads
    ``256 * 6 * 6``, at 128x128 ``256 * 16 * 16``.

    Input (see :func:`~spikelottery.models.encode_input`): ``[B, C, H, W]`` (repeated
    ``timesteps`` times), ``[B, T, C, H, W]`` event frames, or ``[T, B, C, H, W]`` with
    ``time_first=True``. Output: logits ``[B, num_classes]`` averaged over T.
    ``spiking=False`` gives the ANN twin (ReLU, T = 1 for static input).

    Args:
        config: Feature layers: an int is a conv width, ``"A"`` an average pool, ``"M"`` a
            max pool.
        hidden: Widths of the hidden FC layers (``()`` for a single linear classifier).
        num_classes: Classes.
        in_channels: Input channels (3 for RGB, 2 for DVS polarity frames, 1 for digits).
        img_size: Input size ``H`` (square) or ``(H, W)``; sets the classifier's input size.
        spiking: LIF neurons (``True``) or the ReLU twin.
        timesteps: T for direct encoding of static images.
        beta: LIF membrane decay (the paper's lambda).
        neuron_kwargs: Extra :class:`~spikelottery.neuron.LIFNeuron` arguments.
        time_first: Read 5-D input as ``[T, B, ...]``.

    >>> import torch
    >>> net = VGG((8, "A", 16, "A"), hidden=(), img_size=16, timesteps=2)
    >>> net(torch.rand(3, 3, 16, 16)).shape
    torch.Size([3, 10])
    """

    def __init__(
        self,
        config: Sequence[int | str] = VGG9_CONFIG,
        *,
        hidden: Sequence[int] = (128,),
        num_classes: int = 10,
        in_channels: int = 3,
        img_size: int | tuple[int, int] = 32,
        spiking: bool = True,
        timesteps: int = 4,
        beta: float = 0.99,
        neuron_kwargs: Mapping[str, Any] | None = None,
        time_first: bool = False,
    ) -> None:
        super().__init__(
            spiking=spiking,
            in_channels=in_channels,
            num_classes=num_classes,
            timesteps=timesteps,
            beta=beta,
            time_first=time_first,
        )
        height, width = pair("img_size", img_size)
        self.img_size = (height, width)
        self.config = tuple(config)

        def act() -> nn.Module:
            return make_activation(spiking, beta=beta, neuron_kwargs=neuron_kwargs)

        layers: list[nn.Module] = []
        channels = in_channels
        for item in self.config:
            if item in ("A", "M"):
                if height < 2 or width < 2:
                    raise ValueError(
                        f"img_size={img_size!r} is too small for config {self.config}: a 2x2 pool "
                        f"would see a {height}x{width} map; use a larger image or fewer pools"
                    )
                pool = nn.AvgPool2d(2) if item == "A" else nn.MaxPool2d(2)
                layers.append(MultiStep(pool))
                height, width = height // 2, width // 2
            elif isinstance(item, int) and not isinstance(item, bool) and item > 0:
                layers.append(ConvBNAct(channels, item, act()))
                channels = item
            else:
                raise ValueError(
                    f"config entries must be positive ints (conv widths), 'A' (avg pool) or 'M' "
                    f"(max pool); got {item!r} in config={self.config}"
                )
        if channels == in_channels:
            raise ValueError(f"config={self.config} has no conv layer")
        self.features = nn.Sequential(*layers)
        self.feature_shape = (channels, height, width)

        hidden_layers: list[nn.Module] = []
        features = channels * height * width
        for width_ in hidden:
            hidden_layers.append(LinearBNAct(features, check_positive_int("hidden", width_), act()))
            features = width_
        self.hidden = nn.Sequential(*hidden_layers)
        self.head = nn.Linear(features, num_classes)

    @staticmethod
    def min_img_size(config: Sequence[int | str] = VGG9_CONFIG, **_: Any) -> int:
        """The smallest ``img_size`` of a VGG with these feature layers: 2 per pool.

        Takes the constructor's arguments (only ``config`` matters).

        >>> VGG.min_img_size(), VGG.min_img_size((8, "A", 16, "A"))
        (8, 4)
        """
        return 2 ** sum(1 for item in config if item in ("A", "M"))

    def input_spec(self) -> InputSpec:
        """Only ``img_size`` fits: the classifier reads a fixed number of features."""
        channels, height, width = self.feature_shape
        return InputSpec(
            type(self).__name__,
            self.in_channels,
            self.time_first,
            img_size=self.img_size,
            why=f"its classifier reads {channels}x{height}x{width} features",
        )

    def forward_features(self, x: Tensor) -> Tensor:
        """``[T, B, C, H, W]`` -> feature maps ``[T, B, C', H', W']``."""
        return self.features(x)

    def forward_head(self, x: Tensor) -> Tensor:
        """Feature maps -> per-timestep logits ``[T, B, num_classes]``."""
        return self.head(self.hidden(x.flatten(2)))
