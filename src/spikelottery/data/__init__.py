"""Data sets: the embedded digits (and their simulated event-camera twin), CIFAR10/100,
DVS128 Gesture and CIFAR10-DVS from local files, and a registry by name."""

from __future__ import annotations

from typing import Any

from .aedat import read_aedat2, read_aedat3
from .digits import DIGITS_ATTRIBUTION, DigitsDataset, load_digits, stratified_split
from .dvs_sim import (
    DEFAULT_SACCADES,
    EVENT_DTYPE,
    DigitsDVSDataset,
    events_to_frames,
    simulate_saccades,
)
from .neuromorphic import (
    CIFAR10DVS,
    CIFAR10DVS_CLASSES,
    DVS128GESTURE_CLASSES,
    DVS128Gesture,
)
from .registry import (
    DATASETS,
    DatasetInfo,
    DatasetSpec,
    dataset_info,
    dataset_spec,
    get_dataset,
    register_dataset,
    register_dataset_variant,
    variants,
)
from .vision import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    CIFARDataset,
    cifar10,
    cifar100,
    cifar_transform,
)

__all__ = [
    "CIFAR10DVS",
    "CIFAR10DVS_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "DATASETS",
    "DEFAULT_SACCADES",
    "DIGITS_ATTRIBUTION",
    "DVS128GESTURE_CLASSES",
    "EVENT_DTYPE",
    "VARIANTS",
    "CIFARDataset",
    "DVS128Gesture",
    "DatasetInfo",
    "DatasetSpec",
    "DigitsDVSDataset",
    "DigitsDataset",
    "cifar10",
    "cifar100",
    "cifar_transform",
    "dataset_info",
    "dataset_spec",
    "events_to_frames",
    "get_dataset",
    "load_digits",
    "read_aedat2",
    "read_aedat3",
    "register_dataset",
    "register_dataset_variant",
    "simulate_saccades",
    "stratified_split",
    "variants",
]


def __getattr__(name: str) -> Any:
    # VARIANTS is computed from the registry, so that registered variants appear.
    if name == "VARIANTS":
        return variants()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
