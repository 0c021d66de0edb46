"""DVS128 Gesture and CIFAR10-DVS, read from their original files in a local folder.

Both data sets were recorded with a 128x128 DVS128 sensor; neither can be downloaded
by code (DVS128 Gesture needs a licence click-through; CIFAR10-DVS is ten zip files on
figshare), so the loaders only read what the user has put under ``root``.

The files are read by :func:`~spikelottery.data.read_aedat3` (AEDAT 3.1, DVS128 Gesture)
and :func:`~spikelottery.data.read_aedat2` (AEDAT 2.0, CIFAR10-DVS); ``spikelottery.data.aedat``
describes both formats.

Frames integrate each sample's events into ``T`` bins of equal event counts by default
(``split_by="number"``, SpikingJelly's default; ``"time"`` gives equal durations) with
channel 0 = OFF and channel 1 = ON. A ``resolution`` below 128 bins the events into the
coarser grid (``x * resolution // 128``): sum pooling that keeps every event, with
windows of 2 or 3 pixels for 48. Processed frames are cached under
``root/spikelottery_cache/`` (one compressed ``.npz`` per sample, written to a temporary
file and renamed, so an interrupted run leaves no half-written file); delete that folder
to rebuild it. A cached sample's name carries a fingerprint of its source files (their
size, modification time, inode and change time), so a changed recording or label file is
read again, even one whose old size and modification time were put back, and a cached
sample of the wrong shape or dtype is refused by name. Copying or restoring the source
files (new inodes and change times) rebuilds the cache once.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .._io import atomic_open
from ..errors import SpikeLotteryError
from ._checks import check_fraction, check_int
from .aedat import read_aedat2, read_aedat3
from .digits import stratified_split
from .dvs_sim import SplitBy, events_to_frames

__all__ = [
    "CIFAR10DVS",
    "CIFAR10DVS_CLASSES",
    "DVS128GESTURE_CLASSES",
    "DVS128Gesture",
]

SENSOR_SIZE = 128
CACHE_FOLDER = "spikelottery_cache"
# v2: sample names carry a fingerprint of their source files.
_CACHE_VERSION = "v2"
_CACHE_DTYPES = (np.dtype(np.uint16), np.dtype(np.uint32))

DVS128GESTURE_CLASSES: tuple[str, ...] = (
    "hand clapping",
    "right hand wave",
    "left hand wave",
    "right arm clockwise",
    "right arm counter-clockwise",
    "left arm clockwise",
    "left arm counter-clockwise",
    "arm roll",
    "air drums",
    "air guitar",
    "other gestures",
)
CIFAR10DVS_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

_GESTURE_SOURCE = (
    "DvsGesture.tar.gz from IBM "
    "(https://ibm.ent.box.com/s/3hiq58ww1pbbjrinh367ykfdf60xsfm8/folder/50167556794); "
    "extract it into root so that root/DvsGesture/trials_to_train.txt exists"
)
_CIFAR10DVS_SOURCE = (
    "the ten class zips (airplane.zip ... truck.zip) from "
    "https://figshare.com/articles/dataset/CIFAR10-DVS_New/4724671; extract them into root "
    "so that root/airplane/cifar10_airplane_0.aedat exists"
)


# --- readers -----------------------------------------------------------------------------


def _sample_frames(
    events: np.ndarray, timesteps: int, resolution: int, split_by: SplitBy
) -> np.ndarray:
    if resolution != SENSOR_SIZE:
        events = events.copy()
        events["x"] = events["x"].astype(np.int64) * resolution // SENSOR_SIZE
        events["y"] = events["y"].astype(np.int64) * resolution // SENSOR_SIZE
    frames = events_to_frames(events, timesteps, resolution, resolution, split_by=split_by)
    counts = frames.numpy()
    # Counts are whole numbers: store them compactly and exactly.
    dtype = np.uint16 if counts.max(initial=0) < 2**16 else np.uint32
    return counts.astype(dtype)


def _atomic_save(path: Path, frames: np.ndarray, label: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as f:
        np.savez_compressed(f, frames=frames, label=np.int64(label))


def _load_cached(path: Path, shape: tuple[int, ...], label: int) -> np.ndarray:
    """The frames cached at ``path``, checked against the ``shape`` and ``label`` expected.

    Raises:
        SpikeLotteryError: The file cannot be read, or holds frames of another shape or
            dtype, or another label; the message names the file.
    """
    try:
        with np.load(path, allow_pickle=False) as f:
            frames, saved = f["frames"], f["label"]
    except Exception as exc:
        raise SpikeLotteryError(
            f"cached frames {path} cannot be read ({exc}); delete {path.parent} to rebuild"
        ) from exc
    problem = None
    if frames.dtype not in _CACHE_DTYPES or frames.shape != shape:
        problem = (
            f"hold {frames.dtype} frames of shape {list(frames.shape)}, expected uint16 or "
            f"uint32 of shape {list(shape)}"
        )
    elif saved.shape != () or not np.issubdtype(saved.dtype, np.integer) or int(saved) != label:
        problem = f"hold the label {saved.tolist()!r}, expected {label}"
    if problem is not None:
        raise SpikeLotteryError(
            f"cached frames {path} {problem} (the file was replaced or edited); delete it, or "
            f"the folder {path.parent}, to rebuild it from the source files"
        )
    return frames


def _fingerprint(*sources: Path) -> str:
    """12 hex digits that change when any of ``sources`` changes.

    A file's size, modification time, inode and change time (``ctime``): an edit that
    keeps the size and puts the old modification time back (``touch -r``, ``cp -p``,
    ``rsync -t`` of another recording, a rewrite within the file system's timestamp
    granularity) still changes the ``ctime``, which no user call can set, and a file
    replaced by another gets a new inode.
    """
    h = hashlib.sha256()
    for source in sources:
        st = source.stat()
        h.update(
            f"{source.name}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\0{st.st_ctime_ns}\0".encode()
        )
    return h.hexdigest()[:12]


def _natural_key(name: str) -> list[Any]:
    return [int(s) if s.isdigit() else s for s in re.split(r"(\d+)", name)]


class _EventFrames(Dataset):
    """Shared storage and access of ``([T, 2, H, W] frames, label)`` samples."""

    classes: tuple[str, ...] = ()
    in_channels: int = 2
    _cache_name: str = ""
    _split: str = ""
    split_by: SplitBy

    def _init_common(
        self,
        root: str | Path,
        timesteps: int,
        resolution: int,
        split_by: SplitBy,
        cache: bool,
        transform: Callable[[Tensor], Any] | None,
    ) -> None:
        self.root = Path(root).expanduser()
        self.timesteps = check_int("timesteps", timesteps)
        self.resolution = check_int("resolution", resolution)
        if self.resolution > SENSOR_SIZE:
            raise ValueError(
                f"resolution must be <= {SENSOR_SIZE} (the sensor size), got {resolution!r}"
            )
        if split_by not in ("number", "time"):
            raise ValueError(f"split_by must be 'number' or 'time', got split_by={split_by!r}")
        self.split_by = split_by
        self.cache = bool(cache)
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable or None, got {transform!r}")
        self.transform = transform
        self.targets: list[int] = []
        self._paths: list[Path] = []
        self._memory: list[np.ndarray] = []

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def cache_dir(self) -> Path:
        """Folder of this configuration's cached frames."""
        name = (
            f"{self._cache_name}-{_CACHE_VERSION}-T{self.timesteps}-r{self.resolution}"
            f"-{self.split_by}"
        )
        return self.root / CACHE_FOLDER / name

    def _cache_path(self, key: str, source: str) -> Path:
        """Where sample ``key`` made from files of fingerprint ``source`` is cached."""
        return self.cache_dir / f"{key}.{source}.npz"

    def _add(self, key: str, label: int, frames: np.ndarray | None, source: str) -> None:
        """Register a sample; ``frames`` is None when the cache already holds it."""
        self.targets.append(int(label))
        if self.cache:
            path = self._cache_path(key, source)
            if frames is not None:
                _atomic_save(path, frames, label)
                self._remove_stale(path, key)
            self._paths.append(path)
        else:
            assert frames is not None
            self._memory.append(frames)

    def _remove_stale(self, path: Path, key: str) -> None:
        """Delete the copies of sample ``key`` made from earlier versions of its files."""
        stale = re.compile(re.escape(Path(key).name) + r"\.[0-9a-f]{12}\.npz")
        for old in path.parent.iterdir():
            if old != path and stale.fullmatch(old.name):
                with contextlib.suppress(FileNotFoundError):
                    old.unlink()

    def _cached(self, key: str, source: str) -> bool:
        return self.cache and self._cache_path(key, source).is_file()

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        if self.cache:
            shape = (self.timesteps, self.in_channels, self.resolution, self.resolution)
            raw = _load_cached(self._paths[i], shape, self.targets[i])
        else:
            raw = self._memory[i]
        frames: Any = torch.from_numpy(raw.astype(np.float32))
        if self.transform is not None:
            frames = self.transform(frames)
        return frames, self.targets[i]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, split={self._split!r}, "
            f"n={len(self)}, timesteps={self.timesteps}, resolution={self.resolution}, "
            f"split_by={self.split_by!r})"
        )


