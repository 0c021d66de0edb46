"""The embedded default data: the UCI optical recognition of handwritten digits.

1797 greyscale images of 8x8 pixels with 17 grey levels (0..16) and ten classes, shipped
inside the package (``_vendor/digits.csv.gz``, 57 KB, CC BY 4.0; attribution:
Alpaydin, E. & Kaynak, C. (1998). Optical Recognition of Handwritten Digits. UCI Machine
Learning Repository. https://doi.org/10.24432/C50P49). Nothing is downloaded, so the
default run and the tests work offline.

The train/test split is stratified and drawn from numpy's ``default_rng(seed)``, whose
PCG64 stream is the same on every machine; torch's generator plays no part.
"""

from __future__ import annotations

import functools
import gzip
import io
import math
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import SpikeLotteryError
from ._checks import check_fraction, check_int, check_split
from .corrupt import add_noise, corruption_generator, fewer_samples, lower_contrast, occlude

__all__ = [
    "DIGITS_ATTRIBUTION",
    "DigitsDataset",
    "load_digits",
    "stratified_split",
]

DIGITS_ATTRIBUTION = (
    "Alpaydin, E. & Kaynak, C. (1998). Optical Recognition of Handwritten Digits. "
    "UCI Machine Learning Repository. https://doi.org/10.24432/C50P49 (CC BY 4.0)"
)
_DIGITS_FILE = "digits.csv.gz"
_NUM_DIGITS = 1797


# --- raw data ----------------------------------------------------------------------------


@functools.cache
def _load_raw() -> tuple[np.ndarray, np.ndarray]:
    ref = resources.files(__package__).joinpath("_vendor", _DIGITS_FILE)
    try:
        payload = ref.read_bytes()
    except FileNotFoundError:
        raise SpikeLotteryError(
            f"the embedded digits file {_DIGITS_FILE} is missing from spikelottery/data/_vendor; "
            "the installation is incomplete: reinstall spikelottery"
        ) from None
    text = gzip.decompress(payload)
    table = np.loadtxt(io.BytesIO(text), delimiter=",", dtype=np.int64)
    if table.shape != (_NUM_DIGITS, 65):
        raise SpikeLotteryError(
            f"the embedded {_DIGITS_FILE} has shape {table.shape}, expected ({_NUM_DIGITS}, 65); "
            "reinstall spikelottery"
        )
    images = table[:, :64].astype(np.uint8).reshape(-1, 8, 8)
    labels = table[:, 64].copy()
    # The cache is shared by every caller: make it read-only so nobody edits it in place.
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 embedded digits as numpy arrays (read once, then cached).

    Returns:
        ``(images, labels)``: read-only ``uint8`` images ``[1797, 8, 8]`` with grey levels
        0..16, and ``int64`` labels ``[1797]`` in 0..9.

    >>> images, labels = load_digits()
    >>> images.shape, int(images.max()), sorted(set(labels.tolist())) == list(range(10))
    ((1797, 8, 8), 16, True)
    """
    return _load_raw()


def stratified_split(
    labels: Sequence[int] | np.ndarray, test_fraction: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A deterministic stratified train/test split of sample indices.

    For each class in increasing order, the indices of that class are permuted by one
    ``numpy.random.default_rng(seed)`` stream and the first ``round(test_fraction * n_c)``
    (at least 1 and at most ``n_c - 1`` when the class has two samples or more) go to the
    test set. The result does not depend on torch's random state, the platform or the
    order of calls.

    Args:
        labels: One integer label per sample.
        test_fraction: Fraction of each class held out, in ``(0, 1)``.
        seed: Seed of the numpy generator.

    Returns:
        ``(train_indices, test_indices)``, each sorted ascending, disjoint, covering all
        samples.

    >>> train, test = stratified_split([0, 0, 0, 0, 1, 1, 1, 1, 1, 1], 0.25)
    >>> len(train), len(test)
    (7, 3)
    """
    test_fraction = check_fraction("test_fraction", test_fraction)
    seed = check_int("seed", seed, minimum=0)
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    rng = np.random.default_rng(seed)
    train_parts, test_parts = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n = idx.size
        n_test = int(np.floor(test_fraction * n + 0.5))
        if n >= 2:
            n_test = min(max(n_test, 1), n - 1)
        else:
            n_test = 0
        perm = idx[rng.permutation(n)]
        test_parts.append(perm[:n_test])
        train_parts.append(perm[n_test:])
    train = np.sort(np.concatenate(train_parts)) if train_parts else np.empty(0, np.int64)
    test = np.sort(np.concatenate(test_parts)) if test_parts else np.empty(0, np.int64)
    return train.astype(np.int64), test.astype(np.int64)


def _digits_split(split: str, test_fraction: float, seed: int) -> np.ndarray:
    _, labels = _load_raw()
    train, test = stratified_split(labels, test_fraction, seed)
    return train if split == "train" else test


def _check_float(
    name: str, value: Any, low: float, high: float, *, low_open: bool = False
) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if (
        ok
        and math.isfinite(value)
        and (value > low if low_open else value >= low)
        and value <= high
    ):
        return float(value)
    bracket = "(" if low_open else "["
    raise ValueError(
        f"{name} must be a number in {bracket}{low:g}, {high:g}], got {name}={value!r}"
    )


