"""Data sets by name (:data:`DATASETS`), with the input shape a model needs; register your own.

A data set is a :class:`DatasetSpec`: a builder ``build(root, split, **kwargs)`` and what a
run needs to know without loading it (classes, channels, side, event frames or images,
files or embedded, whether it downloads or augments). The library registers its own with
:func:`register_dataset`, as a user does from outside the package:

>>> import torch
>>> from torch.utils.data import TensorDataset
>>> @register_dataset("blobs", num_classes=2, in_channels=1, img_size=8, needs_root=False)
... def blobs(root, split, *, resolution=8):
...     x = torch.rand(16, 1, resolution, resolution)
...     return TensorDataset(x, (x.mean((1, 2, 3)) > 0.5).long())
>>> len(get_dataset("blobs", split="test")), dataset_info("blobs").input_shape
(16, (1, 8, 8))
>>> _ = DATASETS.unregister("blobs")
>>> dataset_info("digits_dvs", timesteps=4, resolution=16).input_shape
(4, 2, 16, 16)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from ..registry import Registry
from ._checks import check_int, check_split
from .digits import DigitsDataset
from .dvs_sim import DigitsDVSDataset
from .neuromorphic import CIFAR10DVS, DVS128Gesture
from .vision import cifar10, cifar100

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "DatasetSpec",
    "dataset_info",
    "dataset_spec",
    "get_dataset",
    "register_dataset",
    "register_dataset_variant",
]


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a data set's samples.

    Attributes:
        name: Registry name.
        num_classes: Number of labels.
        in_channels: Channels of one image or frame (2 for event data: OFF, ON).
        img_size: Side of the square image or frame.
        is_event: ``True`` when a sample is ``[T, C, H, W]`` frames, ``False`` for ``[C, H, W]``.
        timesteps: ``T`` of event data, ``None`` for static images.
        needs_root: Whether the files must be supplied in a local ``root``.
    """

    name: str
    num_classes: int
    in_channels: int
    img_size: int
    is_event: bool
    timesteps: int | None = None
    needs_root: bool = True

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample: ``(T, C, H, W)`` for event data, else ``(C, H, W)``."""
        chw = (self.in_channels, self.img_size, self.img_size)
        return (self.timesteps, *chw) if self.is_event and self.timesteps else chw


@dataclass(frozen=True)
class DatasetSpec:
    """A registered data set: its builder and what a run knows about it before loading.

    Attributes:
        build: ``build(root, split, **kwargs) -> Dataset``; ``root`` is ``None`` for an
            embedded set, ``split`` is ``"train"`` or ``"test"``. It receives
            ``resolution`` (unless ``fixed_resolution``), ``timesteps`` (event data),
            ``download`` (if ``downloadable``), ``augment`` (if ``augmentable``) and the
            caller's keywords.
        num_classes: Number of labels.
        in_channels: Channels of one image or frame.
        img_size: Default side of the square image or frame.
        is_event: Samples are ``[T, C, H, W]`` event frames.
        timesteps: Default ``T`` of event data.
        needs_root: Whether the files must be supplied in a local ``root``.
        fixed_resolution: The images come at ``img_size`` only (CIFAR: resize with a
            transform instead).
        downloadable: ``download=True`` fetches the files (``TrainConfig.download``).
        augmentable: The builder takes ``augment=True`` (``TrainConfig.augment``).
        channel_choices: The ``channels`` a user may choose (``(1, 3)`` for digits).
        split_sizes: Training and test samples of the default split, if known.
        base: The data set this one varies (a harder variant), or ``None``.
        base_kwargs: The builder keywords that make the variant.
        description: One line for ``spikelottery datasets``.
    """

    build: Callable[..., Dataset]
    num_classes: int
    in_channels: int
    img_size: int
    is_event: bool = False
    timesteps: int | None = None
    needs_root: bool = True
    fixed_resolution: bool = False
    downloadable: bool = False
    augmentable: bool = False
    channel_choices: tuple[int, ...] = ()
    split_sizes: tuple[int, int] | None = None
    base: str | None = None
    base_kwargs: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""


def _dataset_key(name: str) -> str:
    return name.strip().lower().replace("-", "_")


#: Every data set by name (case and ``-``/``_`` are ignored), in registration order:
#: iterating gives the names (a :class:`~spikelottery.registry.Registry` of
#: :class:`DatasetSpec`).
DATASETS: Registry[DatasetSpec] = Registry("dataset", normalize=_dataset_key)


def register_dataset(
    name: str,
    build: Callable[..., Dataset] | None = None,
    *,
    overwrite: bool = False,
    **spec: Any,
) -> Any:
    """Register a data set builder as ``name``; without ``build``, a decorator.

    Args:
        name: The name of :func:`get_dataset` and ``spikelottery run --dataset``.
        build: ``build(root, split, **kwargs) -> Dataset`` (see :class:`DatasetSpec`).
        overwrite: Replace a data set of the same name (otherwise an error).
        **spec: The other :class:`DatasetSpec` fields (``num_classes``, ``in_channels``,
            ``img_size`` are required).

    Returns:
        ``build`` unchanged.
    """

    def add(fn: Callable[..., Dataset]) -> Callable[..., Dataset]:
        DATASETS.register(name, DatasetSpec(fn, **spec), overwrite=overwrite)
        return fn

    return add if build is None else add(build)


def register_dataset_variant(
    name: str,
    base: str,
    *,
    split_sizes: tuple[int, int] | None = None,
    overwrite: bool = False,
    **kwargs: Any,
) -> DatasetSpec:
    """Register ``name`` as ``base`` built with ``kwargs`` (a harder variant, deterministic).

    >>> dataset_spec("digits_noisy").base_kwargs
    {'noise': 0.35}
    """
    parent = DATASETS[base]
    variant = dataclasses.replace(
        parent,
        base=DATASETS.resolve(base),
        base_kwargs={**parent.base_kwargs, **kwargs},
        split_sizes=split_sizes or parent.split_sizes,
    )
    return DATASETS.register(name, variant, overwrite=overwrite)


def dataset_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``name``.

    Raises:
        ~spikelottery.registry.UnknownNameError: Naming the valid names.
    """
    return DATASETS[name]


