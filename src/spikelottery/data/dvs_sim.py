"""A simulated event camera: DVS events from a still image moved by small saccades.

N-MNIST was recorded by moving a real sensor in three small saccades, a triangle, in
front of still images. This module does the same in software, so the embedded digits
get an event-camera twin (:class:`DigitsDVSDataset`) that needs no download:

1. The image is moved along the triangle ``v0 -> v1 -> v2 -> v0`` in
   ``3 * steps_per_saccade`` small steps; each shift is sub-pixel (bilinear) and the
   border is extended with its edge values, so a uniform image stays uniform.
2. Each pixel sees the log intensity ``L = log(I + log_eps)`` and keeps the level ``R`` at
   which it fired last (``R`` starts at the first view). Whenever ``|L - R|`` reaches
   ``threshold`` it emits one event per threshold crossed: ON (``p = 1``) for an increase,
   OFF (``p = 0``) for a decrease, and ``R`` moves by the crossed amount. Event times are
   interpolated linearly between the two samples of the step, as a real pixel fires when
   the level is crossed.

Events are a structured numpy array with the fields ``t`` (microseconds, ``int64``),
``x`` (column), ``y`` (row) and ``p`` (polarity, 1 = ON, 0 = OFF): :data:`EVENT_DTYPE`,
the layout used by the readers of :mod:`spikelottery.data.neuromorphic` too.
:func:`events_to_frames` integrates them into ``[T, 2, H, W]`` count frames with channel
0 = OFF and channel 1 = ON (SpikingJelly's order).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ._checks import check_fraction, check_int, check_split
from .corrupt import corruption_generator, event_noise
from .digits import DigitsDataset

__all__ = [
    "DEFAULT_SACCADES",
    "EVENT_DTYPE",
    "DigitsDVSDataset",
    "events_to_frames",
    "simulate_saccades",
]

EVENT_DTYPE = np.dtype([("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "i1")])
"""Structured dtype of an event array: time (us), column, row, polarity (1 = ON)."""

DEFAULT_SACCADES: tuple[tuple[float, float], ...] = ((0.0, -0.5), (0.5, 0.5), (-0.5, 0.5))
"""Triangle vertices ``(dx, dy)`` in units of the saccade amplitude, centred near 0."""

SplitBy = Literal["number", "time"]


# --- simulation --------------------------------------------------------------------------


def _shift_along(images: np.ndarray, shift: float, axis: int) -> np.ndarray:
    """Move the content of ``images`` by ``shift`` pixels along ``axis`` (bilinear, edge-extended)."""
    if shift == 0.0:
        return images
    size = images.shape[axis]
    whole = int(np.floor(shift))
    frac = shift - whole
    # out[i] = in[i - shift]: blend the two integer shifts around it.
    base = np.arange(size)
    lo = np.take(images, np.clip(base - whole, 0, size - 1), axis=axis)
    if frac == 0.0:
        return lo
    hi = np.take(images, np.clip(base - whole - 1, 0, size - 1), axis=axis)
    return (1.0 - frac) * lo + frac * hi


def _path(vertices: np.ndarray, steps: int) -> np.ndarray:
    """Positions ``[3 * steps + 1, 2]`` along the closed polygon through ``vertices``."""
    closed = np.concatenate([vertices, vertices[:1]], axis=0)
    frac = np.arange(steps) / steps
    legs = [a + frac[:, None] * (b - a) for a, b in itertools.pairwise(closed)]
    return np.concatenate([*legs, closed[-1:]], axis=0)


def _simulate_batch(
    images: np.ndarray,
    *,
    threshold: float,
    shifts: np.ndarray,
    steps_per_saccade: int,
    saccade_us: int,
    log_eps: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Events of every image in ``images [N, H, W]``.

    Returns ``(sample, events)``: the index of the image each event belongs to and the
    events (:data:`EVENT_DTYPE`), sorted by sample, then time (stable otherwise).
    """
    images = np.asarray(images, dtype=np.float64)
    positions = _path(shifts, steps_per_saccade)
    times = np.round(np.arange(len(positions)) * (saccade_us / steps_per_saccade)).astype(np.int64)

    def view(pos: np.ndarray) -> np.ndarray:
        moved = _shift_along(images, float(pos[0]), axis=2)
        moved = _shift_along(moved, float(pos[1]), axis=1)
        return np.log(moved + log_eps)

    height, width = images.shape[1:]
    # Work on flat views: 1-D gathers are much cheaper than 3-index fancy indexing.
    level_prev = view(positions[0]).ravel()
    initial = level_prev
    # The reference is kept as the initial level plus a whole number of thresholds, so
    # it never drifts; the 1e-9 slack absorbs rounding when |L - R| is exactly a multiple
    # of the threshold (then ON and OFF events of a closed path cancel exactly).
    net = np.zeros(initial.size, np.int64)
    chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for k in range(1, len(positions)):
        level = view(positions[k]).ravel()
        diff = level - (initial + net * threshold)
        count = np.floor(np.abs(diff) / threshold + 1e-9).astype(np.int64)
        where = np.flatnonzero(count)
        if where.size:
            n = count[where]
            sign = np.sign(diff[where]).astype(np.int64)
            ref_before = initial[where] + net[where] * threshold
            net[where] += sign * n
            # One event per crossed level; the m-th lies at ref_before + m * threshold.
            owner = np.repeat(np.arange(where.size), n)
            m = np.arange(owner.size) - (np.cumsum(n) - n)[owner] + 1
            crossing = ref_before[owner] + sign[owner] * m * threshold
            start = level_prev[where][owner]
            change = level[where][owner] - start
            frac = np.divide(crossing - start, change, out=np.ones_like(change), where=change != 0)
            frac = np.clip(frac, 0.0, 1.0)
            # Half-open steps [t_k-1, t_k): the recording lies in [0, duration).
            step = times[k] - times[k - 1]
            t = times[k - 1] + np.minimum(np.floor(frac * step).astype(np.int64), step - 1)
            chunks.append((where[owner], t, (sign[owner] > 0).astype(np.int8)))
        level_prev = level

    if not chunks:
        return np.empty(0, np.int64), np.empty(0, EVENT_DTYPE)
    pixel, t, p = (np.concatenate(parts) for parts in zip(*chunks, strict=True))
    sample, rest = np.divmod(pixel, height * width)
    y, x = np.divmod(rest, width)
    order = np.lexsort((t, sample))  # stable: ties keep generation order
    events = np.empty(order.size, EVENT_DTYPE)
    events["t"], events["x"], events["y"], events["p"] = t[order], x[order], y[order], p[order]
    return sample[order], events