def _check_root(root: Path, title: str, source: str) -> None:
    if not root.is_dir():
        raise FileNotFoundError(f"{title} root {str(root)!r} does not exist; download {source}")


# --- DVS128 Gesture ----------------------------------------------------------------------


def _read_gesture_labels(path: Path) -> list[tuple[int, int, int, int]]:
    """``(label, start, end, line number)`` per gesture of a ``*_labels.csv`` file."""
    rows = []
    with open(path, newline="") as f:
        for lineno, row in enumerate(csv.reader(f), start=1):
            fields = [c.strip() for c in row if c.strip()]
            if not fields or (lineno == 1 and not fields[0].lstrip("-").isdigit()):
                continue  # blank line or the header "class,startTime_usec,endTime_usec"
            try:
                label, start, end = (int(c) for c in fields)
            except ValueError:
                raise SpikeLotteryError(
                    f"{path}, line {lineno}: expected 'class,startTime_usec,endTime_usec' "
                    f"integers, got {row!r}"
                ) from None
            if not 1 <= label <= len(DVS128GESTURE_CLASSES):
                raise SpikeLotteryError(f"{path}, line {lineno}: class {label} is outside 1..11")
            if start < 0 or end <= start:
                raise SpikeLotteryError(
                    f"{path}, line {lineno}: the gesture runs from startTime_usec={start} to "
                    f"endTime_usec={end}; the start must be >= 0 and before the end (the "
                    "file is damaged: extract it again)"
                )
            rows.append((label - 1, start, end, lineno))
    return rows