def _digits(root: Path | None, split: str, **kwargs: Any) -> Dataset:
    return DigitsDataset(split, **kwargs)


def _digits_dvs(root: Path | None, split: str, **kwargs: Any) -> Dataset:
    return DigitsDVSDataset(split, **kwargs)


def _cifar(build: Callable[..., Dataset]) -> Callable[..., Dataset]:
    def cifar(root: Path, split: str, **kwargs: Any) -> Dataset:
        return build(root, split == "train", **kwargs)

    return cifar


def _dvs128(root: Path, split: str, **kwargs: Any) -> Dataset:
    return DVS128Gesture(root, split == "train", **kwargs)


def _cifar10_dvs(root: Path, split: str, **kwargs: Any) -> Dataset:
    return CIFAR10DVS(root, split == "train", **kwargs)


_DIGITS_SPLIT = (1438, 359)
register_dataset(
    "digits", _digits, num_classes=10, in_channels=1, img_size=8, needs_root=False,
    channel_choices=(1, 3), split_sizes=_DIGITS_SPLIT,
    description="UCI optical digits, embedded (8x8, upsampled on request)",
)  # fmt: skip
register_dataset(
    "digits_dvs", _digits_dvs, num_classes=10, in_channels=2, img_size=16, is_event=True,
    timesteps=4, needs_root=False, split_sizes=_DIGITS_SPLIT,
    description="the digits seen by a simulated event camera (saccades), embedded",
)  # fmt: skip
for _name, _build, _classes in (("cifar10", cifar10, 10), ("cifar100", cifar100, 100)):
    register_dataset(
        _name, _cifar(_build), num_classes=_classes, in_channels=3, img_size=32,
        fixed_resolution=True, downloadable=True, augmentable=True,
        split_sizes=(50_000, 10_000), description=f"{_name.upper()} from local files",
    )  # fmt: skip
register_dataset(
    "dvs128_gesture", _dvs128, num_classes=11, in_channels=2, img_size=128, is_event=True,
    timesteps=16, split_sizes=(1176, 288), description="DVS128 Gesture from local files",
)  # fmt: skip
register_dataset(
    "cifar10_dvs", _cifar10_dvs, num_classes=10, in_channels=2, img_size=128, is_event=True,
    timesteps=10, split_sizes=(9000, 1000), description="CIFAR10-DVS from local files",
)  # fmt: skip
# The harder variants of the embedded data (spikelottery.data.corrupt): every run sees
# the same images.
register_dataset_variant("digits_noisy", "digits", noise=0.35)
register_dataset_variant("digits_occluded", "digits", occlusion=0.5)
register_dataset_variant("digits_lowcontrast", "digits", contrast=0.25, noise=0.1)
register_dataset_variant("digits_few", "digits", train_fraction=0.1, split_sizes=(143, 359))
register_dataset_variant("digits_dvs_noisy", "digits_dvs", noise_rate=1.0)


