"""Tests of spikelottery.data: embedded digits, the DVS simulator, CIFAR and event readers.

The CIFAR, DVS128 Gesture and CIFAR10-DVS tests write tiny files in the real on-disk
formats and compare what we read with torchvision's and SpikingJelly's own readers.
"""

from __future__ import annotations

import codecs
import os
import pickle
import struct
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from _disk_testing import fill_disk
from spikelottery.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR10DVS,
    DATASETS,
    EVENT_DTYPE,
    DigitsDataset,
    DigitsDVSDataset,
    DVS128Gesture,
    cifar10,
    cifar100,
    dataset_info,
    events_to_frames,
    get_dataset,
    load_digits,
    read_aedat2,
    read_aedat3,
    simulate_saccades,
    stratified_split,
)
from spikelottery.errors import SpikeLotteryError

VENDOR = Path(__file__).parents[1] / "src" / "spikelottery" / "data" / "_vendor"
FAST = settings(max_examples=25, deadline=None)


@pytest.fixture(scope="module")
def sj_utils():
    utils = pytest.importorskip("spikingjelly.datasets.utils")
    return utils


# --- embedded digits ---------------------------------------------------------------------


def test_vendored_files_and_attribution():
    data = VENDOR / "digits.csv.gz"
    licence = VENDOR / "LICENSE-digits.txt"
    assert data.stat().st_size == 57523
    assert (
        data.stat().st_size + licence.stat().st_size + (VENDOR / "README.md").stat().st_size
        < 100_000
    )
    text = licence.read_text()
    assert "Alpaydin" in text and "https://doi.org/10.24432/C50P49" in text
    assert "Attribution 4.0 International Public License" in text


def test_load_digits_content():
    images, labels = load_digits()
    assert images.shape == (1797, 8, 8) and images.dtype == np.uint8
    assert images.min() == 0 and images.max() == 16
    assert np.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    with pytest.raises(ValueError):
        images[0, 0, 0] = 1  # the shared cache is read-only


def test_digits_split_is_deterministic_stratified_and_pinned():
    a_train = DigitsDataset("train")
    a_test = DigitsDataset("test")
    b_test = DigitsDataset("test")
    assert torch.equal(a_test.images, b_test.images)
    assert np.array_equal(a_test.indices, b_test.indices)
    both = np.concatenate([a_train.indices, a_test.indices])
    assert np.array_equal(np.sort(both), np.arange(1797))
    # Pinned: the split must not change across machines or numpy releases unnoticed.
    assert a_test.indices[:10].tolist() == [5, 9, 12, 14, 16, 17, 19, 23, 24, 34]
    assert (len(a_train), len(a_test)) == (1438, 359)
    _, labels = load_digits()
    per_class = np.bincount(labels)
    test_counts = np.bincount(a_test.labels.numpy(), minlength=10)
    assert np.all(np.abs(test_counts - 0.2 * per_class) <= 0.5)
    other = DigitsDataset("test", seed=1)
    assert not np.array_equal(other.indices, a_test.indices)


def test_digits_images_values_and_shapes():
    raw, labels = load_digits()
    ds = DigitsDataset("train")
    assert ds.images.shape == (1438, 1, 8, 8)
    assert torch.equal(ds.images[:, 0], torch.from_numpy(raw[ds.indices] / 16.0).float())
    assert torch.equal(ds.labels, torch.from_numpy(labels[ds.indices]))
    for res in (5, 16, 32):
        big = DigitsDataset("test", resolution=res, channels=3)
        image, label = big[3]
        assert image.shape == (3, res, res) and isinstance(label, int)
        assert big.images.min() >= 0 and big.images.max() <= 1
        assert torch.equal(image[0], image[2])
    ds = DigitsDataset("test", transform=lambda x: x * 2)
    assert torch.equal(ds[0][0], DigitsDataset("test").images[0] * 2)
    assert ds.num_classes == 10 and ds.classes[3] == "3"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"split": "val"}, ValueError, "split"),
        ({"resolution": 0}, ValueError, "resolution"),
        ({"resolution": True}, TypeError, "resolution"),
        ({"resolution": 8.0}, TypeError, "resolution"),
        ({"channels": 2}, ValueError, "channels"),
        ({"test_fraction": 0.0}, ValueError, "test_fraction"),
        ({"test_fraction": 1.0}, ValueError, "test_fraction"),
        ({"test_fraction": "0.2"}, TypeError, "test_fraction"),
        ({"seed": -1}, ValueError, "seed"),
        ({"transform": 3}, TypeError, "transform"),
    ],
)
def test_digits_argument_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        DigitsDataset(**kwargs)


@FAST
@given(
    labels=st.lists(st.integers(0, 4), min_size=1, max_size=60),
    fraction=st.floats(0.05, 0.95),
    seed=st.integers(0, 2**32),
)
def test_stratified_split_properties(labels, fraction, seed):
    train, test = stratified_split(labels, fraction, seed)
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(len(labels)))
    labels = np.asarray(labels)
    for c in np.unique(labels):
        n_c = int((labels == c).sum())
        in_test = int((labels[test] == c).sum())
        if n_c >= 2:
            assert 1 <= in_test <= n_c - 1
            # round(fraction * n_c), moved into [1, n_c - 1] when needed
            assert abs(in_test - fraction * n_c) <= 0.5 + 1e-9 or in_test in (1, n_c - 1)
        else:
            assert in_test == 0
    again = stratified_split(labels, fraction, seed)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], test)


