"""Data sets by name, with the input shape a model needs, for the CLI and the engine.

>>> info = dataset_info("digits_dvs", timesteps=4, resolution=16)
>>> info.input_shape
(4, 2, 16, 16)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from ._checks import check_int, check_split
from .digits import DigitsDataset
from .dvs_sim import DigitsDVSDataset
from .neuromorphic import CIFAR10DVS, DVS128Gesture
from .vision import cifar10, cifar100

__all__ = ["DATASETS", "VARIANTS", "DatasetInfo", "dataset_info", "get_dataset"]


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


# name -> (num_classes, in_channels, default resolution, is_event, default T, needs root)
_TABLE: dict[str, tuple[int, int, int, bool, int | None, bool]] = {
    "digits": (10, 1, 8, False, None, False),
    "digits_dvs": (10, 2, 16, True, 4, False),
    "cifar10": (10, 3, 32, False, None, True),
    "cifar100": (100, 3, 32, False, None, True),
    "dvs128_gesture": (11, 2, 128, True, 16, True),
    "cifar10_dvs": (10, 2, 128, True, 10, True),
}
#: The harder variants of the embedded data (:mod:`spikelottery.data.corrupt`): name ->
#: (the data set they vary, its constructor arguments). Deterministic: every run sees the
#: same images.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "digits_noisy": ("digits", {"noise": 0.35}),
    "digits_occluded": ("digits", {"occlusion": 0.5}),
    "digits_lowcontrast": ("digits", {"contrast": 0.25, "noise": 0.1}),
    "digits_few": ("digits", {"train_fraction": 0.1}),
    "digits_dvs_noisy": ("digits_dvs", {"noise_rate": 1.0}),
}
for _name, (_base, _) in VARIANTS.items():
    _TABLE[_name] = _TABLE[_base]
DATASETS: tuple[str, ...] = tuple(_TABLE)


def _canonical(name: Any) -> str:
    key = name.strip().lower().replace("-", "_") if isinstance(name, str) else name
    if key not in _TABLE:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    return key


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
    key = _canonical(name)
    num_classes, in_channels, size, is_event, steps, needs_root = _TABLE[key]
    if resolution is not None:
        size = check_int("resolution", resolution)
    if is_event and timesteps is not None:
        steps = check_int("timesteps", timesteps)
    if channels is not None:
        if VARIANTS.get(key, (key,))[0] != "digits":
            raise ValueError(f"channels can only be chosen for 'digits', not for {key!r}")
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels!r}")
        in_channels = channels
    return DatasetInfo(key, num_classes, in_channels, size, is_event, steps, needs_root)


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
    harder variants (:data:`VARIANTS`: ``"digits_noisy"``, ``"digits_occluded"``,
    ``"digits_lowcontrast"``, ``"digits_few"``, ``"digits_dvs_noisy"``); the others read
    local files under ``root`` (see their classes for the layout).

    Args:
        name: One of :data:`DATASETS`: ``"digits"``, ``"digits_dvs"``, ``"cifar10"``,
            ``"cifar100"``, ``"dvs128_gesture"``, ``"cifar10_dvs"``.
        root: Folder of the data files (required except for the embedded data sets).
        split: ``"train"`` or ``"test"``.
        timesteps: Frames per sample of an event data set (default: 4, 16, 10); a
            ValueError for static images.
        resolution: Image or frame side (default: the data set's own).
        **kwargs: Passed on to the constructor (e.g. ``augment=True``, ``seed=1``).

    >>> ds = get_dataset("digits", split="test", resolution=16)
    >>> tuple(ds[0][0].shape)
    (1, 16, 16)
    """
    key = _canonical(name)
    split = check_split(split)
    info = _TABLE[key]
    if timesteps is not None and not info[3]:
        raise ValueError(f"{key!r} holds static images; timesteps applies to event data only")
    if info[5] and root is None:
        raise ValueError(
            f"{key!r} reads local files: pass root= (the folder with the data set; "
            "only 'digits' and 'digits_dvs' are embedded)"
        )
    sized: dict[str, Any] = {}
    if resolution is not None:
        sized["resolution"] = resolution
    if timesteps is not None:
        sized["timesteps"] = timesteps
    train = split == "train"
    if key in VARIANTS:  # a harder variant: its arguments, which explicit ones override
        key, variant = VARIANTS[key]
        kwargs = {**variant, **kwargs}
    if key == "digits":
        return DigitsDataset(split, **sized, **kwargs)
    if key == "digits_dvs":
        return DigitsDVSDataset(split, **sized, **kwargs)
    if key in ("cifar10", "cifar100"):
        if resolution is not None and resolution != 32:
            raise ValueError(f"{key!r} images are 32x32; resize with a transform instead")
        build = cifar10 if key == "cifar10" else cifar100
        return build(root, train, **kwargs)  # type: ignore[arg-type]
    if key == "dvs128_gesture":
        return DVS128Gesture(root, train, **sized, **kwargs)  # type: ignore[arg-type]
    return CIFAR10DVS(root, train, **sized, **kwargs)  # type: ignore[arg-type]