def __getattr__(name: str) -> Any:
    if name == "VARIANTS":
        return variants()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def variants() -> dict[str, tuple[str, dict[str, Any]]]:
    """The harder variants: name -> (the data set they vary, its builder keywords).

    >>> variants()["digits_few"]
    ('digits', {'train_fraction': 0.1})
    """
    return {n: (s.base, dict(s.base_kwargs)) for n, s in DATASETS.items() if s.base is not None}


def dataset_info(
    name: str,
    *,
    resolution: int | None = None,
    timesteps: int | None = None,
    channels: int | None = None,
) -> DatasetInfo:
    """Shape metadata of a data set, without loading it.

    Args:
        name: One of :data:`DATASETS` (case and ``-``/``_`` are ignored).
        resolution: Image or frame side, if not the default (8, 16, 32, 32, 128, 128).
        timesteps: ``T`` of an event data set (ignored for static images).
        channels: 1 or 3 for ``"digits"`` (other data sets have fixed channels).

    >>> dataset_info("cifar100").input_shape
    (3, 32, 32)
    """
    key = DATASETS.resolve(name)
    spec = DATASETS[key]
    size, steps, in_channels = spec.img_size, spec.timesteps, spec.in_channels
    if resolution is not None:
        size = check_int("resolution", resolution)
    if spec.is_event and timesteps is not None:
        steps = check_int("timesteps", timesteps)
    if channels is not None:
        if not spec.channel_choices:
            raise ValueError(f"channels can only be chosen for 'digits', not for {key!r}")
        if channels not in spec.channel_choices:
            choices = " or ".join(map(str, spec.channel_choices))
            raise ValueError(f"channels must be {choices}, got {channels!r}")
        in_channels = channels
    return DatasetInfo(
        key, spec.num_classes, in_channels, size, spec.is_event, steps, spec.needs_root
    )


def get_dataset(
    name: str,
    root: str | Path | None = None,
    *,
    split: str = "train",
    timesteps: int | None = None,
    resolution: int | None = None,
    **kwargs: Any,
) -> Dataset:
    """Build a data set by name.

    ``"digits"`` and ``"digits_dvs"`` are embedded (``root`` is ignored), and so are their
    harder variants (``"digits_noisy"``, ``"digits_occluded"``, ``"digits_lowcontrast"``,
    ``"digits_few"``, ``"digits_dvs_noisy"``); the others read local files under ``root``
    (see their classes for the layout). Registered data sets work the same way.

    Args:
        name: One of :data:`DATASETS`: ``"digits"``, ``"digits_dvs"``, ``"cifar10"``,
            ``"cifar100"``, ``"dvs128_gesture"``, ``"cifar10_dvs"``, ...
        root: Folder of the data files (required except for the embedded data sets).
        split: ``"train"`` or ``"test"``.
        timesteps: Frames per sample of an event data set (default: 4, 16, 10); a
            ValueError for static images.
        resolution: Image or frame side (default: the data set's own).
        **kwargs: Passed on to the builder (e.g. ``augment=True``, ``seed=1``).

    >>> ds = get_dataset("digits", split="test", resolution=16)
    >>> tuple(ds[0][0].shape)
    (1, 16, 16)
    """
    key = DATASETS.resolve(name)
    spec = DATASETS[key]
    split = check_split(split)
    if timesteps is not None and not spec.is_event:
        raise ValueError(f"{key!r} holds static images; timesteps applies to event data only")
    if spec.needs_root and root is None:
        embedded = ", ".join(repr(n) for n, s in DATASETS.items() if not s.needs_root)
        raise ValueError(
            f"{key!r} reads local files: pass root= (the folder with the data set; "
            f"only {embedded} are embedded)"
        )
    sized: dict[str, Any] = {}
    if resolution is not None:
        if spec.fixed_resolution and resolution != spec.img_size:
            raise ValueError(
                f"{key!r} images are {spec.img_size}x{spec.img_size}; resize with a transform "
                "instead"
            )
        if not spec.fixed_resolution:
            sized["resolution"] = resolution
    if timesteps is not None:
        sized["timesteps"] = timesteps
    return spec.build(root, split, **sized, **{**spec.base_kwargs, **kwargs})
