"""The ticket file format: its name and version, bit packing, the metadata, and reading.

A ticket is a safetensors file (a JSON header and raw tensor bytes). Reading one checks
the framing, the format and version, the layer table, a SHA-256 over tensors and metadata,
and that every tensor belongs to a listed layer, all without a model and without pickle.

>>> unpack_bits(pack_bits(torch.tensor([True, False, True])), (3,)).tolist()
[True, False, True]
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from safetensors import SafetensorError
from torch import Tensor

from .._version import __version__
from ..errors import SpikeLotteryError
from ..patch.select import LAYOUTS
from ._common import PathLike, as_path, entry_key, quote_names

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "FORMAT_VERSION_BINARY_ACTIVATIONS",
    "USER_PREFIX",
    "TicketInfo",
    "invalid_ticket",
    "pack_bits",
    "read_ticket_file",
    "read_ticket_info",
    "ticket_digest",
    "unpack_bits",
]

FORMAT_NAME = "spikelottery.ticket"
FORMAT_VERSION = "1"
#: The version written when the ticket has binary activations: a reader of version 1
#: would load it into a network whose activations stay real, so it must refuse it.
FORMAT_VERSION_BINARY_ACTIVATIONS = "2"
_READABLE_VERSIONS = ("1", "2")
# The user's own metadata entries are stored under this prefix.
USER_PREFIX = "user."
# A safetensors header larger than this is not a ticket (ours are a few hundred KB at most).
_MAX_HEADER = 256 * 1024 * 1024
# JSON nesting deeper than this is not a ticket (ours nest 3 deep): refuse it by name
# before Python's recursion limit does.
_MAX_JSON_DEPTH = 16


# ----------------------------------------------------------------------------- bits


def pack_bits(bits: Tensor) -> Tensor:
    """Pack a boolean tensor into bytes, 8 entries per byte.

    The tensor is flattened in row-major (C) order; entry ``i`` becomes bit ``i % 8``
    (least significant first, numpy's ``bitorder="little"``) of byte ``i // 8``. The
    unused high bits of the last byte are 0.

    Args:
        bits: A ``torch.bool`` tensor of any shape and device.

    Returns:
        A 1-D ``torch.uint8`` CPU tensor of ``ceil(bits.numel() / 8)`` bytes.

    >>> pack_bits(torch.tensor([True, False, True, True, False, False, False, False, True]))
    tensor([13,  1], dtype=torch.uint8)
    """
    if bits.dtype != torch.bool:
        raise TypeError(f"pack_bits expects a torch.bool tensor, got dtype {bits.dtype}")
    flat = bits.detach().reshape(-1).cpu().numpy()
    return torch.from_numpy(np.packbits(flat, bitorder="little"))


def unpack_bits(packed: Tensor, shape: tuple[int, ...] | torch.Size) -> Tensor:
    """Inverse of :func:`pack_bits`: the boolean tensor of ``shape`` stored in ``packed``.

    Raises:
        ValueError: ``packed`` is not ``ceil(prod(shape) / 8)`` bytes of ``torch.uint8``, or
            a padding bit of its last byte is set (the data is corrupted).

    >>> unpack_bits(torch.tensor([13, 1], dtype=torch.uint8), (3, 3)).int().tolist()
    [[1, 0, 1], [1, 0, 0], [0, 0, 1]]
    """
    n = math.prod(shape)
    if packed.dtype != torch.uint8 or packed.dim() != 1 or packed.numel() != (n + 7) // 8:
        raise ValueError(
            f"expected {(n + 7) // 8} packed bytes (torch.uint8, 1-D) for shape {tuple(shape)}, "
            f"got {tuple(packed.shape)} of {packed.dtype}"
        )
    raw = packed.detach().cpu().numpy()
    if n % 8 and int(raw[-1]) >> (n % 8):
        raise ValueError(f"padding bits of the last byte are set for shape {tuple(shape)}")
    flat = np.unpackbits(raw, count=n, bitorder="little").astype(bool)
    return torch.from_numpy(flat).reshape(tuple(shape))


# ----------------------------------------------------------------------------- info


@dataclass
class TicketInfo:
    """What a ticket file says about itself (its metadata), read without a model.

    ``layers`` has one dict per score-mask layer: ``name``, ``class``, ``dense`` (the
    PyTorch layer type: ``Conv1d``, ``Conv2d`` or ``Linear``), ``shape``, ``pa``,
    ``mode`` and ``kept``. ``metadata`` holds the user's entries. ``num_prefix_tokens``
    and ``patch_layout`` describe the patch selector (``None`` in tickets written before
    they were recorded, or without patch pruning). ``binary_activations`` names the
    activation modules that the ticket replaces by binary ones (format version 2).
    """

    path: Path
    format_version: str
    library_version: str
    pa: float
    pb: float
    mode: str
    patch_embed: str | None
    layers: list[dict[str, Any]]
    weight_dtype: str
    include_scores: bool
    metadata: dict[str, str] = field(default_factory=dict)
    size_bytes: int = 0
    num_prefix_tokens: int | None = None
    patch_layout: str | None = None
    binary_activations: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        kept = sum(layer["kept"] for layer in self.layers)
        total = sum(math.prod(layer["shape"]) for layer in self.layers)
        patches = f", pb={self.pb:g} after {self.patch_embed!r}" if self.pb > 0 else ""
        binary = (
            f", {len(self.binary_activations)} binary activations"
            if self.binary_activations
            else ""
        )
        return (
            f"spikelottery ticket v{self.format_version} ({self.size_bytes:,} bytes, "
            f"spikelottery {self.library_version}): {len(self.layers)} layers, mode="
            f"{self.mode!r}, pa={self.pa:g}{patches}{binary}; {kept:,} of {total:,} "
            "weights kept"
        )


def ticket_digest(tensors: Mapping[str, Tensor], meta: Mapping[str, str]) -> str:
    """SHA-256 over the metadata (but ``sha256``) and every tensor's name, dtype, shape, bytes."""
    h = hashlib.sha256()
    text = sorted((k, v) for k, v in meta.items() if k != "sha256")
    h.update(json.dumps(text).encode())
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        raw = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
        h.update(raw.data)
    return h.hexdigest()


# ----------------------------------------------------------------------------- reading


def invalid_ticket(path: Path, why: str) -> SpikeLotteryError:
    """The error for a file at ``path`` that is not a valid ticket, saying ``why``."""
    return SpikeLotteryError(f"{str(path)!r} is not a valid spikelottery ticket: {why}")


def _not_safetensors(path: Path, data: bytes, why: str) -> SpikeLotteryError:
    if data[:4] == b"PK\x03\x04":
        return invalid_ticket(
            path,
            "it is a zip archive, e.g. a torch.save checkpoint. Tickets are safetensors files "
            "and spikelottery never unpickles a file; save tickets with save_ticket()",
        )
    if data[:1] == b"\x80" and len(data) > 1 and 2 <= data[1] <= 5:
        return invalid_ticket(
            path,
            "it is a Python pickle, which could run arbitrary code when loaded and is never "
            "unpickled here; save tickets with save_ticket()",
        )
    return invalid_ticket(path, why)


def _json_depth(value: Any) -> int:
    """How deeply ``value`` nests (a scalar is 0, ``[1]`` is 1); stops past the limit."""
    depth, level = 0, [value]
    while level and depth <= _MAX_JSON_DEPTH:
        nxt: list[Any] = []
        for item in level:
            if isinstance(item, dict):
                nxt.extend(item.values())
            elif isinstance(item, list):
                nxt.extend(item)
        if not nxt and not any(isinstance(i, (dict, list)) for i in level):
            break
        depth += 1
        level = nxt
    return depth


def _loads(path: Path, text: str | bytes, what: str) -> Any:
    """``json.loads`` of ``what`` with the nesting depth bounded by ``_MAX_JSON_DEPTH``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise invalid_ticket(path, f"its {what} is not valid JSON ({exc})") from None
    except RecursionError:
        value = None
        deep = True
    else:
        deep = _json_depth(value) > _MAX_JSON_DEPTH
    if deep:
        raise invalid_ticket(
            path,
            f"its {what} nests JSON more than {_MAX_JSON_DEPTH} levels deep (a ticket's nests "
            "3); the file is corrupted or crafted",
        )
    return value


def _parse_header(path: Path, data: bytes) -> dict[str, Any]:
    """Validate the safetensors framing and return the JSON header."""
    if len(data) < 8:
        raise _not_safetensors(path, data, f"the file has only {len(data)} bytes (truncated?)")
    (n,) = struct.unpack("<Q", data[:8])
    head = data[8 : 8 + min(n, 16)].lstrip()
    if n > _MAX_HEADER or not head.startswith(b"{"):
        raise _not_safetensors(path, data, "it is not a safetensors file")
    if 8 + n > len(data):
        raise invalid_ticket(
            path,
            f"the file is truncated: its header alone needs {8 + n:,} bytes, the file has "
            f"{len(data):,}",
        )
    try:
        header = _loads(path, data[8 : 8 + n].decode("utf-8"), "header")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise invalid_ticket(
            path, f"its header is not valid JSON ({exc}); the file is corrupted"
        ) from None
    if not isinstance(header, dict):
        raise invalid_ticket(path, "its header is not a JSON object; the file is corrupted")
    end = 0
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        try:
            end = max(end, int(entry["data_offsets"][1]))
        except (TypeError, KeyError, IndexError, ValueError):
            raise invalid_ticket(path, f"the header entry {key!r} is malformed") from None
    have = len(data) - 8 - n
    if have < end:
        raise invalid_ticket(
            path,
            f"the file is truncated: the header describes {end:,} bytes of tensor data, "
            f"the file holds {have:,}",
        )
    if have > end:
        raise invalid_ticket(path, f"{have - end:,} unexpected bytes follow the tensor data")
    return header


def _meta(path: Path, meta: Mapping[str, str], key: str) -> str:
    try:
        return meta[key]
    except KeyError:
        raise invalid_ticket(path, f"its metadata lacks {key!r}") from None


def _parse_info(path: Path, meta: Mapping[str, str], size: int) -> TicketInfo:
    fmt = meta.get("format")
    if fmt != FORMAT_NAME:
        raise invalid_ticket(
            path,
            f"its metadata says format={fmt!r}, not {FORMAT_NAME!r} (a safetensors file that "
            "save_ticket did not write: load plain weights with safetensors.torch.load_file)",
        )
    version = _meta(path, meta, "format_version")
    library = meta.get("library_version", "?")
    if version not in _READABLE_VERSIONS:
        raise SpikeLotteryError(
            f"{str(path)!r} is a ticket of format version {version!r} (written by spikelottery "
            f"{library}); this spikelottery {__version__} reads format version(s) "
            f"{', '.join(_READABLE_VERSIONS)}. Install a spikelottery that reads version "
            f"{version!r} (e.g. pip install 'spikelottery>={library}')"
        )
    try:
        layers = _loads(path, _meta(path, meta, "layers"), "layer table")
        if not isinstance(layers, list):
            raise TypeError(f"the layer table is a {type(layers).__name__}, not a list")
        pa, pb = float(_meta(path, meta, "pa")), float(_meta(path, meta, "pb"))
        if not (0.0 <= pa < 1.0 and 0.0 <= pb < 1.0) or meta.get("mode") not in ("lt", "mp"):
            raise ValueError(f"pa={pa!r}, pb={pb!r}, mode={meta.get('mode')!r}")
        for rec in layers:
            if not isinstance(rec, dict):
                raise TypeError(f"a layer record is a {type(rec).__name__}, not an object")
            rec["shape"] = [int(s) for s in rec["shape"]]
            rec["pa"] = float(rec["pa"])
            rec["kept"] = int(rec["kept"])
            for key in ("name", "class", "dense", "mode"):
                if not isinstance(rec[key], str):
                    raise TypeError(key)
            if not isinstance(rec.get("param", "weight"), str):
                raise TypeError("param")
            if rec["mode"] not in ("lt", "mp") or not 0.0 <= rec["pa"] < 1.0:
                raise ValueError(rec["name"])
        prefix = meta.get("num_prefix_tokens")
        num_prefix_tokens = None if prefix is None else int(prefix)
        if num_prefix_tokens is not None and num_prefix_tokens < 0:
            raise ValueError(f"num_prefix_tokens={num_prefix_tokens}")
        patch_layout = meta.get("patch_layout")
        if patch_layout is not None and patch_layout not in LAYOUTS:
            raise ValueError(f"patch_layout={patch_layout!r}")
        binary = _loads(path, meta.get("binary_activations", "[]"), "binary activation list")
        if not isinstance(binary, list) or not all(isinstance(n, str) for n in binary):
            raise TypeError("the binary activation list is not a list of names")
        if binary and version != FORMAT_VERSION_BINARY_ACTIVATIONS:
            raise ValueError(f"binary activations in a version-{version} ticket")
    except SpikeLotteryError:
        raise  # already says what is wrong (JSON nested too deep)
    except (TypeError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise invalid_ticket(path, f"its settings or layer table are malformed ({exc!r})") from None
    user = {k[len(USER_PREFIX) :]: v for k, v in meta.items() if k.startswith(USER_PREFIX)}
    return TicketInfo(
        path=path,
        format_version=version,
        library_version=library,
        pa=pa,
        pb=pb,
        mode=meta["mode"],
        patch_embed=meta.get("patch_embed") or None,
        layers=layers,
        weight_dtype=meta.get("weight_dtype", "same"),
        include_scores=meta.get("include_scores") == "true",
        metadata=user,
        size_bytes=size,
        num_prefix_tokens=num_prefix_tokens,
        patch_layout=patch_layout,
        binary_activations=binary,
    )


def _check_model_settings(path: Path, info: TicketInfo) -> None:
    """The model-level ``pa`` and ``mode`` are the layers' most common ones (as saved).

    ``save_ticket`` derives them from the layers; a header that says otherwise (edited
    and re-signed) would make :class:`TicketInfo` report one ticket while the layers
    load as another.
    """
    if not info.layers:
        return  # load_ticket refuses a ticket without layers by name
    want_pa = Counter(rec["pa"] for rec in info.layers).most_common(1)[0][0]
    want_mode = Counter(rec["mode"] for rec in info.layers).most_common(1)[0][0]
    bad = []
    if info.pa != want_pa:
        bad.append(f"pa={info.pa!r} but its layers' pa is mostly {want_pa!r}")
    if info.mode != want_mode:
        bad.append(f"mode={info.mode!r} but its layers' mode is mostly {want_mode!r}")
    if bad:
        raise invalid_ticket(
            path,
            "its header says " + " and ".join(bad) + " (the metadata was edited after saving); "
            "save the ticket again with save_ticket()",
        )


def read_ticket_file(path: PathLike) -> tuple[TicketInfo, dict[str, Tensor]]:
    """The checked metadata and the tensors of the ticket at ``path``.

    Raises:
        SpikeLotteryError: The file is not a ticket, is truncated or corrupted (the SHA-256
            does not match), is of another format version, or lacks a layer's tensors.
    """
    path = as_path(path)
    if path.is_dir():
        raise IsADirectoryError(
            21,
            f"cannot read the ticket: {str(path)!r} is a folder; give the ticket file",
            str(path),
        )
    data = path.read_bytes()
    header = _parse_header(path, data)
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise invalid_ticket(path, "its metadata is not a table of strings")
    info = _parse_info(path, meta, len(data))
    try:
        tensors = safetensors.torch.load(data)
    except SafetensorError as exc:
        raise invalid_ticket(path, f"safetensors cannot read it ({exc})") from None
    digest = meta.get("sha256")
    if digest is None or digest != ticket_digest(tensors, meta):
        raise invalid_ticket(
            path,
            "the SHA-256 of its tensors and metadata does not match the one recorded when it "
            "was saved (the file was corrupted or edited)",
        )
    _check_model_settings(path, info)
    _check_keys(path, info, tensors)
    return info, tensors


def _check_keys(path: Path, info: TicketInfo, tensors: Mapping[str, Tensor]) -> None:
    """Every tensor belongs to a listed layer or to ``state/``; every layer has its tensors."""
    expected: set[str] = set()
    for rec in info.layers:
        name = entry_key(rec)
        own = ["mask", "sign", "alpha"] if rec["mode"] == "mp" else ["mask", "weight"]
        if info.include_scores:
            own.append("scores")
        for kind in own:
            key = f"{kind}/{name}"
            if key not in tensors:
                raise invalid_ticket(path, f"the tensor {key!r} of layer {name!r} is missing")
            expected.add(key)
    stray = [k for k in tensors if k not in expected and not k.startswith("state/")]
    if stray:
        raise invalid_ticket(
            path, f"it has tensors that belong to no listed layer: {quote_names(stray)}"
        )
    if info.pb > 0 and not info.patch_embed:
        raise invalid_ticket(
            path, f"it prunes patches (pb={info.pb:g}) but names no patch embedding"
        )


def read_ticket_info(path: PathLike) -> TicketInfo:
    """Read and check a ticket file's metadata (and checksum) without a model.

    >>> print(read_ticket_info("ticket.safetensors"))  # doctest: +SKIP
    spikelottery ticket v1 (470,212 bytes, spikelottery 0.1.0): 9 layers, mode='mp', ...
    """
    info, _ = read_ticket_file(path)
    return info