def _window(events: np.ndarray, start: int, end: int) -> np.ndarray:
    """Which ``events`` a label row selects: ``start <= t < end``."""
    return (events["t"] >= start) & (events["t"] < end)


def _check_window(
    events: np.ndarray, row: tuple[int, int, int, int], aedat: Path, labels_csv: Path
) -> None:
    """A label row selects at least one event of its recording (else it names the row)."""
    _, start, end, lineno = row
    if not _window(events, start, end).any():
        span = (
            f"spans {events['t'].min()} to {events['t'].max()} us"
            if events.size
            else "holds no events"
        )
        raise SpikeLotteryError(
            f"{labels_csv}, line {lineno}: no event of {aedat.name} lies in [{start}, {end}) us "
            f"(the recording {span}): the label file does not belong to this recording, or "
            "one of them is damaged"
        )


class DVS128Gesture(_EventFrames):
    """DVS128 Gesture (IBM, Amir et al. CVPR 2017): 11 gestures, 29 users, 3 lightings.

    Reads ``root/DvsGesture/`` (also accepted: ``root`` itself or
    ``root/extract/DvsGesture``, SpikingJelly's layout) as extracted from
    ``DvsGesture.tar.gz``: ``trials_to_train.txt`` / ``trials_to_test.txt`` list the
    ``userXX_<lighting>.aedat`` recordings (AEDAT 3.1), and each
    ``userXX_<lighting>_labels.csv`` gives ``class,startTime_usec,endTime_usec`` per
    gesture. Every CSV row is one sample, the events with ``start <= t < end``, labelled
    ``class - 1``; this gives SpikingJelly's 1176 training and 288 test samples.

    Args:
        root: Folder holding ``DvsGesture/``.
        train: Training (users 1-23) or test (users 24-29) trials.
        timesteps: Number of frames ``T`` per sample.
        resolution: Frame side in pixels, ``<= 128`` (e.g. 48 or 64); events are binned.
        split_by: ``"number"`` (equal event counts per frame) or ``"time"``.
        cache: Store processed frames under ``root/spikelottery_cache/`` and read them
            from there next time (``False`` keeps them in memory only).
        transform: Optional callable applied to each ``[T, 2, H, W]`` frame tensor.

    Items are ``(float32 [T, 2, resolution, resolution] event counts, label)``, channel 0
    OFF and channel 1 ON.
    """

    classes = DVS128GESTURE_CLASSES
    _cache_name = "dvs128_gesture"

    def __init__(
        self,
        root: str | Path,
        train: bool = True,
        *,
        timesteps: int = 16,
        resolution: int = 128,
        split_by: SplitBy = "number",
        cache: bool = True,
        transform: Callable[[Tensor], Any] | None = None,
    ) -> None:
        if not isinstance(train, bool):
            raise TypeError(f"train must be a bool, got {train!r}")
        self._init_common(root, timesteps, resolution, split_by, cache, transform)
        self.train = train
        self._split = "train" if train else "test"
        _check_root(self.root, "DVS128 Gesture", _GESTURE_SOURCE)
        folder = self._find_folder()
        trials_file = folder / f"trials_to_{self._split}.txt"
        if not trials_file.is_file():
            raise FileNotFoundError(f"{trials_file} is missing; download {_GESTURE_SOURCE}")
        trials = [ln.strip() for ln in trials_file.read_text().splitlines() if ln.strip()]
        if not trials:
            raise SpikeLotteryError(f"{trials_file} lists no recordings")
        pairs = []
        for name in trials:
            stem = name.removesuffix(".aedat")
            pairs.append((stem, folder / f"{stem}.aedat", folder / f"{stem}_labels.csv"))
        missing = [str(p) for _, a, c in pairs for p in (a, c) if not p.is_file()]
        if missing:
            shown = ", ".join(missing[:4]) + (
                f" and {len(missing) - 4} more" if len(missing) > 4 else ""
            )
            raise FileNotFoundError(
                f"DVS128 Gesture files listed in {trials_file.name} are missing: {shown}; "
                f"download {_GESTURE_SOURCE}"
            )
        for stem, aedat, labels_csv in pairs:
            rows = _read_gesture_labels(labels_csv)
            keys = [f"{stem}_{k}" for k in range(len(rows))]
            source = _fingerprint(aedat, labels_csv)
            events = None
            if not all(self._cached(k, source) for k in keys):
                events = read_aedat3(aedat)
                if events.size and (
                    events["x"].max() >= SENSOR_SIZE or events["y"].max() >= SENSOR_SIZE
                ):
                    raise SpikeLotteryError(
                        f"{aedat}: event coordinates reach ({events['x'].max()}, "
                        f"{events['y'].max()}), outside the 128x128 DVS128 sensor"
                    )
                # Every row is checked before any of this recording's samples is cached.
                for row in rows:
                    _check_window(events, row, aedat, labels_csv)
            for key, (label, start, end, _) in zip(keys, rows, strict=True):
                frames = None
                if events is not None:
                    inside = _window(events, start, end)
                    frames = _sample_frames(
                        events[inside], self.timesteps, self.resolution, self.split_by
                    )
                self._add(key, label, frames, source)

    def _find_folder(self) -> Path:
        candidates = [self.root / "DvsGesture", self.root, self.root / "extract" / "DvsGesture"]
        for folder in candidates:
            if (folder / "trials_to_train.txt").is_file() or (
                folder / "trials_to_test.txt"
            ).is_file():
                return folder
        looked = ", ".join(str(c) for c in candidates)
        raise FileNotFoundError(
            f"no DvsGesture folder (with trials_to_train.txt) found; looked in {looked}; "
            f"download {_GESTURE_SOURCE}"
        )


