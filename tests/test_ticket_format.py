"""The ticket file format: bit packing, and files refused (truncated, edited, pickles)."""

from __future__ import annotations

import json
import math
import pickle
import struct
from pathlib import Path

import pytest
import safetensors.torch
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from _ticket_testing import (
    assert_untouched,
    rewrite_ticket,
    save_cnn_ticket,
    small_cnn,
    state_copy,
)
from spikelottery import SpikeLotteryError
from spikelottery.functional import kept_count, topk_mask
from spikelottery.tickets import load_ticket, pack_bits, read_ticket_info, unpack_bits


@pytest.fixture
def cnn_ticket(tmp_path: Path) -> tuple[nn.Module, Path]:
    return save_cnn_ticket(tmp_path)


# --------------------------------------------------------------------------- bits


def test_pack_bits_order_is_little_endian() -> None:
    bits = torch.tensor([True, False, False, False, False, False, False, False, False, True])
    assert pack_bits(bits).tolist() == [1, 2]
    assert pack_bits(torch.tensor([[False, True], [True, True]])).tolist() == [0b1110]


@given(
    shape=st.lists(st.integers(0, 9), min_size=1, max_size=4),
    seed=st.integers(0, 2**16),
    p=st.floats(0, 1),
)
def test_pack_bits_round_trip_any_shape(shape: list[int], seed: int, p: float) -> None:
    g = torch.Generator().manual_seed(seed)
    bits = torch.rand(shape, generator=g) < p
    packed = pack_bits(bits)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(bits.numel() / 8)
    assert torch.equal(unpack_bits(packed, bits.shape), bits)


@given(
    shape=st.lists(st.integers(1, 7), min_size=1, max_size=4),
    pa=st.floats(0, 0.99),
    seed=st.integers(0, 2**16),
)
def test_mask_round_trip_any_pa(shape: list[int], pa: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    mask = topk_mask(torch.randn(shape, generator=g), pa)
    back = unpack_bits(pack_bits(mask), mask.shape)
    assert torch.equal(back, mask)
    assert int(back.sum()) == kept_count(mask.numel(), pa)


def test_unpack_bits_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="padding bits"):
        unpack_bits(torch.tensor([0b1000], dtype=torch.uint8), (3,))
    with pytest.raises(ValueError, match="expected 2 packed bytes"):
        unpack_bits(torch.tensor([1], dtype=torch.uint8), (9,))
    with pytest.raises(TypeError, match="torch.bool"):
        pack_bits(torch.ones(3))


# --------------------------------------------------------------------------- files refused


@pytest.mark.parametrize("cut", [0, 5, 9, 200, -3])
def test_truncated_file(cnn_ticket, tmp_path: Path, cut: int) -> None:
    _, path = cnn_ticket
    data = path.read_bytes()
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(data[:cut])
    model = small_cnn()
    before = state_copy(model)
    with pytest.raises(SpikeLotteryError, match="truncated|not a safetensors|only"):
        load_ticket(model, bad)
    assert_untouched(model, before)


def test_corrupted_tensor_data_is_caught_by_checksum(cnn_ticket, tmp_path: Path) -> None:
    _, path = cnn_ticket
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    bad = tmp_path / "flip.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(SpikeLotteryError, match="SHA-256"):
        load_ticket(small_cnn(), bad)


def test_corrupted_header(cnn_ticket, tmp_path: Path) -> None:
    _, path = cnn_ticket
    data = bytearray(path.read_bytes())
    data[20] = ord("}")  # breaks the JSON header
    bad = tmp_path / "head.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(SpikeLotteryError, match="not valid JSON|malformed|corrupted"):
        read_ticket_info(bad)


def test_edited_metadata_is_caught_by_checksum(cnn_ticket, tmp_path: Path) -> None:
    _, path = cnn_ticket
    bad = rewrite_ticket(path, tmp_path / "edit.safetensors", reseal=False, pa="0.5")
    with pytest.raises(SpikeLotteryError, match="SHA-256"):
        read_ticket_info(bad)


def test_other_format_version(cnn_ticket, tmp_path: Path) -> None:
    _, path = cnn_ticket
    bad = rewrite_ticket(path, tmp_path / "v99.safetensors", format_version="99")
    with pytest.raises(SpikeLotteryError, match="format version '99'.*reads format version"):
        load_ticket(small_cnn(), bad)


def test_plain_safetensors_is_not_a_ticket(tmp_path: Path) -> None:
    plain = tmp_path / "plain.safetensors"
    safetensors.torch.save_file(small_cnn().state_dict(), plain)
    with pytest.raises(SpikeLotteryError, match="format=None"):
        load_ticket(small_cnn(), plain)


def test_inconsistent_mask_is_refused(cnn_ticket, tmp_path: Path) -> None:
    _, path = cnn_ticket
    layers = read_ticket_info(path).layers
    layers[0]["pa"] = 0.5  # the stored mask keeps the count of pa=0.4
    bad = rewrite_ticket(path, tmp_path / "pa.safetensors", layers=json.dumps(layers))
    with pytest.raises(SpikeLotteryError, match="mask of layer '0' keeps"):
        load_ticket(small_cnn(), bad)


class _Evil:
    """Unpickling this creates a marker file: proof that a payload would have run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_payloads_are_refused_never_run(tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Evil(probe)))
    assert probe.exists()  # the payload works when unpickled...

    marker = tmp_path / "pwned"
    raw = tmp_path / "raw.safetensors"
    raw.write_bytes(pickle.dumps({"x": _Evil(marker)}))
    zipped = tmp_path / "torchsave.safetensors"
    torch.save({"x": _Evil(marker)}, zipped)
    legacy = tmp_path / "legacy.safetensors"
    torch.save({"x": _Evil(marker)}, legacy, _use_new_zipfile_serialization=False)
    for path, what in ((raw, "pickle"), (zipped, "zip archive"), (legacy, "pickle")):
        model = small_cnn()
        before = state_copy(model)
        with pytest.raises(SpikeLotteryError, match=what):
            load_ticket(model, path)
        with pytest.raises(SpikeLotteryError, match="never unpickle"):
            read_ticket_info(path)
        assert_untouched(model, before)
    assert not marker.exists()  # ...and was never run by spikelottery


def test_header_length_field_is_checked(tmp_path: Path) -> None:
    bad = tmp_path / "huge.safetensors"
    bad.write_bytes(struct.pack("<Q", 10_000) + b'{"a":')
    with pytest.raises(SpikeLotteryError, match="truncated"):
        read_ticket_info(bad)