def _check_sim_args(
    threshold: float, shifts: Any, steps_per_saccade: int, saccade_us: int, log_eps: float
) -> np.ndarray:
    if not (isinstance(threshold, (int, float)) and np.isfinite(threshold) and threshold > 0):
        raise ValueError(f"threshold must be a positive log-intensity step, got {threshold!r}")
    if not (isinstance(log_eps, (int, float)) and np.isfinite(log_eps) and log_eps > 0):
        raise ValueError(f"log_eps must be positive (log(I + log_eps) must exist), got {log_eps!r}")
    check_int("steps_per_saccade", steps_per_saccade)
    check_int("saccade_us", saccade_us)
    vertices = np.asarray(shifts, dtype=np.float64)
    if vertices.ndim != 2 or vertices.shape[1] != 2 or vertices.shape[0] < 2:
        raise ValueError(
            f"shifts must be a sequence of at least two (dx, dy) vertices in pixels, got {shifts!r}"
        )
    if not np.isfinite(vertices).all():
        raise ValueError(f"shifts must be finite, got {shifts!r}")
    return vertices


def simulate_saccades(
    image: np.ndarray | Tensor,
    *,
    threshold: float = 0.25,
    shifts: Sequence[tuple[float, float]] | None = None,
    amplitude: float = 2.0,
    steps_per_saccade: int = 8,
    saccade_us: int = 100_000,
    log_eps: float = 0.1,
) -> np.ndarray:
    """Events a DVS sensor would emit while making small saccades over a still image.

    Args:
        image: Intensities ``[H, W]``, non-negative (``[0, 1]`` typical).
        threshold: Contrast threshold, in log-intensity units.
        shifts: Vertices ``(dx, dy)`` of the closed path, in pixels; the image moves
            ``v0 -> v1 -> ... -> v0``, one saccade per edge. ``None`` uses
            :data:`DEFAULT_SACCADES` times ``amplitude`` (a triangle, like N-MNIST).
        amplitude: Scale of the default triangle in pixels (ignored when ``shifts`` is set).
        steps_per_saccade: Sub-steps per saccade (the temporal resolution of the simulation).
        saccade_us: Duration of one saccade in microseconds; the recording lasts
            ``len(shifts) * saccade_us``.
        log_eps: Offset in ``log(I + log_eps)`` (keeps black pixels finite).

    Returns:
        A structured array of :data:`EVENT_DTYPE` (fields ``t, x, y, p``) sorted by time.

    >>> img = np.zeros((8, 8)); img[:, 4:] = 1.0
    >>> ev = simulate_saccades(img)
    >>> sorted(set(ev["p"].tolist())), bool((ev["t"] < 300_000).all())
    ([0, 1], True)
    """
    if isinstance(image, Tensor):
        image = image.detach().cpu().numpy()
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise ValueError(f"image must be 2-D [H, W], got shape {image.shape}")
    if not np.isfinite(image).all() or (image < 0).any():
        raise ValueError("image must hold finite, non-negative intensities")
    path = np.asarray(DEFAULT_SACCADES) * float(amplitude) if shifts is None else shifts
    vertices = _check_sim_args(threshold, path, steps_per_saccade, saccade_us, log_eps)
    _, events = _simulate_batch(
        image[None],
        threshold=float(threshold),
        shifts=vertices,
        steps_per_saccade=steps_per_saccade,
        saccade_us=saccade_us,
        log_eps=float(log_eps),
    )
    return events


