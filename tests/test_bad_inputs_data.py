"""Bad inputs to the data readers and their caches: each is refused by name, nothing half-written.

Every case builds the real on-disk format (CIFAR python pickles, AEDAT 3.1 / 2.0
recordings, DVS128 Gesture label files, cached ``.npz`` frames) small in ``tmp_path``,
and checks the exception type, that the message names the file (and row), and that no
file was written or changed.
"""

from __future__ import annotations

import codecs
import os
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from _disk_testing import fill_disk
from spikelottery.data import CIFAR10DVS, DVS128Gesture, cifar10
from spikelottery.errors import SpikeLotteryError

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file's bytes and every folder under ``root``: to prove nothing changed."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


# --- CIFAR: labels and the restricted unpickler ------------------------------------------


def _dump(path: Path, obj: Any) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))


def _make_cifar10(root: Path) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (2, 3072), dtype=np.uint8)
        _dump(folder / name, {"labels": [1, 2], "data": data})
    _dump(folder / "batches.meta", {"label_names": list(CLASSES)})
    return folder


class _Gadget:
    """Pickles as a call of an allowed global (what a crafted file can do)."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args


_DATA = np.zeros((2, 3072), np.uint8)

BAD_LABELS = {
    "float": [3.7, 1],
    "integral-float": [3.0, 1],
    "numpy-float": np.array([3.7, 1.0]),
    "string": ["3", "1"],
    "bool": [True, False],
    "none": [None, 1],
    "2d-array": np.array([[1], [2]]),
    "scalar": 3,
    "text": "12",
}


@pytest.mark.parametrize("labels", BAD_LABELS.values(), ids=BAD_LABELS.keys())
def test_cifar_refuses_non_integer_labels(tmp_path: Path, labels: Any) -> None:
    folder = _make_cifar10(tmp_path)
    _dump(folder / "test_batch", {"data": _DATA, "labels": labels})
    before = _snapshot(tmp_path)
    with pytest.raises(SpikeLotteryError, match=r"test_batch.*'labels'") as err:
        cifar10(tmp_path, train=False)
    assert "re-extract" in str(err.value)
    assert _snapshot(tmp_path) == before


BAD_PICKLES = {
    # _codecs.encode with an unknown codec: LookupError inside the unpickler.
    "lookup-error": _Gadget(codecs.encode, "x", "no-such-codec"),
    # numpy.dtype of nonsense: TypeError.
    "bad-dtype": _Gadget(np.dtype, "no-such-dtype"),
    # numpy.ndarray of 256 TiB: MemoryError before any memory is touched.
    "memory-error": _Gadget(np.ndarray, (2**45,)),
    # A global outside the allow-list.
    "forbidden-global": _Gadget(eval, "1 + 1"),
    # A dict whose 'data' is ragged: numpy cannot make an array of it.
    "ragged-data": {"data": [[1, 2], [3]], "labels": [0, 1]},
}


@pytest.mark.parametrize("payload", BAD_PICKLES.values(), ids=BAD_PICKLES.keys())
def test_cifar_wraps_unpickler_errors_naming_the_file(tmp_path: Path, payload: Any) -> None:
    folder = _make_cifar10(tmp_path)
    _dump(folder / "test_batch", payload)
    before = _snapshot(tmp_path)
    with pytest.raises(SpikeLotteryError, match="test_batch"):
        cifar10(tmp_path, train=False)
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("names", [7, None, {"a": 1}], ids=["int", "none", "dict"])
def test_cifar_meta_without_class_names_is_named(tmp_path: Path, names: Any) -> None:
    folder = _make_cifar10(tmp_path)
    _dump(folder / "batches.meta", {"label_names": names})
    before = _snapshot(tmp_path)
    with pytest.raises(SpikeLotteryError, match=r"batches\.meta.*'label_names'"):
        cifar10(tmp_path, train=False)
    assert _snapshot(tmp_path) == before


# --- AEDAT writers (the real formats) ----------------------------------------------------


def _write_aedat3(path: Path, t: np.ndarray, x: np.ndarray, y: np.ndarray, p: np.ndarray) -> None:
    """AEDAT 3.1: ASCII header, then one polarity packet (28-byte header + 8-byte events)."""
    head = b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n#!END-HEADER\r\n"
    data = (x << 17) | (y << 2) | (p << 1) | 1
    body = np.stack([data, t], axis=1).astype("<u4").tobytes()
    n = int(t.size)
    path.write_bytes(head + struct.pack("<hhiiiiii", 1, 1, 8, 4, 0, n, n, n) + body)


def _write_aedat2(path: Path, t: np.ndarray, x: np.ndarray, y: np.ndarray, p: np.ndarray) -> None:
    """AEDAT 2.0 (jAER DVS128): header lines, then big-endian (address, timestamp) pairs."""
    addr = (y << 8) | (x << 1) | p
    body = np.stack([addr, t], axis=1).astype(">u4").tobytes()
    path.write_bytes(b"#!AER-DAT2.0\r\n# Timestamps tick is 1 us\r\n" + body)


def _events(seed: int, n: int = 120, t1: int = 10_000) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, t1, n))
    return t, rng.integers(0, 128, n), rng.integers(0, 128, n), rng.integers(0, 2, n)


# --- DVS128 Gesture label rows -----------------------------------------------------------


def _make_gesture(root: Path, rows: list[str]) -> Path:
    folder = root / "DvsGesture"
    folder.mkdir(parents=True)
    (folder / "trials_to_train.txt").write_text("user01_lab.aedat\n")
    _write_aedat3(folder / "user01_lab.aedat", *_events(0))
    lines = ["class,startTime_usec,endTime_usec", *rows]
    (folder / "user01_lab_labels.csv").write_text("\n".join(lines) + "\n")
    return folder


BAD_ROWS = {
    "start-after-end": ("5,6000,2000", "startTime_usec=6000 to endTime_usec=2000"),
    "start-equals-end": ("5,3000,3000", "startTime_usec=3000 to endTime_usec=3000"),
    "negative-start": ("5,-10,2000", "startTime_usec=-10"),
    "after-the-recording": ("5,50000,60000", r"no event of user01_lab\.aedat"),
}


@pytest.mark.parametrize(("row", "match"), BAD_ROWS.values(), ids=BAD_ROWS.keys())
def test_dvs128_gesture_refuses_bad_label_rows(tmp_path: Path, row: str, match: str) -> None:
    # The bad row comes after a good one: neither may reach the cache.
    _make_gesture(tmp_path, ["1,0,4000", row])
    before = _snapshot(tmp_path)
    with pytest.raises(SpikeLotteryError, match=rf"user01_lab_labels\.csv, line 3: .*{match}"):
        DVS128Gesture(tmp_path, timesteps=2, resolution=16)
    assert _snapshot(tmp_path) == before  # no cache folder, no half sample


def test_dvs128_gesture_cache_follows_a_changed_label_file(tmp_path: Path) -> None:
    folder = _make_gesture(tmp_path, ["1,0,4000", "2,4000,9000"])
    first = DVS128Gesture(tmp_path, timesteps=2, resolution=16)
    old, old_frames = sorted(first.cache_dir.iterdir()), first[0][0]
    (folder / "user01_lab_labels.csv").write_text(
        "class,startTime_usec,endTime_usec\n1,0,2000\n2,2000,9000\n"
    )
    second = DVS128Gesture(tmp_path, timesteps=2, resolution=16)
    fresh = DVS128Gesture(tmp_path, timesteps=2, resolution=16, cache=False)
    for i in range(len(fresh)):
        assert torch.equal(second[i][0], fresh[i][0])
    assert not torch.equal(old_frames, second[0][0])
    now = sorted(second.cache_dir.iterdir())
    assert len(now) == 2 and not set(now) & set(old)  # stale copies removed


# --- CIFAR10-DVS cache --------------------------------------------------------------------


def _make_cifar10_dvs(root: Path, per_class: int = 2) -> None:
    for k, c in enumerate(CLASSES):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            _write_aedat2(root / c / f"cifar10_{c}_{i}.aedat", *_events(10 * k + i, n=60))


_SMALL = {"timesteps": 2, "resolution": 16, "train": False}


def _tampered(path: Path, **arrays: Any) -> None:
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)


BAD_CACHE = {
    "wrong-shape": ({"frames": np.zeros((2, 2, 8, 8), np.uint16)}, r"shape \[2, 2, 8, 8\]"),
    "extra-time-step": ({"frames": np.zeros((3, 2, 16, 16), np.uint16)}, r"\[3, 2, 16, 16\]"),
    "float-frames": ({"frames": np.zeros((2, 2, 16, 16), np.float32)}, "float32 frames"),
    "signed-frames": ({"frames": -np.ones((2, 2, 16, 16), np.int16)}, "int16 frames"),
    "wrong-label": ({"frames": np.zeros((2, 2, 16, 16), np.uint16), "label": 7}, "label 7"),
    "array-label": (
        {"frames": np.zeros((2, 2, 16, 16), np.uint16), "label": np.array([0, 1])},
        r"label \[0, 1\]",
    ),
    "no-frames": ({"other": np.zeros(3)}, "cannot be read"),
}


@pytest.mark.parametrize(("arrays", "match"), BAD_CACHE.values(), ids=BAD_CACHE.keys())
def test_cifar10_dvs_cache_refuses_a_wrong_sample(tmp_path: Path, arrays: Any, match: str) -> None:
    _make_cifar10_dvs(tmp_path)
    ds = CIFAR10DVS(tmp_path, **_SMALL)
    target = ds._paths[0]
    arrays = {"label": np.int64(ds.targets[0]), **arrays}
    _tampered(target, **arrays)
    before = _snapshot(tmp_path)
    again = CIFAR10DVS(tmp_path, **_SMALL)  # built from the cache: the file name still fits
    with pytest.raises(SpikeLotteryError, match=match) as err:
        again[0]
    assert str(target) in str(err.value) and "rebuild" in str(err.value)
    assert _snapshot(tmp_path) == before


def test_cifar10_dvs_cache_refuses_garbage(tmp_path: Path) -> None:
    _make_cifar10_dvs(tmp_path)
    ds = CIFAR10DVS(tmp_path, **_SMALL)
    ds._paths[1].write_bytes(b"PK\x03\x04 not really a zip")
    before = _snapshot(tmp_path)
    with pytest.raises(SpikeLotteryError, match="cannot be read") as err:
        ds[1]
    assert str(ds._paths[1]) in str(err.value)
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("same_size", [False, True], ids=["new-size", "same-size-new-mtime"])
def test_cifar10_dvs_cache_follows_a_changed_recording(tmp_path: Path, same_size: bool) -> None:
    _make_cifar10_dvs(tmp_path)
    first = CIFAR10DVS(tmp_path, **_SMALL)
    source = first.files[0]
    old_cache, old_frames = first._paths[0], first[0][0]
    stat = source.stat()
    _write_aedat2(source, *_events(999, n=60 if same_size else 90))
    if same_size:
        assert source.stat().st_size == stat.st_size
        os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    second = CIFAR10DVS(tmp_path, **_SMALL)
    fresh = CIFAR10DVS(tmp_path, cache=False, **_SMALL)
    assert torch.equal(second[0][0], fresh[0][0]) and not torch.equal(second[0][0], old_frames)
    assert second._paths[0] != old_cache and not old_cache.exists()  # the stale copy is gone
    assert second._paths[1:] == first._paths[1:]  # the others still come from the cache


def test_cifar10_dvs_cache_on_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _make_cifar10_dvs(tmp_path)
    before = _snapshot(tmp_path)
    fill_disk(monkeypatch, 100)
    with pytest.raises(OSError, match=r"spikelottery_cache.*\.npz.*free some space") as err:
        CIFAR10DVS(tmp_path, **_SMALL)
    assert err.value.errno == 28
    monkeypatch.undo()
    after = _snapshot(tmp_path)
    # Only the (empty) cache folders were made: no half sample, no temporary file.
    assert {k: v for k, v in after.items() if v is not None} == {
        k: v for k, v in before.items() if v is not None
    }
