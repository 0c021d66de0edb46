"""Spiking ResNet (the paper's ResNet-19) and its ANN twin."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import Tensor, nn

from ..multistep import MultiStep
from .blocks import (
    ConvBNAct,
    LinearBNAct,
    SpikingModel,
    check_positive_int,
    make_activation,
)

__all__ = ["RESIDUALS", "BasicBlock", "SpikingResNet"]

#: How a block joins its two paths: ``"sew"`` adds the two paths' spikes (SEW-ResNet ADD,
#: Fang et al. 2021, the paper's reference [15]); ``"membrane"`` adds the BN outputs and
#: fires one LIF on the sum (tdBN / TET style; the usual ResNet for the ANN twin).
RESIDUALS: tuple[str, ...] = ("sew", "membrane")


class BasicBlock(nn.Module):
    """Two 3x3 ``conv -> BN`` layers with a shortcut, on ``[T, B, C, H, W]``.

    * ``residual="sew"``: ``out = act(BN(conv2(act(BN(conv1 x))))) + shortcut(x)``, where a
      projecting shortcut is ``act(BN(conv1x1 x))``. Outputs are spike counts (0, 1, 2, ...).
    * ``residual="membrane"``: ``out = act(BN(conv2(act(BN(conv1 x)))) + shortcut(x))`` with a
      projecting shortcut ``BN(conv1x1 x)``. Outputs are binary spikes.

    The shortcut projects (1x1 conv, no bias, + BN) when the stride or the width changes.

    >>> import torch
    >>> block = BasicBlock(8, 16, 2, act=nn.ReLU)
    >>> block(torch.zeros(1, 2, 8, 8, 8)).shape
    torch.Size([1, 2, 16, 4, 4])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        *,
        act: Callable[[], nn.Module],
        residual: str = "sew",
    ) -> None:
        super().__init__()
        if residual not in RESIDUALS:
            raise ValueError(f"residual must be one of {RESIDUALS}, got residual={residual!r}")
        self.residual = residual
        sew = residual == "sew"
        self.conv1 = ConvBNAct(in_channels, out_channels, act(), stride=stride)
        self.conv2 = ConvBNAct(out_channels, out_channels, act() if sew else None)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = ConvBNAct(
                in_channels, out_channels, act() if sew else None, kernel_size=1, stride=stride
            )
        self.act = nn.Identity() if sew else act()

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.act(self.conv2(self.conv1(x)) + identity)

    def extra_repr(self) -> str:
        return f"residual={self.residual!r}"


class SpikingResNet(SpikingModel):
    """Spiking ResNet for small images: a 3x3 stem, stages of :class:`BasicBlock`, an MLP head.

    The defaults are the paper's **ResNet-19**: stem ``conv3x3(in -> 64) -> BN -> LIF``;
    BasicBlocks ``[3, 3, 2]`` at widths 128 / 256 / 512 with strides 1 / 2 / 2 (the
    first block of each stage projects its shortcut); global average pooling; ``FC256``
    (``Linear(bias=False) -> BN -> LIF``); ``FC10``. That is 12,631,114 parameters with
    ``num_classes=10`` and 3 input channels, BatchNorm included, whatever ``img_size``
    (the pooling is global). There is no stem pooling: a 128x128 DVS input runs the stem
    at full resolution.

    Input and output as for :class:`~spikelottery.models.VGG`; ``spiking=False`` is the
    ANN twin (ReLU).

    Args:
        blocks: BasicBlocks per stage.
        widths: Channels per stage.
        strides: Stride of each stage's first block.
        stem_width: Channels of the stem conv.
        hidden: Widths of the hidden FC layers after pooling.
        residual: ``"sew"`` (spike ADD, default) or ``"membrane"``; see :class:`BasicBlock`.
        num_classes: Classes.
        in_channels: Input channels.
        img_size: Accepted for a uniform interface; the global pooling makes any size work.
        spiking: LIF neurons or the ReLU twin.
        timesteps: T for direct encoding of static images.
        beta: LIF membrane decay.
        neuron_kwargs: Extra :class:`~spikelottery.neuron.LIFNeuron` arguments.
        time_first: Read 5-D input as ``[T, B, ...]``.

    >>> import torch
    >>> net = SpikingResNet((1, 1), (8, 16), (1, 2), stem_width=8, hidden=(), timesteps=2)
    >>> net(torch.rand(2, 3, 16, 16)).shape
    torch.Size([2, 10])
    """

    def __init__(
        self,
        blocks: Sequence[int] = (3, 3, 2),
        widths: Sequence[int] = (128, 256, 512),
        strides: Sequence[int] = (1, 2, 2),
        *,
        stem_width: int = 64,
        hidden: Sequence[int] = (256,),
        residual: str = "sew",
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
        if not len(blocks) == len(widths) == len(strides) or not blocks:
            raise ValueError(
                f"blocks, widths and strides need one entry per stage, got blocks={tuple(blocks)}, "
                f"widths={tuple(widths)}, strides={tuple(strides)}"
            )
        if residual not in RESIDUALS:
            raise ValueError(f"residual must be one of {RESIDUALS}, got residual={residual!r}")
        self.img_size = img_size
        self.residual = residual

        def act() -> nn.Module:
            return make_activation(spiking, beta=beta, neuron_kwargs=neuron_kwargs)

        self.stem = ConvBNAct(in_channels, check_positive_int("stem_width", stem_width), act())
        stages: list[nn.Module] = []
        channels = stem_width
        for n_blocks, width, stride in zip(blocks, widths, strides, strict=True):
            check_positive_int("blocks", n_blocks)
            stage = []
            for i in range(n_blocks):
                stage.append(
                    BasicBlock(
                        channels,
                        check_positive_int("widths", width),
                        check_positive_int("strides", stride) if i == 0 else 1,
                        act=act,
                        residual=residual,
                    )
                )
                channels = width
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        self.pool = MultiStep(nn.AdaptiveAvgPool2d(1))

        hidden_layers: list[nn.Module] = []
        for width in hidden:
            hidden_layers.append(LinearBNAct(channels, check_positive_int("hidden", width), act()))
            channels = width
        self.hidden = nn.Sequential(*hidden_layers)
        self.head = nn.Linear(channels, num_classes)

    @staticmethod
    def min_img_size(**_: Any) -> int:
        """The smallest ``img_size`` of a SpikingResNet: 1 (the pooling is global).

        >>> SpikingResNet.min_img_size()
        1
        """
        return 1

    def forward_features(self, x: Tensor) -> Tensor:
        """``[T, B, C, H, W]`` -> last stage's maps ``[T, B, C', H', W']``."""
        return self.stages(self.stem(x))

    def forward_head(self, x: Tensor) -> Tensor:
        """Feature maps -> per-timestep logits ``[T, B, num_classes]``."""
        return self.head(self.hidden(self.pool(x).flatten(2)))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, residual={self.residual!r}"