# --- frames ------------------------------------------------------------------------------


def _check_events(events: Any) -> np.ndarray:
    if not isinstance(events, np.ndarray) or events.dtype.names is None:
        raise TypeError(
            "events must be a structured numpy array with fields t, x, y, p "
            f"(spikelottery.data.EVENT_DTYPE), got {type(events).__name__}"
        )
    missing = [f for f in ("t", "x", "y", "p") if f not in events.dtype.names]
    if missing:
        raise TypeError(f"events lack the field(s) {missing}; expected t, x, y, p")
    return events


def _frame_bins(t: np.ndarray, num_frames: int, split_by: str, duration: int | None) -> np.ndarray:
    """Frame index of each event (``t`` sorted for ``"number"``)."""
    n = t.size
    if split_by == "number":
        # SpikingJelly's rule: N // T events per frame, the last frame takes the rest
        # (all of them when N < T).
        per = n // num_frames
        if per == 0:
            return np.full(n, num_frames - 1, np.int64)
        return np.minimum(np.arange(n) // per, num_frames - 1)
    if duration is not None:
        return np.clip(t * num_frames // duration, 0, num_frames - 1)
    if n == 0:
        return np.empty(0, np.int64)
    # SpikingJelly's rule: width (t_last - t_first) // T, the last frame takes the rest.
    width = max((int(t[-1]) - int(t[0])) // num_frames, 1)
    return np.minimum((t - t[0]) // width, num_frames - 1)


def events_to_frames(
    events: np.ndarray,
    num_frames: int,
    height: int,
    width: int,
    *,
    split_by: SplitBy = "number",
    duration: int | None = None,
) -> Tensor:
    """Integrate events into ``num_frames`` two-channel count frames.

    Channel 0 counts OFF events (``p == 0``), channel 1 ON events (``p != 0``), the order
    SpikingJelly uses. ``split_by="number"`` gives every frame ``N // T`` events (the last
    frame takes the remainder; SpikingJelly's default); ``"time"`` cuts equal time windows,
    over ``[0, duration)`` when ``duration`` is given, else over the recording's first to
    last timestamp. Events are sorted by time first if needed. The frames sum to the
    number of events that fall inside ``height x width``; events outside are a ValueError.

    Args:
        events: Structured array with fields ``t, x, y, p`` (:data:`EVENT_DTYPE`).
        num_frames: ``T``.
        height: Frame height ``H`` (rows, ``y``).
        width: Frame width ``W`` (columns, ``x``).
        split_by: ``"number"`` (equal event counts) or ``"time"`` (equal durations).
        duration: Recording length in the unit of ``t``, for ``split_by="time"``.

    Returns:
        ``float32`` tensor ``[T, 2, H, W]``.

    >>> ev = np.zeros(3, EVENT_DTYPE); ev["t"] = [0, 5, 9]; ev["x"] = [0, 1, 1]; ev["p"] = [1, 0, 1]
    >>> events_to_frames(ev, 2, 1, 2).sum(dim=(1, 2, 3)).tolist()
    [1.0, 2.0]
    """
    events = _check_events(events)
    num_frames = check_int("num_frames", num_frames)
    height = check_int("height", height)
    width = check_int("width", width)
    if split_by not in ("number", "time"):
        raise ValueError(f"split_by must be 'number' or 'time', got split_by={split_by!r}")
    if duration is not None:
        duration = check_int("duration", duration)
    t = events["t"].astype(np.int64)
    if t.size and (np.diff(t) < 0).any():
        order = np.argsort(t, kind="stable")
        events, t = events[order], t[order]
    x = events["x"].astype(np.int64)
    y = events["y"].astype(np.int64)
    if x.size and (x.min() < 0 or x.max() >= width or y.min() < 0 or y.max() >= height):
        raise ValueError(
            f"events lie outside the {height}x{width} frame (x in [{x.min()}, {x.max()}], "
            f"y in [{y.min()}, {y.max()}]); pass the sensor size as height/width"
        )
    bins = _frame_bins(t, num_frames, split_by, duration)
    on = (events["p"] != 0).astype(np.int64)
    flat = ((bins * 2 + on) * height + y) * width + x
    counts = np.bincount(flat, minlength=num_frames * 2 * height * width)
    return torch.from_numpy(counts.astype(np.float32)).view(num_frames, 2, height, width)


# --- dataset -----------------------------------------------------------------------------


def _simulated_frames(
    split: str,
    resolution: int,
    timesteps: int,
    test_fraction: float,
    seed: int,
    threshold: float,
    amplitude: float,
    steps_per_saccade: int,
    log_eps: float,
) -> tuple[Tensor, Tensor]:
    base = DigitsDataset(
        split, resolution=resolution, channels=1, test_fraction=test_fraction, seed=seed
    )
    images = base.images[:, 0].double().numpy()
    saccade_us = 100_000
    vertices = np.asarray(DEFAULT_SACCADES) * amplitude
    sample, events = _simulate_batch(
        images,
        threshold=threshold,
        shifts=vertices,
        steps_per_saccade=steps_per_saccade,
        saccade_us=saccade_us,
        log_eps=log_eps,
    )
    n, h, w = images.shape
    duration = len(vertices) * saccade_us
    bins = _frame_bins(events["t"], timesteps, "time", duration)
    on = events["p"].astype(np.int64)
    flat = (((sample * timesteps + bins) * 2 + on) * h + events["y"]) * w + events["x"]
    counts = np.bincount(flat, minlength=n * timesteps * 2 * h * w)
    frames = torch.from_numpy(counts.astype(np.float32)).view(n, timesteps, 2, h, w)
    return frames, base.labels


class DigitsDVSDataset(Dataset):
    """The embedded digits as event-camera recordings: ``([T, 2, H, W] frames, label)``.

    Each digit (resized to ``resolution``) is "recorded" by :func:`simulate_saccades`
    (three saccades, 300 ms in all) and its events are integrated into ``timesteps``
    equal-time frames of event counts (channel 0 = OFF, channel 1 = ON). Everything is
    computed once at construction, vectorised over the whole split, and kept in memory
    (``.frames`` ``[N, T, 2, H, W]``, ``.labels`` ``[N]``). The split is the one of
    :class:`DigitsDataset` with the same ``test_fraction`` and ``seed``; the simulation
    has no randomness, so the data are the same on every machine.

    Args:
        split: ``"train"`` or ``"test"``.
        timesteps: Number of frames ``T``.
        resolution: Side of the square frames in pixels.
        test_fraction: Fraction of each class in the test split.
        seed: Seed of the stratified split.
        threshold: Contrast threshold of the simulated sensor (log units).
        amplitude: Size of the saccade triangle in pixels; ``None`` = ``resolution / 8``
            (one pixel of the original 8x8 digit).
        steps_per_saccade: Simulation sub-steps per saccade.
        log_eps: Offset in ``log(I + log_eps)``.
        transform: Optional callable applied to each ``[T, 2, H, W]`` frame tensor.
        noise_rate: Harder variant: background-activity events, a Poisson count of this
            mean per pixel, polarity and frame (the sensor noise of a real camera; the
            recordings themselves hold about 0.56 events per pixel, polarity and frame
            at the defaults). Drawn per split and ``seed`` only
            (:func:`spikelottery.data.corrupt.event_noise`).

    >>> ds = DigitsDVSDataset("test", timesteps=4, resolution=16)
    >>> frames, label = ds[0]
    >>> tuple(frames.shape), ds.in_channels
    ((4, 2, 16, 16), 2)
    """

    num_classes: int = 10
    in_channels: int = 2
    classes: tuple[str, ...] = DigitsDataset.classes

    def __init__(
        self,
        split: str = "train",
        *,
        timesteps: int = 4,
        resolution: int = 16,
        test_fraction: float = 0.2,
        seed: int = 0,
        threshold: float = 0.25,
        amplitude: float | None = None,
        steps_per_saccade: int = 8,
        log_eps: float = 0.1,
        transform: Callable[[Tensor], Any] | None = None,
        noise_rate: float = 0.0,
    ) -> None:
        self.split = check_split(split)
        self.timesteps = check_int("timesteps", timesteps)
        if (
            isinstance(noise_rate, bool)
            or not isinstance(noise_rate, (int, float))
            or not 0 <= noise_rate < float("inf")
        ):
            raise ValueError(f"noise_rate must be a number >= 0, got noise_rate={noise_rate!r}")
        self.noise_rate = float(noise_rate)
        self.resolution = check_int("resolution", resolution, minimum=2)
        self.test_fraction = check_fraction("test_fraction", test_fraction)
        self.seed = check_int("seed", seed, minimum=0)
        self.amplitude = float(self.resolution / 8 if amplitude is None else amplitude)
        _check_sim_args(threshold, DEFAULT_SACCADES, steps_per_saccade, 100_000, log_eps)
        self.threshold = float(threshold)
        self.steps_per_saccade = int(steps_per_saccade)
        self.log_eps = float(log_eps)
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable or None, got {transform!r}")
        self.transform = transform
        self.frames, self.labels = _simulated_frames(
            self.split,
            self.resolution,
            self.timesteps,
            self.test_fraction,
            self.seed,
            self.threshold,
            self.amplitude,
            self.steps_per_saccade,
            self.log_eps,
        )
        if self.noise_rate > 0:
            draws = corruption_generator("events", self.split, self.seed)
            self.frames = event_noise(self.frames, self.noise_rate, draws)

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __getitem__(self, i: int) -> tuple[Any, int]:
        frames = self.frames[i]
        if self.transform is not None:
            frames = self.transform(frames)
        return frames, int(self.labels[i])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(split={self.split!r}, n={len(self)}, "
            f"timesteps={self.timesteps}, resolution={self.resolution}, "
            f"threshold={self.threshold:g}, amplitude={self.amplitude:g}"
            + (f", noise_rate={self.noise_rate:g}" if self.noise_rate else "")
            + ")"
        )
