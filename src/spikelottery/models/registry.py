"""The model registry: :func:`create_model` by name, :func:`register_model` for your own.

The zoo registers the paper's models and small variants for CPU runs; a user registers
theirs the same way, from outside the package:

>>> from torch import nn
>>> @register_model("my_mlp", description="a two-layer MLP")
... def my_mlp(*, spiking, num_classes, in_channels, img_size, timesteps, beta, hidden=32):
...     side = img_size if isinstance(img_size, int) else img_size[0]
...     return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * side * side, hidden),
...                          nn.ReLU(), nn.Linear(hidden, num_classes))
>>> create_model("my_mlp", in_channels=1, img_size=8, hidden=16)[1].out_features
16
>>> _ = MODELS.unregister("my_mlp")
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..registry import Registry
from .resnet import SpikingResNet
from .spikformer import Spikformer
from .vgg import VGG, VGG9_CONFIG

__all__ = ["MODELS", "ModelEntry", "create_model", "list_models", "min_img_size", "register_model"]

# Arguments create_model passes itself (shown apart from the model's own options).
_SET_BY_CREATE_MODEL = ("spiking", "num_classes", "in_channels", "img_size", "timesteps", "beta")


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its builder, the arguments the name fixes, and one line about it.

    Attributes:
        builder: A class or function called with ``spiking``, ``num_classes``,
            ``in_channels``, ``img_size``, ``timesteps``, ``beta`` (keywords) and the
            options; may have a ``min_img_size(**options)`` (default: 1).
        kwargs: Options the name fixes (a user's keywords override them).
        description: One line for ``spikelottery models``.
    """

    builder: Callable[..., nn.Module]
    kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""


#: Every model by name (:class:`~spikelottery.registry.Registry` of :class:`ModelEntry`).
MODELS: Registry[ModelEntry] = Registry("model name")


