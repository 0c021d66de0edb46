"""Harder variants of the embedded data: noise, occlusion, low contrast, fewer samples, sensor noise.

The embedded digits sit near the ceiling of every method (97-99% for the demo), where
methods cannot differ. These pure functions make them harder, deterministically: every
random draw comes from a generator seeded by the variant and the split, never by the
run's seed, so every run (and every machine) sees the same corrupted images, and the
test split of a variant is fixed.

>>> images = torch.full((2, 1, 8, 8), 0.5)
>>> noisy = add_noise(images, 0.1, torch.Generator().manual_seed(0))
>>> noisy.shape, bool(((noisy >= 0) & (noisy <= 1)).all())
(torch.Size([2, 1, 8, 8]), True)
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "add_noise",
    "corruption_generator",
    "event_noise",
    "fewer_samples",
    "lower_contrast",
    "occlude",
]


def corruption_generator(name: str, split: str, seed: int = 0) -> torch.Generator:
    """The generator of one variant's draws: seeded by the variant, the split and ``seed``.

    >>> a = corruption_generator("noise", "test").initial_seed()
    >>> a == corruption_generator("noise", "test").initial_seed()
    True
    """
    key = f"{name}/{split}/{seed}".encode()
    value = int.from_bytes(hashlib.sha256(key).digest()[:8], "little")
    return torch.Generator().manual_seed(value)


def add_noise(images: Tensor, sigma: float, generator: torch.Generator) -> Tensor:
    """Images plus Gaussian noise of standard deviation ``sigma``, clamped to ``[0, 1]``.

    Args:
        images: ``[N, C, H, W]`` in ``[0, 1]``.
        sigma: Noise standard deviation (in units of the image range), ``>= 0``.
        generator: The source of the noise.
    """
    if sigma < 0:
        raise ValueError(f"noise sigma must be >= 0, got {sigma}")
    noise = torch.randn(images.shape, generator=generator, dtype=images.dtype)
    return (images + sigma * noise).clamp_(0.0, 1.0)


def occlude(images: Tensor, size: int, generator: torch.Generator) -> Tensor:
    """Each image with one ``size x size`` square, at a random place, set to 0 (all channels).

    Args:
        images: ``[N, C, H, W]``.
        size: Side of the square in pixels, ``0 <= size <= min(H, W)``.
        generator: The source of the positions.
    """
    n, _, h, w = images.shape
    if not 0 <= size <= min(h, w):
        raise ValueError(f"occlusion size must be in [0, {min(h, w)}], got {size}")
    out = images.clone()
    if size == 0:
        return out
    rows = torch.randint(0, h - size + 1, (n,), generator=generator)
    cols = torch.randint(0, w - size + 1, (n,), generator=generator)
    ys = torch.arange(h).view(1, h, 1)
    xs = torch.arange(w).view(1, 1, w)
    inside = (
        (ys >= rows.view(n, 1, 1))
        & (ys < rows.view(n, 1, 1) + size)
        & (xs >= cols.view(n, 1, 1))
        & (xs < cols.view(n, 1, 1) + size)
    )
    out[inside.unsqueeze(1).expand_as(out)] = 0.0
    return out


def lower_contrast(images: Tensor, factor: float) -> Tensor:
    """``0.5 + factor * (x - 0.5)``: the images pulled towards mid-grey (``0 < factor <= 1``).

    >>> lower_contrast(torch.tensor([0.0, 1.0]), 0.2).tolist()
    [0.4000000059604645, 0.6000000238418579]
    """
    if not 0 < factor <= 1:
        raise ValueError(f"contrast factor must be in (0, 1], got {factor}")
    return 0.5 + factor * (images - 0.5)


def fewer_samples(labels: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Indices of a stratified ``fraction`` of the samples: the same share of every class.

    Each class keeps ``max(1, round(fraction * n_c))`` of its ``n_c`` samples, drawn
    without replacement; the indices come back sorted.

    >>> idx = fewer_samples(np.array([0] * 10 + [1] * 20), 0.1)
    >>> len(idx), int((idx < 10).sum())
    (3, 1)
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"train_fraction must be in (0, 1], got {fraction}")
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        k = max(1, round(fraction * len(members)))
        keep.append(rng.choice(members, size=k, replace=False))
    return np.sort(np.concatenate(keep))


def event_noise(frames: Tensor, rate: float, generator: torch.Generator) -> Tensor:
    """Frames plus background-activity events: Poisson counts of mean ``rate`` per pixel,
    polarity and frame, the sensor noise of a real event camera.

    Args:
        frames: ``[N, T, 2, H, W]`` event counts.
        rate: Mean noise events per pixel, polarity and frame, ``>= 0``.
        generator: The source of the noise.
    """
    if rate < 0:
        raise ValueError(f"event noise rate must be >= 0, got {rate}")
    if rate == 0:
        return frames.clone()
    lam = torch.full(frames.shape, float(rate), dtype=torch.float64)
    return frames + torch.poisson(lam, generator=generator).to(frames.dtype)