def test_stratified_split_errors():
    with pytest.raises(ValueError, match="1-D"):
        stratified_split(np.zeros((2, 2)), 0.5)
    with pytest.raises(ValueError, match="test_fraction"):
        stratified_split([0, 1], 1.5)


# --- DVS simulation ----------------------------------------------------------------------


@FAST
@given(value=st.floats(0.0, 1.0), size=st.integers(2, 12))
def test_constant_image_gives_no_events(value, size):
    events = simulate_saccades(np.full((size, size), value))
    assert events.size == 0 and events.dtype == EVENT_DTYPE


def test_edge_gives_both_polarities_in_time_and_range():
    img = np.zeros((10, 10))
    img[:, 5:] = 1.0
    events = simulate_saccades(img, threshold=0.25, amplitude=2.0)
    assert events.size > 0
    assert set(events["p"].tolist()) == {0, 1}
    assert events["t"].min() >= 0 and events["t"].max() < 300_000
    assert np.all(np.diff(events["t"]) >= 0)
    assert events["x"].min() >= 0 and events["x"].max() < 10
    # A vertical edge moving sideways fires only near the edge and on every row.
    assert set(np.unique(events["x"]).tolist()) <= {3, 4, 5, 6, 7}
    assert set(np.unique(events["y"]).tolist()) == set(range(10))
    # A higher contrast threshold gives fewer events.
    assert simulate_saccades(img, threshold=0.5, amplitude=2.0).size < events.size


@FAST
@given(
    image=st.lists(st.floats(0.0, 1.0), min_size=36, max_size=36),
    threshold=st.floats(0.1, 1.0),
)
def test_closed_saccade_path_balances_on_and_off(image, threshold):
    # The path returns to its start, so each pixel's log intensity does too: the ON and
    # OFF events of every pixel must cancel exactly.
    img = np.asarray(image).reshape(6, 6)
    events = simulate_saccades(img, threshold=threshold, amplitude=1.3)
    net = np.zeros((6, 6), np.int64)
    np.add.at(net, (events["y"], events["x"]), 2 * events["p"].astype(np.int64) - 1)
    assert not net.any()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"threshold": 0.0}, "threshold"),
        ({"log_eps": 0.0}, "log_eps"),
        ({"shifts": [(0.0, 0.0)]}, "shifts"),
        ({"shifts": [(0, 0, 0), (1, 1, 1)]}, "shifts"),
        ({"steps_per_saccade": 0}, "steps_per_saccade"),
    ],
)
def test_simulate_saccades_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        simulate_saccades(np.zeros((4, 4)), **kwargs)


def test_simulate_saccades_image_errors():
    with pytest.raises(ValueError, match="2-D"):
        simulate_saccades(np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="non-negative"):
        simulate_saccades(-np.ones((4, 4)))


def _random_events(rng, n, size=8, t_max=1000):
    events = np.zeros(n, EVENT_DTYPE)
    events["t"] = np.sort(rng.integers(0, t_max, n))
    events["x"] = rng.integers(0, size, n)
    events["y"] = rng.integers(0, size, n)
    events["p"] = rng.integers(0, 2, n)
    return events


@FAST
@given(n=st.integers(0, 200), frames=st.integers(1, 6), seed=st.integers(0, 1000))
def test_frames_sum_equals_event_count(n, frames, seed):
    events = _random_events(np.random.default_rng(seed), n)
    for split_by in ("number", "time"):
        out = events_to_frames(events, frames, 8, 8, split_by=split_by)
        assert out.shape == (frames, 2, 8, 8) and out.dtype == torch.float32
        assert out.sum().item() == n
        assert out[:, 1].sum().item() == int(events["p"].sum())  # channel 1 = ON


@pytest.mark.parametrize(("split_by", "n"), [("number", 500), ("number", 3), ("time", 500)])
def test_frames_match_spikingjelly(sj_utils, split_by, n):
    events = _random_events(np.random.default_rng(0), n, size=16, t_max=10_000)
    ours = events_to_frames(events, 5, 16, 16, split_by=split_by).numpy()
    ref = sj_utils.integrate_events_by_fixed_frames_number(
        {k: events[k].astype(np.int64) for k in "txyp"}, split_by, 5, 16, 16
    )
    np.testing.assert_array_equal(ours, ref)


def test_frames_sort_unsorted_events_and_use_duration():
    events = np.zeros(4, EVENT_DTYPE)
    events["t"] = [90, 10, 50, 95]
    out = events_to_frames(events, 2, 1, 1, split_by="time", duration=100)
    assert out[:, 0, 0, 0].tolist() == [1.0, 3.0]
    out = events_to_frames(events, 2, 1, 1, split_by="number")
    assert out[:, 0, 0, 0].tolist() == [2.0, 2.0]


def test_events_to_frames_errors():
    events = np.zeros(2, EVENT_DTYPE)
    with pytest.raises(TypeError, match="structured"):
        events_to_frames(np.zeros((2, 4)), 2, 4, 4)
    with pytest.raises(TypeError, match="field"):
        events_to_frames(np.zeros(2, [("t", "i8"), ("x", "i2")]), 2, 4, 4)
    with pytest.raises(ValueError, match="split_by"):
        events_to_frames(events, 2, 4, 4, split_by="count")
    with pytest.raises(ValueError, match="num_frames"):
        events_to_frames(events, 0, 4, 4)
    events["x"] = 9
    with pytest.raises(ValueError, match="outside the 4x4 frame"):
        events_to_frames(events, 2, 4, 4)