def _resize(images: Tensor, resolution: int) -> Tensor:
    """``[N, C, h, w]`` to ``[N, C, resolution, resolution]``, bilinear, clamped to [0, 1]."""
    if images.shape[-1] == resolution and images.shape[-2] == resolution:
        return images
    out = F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False)
    return out.clamp_(0.0, 1.0)


class DigitsDataset(Dataset):
    """The embedded handwritten digits as a torch dataset of ``(image, label)``.

    Images are floats in ``[0, 1]`` (grey level / 16) shaped ``[channels, resolution,
    resolution]``; they are resized once at construction (bilinear,
    ``align_corners=False``) and kept in memory as one tensor (``.images``, ``[N, C, H, W]``;
    ``.labels``, ``[N]``).

    Args:
        split: ``"train"`` or ``"test"``.
        resolution: Side of the square image in pixels (8 is the original).
        channels: 1 (grey) or 3 (the grey image repeated, for RGB models).
        test_fraction: Fraction of each class in the test split.
        seed: Seed of the stratified split (numpy ``default_rng``).
        transform: Optional callable applied to each image tensor on access.
        contrast: Harder variant: pull the images towards mid-grey by this factor in
            ``(0, 1]`` (1: unchanged; see :mod:`spikelottery.data.corrupt`).
        noise: Harder variant: Gaussian noise of this standard deviation (0: none).
        occlusion: Harder variant: one random square of this fraction of the image side
            set to 0 in every image (0: none).
        train_fraction: Harder variant: keep this stratified fraction of the training
            split (the test split is never reduced).

    The variants are applied in the order contrast, noise, occlusion, at the final
    resolution; their random draws depend on the variant, the split and ``seed`` only,
    so every run sees the same images.

    >>> ds = DigitsDataset("test", resolution=16)
    >>> image, label = ds[0]
    >>> tuple(image.shape), len(ds), ds.num_classes
    ((1, 16, 16), 359, 10)
    """

    num_classes: int = 10
    classes: tuple[str, ...] = tuple(str(i) for i in range(10))

    def __init__(
        self,
        split: str = "train",
        *,
        resolution: int = 8,
        channels: int = 1,
        test_fraction: float = 0.2,
        seed: int = 0,
        transform: Callable[[Tensor], Any] | None = None,
        contrast: float = 1.0,
        noise: float = 0.0,
        occlusion: float = 0.0,
        train_fraction: float = 1.0,
    ) -> None:
        self.split = check_split(split)
        self.resolution = check_int("resolution", resolution)
        self.contrast = _check_float("contrast", contrast, 0.0, 1.0, low_open=True)
        self.noise = _check_float("noise", noise, 0.0, 1.0)
        self.occlusion = _check_float("occlusion", occlusion, 0.0, 1.0)
        self.train_fraction = _check_float(
            "train_fraction", train_fraction, 0.0, 1.0, low_open=True
        )
        if channels not in (1, 3) or isinstance(channels, bool):
            raise ValueError(f"channels must be 1 or 3, got channels={channels!r}")
        self.channels = int(channels)
        self.test_fraction = check_fraction("test_fraction", test_fraction)
        self.seed = check_int("seed", seed, minimum=0)
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable or None, got {transform!r}")
        self.transform = transform

        raw_images, raw_labels = _load_raw()
        index = _digits_split(self.split, self.test_fraction, self.seed)
        if self.split == "train" and self.train_fraction < 1.0:
            index = index[fewer_samples(raw_labels[index], self.train_fraction, self.seed)]
        images = torch.from_numpy(raw_images[index].astype(np.float32) / 16.0).unsqueeze(1)
        images = _resize(images, self.resolution)
        images = self._corrupt(images)
        if self.channels == 3:
            images = images.expand(-1, 3, -1, -1)
        self.images: Tensor = images.contiguous()
        self.labels: Tensor = torch.from_numpy(raw_labels[index].copy())
        self.indices: np.ndarray = index  # rows of the embedded file, for provenance

    def _corrupt(self, images: Tensor) -> Tensor:
        if self.contrast < 1.0:
            images = lower_contrast(images, self.contrast)
        if self.noise > 0.0:
            images = add_noise(
                images, self.noise, corruption_generator("noise", self.split, self.seed)
            )
        if self.occlusion > 0.0:
            size = max(1, round(self.occlusion * self.resolution))
            draws = corruption_generator("occlusion", self.split, self.seed)
            images = occlude(images, size, draws)
        return images

    @property
    def variant(self) -> dict[str, float]:
        """The harder-variant settings that differ from the plain digits."""
        plain = {"contrast": 1.0, "noise": 0.0, "occlusion": 0.0, "train_fraction": 1.0}
        return {k: getattr(self, k) for k, v in plain.items() if getattr(self, k) != v}

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __getitem__(self, i: int) -> tuple[Any, int]:
        image = self.images[i]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[i])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(split={self.split!r}, n={len(self)}, "
            f"resolution={self.resolution}, channels={self.channels}, "
            f"test_fraction={self.test_fraction:g}, seed={self.seed}"
            + "".join(f", {k}={v:g}" for k, v in self.variant.items())
            + ")"
        )
