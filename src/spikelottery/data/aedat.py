"""Readers of the DVS128 sensor's AEDAT files: :func:`read_aedat3` and :func:`read_aedat2`.

- **AEDAT 3.1** (DVS128 Gesture, :func:`read_aedat3`): ASCII header lines starting with
  ``#`` up to ``#!END-HEADER``, then packets. Each packet has a 28-byte little-endian
  header (``int16`` type, ``int16`` source, ``int32`` event size, ``int32`` timestamp
  offset, ``int32`` timestamp overflow, ``int32`` capacity, ``int32`` number, ``int32``
  valid) and ``capacity * size`` bytes of events. Polarity packets (type 1) hold 8-byte
  events: ``uint32`` data (bit 0 valid, bit 1 polarity with 1 = ON, bits 2-16 ``y``,
  bits 17-31 ``x``) and ``int32`` timestamp; the full time is
  ``timestamp | overflow << 31`` microseconds.
- **AEDAT 2.0** (CIFAR10-DVS, :func:`read_aedat2`): ``#`` header lines (the first is
  ``#!AER-DAT2.0``), then big-endian 8-byte events: ``uint32`` address, ``uint32``
  timestamp (microseconds). DVS128 address: bit 0 raw polarity (0 = ON), bits 1-7 raw
  ``x``, bits 8-14 raw ``y``; bit 15 (external/sync) or bit 31 (special) marks a
  non-pixel event, which is dropped.

The facts follow SpikingJelly 2.0's loaders and jAER's DVS128 extractor.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from ..errors import SpikeLotteryError
from .dvs_sim import EVENT_DTYPE

__all__ = ["read_aedat2", "read_aedat3"]


def _split_header(raw: bytes, path: Path) -> tuple[list[bytes], int]:
    """ASCII header lines (``#...``) and the offset of the binary data."""
    lines, pos = [], 0
    while raw.startswith(b"#", pos):
        end = raw.find(b"\n", pos)
        if end < 0:
            raise SpikeLotteryError(f"{path}: the header never ends (truncated file?)")
        line = raw[pos : end + 1]
        lines.append(line.rstrip(b"\r\n"))
        pos = end + 1
        if line.startswith(b"#!END-HEADER"):
            break
    return lines, pos


def _make_events(t: np.ndarray, x: np.ndarray, y: np.ndarray, p: np.ndarray) -> np.ndarray:
    events = np.empty(t.size, EVENT_DTYPE)
    events["t"], events["x"], events["y"], events["p"] = t, x, y, p
    return events


def read_aedat3(path: str | Path) -> np.ndarray:
    """Polarity events of an AEDAT 3.1 file (the format of DVS128 Gesture).

    Only valid events of polarity packets (type 1) are returned; other packets are
    skipped. Coordinates are as recorded (``x`` column, ``y`` row, ``p`` 1 = ON).

    Args:
        path: The ``.aedat`` file.

    Returns:
        Structured array of :data:`~spikelottery.data.EVENT_DTYPE` in file order.

    Raises:
        FileNotFoundError: No such file.
        SpikeLotteryError: Not an AEDAT 3 file, or truncated.
    """
    path = Path(path)
    raw = path.read_bytes()
    lines, pos = _split_header(raw, path)
    if lines and lines[0].startswith(b"#!AER-DAT") and not lines[0].startswith(b"#!AER-DAT3"):
        raise SpikeLotteryError(
            f"{path} is {lines[0].decode(errors='replace')[2:]}, not AEDAT 3.x "
            "(DVS128 Gesture files are AEDAT 3.1)"
        )
    parts: list[np.ndarray] = []
    while pos < len(raw):
        if pos + 28 > len(raw):
            raise SpikeLotteryError(f"{path}: truncated packet header at byte {pos}")
        etype, _source, size, ts_offset, overflow, capacity, number, _valid = struct.unpack_from(
            "<hhiiiiii", raw, pos
        )
        pos += 28
        nbytes = capacity * size
        if capacity < 0 or size < 0 or pos + nbytes > len(raw):
            raise SpikeLotteryError(
                f"{path}: packet at byte {pos - 28} declares {capacity} events of {size} bytes, "
                f"past the end of the file (truncated file?)"
            )
        if etype == 1 and number > 0:
            if size != 8 or ts_offset != 4:
                raise SpikeLotteryError(
                    f"{path}: polarity packet with event size {size} and timestamp offset "
                    f"{ts_offset}; AEDAT 3.1 polarity events are 8 bytes with the time at 4"
                )
            words = np.frombuffer(raw, "<u4", count=2 * min(number, capacity), offset=pos)
            parts.append(words.reshape(-1, 2).astype(np.int64))
            parts[-1][:, 1] |= np.int64(overflow) << 31
        pos += nbytes
    if not parts:
        return np.empty(0, EVENT_DTYPE)
    table = np.concatenate(parts)
    data, t = table[:, 0], table[:, 1]
    valid = (data & 1) == 1
    data, t = data[valid], t[valid]
    return _make_events(t, (data >> 17) & 0x7FFF, (data >> 2) & 0x7FFF, (data >> 1) & 1)


def read_aedat2(path: str | Path) -> np.ndarray:
    """Events of a DVS128 AEDAT 2.0 file (the format of CIFAR10-DVS).

    Coordinates follow SpikingJelly's CIFAR10-DVS loader, so frames match it pixel for
    pixel: ``x = 127 - raw_y``, ``y = 127 - raw_x``, and ``p = 1 - raw_bit`` (1 = ON, as
    in jAER). External and special events (address bit 15 or 31 set) are dropped.

    Args:
        path: The ``.aedat`` file.

    Returns:
        Structured array of :data:`~spikelottery.data.EVENT_DTYPE` in file order.

    Raises:
        FileNotFoundError: No such file.
        SpikeLotteryError: Another AEDAT version, or a data size that is not a whole
            number of 8-byte events.
    """
    path = Path(path)
    raw = path.read_bytes()
    lines, pos = _split_header(raw, path)
    if lines and lines[0].startswith(b"#!AER-DAT") and not lines[0].startswith(b"#!AER-DAT2"):
        raise SpikeLotteryError(
            f"{path} is {lines[0].decode(errors='replace')[2:]}, not AEDAT 2.0 "
            "(CIFAR10-DVS files are AEDAT 2.0)"
        )
    if (len(raw) - pos) % 8:
        raise SpikeLotteryError(
            f"{path}: {len(raw) - pos} bytes of events is not a multiple of 8 (truncated file?)"
        )
    words = np.frombuffer(raw, ">u4", offset=pos).astype(np.int64).reshape(-1, 2)
    addr, t = words[:, 0], words[:, 1]
    pixel = (addr & 0x80008000) == 0
    addr, t = addr[pixel], t[pixel]
    raw_x = (addr >> 1) & 0x7F
    raw_y = (addr >> 8) & 0x7F
    return _make_events(t, 127 - raw_y, 127 - raw_x, 1 - (addr & 1))


# --- frames and cache --------------------------------------------------------------------