def test_digits_dvs_dataset_fast_deterministic_and_consistent():
    start = time.perf_counter()
    train = DigitsDVSDataset("train", timesteps=4, resolution=16)
    test = DigitsDVSDataset("test", timesteps=4, resolution=16)
    elapsed = time.perf_counter() - start
    assert elapsed < 10.0, f"building digits_dvs at 16x16 took {elapsed:.1f} s"
    assert train.frames.shape == (1438, 4, 2, 16, 16) and len(test) == 359
    assert torch.equal(test.labels, DigitsDataset("test").labels)
    assert torch.equal(DigitsDVSDataset("test", timesteps=4, resolution=16).frames, test.frames)
    counts = test.frames.sum(dim=(1, 2, 3, 4))
    assert counts.min() > 100  # every digit produces events
    frames, label = test[7]
    assert frames.shape == (4, 2, 16, 16) and isinstance(label, int)
    # The batched dataset path and the pure function agree sample by sample.
    image = DigitsDataset("test", resolution=16).images[7, 0]
    events = simulate_saccades(image, amplitude=2.0, threshold=0.25)
    expected = events_to_frames(events, 4, 16, 16, split_by="time", duration=300_000)
    assert torch.equal(expected, frames)
    assert frames.sum().item() == events.size


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"timesteps": 0}, ValueError),
        ({"resolution": 1}, ValueError),
        ({"split": "all"}, ValueError),
        ({"threshold": -1.0}, ValueError),
        ({"transform": "x"}, TypeError),
    ],
)
def test_digits_dvs_argument_errors(kwargs, error):
    with pytest.raises(error):
        DigitsDVSDataset(**kwargs)


# --- CIFAR -------------------------------------------------------------------------------


def _dump(path: Path, obj, keys_as_bytes=False):
    if keys_as_bytes:
        obj = {k.encode(): v for k, v in obj.items()}
    path.write_bytes(pickle.dumps(obj, protocol=2))


def _make_cifar10(root: Path, rng, per_batch=2, n_test=3, keys_as_bytes=False):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    everything = {}
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        batch = {"batch_label": name, "labels": labels, "data": data, "filenames": ["x.png"] * n}
        _dump(folder / name, batch, keys_as_bytes)
        everything[name] = (data, labels)
    names = [
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
    ]
    _dump(folder / "batches.meta", {"label_names": names, "num_vis": 3072}, keys_as_bytes)
    return everything


@pytest.mark.parametrize("keys_as_bytes", [False, True])
def test_cifar10_reads_real_format(tmp_path, keys_as_bytes):
    written = _make_cifar10(tmp_path, np.random.default_rng(0), keys_as_bytes=keys_as_bytes)
    train = cifar10(tmp_path, train=True)
    test = cifar10(tmp_path, train=False)
    assert (len(train), len(test)) == (10, 3)
    assert train.targets == [v for i in range(1, 6) for v in written[f"data_batch_{i}"][1]]
    assert train.classes[0] == "airplane" and train.class_to_idx["truck"] == 9
    data, labels = written["test_batch"]
    # Channel-major rows: channel c of pixel (r, col) is data[c * 1024 + r * 32 + col].
    assert test.data[1, 4, 7, 2] == data[1, 2 * 1024 + 4 * 32 + 7]
    image, label = test[1]
    assert image.shape == (3, 32, 32) and label == labels[1]
    raw = torch.from_numpy(test.data[1]).permute(2, 0, 1).float() / 255
    mean = torch.tensor(CIFAR10_MEAN)[:, None, None]
    std = torch.tensor(CIFAR10_STD)[:, None, None]
    torch.testing.assert_close(image, (raw - mean) / std)


def test_cifar10_matches_torchvision_reader(tmp_path, monkeypatch):
    tv_cifar = pytest.importorskip("torchvision.datasets.cifar")
    _make_cifar10(tmp_path, np.random.default_rng(1))
    # torchvision md5-checks the official files; our tiny files are in the same format.
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    monkeypatch.setattr(tv_cifar.CIFAR10, "_check_integrity", lambda self: True)
    for train in (True, False):
        ref = tv_cifar.CIFAR10(str(tmp_path), train=train)
        ours = cifar10(tmp_path, train=train)
        assert np.array_equal(ours.data, ref.data)
        assert ours.targets == ref.targets and ours.classes == ref.classes


def test_cifar10_augment_only_for_training(tmp_path):
    _make_cifar10(tmp_path, np.random.default_rng(2))
    torch.manual_seed(0)
    train = cifar10(tmp_path, augment=True)
    views = torch.stack([train[0][0] for _ in range(8)])
    assert views.shape == (8, 3, 32, 32)
    assert not all(torch.equal(views[0], v) for v in views[1:])  # random crops / flips
    test = cifar10(tmp_path, train=False, augment=True)
    assert torch.equal(test[0][0], test[0][0])
    custom = cifar10(tmp_path, transform=lambda img: img.size, target_transform=str)
    assert custom[0][0] == (32, 32) and isinstance(custom[0][1], str)