# --- CIFAR10-DVS -------------------------------------------------------------------------


class CIFAR10DVS(_EventFrames):
    """CIFAR10-DVS (Li et al. 2017): 10000 DVS128 recordings of moving CIFAR-10 images.

    Reads one folder per class (``airplane/`` ... ``truck/``, from the ten figshare zips)
    of AEDAT 2.0 ``.aedat`` files, in ``root`` or ``root/extract`` (SpikingJelly's
    layout). There is no official split: each class is split ``1 - test_fraction`` :
    ``test_fraction`` (9:1 by default) by :func:`~spikelottery.data.stratified_split`
    with ``seed``, over the files sorted by name (numbers in natural order), so the
    split is the same on every machine.

    Args:
        root: Folder holding the class folders.
        train: Training or test part of the split.
        timesteps: Number of frames ``T`` per sample.
        resolution: Frame side in pixels, ``<= 128`` (e.g. 48 or 64); events are binned.
        split_by: ``"number"`` (equal event counts per frame) or ``"time"``.
        test_fraction: Fraction of each class in the test part.
        seed: Seed of the split.
        cache: Store processed frames under ``root/spikelottery_cache/`` (``False``:
            memory only).
        transform: Optional callable applied to each ``[T, 2, H, W]`` frame tensor.

    Items are ``(float32 [T, 2, resolution, resolution] event counts, label)``, channel 0
    OFF and channel 1 ON.
    """

    classes = CIFAR10DVS_CLASSES
    _cache_name = "cifar10_dvs"

    def __init__(
        self,
        root: str | Path,
        train: bool = True,
        *,
        timesteps: int = 10,
        resolution: int = 128,
        split_by: SplitBy = "number",
        test_fraction: float = 0.1,
        seed: int = 0,
        cache: bool = True,
        transform: Callable[[Tensor], Any] | None = None,
    ) -> None:
        if not isinstance(train, bool):
            raise TypeError(f"train must be a bool, got {train!r}")
        self._init_common(root, timesteps, resolution, split_by, cache, transform)
        self.train = train
        self._split = "train" if train else "test"
        self.test_fraction = check_fraction("test_fraction", test_fraction)
        self.seed = check_int("seed", seed, minimum=0)
        _check_root(self.root, "CIFAR10-DVS", _CIFAR10DVS_SOURCE)
        base = self._find_base()
        files: list[tuple[Path, int]] = []
        for label, name in enumerate(self.classes):
            found = sorted(
                (p for p in (base / name).iterdir() if p.suffix.lower() == ".aedat"),
                key=lambda p: _natural_key(p.name),
            )
            if not found:
                raise FileNotFoundError(
                    f"CIFAR10-DVS class folder {base / name} has no .aedat files; "
                    f"download {_CIFAR10DVS_SOURCE}"
                )
            files += [(p, label) for p in found]
        train_idx, test_idx = stratified_split(
            [label for _, label in files], self.test_fraction, self.seed
        )
        self.files: list[Path] = []
        for i in train_idx if train else test_idx:
            path, label = files[i]
            key = f"{self.classes[label]}/{path.stem}"
            source = _fingerprint(path)
            frames = None
            if not self._cached(key, source):
                frames = _sample_frames(
                    read_aedat2(path), self.timesteps, self.resolution, self.split_by
                )
            self._add(key, label, frames, source)
            self.files.append(path)

    def _find_base(self) -> Path:
        for base in (self.root, self.root / "extract"):
            present = [c for c in self.classes if (base / c).is_dir()]
            if present:
                missing = [c for c in self.classes if c not in present]
                if missing:
                    raise FileNotFoundError(
                        f"CIFAR10-DVS class folders missing under {base}: {', '.join(missing)}; "
                        f"download {_CIFAR10DVS_SOURCE}"
                    )
                return base
        raise FileNotFoundError(
            f"no CIFAR10-DVS class folders (airplane/ ... truck/) under {self.root} or "
            f"{self.root / 'extract'}; download {_CIFAR10DVS_SOURCE}"
        )
