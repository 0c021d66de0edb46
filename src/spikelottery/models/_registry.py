"""Model names for :func:`create_model`: the paper's presets and small variants for CPU runs."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .resnet import SpikingResNet
from .spikformer import Spikformer
from .vgg import VGG, VGG9_CONFIG

__all__ = ["create_model", "list_models", "min_img_size"]


@dataclass(frozen=True)
class _Preset:
    builder: Callable[..., nn.Module]
    kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""


_PRESETS: dict[str, _Preset] = {
    "vgg9": _Preset(
        VGG,
        {"config": VGG9_CONFIG, "hidden": (128,)},
        "VGG-9 (paper): 64C3-64C3-AP2-128C3-128C3-AP2-256C3-256C3-256C3-AP2-FC128-FC10",
    ),
    "vgg_small": _Preset(
        VGG,
        {"config": (32, 32, "A", 64, "A"), "hidden": ()},
        "small VGG for 16x16 digits: 32C3-32C3-AP2-64C3-AP2-FC",
    ),
    "vgg_tiny": _Preset(
        VGG,
        {"config": (16, "A", 32, "A"), "hidden": ()},
        "tiny VGG for tests and 8x8 digits: 16C3-AP2-32C3-AP2-FC",
    ),
    "resnet19": _Preset(
        SpikingResNet,
        {
            "blocks": (3, 3, 2),
            "widths": (128, 256, 512),
            "strides": (1, 2, 2),
            "stem_width": 64,
            "hidden": (256,),
        },
        "ResNet-19 (paper): stem 64C3, BasicBlocks [3,3,2] at 128/256/512, avgpool, FC256-FC",
    ),
    "resnet_tiny": _Preset(
        SpikingResNet,
        {
            "blocks": (1, 1, 1),
            "widths": (16, 32, 64),
            "strides": (1, 2, 2),
            "stem_width": 16,
            "hidden": (),
        },
        "tiny ResNet for tests: stem 16C3, BasicBlocks [1,1,1] at 16/32/64, avgpool, FC",
    ),
    "spikformer_tiny": _Preset(
        Spikformer,
        {"embed_dim": 192, "depth": 12, "num_heads": 3, "mlp_ratio": 4.0},
        "Spikformer TINY (paper): ConvPEP, 12 blocks, D=192, 3 heads",
    ),
    "spikformer_small": _Preset(
        Spikformer,
        {"embed_dim": 384, "depth": 12, "num_heads": 6, "mlp_ratio": 4.0},
        "Spikformer SMALL (paper): ConvPEP, 12 blocks, D=384, 6 heads",
    ),
    "spikformer_mini": _Preset(
        Spikformer,
        {"embed_dim": 64, "depth": 4, "num_heads": 4, "mlp_ratio": 4.0},
        "small Spikformer for CPU runs: ConvPEP, 4 blocks, D=64, 4 heads",
    ),
    "spikformer_micro": _Preset(
        Spikformer,
        {"embed_dim": 32, "depth": 2, "num_heads": 2, "mlp_ratio": 4.0},
        "micro Spikformer for tests: ConvPEP, 2 blocks, D=32, 2 heads",
    ),
}


# Arguments create_model passes itself (shown apart from the model's own options).
_SET_BY_CREATE_MODEL = ("spiking", "num_classes", "in_channels", "img_size", "timesteps", "beta")


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted.

    >>> "vgg9" in list_models()
    True
    """
    return sorted(_PRESETS)


def _preset(name: Any) -> tuple[str, _Preset]:
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    key = name.strip().lower()
    preset = _PRESETS.get(key)
    if preset is None:
        raise ValueError(
            f"unknown model name {name!r}; valid names are: {', '.join(list_models())}"
        )
    return key, preset


def min_img_size(name: str, **kwargs: Any) -> int:
    """The smallest ``img_size`` that :func:`create_model` accepts for ``name`` and ``kwargs``.

    A VGG needs 2 pixels per pooling stage, a Spikformer its ``patch_size``; a ResNet
    pools globally and takes any size.

    >>> min_img_size("vgg9"), min_img_size("vgg_tiny"), min_img_size("resnet19")
    (8, 4, 1)
    """
    _, preset = _preset(name)
    builder: Any = preset.builder
    return int(builder.min_img_size(**{**preset.kwargs, **kwargs}))


def create_model(
    name: str,
    *,
    spiking: bool = True,
    num_classes: int = 10,
    in_channels: int = 3,
    img_size: int | tuple[int, int] = 32,
    timesteps: int = 4,
    beta: float = 0.99,
    **kwargs: Any,
) -> nn.Module:
    """Build a model of the zoo by name.

    Names: ``vgg9``, ``resnet19``, ``spikformer_tiny``, ``spikformer_small`` (the paper's
    models) and the small variants ``vgg_small``, ``vgg_tiny``, ``resnet_tiny``,
    ``spikformer_mini``, ``spikformer_micro`` (see :func:`list_models`).

    Args:
        name: Model name (case-insensitive).
        spiking: LIF neurons (SNN) or the ANN twin (ReLU, softmax attention, T = 1).
        num_classes: Classes of the classifier.
        in_channels: Input channels: 3 (RGB), 2 (DVS polarity frames), 1 (digits).
        img_size: Input height and width (an int for square images).
        timesteps: T used to repeat a static image (direct encoding).
        beta: LIF membrane decay (the paper's lambda).
        **kwargs: Passed to the model class; they override the preset (e.g. ``depth=4``,
            ``patch_size=8``, ``residual="membrane"``, ``time_first=True``,
            ``neuron_kwargs={"surrogate": "sigmoid"}``).

    Returns:
        A :class:`~spikelottery.models.VGG`, :class:`~spikelottery.models.SpikingResNet` or
        :class:`~spikelottery.models.Spikformer`.

    Raises:
        ValueError: Unknown ``name`` (the message lists the valid names) or a bad argument.
        TypeError: An argument the model class does not take (the message lists those it does).

    >>> import torch
    >>> net = create_model("vgg_tiny", in_channels=1, img_size=8, timesteps=2)
    >>> net(torch.rand(5, 1, 8, 8)).shape
    torch.Size([5, 10])
    """
    key, preset = _preset(name)
    accepted = inspect.signature(preset.builder).parameters
    unknown = sorted(k for k in kwargs if k not in accepted)
    if unknown:
        valid = sorted(k for k in accepted if k not in _SET_BY_CREATE_MODEL)
        raise TypeError(
            f"create_model({key!r}): unknown argument(s) {', '.join(map(repr, unknown))} of "
            f"{getattr(preset.builder, '__name__', key)}; valid ones: {', '.join(valid)}"
        )
    options = {**preset.kwargs, **kwargs}
    return preset.builder(
        spiking=spiking,
        num_classes=num_classes,
        in_channels=in_channels,
        img_size=img_size,
        timesteps=timesteps,
        beta=beta,
        **options,
    )