def test_cifar100_reads_real_format(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for name, n in (("train", 4), ("test", 2)):
        batch = {
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "fine_labels": rng.integers(0, 100, n).tolist(),
            "coarse_labels": rng.integers(0, 20, n).tolist(),
        }
        _dump(folder / name, batch)
    _dump(
        folder / "meta",
        {"fine_label_names": [f"c{i}" for i in range(100)], "coarse_label_names": []},
    )
    ds = cifar100(tmp_path)
    assert len(ds) == 4 and ds.num_classes == 100 and ds[0][0].shape == (3, 32, 32)
    assert len(cifar100(tmp_path, train=False)) == 2


def test_cifar_missing_root_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"does not exist.*cs\.toronto\.edu.*download=True"):
        cifar10(tmp_path / "nope")
    _make_cifar10(tmp_path, np.random.default_rng(4))
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py/data_batch_3"):
        cifar10(tmp_path)
    assert len(cifar10(tmp_path, train=False)) == 3  # the test split does not need it
    with pytest.raises(FileNotFoundError, match="cifar-100-python/train"):
        cifar100(tmp_path)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > should_not_exist",))


def test_cifar_bad_files(tmp_path, monkeypatch):
    _make_cifar10(tmp_path, np.random.default_rng(5))
    folder = tmp_path / "cifar-10-batches-py"
    monkeypatch.chdir(tmp_path)
    (folder / "test_batch").write_bytes(pickle.dumps({"data": _Evil()}, protocol=2))
    with pytest.raises(SpikeLotteryError, match=r"not a CIFAR.*system"):
        cifar10(tmp_path, train=False)
    assert not (tmp_path / "should_not_exist").exists()
    (folder / "test_batch").write_bytes(b"garbage")
    with pytest.raises(SpikeLotteryError, match="test_batch"):
        cifar10(tmp_path, train=False)
    _dump(folder / "test_batch", {"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]})
    with pytest.raises(SpikeLotteryError, match=r"uint8 \[N, 3072\]"):
        cifar10(tmp_path, train=False)
    _dump(folder / "test_batch", {"data": np.zeros((2, 3072), np.uint8), "labels": [0]})
    with pytest.raises(SpikeLotteryError, match="2 images but 1 labels"):
        cifar10(tmp_path, train=False)
    _dump(folder / "test_batch", {"data": np.zeros((1, 3072), np.uint8), "labels": [10]})
    with pytest.raises(SpikeLotteryError, match=r"labels must be in \[0, 10\)"):
        cifar10(tmp_path, train=False)
    _dump(folder / "test_batch", {"data": np.zeros((1, 3072), np.uint8), "fine_labels": [1]})
    with pytest.raises(SpikeLotteryError, match="lacks the key"):
        cifar10(tmp_path, train=False)


def test_cifar_without_torchvision(tmp_path, monkeypatch):
    _make_cifar10(tmp_path, np.random.default_rng(6))
    monkeypatch.setitem(sys.modules, "torchvision", None)
    with pytest.raises(ImportError, match=r'pip install "spikelottery\[vision\]"'):
        cifar10(tmp_path)


# --- AEDAT writers (the real formats) ----------------------------------------------------


def _write_aedat3(path: Path, t, x, y, p, valid=None, packet=50, with_special_packet=True):
    """AEDAT 3.1: ASCII header, then packets of 28-byte header + 8-byte polarity events."""
    t, x, y, p = (np.asarray(a, np.int64) for a in (t, x, y, p))
    valid = np.ones_like(t) if valid is None else np.asarray(valid, np.int64)
    out = [b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n#!END-HEADER\r\n"]
    if with_special_packet:  # a type-0 (special event) packet the reader must skip
        out.append(struct.pack("<hhiiiiii", 0, 1, 8, 4, 0, 1, 1, 1) + bytes(8))
    for s in range(0, t.size, packet):
        sl = slice(s, s + packet)
        overflow = int(t[sl][0] >> 31)
        assert np.all(t[sl] >> 31 == overflow)
        data = (x[sl] << 17) | (y[sl] << 2) | (p[sl] << 1) | valid[sl]
        body = np.stack([data, t[sl] & 0x7FFFFFFF], axis=1).astype("<u4").tobytes()
        n = int(t[sl].size)
        out.append(struct.pack("<hhiiiiii", 1, 1, 8, 4, overflow, n, n, n) + body)
    path.write_bytes(b"".join(out))


def _write_aedat2(path: Path, t, raw_x, raw_y, raw_p, special=None):
    """AEDAT 2.0 (jAER DVS128): header lines, then big-endian (address, timestamp) pairs."""
    addr = (np.asarray(raw_y) << 8) | (np.asarray(raw_x) << 1) | np.asarray(raw_p)
    if special is not None:
        addr = addr | (np.asarray(special) << 15)
    header = (
        b"#!AER-DAT2.0\r\n"
        b"# This is a raw AE data file - do not edit\r\n"
        b"# Data format is int32 address, int32 timestamp (8 bytes total), repeated for each event\r\n"
        b"# Timestamps tick is 1 us\r\n"
    )
    body = np.stack([addr, np.asarray(t)], axis=1).astype(">u4").tobytes()
    path.write_bytes(header + body)


def _events_like(rng, n, t0=0, t1=10_000):
    t = np.sort(rng.integers(t0, t1, n))
    return t, rng.integers(0, 128, n), rng.integers(0, 128, n), rng.integers(0, 2, n)


def test_read_aedat3_matches_spikingjelly(tmp_path, sj_utils):
    t, x, y, p = _events_like(np.random.default_rng(0), 230)
    path = tmp_path / "user01_fluorescent.aedat"
    _write_aedat3(path, t, x, y, p)
    ours = read_aedat3(path)
    ref = sj_utils.load_aedat_v3(path)
    for k in "txyp":
        np.testing.assert_array_equal(ours[k], ref[k])
    np.testing.assert_array_equal(ours["p"], p)  # bit 1 = polarity, 1 = ON


def test_read_aedat3_validity_overflow_and_errors(tmp_path):
    path = tmp_path / "a.aedat"
    _write_aedat3(
        path, [1, 2, 2**31 + 5], [3, 4, 127], [5, 6, 0], [1, 0, 1], valid=[1, 0, 1], packet=2
    )
    ev = read_aedat3(path)
    assert ev["t"].tolist() == [1, 2**31 + 5]  # invalid event dropped, overflow applied
    assert ev["x"].tolist() == [3, 127] and ev["y"].tolist() == [5, 0]
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(SpikeLotteryError, match="past the end"):
        read_aedat3(path)
    _write_aedat2(path, [1], [1], [1], [1])
    with pytest.raises(SpikeLotteryError, match=r"AER-DAT2\.0, not AEDAT 3"):
        read_aedat3(path)
    with pytest.raises(FileNotFoundError):
        read_aedat3(tmp_path / "missing.aedat")


def test_read_aedat2_matches_spikingjelly_and_decodes_polarity(tmp_path, sj_utils):
    cifar10_dvs = pytest.importorskip("spikingjelly.datasets.cifar10_dvs")
    t, x, y, p = _events_like(np.random.default_rng(1), 300)
    path = tmp_path / "cifar10_cat_0.aedat"
    _write_aedat2(path, t, x, y, p)
    ours = read_aedat2(path)
    ref = cifar10_dvs._load_origin_data(path)
    for k in "txyp":
        np.testing.assert_array_equal(ours[k].astype(np.int64), np.asarray(ref[k], np.int64))
    np.testing.assert_array_equal(ours["p"], 1 - p)  # raw bit 0 = 0 is ON (jAER)
    np.testing.assert_array_equal(ours["x"], 127 - y)
    np.testing.assert_array_equal(ours["y"], 127 - x)


def test_read_aedat2_drops_special_events_and_errors(tmp_path):
    path = tmp_path / "a.aedat"
    _write_aedat2(path, [1, 2, 3], [0, 1, 2], [0, 0, 0], [0, 0, 0], special=[0, 1, 0])
    assert read_aedat2(path)["t"].tolist() == [1, 3]
    path.write_bytes(path.read_bytes() + b"\x00\x01")
    with pytest.raises(SpikeLotteryError, match="not a multiple of 8"):
        read_aedat2(path)
    path.write_bytes(b"#!AER-DAT3.1\r\n#!END-HEADER\r\n")
    with pytest.raises(SpikeLotteryError, match="not AEDAT 2.0"):
        read_aedat2(path)
    path.write_bytes(b"#!AER-DAT2.0 no newline")
    with pytest.raises(SpikeLotteryError, match="header never ends"):
        read_aedat2(path)


# --- DVS128 Gesture ----------------------------------------------------------------------


def _make_gesture(root: Path, rng):
    """Two training trials and one test trial, two or three gestures each."""
    folder = root / "DvsGesture"
    folder.mkdir(parents=True)
    (folder / "trials_to_train.txt").write_text("user01_fluorescent.aedat\nuser02_lab.aedat\n\n")
    (folder / "trials_to_test.txt").write_text("user24_led.aedat\n")
    truth = {}
    specs = {
        "user01_fluorescent": [(1, 1000, 4000), (5, 5000, 9000), (11, 9000, 9500)],
        "user02_lab": [(2, 2000, 6000), (2, 6500, 9900)],
        "user24_led": [(8, 100, 5000), (3, 5000, 9000)],
    }
    for stem, rows in specs.items():
        t, x, y, p = _events_like(rng, 400)
        _write_aedat3(folder / f"{stem}.aedat", t, x, y, p, packet=64)
        lines = ["class,startTime_usec,endTime_usec"] + [f"{c},{a},{b}" for c, a, b in rows]
        (folder / f"{stem}_labels.csv").write_text("\n".join(lines) + "\n")
        truth[stem] = (t, x, y, p, rows)
    return folder, truth


def test_dvs128_gesture_samples_labels_and_frames(tmp_path, sj_utils):
    _, truth = _make_gesture(tmp_path, np.random.default_rng(0))
    train = DVS128Gesture(tmp_path, train=True, timesteps=4)
    test = DVS128Gesture(tmp_path, train=False, timesteps=4)
    assert (len(train), len(test)) == (5, 2)
    assert train.targets == [0, 4, 10, 1, 1] and test.targets == [7, 2]
    assert train.num_classes == 11
    t, x, y, p, _ = truth["user01_fluorescent"]
    inside = (t >= 5000) & (t < 9000)
    frames, label = train[1]
    assert frames.shape == (4, 2, 128, 128) and label == 4
    assert frames.sum().item() == inside.sum()
    ref = sj_utils.integrate_events_by_fixed_frames_number(
        {"t": t[inside], "x": x[inside], "y": y[inside], "p": p[inside]}, "number", 4, 128, 128
    )
    np.testing.assert_array_equal(frames.numpy(), ref)
    small = DVS128Gesture(tmp_path, train=True, timesteps=4, resolution=48, cache=False)
    small_frames, _ = small[1]
    assert small_frames.shape == (4, 2, 48, 48)
    assert small_frames.sum().item() == inside.sum()  # binning keeps every event
    torch.testing.assert_close(small_frames.sum(dim=(2, 3)), frames.sum(dim=(2, 3)))


def test_dvs128_gesture_cache_is_used_and_atomic(tmp_path, monkeypatch):
    folder, _ = _make_gesture(tmp_path, np.random.default_rng(1))
    first = DVS128Gesture(tmp_path, timesteps=3, resolution=32)
    cache = first.cache_dir
    assert cache.parent == tmp_path / "spikelottery_cache"
    # Each name carries a fingerprint of the sample's source files.
    names = sorted(p.name for p in cache.iterdir())
    assert [n.split(".")[0] for n in names] == sorted(
        f"{s}_{k}" for s, n in (("user01_fluorescent", 3), ("user02_lab", 2)) for k in range(n)
    )
    # A second build must come from the cache, not the files.
    with monkeypatch.context() as m:
        m.setattr("spikelottery.data.neuromorphic.read_aedat3", lambda path: 1 / 0)
        second = DVS128Gesture(tmp_path, timesteps=3, resolution=32)
    for i in range(len(first)):
        assert torch.equal(first[i][0], second[i][0])
    (folder / "user01_fluorescent.aedat").write_bytes(b"#!AER-DAT3.1\r\n#!END-HEADER\r\n123")
    with pytest.raises(SpikeLotteryError, match="truncated"):
        DVS128Gesture(tmp_path, timesteps=3, resolution=32, cache=False)
    assert not list(cache.glob("*.tmp")) and not list(cache.glob(".*"))


def test_dvs128_gesture_missing_and_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"does not exist.*DvsGesture\.tar\.gz"):
        DVS128Gesture(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no DvsGesture folder"):
        DVS128Gesture(tmp_path)
    folder, _ = _make_gesture(tmp_path, np.random.default_rng(2))
    (folder / "user02_lab_labels.csv").unlink()
    with pytest.raises(FileNotFoundError, match="user02_lab_labels.csv"):
        DVS128Gesture(tmp_path)
    (folder / "user02_lab_labels.csv").write_text("class,startTime_usec,endTime_usec\n12,1,2\n")
    with pytest.raises(SpikeLotteryError, match="class 12 is outside 1..11"):
        DVS128Gesture(tmp_path)
    (folder / "user02_lab_labels.csv").write_text("class,startTime_usec,endTime_usec\n1,a,2\n")
    with pytest.raises(SpikeLotteryError, match="line 2"):
        DVS128Gesture(tmp_path)
    with pytest.raises(ValueError, match="resolution must be <= 128"):
        DVS128Gesture(tmp_path, resolution=256)
    with pytest.raises(ValueError, match="split_by"):
        DVS128Gesture(tmp_path, split_by="count")
    with pytest.raises(TypeError, match="train must be a bool"):
        DVS128Gesture(tmp_path, train="train")


# --- CIFAR10-DVS -------------------------------------------------------------------------

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _make_cifar10_dvs(root: Path, rng, per_class=3):
    truth = {}
    for c in CLASSES:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            t, x, y, p = _events_like(rng, int(rng.integers(40, 80)))
            path = root / c / f"cifar10_{c}_{i}.aedat"
            _write_aedat2(path, t, x, y, p)
            truth[path.name] = (t, x, y, p)
    return truth


def test_cifar10_dvs_split_labels_and_frames(tmp_path, sj_utils):
    _make_cifar10_dvs(tmp_path, np.random.default_rng(0))
    train = CIFAR10DVS(tmp_path, train=True, timesteps=5, cache=False)
    test = CIFAR10DVS(tmp_path, train=False, timesteps=5, cache=False)
    assert (len(train), len(test)) == (20, 10)  # 3 per class: at least one held out
    assert sorted(test.targets) == list(range(10))
    assert not set(train.files) & set(test.files)
    again = CIFAR10DVS(tmp_path, train=False, timesteps=5)
    assert again.files == test.files and again.targets == test.targets
    other = [CIFAR10DVS(tmp_path, train=False, seed=s, cache=False).files for s in range(1, 5)]
    assert any(files != test.files for files in other)
    cifar10_dvs = pytest.importorskip("spikingjelly.datasets.cifar10_dvs")
    frames, label = test[3]
    assert frames.shape == (5, 2, 128, 128) and CLASSES[label] in test.files[3].name
    ref = sj_utils.integrate_events_by_fixed_frames_number(
        cifar10_dvs._load_origin_data(test.files[3]), "number", 5, 128, 128
    )
    np.testing.assert_array_equal(frames.numpy(), ref)
    assert torch.equal(again[3][0], frames)  # the cached copy is the same
    small = CIFAR10DVS(tmp_path, train=False, timesteps=5, resolution=48)
    assert small[3][0].shape == (5, 2, 48, 48) and small[3][0].sum() == frames.sum()


def test_cifar10_dvs_extract_layout_and_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"does not exist.*figshare"):
        CIFAR10DVS(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no CIFAR10-DVS class folders"):
        CIFAR10DVS(tmp_path)
    _make_cifar10_dvs(tmp_path / "extract", np.random.default_rng(1), per_class=2)
    assert len(CIFAR10DVS(tmp_path, cache=False)) == 10
    for f in (tmp_path / "extract" / "dog").iterdir():
        f.unlink()
    with pytest.raises(FileNotFoundError, match=r"dog has no \.aedat files"):
        CIFAR10DVS(tmp_path, cache=False)
    (tmp_path / "extract" / "dog").rmdir()
    with pytest.raises(FileNotFoundError, match="class folders missing.*dog"):
        CIFAR10DVS(tmp_path, cache=False)
    with pytest.raises(ValueError, match="test_fraction"):
        CIFAR10DVS(tmp_path, test_fraction=0)


# --- registry ----------------------------------------------------------------------------


def test_dataset_info_for_every_name():
    expected = {
        "digits": (10, 1, 8, False, (1, 8, 8)),
        "digits_dvs": (10, 2, 16, True, (4, 2, 16, 16)),
        "cifar10": (10, 3, 32, False, (3, 32, 32)),
        "cifar100": (100, 3, 32, False, (3, 32, 32)),
        "dvs128_gesture": (11, 2, 128, True, (16, 2, 128, 128)),
        "cifar10_dvs": (10, 2, 128, True, (10, 2, 128, 128)),
        "digits_noisy": (10, 1, 8, False, (1, 8, 8)),
        "digits_occluded": (10, 1, 8, False, (1, 8, 8)),
        "digits_lowcontrast": (10, 1, 8, False, (1, 8, 8)),
        "digits_few": (10, 1, 8, False, (1, 8, 8)),
        "digits_dvs_noisy": (10, 2, 16, True, (4, 2, 16, 16)),
    }
    assert set(DATASETS) == set(expected)
    for name, (classes, channels, size, is_event, shape) in expected.items():
        info = dataset_info(name)
        assert (info.num_classes, info.in_channels, info.img_size, info.is_event) == (
            classes,
            channels,
            size,
            is_event,
        )
        assert info.input_shape == shape
    info = dataset_info("DVS128-Gesture", resolution=48, timesteps=8)
    assert info.input_shape == (8, 2, 48, 48)
    assert dataset_info("digits", channels=3, resolution=16).input_shape == (3, 16, 16)


def test_registry_errors():
    with pytest.raises(
        ValueError, match=r"unknown dataset 'mnist'; valid names: digits, digits_dvs"
    ):
        dataset_info("mnist")
    with pytest.raises(ValueError, match="unknown dataset"):
        get_dataset("imagenet")
    with pytest.raises(ValueError, match="channels can only be chosen for 'digits'"):
        dataset_info("cifar10", channels=1)
    with pytest.raises(ValueError, match="pass root="):
        get_dataset("cifar10")
    with pytest.raises(ValueError, match="static images"):
        get_dataset("digits", timesteps=4)
    with pytest.raises(ValueError, match="split"):
        get_dataset("digits", split="val")
    with pytest.raises(ValueError, match="32x32"):
        get_dataset("cifar10", root=".", resolution=16)


def test_get_dataset_builds_each_kind(tmp_path):
    ds = get_dataset("digits", split="test", resolution=16, channels=3)
    assert isinstance(ds, DigitsDataset) and ds[0][0].shape == (3, 16, 16)
    ds = get_dataset("digits_dvs", split="test", timesteps=2, resolution=8)
    assert ds[0][0].shape == dataset_info("digits_dvs", timesteps=2, resolution=8).input_shape
    _make_cifar10(tmp_path / "c10", np.random.default_rng(0))
    assert len(get_dataset("cifar10", tmp_path / "c10", split="test")) == 3
    _make_gesture(tmp_path / "g", np.random.default_rng(0))
    ds = get_dataset("dvs128_gesture", tmp_path / "g", split="test", timesteps=2, resolution=16)
    assert ds[0][0].shape == (2, 2, 16, 16)
    _make_cifar10_dvs(tmp_path / "cd", np.random.default_rng(0), per_class=2)
    ds = get_dataset("cifar10_dvs", tmp_path / "cd", timesteps=2, resolution=16, cache=False)
    assert len(ds) == 10 and ds[0][0].shape == (2, 2, 16, 16)


def test_cifar10_dvs_cache_sees_a_recording_changed_behind_its_back(tmp_path):
    _make_cifar10_dvs(tmp_path, np.random.default_rng(0), per_class=2)
    first = CIFAR10DVS(tmp_path, train=False, timesteps=3, resolution=16)
    path, old = first.files[0], first[0][0]
    before = path.stat()
    # Another recording of the same length, with the old modification time put back.
    t, x, y, p = _events_like(np.random.default_rng(99), read_aedat2(path)["t"].size)
    _write_aedat2(path, t, x, y, p)
    assert path.stat().st_size == before.st_size
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    again = CIFAR10DVS(tmp_path, train=False, timesteps=3, resolution=16)
    fresh = CIFAR10DVS(tmp_path, train=False, timesteps=3, resolution=16, cache=False)
    assert not torch.equal(fresh[0][0], old)  # the recording did change...
    assert torch.equal(again[0][0], fresh[0][0])  # ...and the cache saw it


# --- from test_bad_inputs_data.py: Bad inputs to the data readers and their caches: each is refused by name, nothing half-written.


def _snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file's bytes and every folder under ``root``: to prove nothing changed."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def _dump_bad_inputs_data(path: Path, obj: Any) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))


def _make_cifar10_bad_inputs_data(root: Path) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (2, 3072), dtype=np.uint8)
        _dump_bad_inputs_data(folder / name, {"labels": [1, 2], "data": data})
    _dump_bad_inputs_data(folder / "batches.meta", {"label_names": list(CLASSES)})
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
    folder = _make_cifar10_bad_inputs_data(tmp_path)
    _dump_bad_inputs_data(folder / "test_batch", {"data": _DATA, "labels": labels})
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
    folder = _make_cifar10_bad_inputs_data(tmp_path)
    _dump_bad_inputs_data(folder / "test_batch", payload)
    before = _snapshot(tmp_path)
    with pytest.raises(SpikeLotteryError, match="test_batch"):
        cifar10(tmp_path, train=False)
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("names", [7, None, {"a": 1}], ids=["int", "none", "dict"])
def test_cifar_meta_without_class_names_is_named(tmp_path: Path, names: Any) -> None:
    folder = _make_cifar10_bad_inputs_data(tmp_path)
    _dump_bad_inputs_data(folder / "batches.meta", {"label_names": names})
    before = _snapshot(tmp_path)
    with pytest.raises(SpikeLotteryError, match=r"batches\.meta.*'label_names'"):
        cifar10(tmp_path, train=False)
    assert _snapshot(tmp_path) == before


def _write_aedat3_bad_inputs_data(
    path: Path, t: np.ndarray, x: np.ndarray, y: np.ndarray, p: np.ndarray
) -> None:
    """AEDAT 3.1: ASCII header, then one polarity packet (28-byte header + 8-byte events)."""
    head = b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n#!END-HEADER\r\n"
    data = (x << 17) | (y << 2) | (p << 1) | 1
    body = np.stack([data, t], axis=1).astype("<u4").tobytes()
    n = int(t.size)
    path.write_bytes(head + struct.pack("<hhiiiiii", 1, 1, 8, 4, 0, n, n, n) + body)


def _write_aedat2_bad_inputs_data(
    path: Path, t: np.ndarray, x: np.ndarray, y: np.ndarray, p: np.ndarray
) -> None:
    """AEDAT 2.0 (jAER DVS128): header lines, then big-endian (address, timestamp) pairs."""
    addr = (y << 8) | (x << 1) | p
    body = np.stack([addr, t], axis=1).astype(">u4").tobytes()
    path.write_bytes(b"#!AER-DAT2.0\r\n# Timestamps tick is 1 us\r\n" + body)


def _events(seed: int, n: int = 120, t1: int = 10_000) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, t1, n))
    return t, rng.integers(0, 128, n), rng.integers(0, 128, n), rng.integers(0, 2, n)


