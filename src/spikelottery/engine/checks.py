"""The checks of :class:`~spikelottery.engine.TrainConfig` settings that name things.

Each takes the setting's name and value and returns the value to store, or raises
:class:`~spikelottery.engine.ConfigError` naming the setting and the valid values.

>>> dataset_name("dataset", "Digits-DVS")
'digits_dvs'
"""

from __future__ import annotations

import re
from typing import Any

import torch

from ..threads import check_threads
from .presets import METHODS
from .settings import ConfigError, text

__all__ = [
    "check_data",
    "dataset_name",
    "device_name",
    "hardware_preset_name",
    "method_name",
    "model_name",
    "regex",
    "search_name",
    "thread_count",
]


def model_name(name: str, value: Any) -> str:
    """A zoo model's name (:func:`~spikelottery.models.list_models`), lower case."""
    from ..models import MODELS

    key = str(text()(name, value))
    if key not in MODELS:
        raise ConfigError(name, MODELS.unknown_message(value))
    return MODELS.resolve(key)


def dataset_name(name: str, value: Any) -> str:
    """A data set's name (:data:`~spikelottery.data.DATASETS`), lower case, ``-`` as ``_``."""
    from ..data import DATASETS

    key = str(text()(name, value))
    if key not in DATASETS:
        raise ConfigError(name, DATASETS.unknown_message(value))
    return DATASETS.resolve(key)


def check_data(dataset: str, resolution: int | None, download: bool) -> None:
    """The settings the data set's spec constrains (:class:`~spikelottery.data.DatasetSpec`):
    a fixed image size (CIFAR's 32x32), and ``download`` for the data sets that download."""
    from ..data import DATASETS

    spec = DATASETS[dataset]
    if spec.fixed_resolution and resolution not in (None, spec.img_size):
        side = spec.img_size
        raise ConfigError(
            "resolution",
            f"{dataset} images are {side}x{side}; got resolution={resolution} "
            f"(leave it out, or {side})",
        )
    if download and not spec.downloadable:
        fetched = [n for n, s in DATASETS.items() if s.downloadable]
        raise ConfigError(
            "download",
            f"download=True fetches {' and '.join(fetched)} only; {dataset!r} "
            + (
                "is embedded: nothing to download"
                if not spec.needs_root
                else "cannot be downloaded automatically: put its files in data_root "
                "(docs/data.md gives the sources and the layout)"
            ),
        )


def method_name(name: str, value: Any) -> str | None:
    """A method preset's name, or ``None``."""
    key = text(optional=True)(name, value)
    if key is None:
        return None
    key = str(key)
    if key not in METHODS:
        raise ConfigError(name, METHODS.unknown_message(value))
    return METHODS.resolve(key)


def search_name(name: str, value: Any) -> str:
    """A registered search method's name (:data:`~spikelottery.engine.methods.SEARCH_METHODS`)."""
    from .methods import SEARCH_METHODS, search_method

    key = str(text()(name, value))
    try:
        search_method(key)
    except KeyError:
        raise ConfigError(name, SEARCH_METHODS.unknown_message(value)) from None
    return SEARCH_METHODS.resolve(key)


def hardware_preset_name(name: str, value: Any) -> str:
    """A registered hardware preset's name (short names such as ``"int8"`` resolve)."""
    from ..energy.hardware import HARDWARE_PRESETS

    key = str(text()(name, value))
    if key not in HARDWARE_PRESETS:
        raise ConfigError(name, HARDWARE_PRESETS.unknown_message(value))
    return HARDWARE_PRESETS.resolve(key)


def device_name(name: str, value: Any) -> str:
    """``"auto"`` or a device torch accepts."""
    value = text()(name, value)
    try:
        if value != "auto":
            torch.device(value)
    except (RuntimeError, ValueError):
        raise ConfigError(
            name, f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {value!r}"
        ) from None
    return str(value)


def thread_count(name: str, value: Any) -> int | str:
    """``"auto"`` or a number of threads (:func:`~spikelottery.threads.check_threads`)."""
    try:
        return check_threads(name, value)
    except ValueError as exc:
        raise ConfigError(name, str(exc)) from None


def regex(name: str, value: Any) -> str | None:
    """A valid regular expression, or ``None``."""
    pattern = text(optional=True)(name, value)
    if pattern is not None:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ConfigError(
                name, f"{name}={pattern!r} is not a valid regular expression: {exc}"
            ) from None
    return pattern