def register_model(
    name: str,
    builder: Callable[..., nn.Module] | None = None,
    *,
    description: str = "",
    overwrite: bool = False,
    **kwargs: Any,
) -> Any:
    """Register a model builder as ``name``; without ``builder``, a decorator.

    Args:
        name: The name of :func:`create_model` and ``spikelottery run --model``.
        builder: A class or function taking the keywords ``spiking``, ``num_classes``,
            ``in_channels``, ``img_size``, ``timesteps`` and ``beta`` (or ``**kwargs``).
        description: One line for ``spikelottery models``.
        overwrite: Replace a model of the same name (otherwise an error).
        **kwargs: Options the name fixes (as ``vgg9`` fixes its layer config).

    Returns:
        ``builder`` (the decorator returns the function unchanged).

    Raises:
        TypeError: The builder does not take the keywords :func:`create_model` passes.
        ~spikelottery.registry.DuplicateNameError: ``name`` is taken and not ``overwrite``.
    """

    def add(obj: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        params = inspect.signature(obj).parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            missing = [k for k in _SET_BY_CREATE_MODEL if k not in params]
            if missing:
                raise TypeError(
                    f"register_model({name!r}): {getattr(obj, '__name__', obj)!r} must take the "
                    f"keyword(s) {', '.join(missing)} (create_model passes them), or **kwargs"
                )
        MODELS.register(name, ModelEntry(obj, dict(kwargs), description), overwrite=overwrite)
        return obj

    return add if builder is None else add(builder)


_BUILTIN: dict[str, ModelEntry] = {
    "vgg9": ModelEntry(
        VGG,
        {"config": VGG9_CONFIG, "hidden": (128,)},
        "VGG-9 (paper): 64C3-64C3-AP2-128C3-128C3-AP2-256C3-256C3-256C3-AP2-FC128-FC10",
    ),
    "vgg_small": ModelEntry(
        VGG,
        {"config": (32, 32, "A", 64, "A"), "hidden": ()},
        "small VGG for 16x16 digits: 32C3-32C3-AP2-64C3-AP2-FC",
    ),
    "vgg_tiny": ModelEntry(
        VGG,
        {"config": (16, "A", 32, "A"), "hidden": ()},
        "tiny VGG for tests and 8x8 digits: 16C3-AP2-32C3-AP2-FC",
    ),
    "resnet19": ModelEntry(
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
    "resnet_tiny": ModelEntry(
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
    "spikformer_tiny": ModelEntry(
        Spikformer,
        {"embed_dim": 192, "depth": 12, "num_heads": 3, "mlp_ratio": 4.0},
        "Spikformer TINY (paper): ConvPEP, 12 blocks, D=192, 3 heads",
    ),
    "spikformer_small": ModelEntry(
        Spikformer,
        {"embed_dim": 384, "depth": 12, "num_heads": 6, "mlp_ratio": 4.0},
        "Spikformer SMALL (paper): ConvPEP, 12 blocks, D=384, 6 heads",
    ),
    "spikformer_mini": ModelEntry(
        Spikformer,
        {"embed_dim": 64, "depth": 4, "num_heads": 4, "mlp_ratio": 4.0},
        "small Spikformer for CPU runs: ConvPEP, 4 blocks, D=64, 4 heads",
    ),
    "spikformer_micro": ModelEntry(
        Spikformer,
        {"embed_dim": 32, "depth": 2, "num_heads": 2, "mlp_ratio": 4.0},
        "micro Spikformer for tests: ConvPEP, 2 blocks, D=32, 2 heads",
    ),
}
for _name, _entry in _BUILTIN.items():
    MODELS.register(_name, _entry)


def list_models() -> list[str]:
    """Names accepted by :func:`create_model` (the zoo's and registered ones), sorted.

    >>> "vgg9" in list_models()
    True
    """
    return MODELS.names(sort=True)


def _preset(name: Any) -> tuple[str, ModelEntry]:
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    key = MODELS.resolve(name)
    return key, MODELS[key]


def min_img_size(name: str, **kwargs: Any) -> int:
    """The smallest ``img_size`` that :func:`create_model` accepts for ``name`` and ``kwargs``.

    A VGG needs 2 pixels per pooling stage, a Spikformer its ``patch_size``; a ResNet
    pools globally and takes any size.

    >>> min_img_size("vgg9"), min_img_size("vgg_tiny"), min_img_size("resnet19")
    (8, 4, 1)
    """
    _, preset = _preset(name)
    builder: Any = preset.builder
    if not hasattr(builder, "min_img_size"):
        return 1
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
        ValueError: Unknown ``name`` (:class:`~spikelottery.registry.UnknownNameError`, which
            lists the valid names) or a bad argument.
        TypeError: An argument the model class does not take (the message lists those it
            does), or a registered builder that returns no ``nn.Module``.

    >>> import torch
    >>> net = create_model("vgg_tiny", in_channels=1, img_size=8, timesteps=2)
    >>> net(torch.rand(5, 1, 8, 8)).shape
    torch.Size([5, 10])
    """
    key, preset = _preset(name)
    accepted = inspect.signature(preset.builder).parameters
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    unknown = [] if open_ended else sorted(k for k in kwargs if k not in accepted)
    if unknown:
        valid = sorted(k for k in accepted if k not in _SET_BY_CREATE_MODEL)
        raise TypeError(
            f"create_model({key!r}): unknown argument(s) {', '.join(map(repr, unknown))} of "
            f"{getattr(preset.builder, '__name__', key)}; valid ones: {', '.join(valid)}"
        )
    options = {**preset.kwargs, **kwargs}
    model = preset.builder(
        spiking=spiking,
        num_classes=num_classes,
        in_channels=in_channels,
        img_size=img_size,
        timesteps=timesteps,
        beta=beta,
        **options,
    )
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"create_model({key!r}): the builder "
            f"{getattr(preset.builder, '__name__', key)!r} returned {type(model).__name__}, "
            "not an nn.Module; a registered model's builder must return the network"
        )
    return model