def _make_gesture_bad_inputs_data(root: Path, rows: list[str]) -> Path:
    folder = root / "DvsGesture"
    folder.mkdir(parents=True)
    (folder / "trials_to_train.txt").write_text("user01_lab.aedat\n")
    _write_aedat3_bad_inputs_data(folder / "user01_lab.aedat", *_events(0))
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
    _make_gesture_bad_inputs_data(tmp_path, ["1,0,4000", row])
    before = _snapshot(tmp_path)
    with pytest.raises(SpikeLotteryError, match=rf"user01_lab_labels\.csv, line 3: .*{match}"):
        DVS128Gesture(tmp_path, timesteps=2, resolution=16)
    assert _snapshot(tmp_path) == before  # no cache folder, no half sample


def test_dvs128_gesture_cache_follows_a_changed_label_file(tmp_path: Path) -> None:
    folder = _make_gesture_bad_inputs_data(tmp_path, ["1,0,4000", "2,4000,9000"])
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


def _make_cifar10_dvs_bad_inputs_data(root: Path, per_class: int = 2) -> None:
    for k, c in enumerate(CLASSES):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            _write_aedat2_bad_inputs_data(
                root / c / f"cifar10_{c}_{i}.aedat", *_events(10 * k + i, n=60)
            )


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
    _make_cifar10_dvs_bad_inputs_data(tmp_path)
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
    _make_cifar10_dvs_bad_inputs_data(tmp_path)
    ds = CIFAR10DVS(tmp_path, **_SMALL)
    ds._paths[1].write_bytes(b"PK\x03\x04 not really a zip")
    before = _snapshot(tmp_path)
    with pytest.raises(SpikeLotteryError, match="cannot be read") as err:
        ds[1]
    assert str(ds._paths[1]) in str(err.value)
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("same_size", [False, True], ids=["new-size", "same-size-new-mtime"])
def test_cifar10_dvs_cache_follows_a_changed_recording(tmp_path: Path, same_size: bool) -> None:
    _make_cifar10_dvs_bad_inputs_data(tmp_path)
    first = CIFAR10DVS(tmp_path, **_SMALL)
    source = first.files[0]
    old_cache, old_frames = first._paths[0], first[0][0]
    stat = source.stat()
    _write_aedat2_bad_inputs_data(source, *_events(999, n=60 if same_size else 90))
    if same_size:
        assert source.stat().st_size == stat.st_size
        os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    second = CIFAR10DVS(tmp_path, **_SMALL)
    fresh = CIFAR10DVS(tmp_path, cache=False, **_SMALL)
    assert torch.equal(second[0][0], fresh[0][0]) and not torch.equal(second[0][0], old_frames)
    assert second._paths[0] != old_cache and not old_cache.exists()  # the stale copy is gone
    assert second._paths[1:] == first._paths[1:]  # the others still come from the cache


def test_cifar10_dvs_cache_on_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _make_cifar10_dvs_bad_inputs_data(tmp_path)
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
