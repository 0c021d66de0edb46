"""Tickets as files: save a found ticket without pickle, load it back, export it.

A ticket file is a `safetensors <https://huggingface.co/docs/safetensors>`_ file: a JSON
header and raw tensor bytes, nothing that executes on load. Per score-mask layer it holds

* ``mask/<layer>``: the mask, bit-packed at 1 bit per weight (:func:`pack_bits`);
* mode ``"mp"``: ``sign/<layer>``, the signs of the KEPT weights at 1 bit each, and
  ``alpha/<layer>``, the layer's gain; so a binarised layer costs at most 2 bits per
  weight (``1 + (1 - pa)`` bits: 1.6 at ``pa = 0.4``, 20x smaller than float32);
* mode ``"lt"``: ``weight/<layer>``, the kept weights' values only (in the layer's dtype,
  or ``float16`` / ``bfloat16`` on request);

plus, under ``state/<key>``, every other entry of the model's ``state_dict`` (biases,
BatchNorm statistics, dense layers that were not sparsified) so that the loaded model
computes what the saved one did. Text metadata records the format and library versions,
``pa``, ``pb``, ``mode``, the patch embedding, each layer's name, class, shape, ``pa``,
mode and kept count, a SHA-256 of the tensors and metadata, and the user's own entries
(``user.*``).

The frozen weights outside the mask, and the random seed, are not part of a ticket:
PyTorch does not promise the same random streams across releases or devices, so weights
are never regenerated from a seed (a seed may be stored as metadata, for the record).

>>> import os, tempfile
>>> def build():
...     return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 1))
>>> net = sparsify(build(), pa=0.4, mode="mp")
>>> tmp = tempfile.TemporaryDirectory()
>>> path = save_ticket(net, os.path.join(tmp.name, "ticket.safetensors"))
>>> fresh = load_ticket(build(), path)  # a fresh dense model
>>> fresh[0].kept, torch.equal(fresh[0].effective_weight(), net[0].effective_weight())
(130, True)
>>> tmp.cleanup()
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import math
import os
import struct
import warnings
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import safetensors.torch
import torch
from safetensors import SafetensorError
from torch import Tensor, nn

from ._io import atomic_write_bytes
from ._modules import invalidate_spikingjelly_cache, names_of, refusal, skip_reason, walk
from ._validation import kept_count
from ._version import __version__
from .errors import SpikeLotteryError
from .layers import SubnetLayer
from .masks import topk_mask
from .neuron import LIFNeuron
from .patch import attach_patch_selector, find_patch_selectors
from .sparsify import densify, sparsify

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "TicketInfo",
    "export_dense",
    "export_onnx",
    "load_ticket",
    "pack_bits",
    "read_ticket_info",
    "save_ticket",
    "unpack_bits",
]

M = TypeVar("M", bound=nn.Module)
PathLike = str | os.PathLike[str]

FORMAT_NAME = "spikelottery.ticket"
FORMAT_VERSION = "1"
_READABLE_VERSIONS = ("1",)
_DENSE_BASES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Linear)
_WEIGHT_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}
_USER_PREFIX = "user."
# A safetensors header larger than this is not a ticket (ours are a few hundred KB at most).
_MAX_HEADER = 256 * 1024 * 1024


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
    ``mode`` and ``kept``. ``metadata`` holds the user's entries.
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

    def __str__(self) -> str:
        kept = sum(layer["kept"] for layer in self.layers)
        total = sum(math.prod(layer["shape"]) for layer in self.layers)
        patches = f", pb={self.pb:g} after {self.patch_embed!r}" if self.pb > 0 else ""
        return (
            f"spikelottery ticket v{self.format_version} ({self.size_bytes:,} bytes, "
            f"spikelottery {self.library_version}): {len(self.layers)} layers, mode="
            f"{self.mode!r}, pa={self.pa:g}{patches}; {kept:,} of {total:,} weights kept"
        )


# ----------------------------------------------------------------------------- saving


def _dense_base(module: nn.Module) -> str:
    for base in _DENSE_BASES:
        if isinstance(module, base):
            return base.__name__
    raise SpikeLotteryError(f"{type(module).__name__} is not a conv or linear layer")


def _find_patch_selector(model: nn.Module) -> tuple[str | None, float]:
    """``(patch-embedding name, pb)`` of an attached patch selector, or ``(None, 0.0)``."""
    for name, selector in find_patch_selectors(model):
        if selector.pb > 0:
            return name, float(selector.pb)
    return None, 0.0


def _weight(module: nn.Module) -> Tensor:
    """The stored weight (for a score-mask layer the frozen one, not the effective one)."""
    weight = module._parameters["weight"]
    assert isinstance(weight, Tensor)
    return weight


def _subnet_layers(model: nn.Module) -> list[tuple[str, SubnetLayer]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, SubnetLayer)]


def _digest(tensors: Mapping[str, Tensor], meta: Mapping[str, str]) -> str:
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


def _check_user_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a dict[str, str], got {type(metadata).__name__}")
    out = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(
                f"metadata must map str to str (safetensors stores text); got {key!r}: "
                f"{value!r}. Convert values with str() or json.dumps()"
            )
        out[_USER_PREFIX + key] = value
    return out


def _ticket_tensors(
    model: nn.Module, weight_dtype: str | None, include_scores: bool
) -> tuple[dict[str, Tensor], list[dict[str, Any]]]:
    layers = _subnet_layers(model)
    if not layers:
        raise SpikeLotteryError(
            f"{type(model).__name__} has no score-mask layer, so there is no ticket to save; "
            "call spikelottery.sparsify(model, pa) and train the scores first"
        )
    if isinstance(model, SubnetLayer):
        raise TypeError(
            "save_ticket needs a model containing score-mask layers, not a single layer"
        )
    tensors: dict[str, Tensor] = {}
    records: list[dict[str, Any]] = []
    skip: set[str] = set()
    aliases = names_of(model)
    with torch.no_grad():
        for name, layer in layers:
            mask = layer.mask()
            weight = layer.frozen_weight.detach()
            tensors[f"mask/{name}"] = pack_bits(mask)
            if layer.mode == "mp":
                alpha = layer.alpha()
                assert alpha is not None
                kept_w = weight[mask]  # row-major order of the kept positions
                tensors[f"sign/{name}"] = pack_bits(kept_w >= 0)
                tensors[f"alpha/{name}"] = alpha.detach().to(weight.dtype).cpu().clone()
            else:
                dtype = weight.dtype if weight_dtype is None else _WEIGHT_DTYPES[weight_dtype]
                tensors[f"weight/{name}"] = weight[mask].to(dtype).cpu().contiguous()
            if include_scores:
                tensors[f"scores/{name}"] = layer.scores.detach().cpu().contiguous().clone()
            records.append(
                {
                    "name": name,
                    "class": type(layer).__name__,
                    "dense": _dense_base(layer),
                    "shape": list(weight.shape),
                    "pa": layer.pa,
                    "mode": layer.mode,
                    "kept": int(mask.sum()),
                }
            )
            for alias in aliases.get(id(layer), [name]):  # a layer registered twice
                skip.update({f"{alias}.weight", f"{alias}.scores"})
        for key, value in model.state_dict().items():
            if key in skip:
                continue
            # clone: safetensors refuses tensors that share memory (tied weights, views).
            tensors[f"state/{key}"] = value.detach().cpu().contiguous().clone()
    return tensors, records


def save_ticket(
    model: nn.Module,
    path: PathLike,
    *,
    metadata: Mapping[str, str] | None = None,
    weight_dtype: str | None = None,
    include_scores: bool = False,
) -> Path:
    """Save the ticket found in ``model`` as a safetensors file (no pickle), atomically.

    The file holds each score-mask layer's mask at 1 bit per weight and, for ``"mp"``
    layers, the kept weights' signs at 1 bit each and the gain alpha; for ``"lt"`` layers
    the kept weights' values. Every other ``state_dict`` entry (biases, BatchNorm,
    dense layers) is stored as is. A VGG-9 ``"mp"`` ticket at ``pa = 0.4`` is about 19x
    smaller than its float32 ``torch.save`` checkpoint.

    The file is written to a temporary file in the same folder and then renamed, so an
    interrupted save never leaves a partial file under ``path`` (an old file stays intact).

    Args:
        model: A model with score-mask layers (after :func:`~spikelottery.sparsify`).
        path: Where to write (conventionally ``*.safetensors``).
        metadata: Your own text entries (``dict[str, str]``), e.g. ``{"seed": "0",
            "dataset": "cifar10", "accuracy": "91.2"}``; read them back with
            :func:`read_ticket_info`.
        weight_dtype: Storage dtype of the kept weights of ``"lt"`` layers: ``None`` (the
            layer's own dtype, exact), ``"float32"``, ``"float16"`` or ``"bfloat16"``
            (half the size, rounded).
        include_scores: Also store the trained scores (float, one per weight). Not needed
            for inference, where the mask is all that matters. The frozen weights outside
            the mask are never stored: to continue a search later, keep an ordinary
            checkpoint as well.

    Returns:
        The path written, as a :class:`~pathlib.Path`.

    Raises:
        SpikeLotteryError: ``model`` has no score-mask layer.
        OSError: ``path`` cannot be written (the message names it).

    >>> net = sparsify(nn.Sequential(nn.Linear(16, 4)), pa=0.4, mode="mp")  # doctest: +SKIP
    >>> save_ticket(net, "ticket.safetensors", metadata={"seed": "0"})  # doctest: +SKIP
    PosixPath('ticket.safetensors')
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if weight_dtype is not None and weight_dtype not in _WEIGHT_DTYPES:
        raise ValueError(
            f"weight_dtype must be None or one of {tuple(_WEIGHT_DTYPES)}, got {weight_dtype!r}"
        )
    if not isinstance(include_scores, bool):
        raise TypeError(f"include_scores must be a bool, got {include_scores!r}")
    user = _check_user_metadata(metadata)
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(
            21, f"cannot save the ticket: {str(path)!r} is a folder; give a file name", str(path)
        )

    tensors, records = _ticket_tensors(model, weight_dtype, include_scores)
    # The model-level pa and mode come from the layers themselves: the most common ones.
    pa_values = Counter(r["pa"] for r in records)
    modes = Counter(r["mode"] for r in records)
    pa = float(pa_values.most_common(1)[0][0])
    mode = modes.most_common(1)[0][0]
    patch_embed, pb = _find_patch_selector(model)
    info = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "torch_version": torch.__version__,
        "pa": repr(float(pa)),
        "pb": repr(float(pb)),
        "mode": mode,
        "patch_embed": patch_embed or "",
        "layers": json.dumps(records, separators=(",", ":")),
        "weight_dtype": weight_dtype or "same",
        "include_scores": "true" if include_scores else "false",
    }
    meta = {**info, **user}
    meta["sha256"] = _digest(tensors, meta)
    data = safetensors.torch.save(tensors, metadata=meta)
    atomic_write_bytes(path, data)
    return path


# ----------------------------------------------------------------------------- reading


def _corrupt(path: Path, why: str) -> SpikeLotteryError:
    return SpikeLotteryError(f"{str(path)!r} is not a valid spikelottery ticket: {why}")


def _not_safetensors(path: Path, data: bytes, why: str) -> SpikeLotteryError:
    if data[:4] == b"PK\x03\x04":
        return _corrupt(
            path,
            "it is a zip archive, e.g. a torch.save checkpoint. Tickets are safetensors files "
            "and spikelottery never unpickles a file; save tickets with save_ticket()",
        )
    if data[:1] == b"\x80" and len(data) > 1 and 2 <= data[1] <= 5:
        return _corrupt(
            path,
            "it is a Python pickle, which could run arbitrary code when loaded and is never "
            "unpickled here; save tickets with save_ticket()",
        )
    return _corrupt(path, why)


def _parse_header(path: Path, data: bytes) -> dict[str, Any]:
    """Validate the safetensors framing and return the JSON header."""
    if len(data) < 8:
        raise _not_safetensors(path, data, f"the file has only {len(data)} bytes (truncated?)")
    (n,) = struct.unpack("<Q", data[:8])
    head = data[8 : 8 + min(n, 16)].lstrip()
    if n > _MAX_HEADER or not head.startswith(b"{"):
        raise _not_safetensors(path, data, "it is not a safetensors file")
    if 8 + n > len(data):
        raise _corrupt(
            path,
            f"the file is truncated: its header alone needs {8 + n:,} bytes, the file has "
            f"{len(data):,}",
        )
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _corrupt(
            path, f"its header is not valid JSON ({exc}); the file is corrupted"
        ) from None
    if not isinstance(header, dict):
        raise _corrupt(path, "its header is not a JSON object; the file is corrupted")
    end = 0
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        try:
            end = max(end, int(entry["data_offsets"][1]))
        except (TypeError, KeyError, IndexError, ValueError):
            raise _corrupt(path, f"the header entry {key!r} is malformed") from None
    have = len(data) - 8 - n
    if have < end:
        raise _corrupt(
            path,
            f"the file is truncated: the header describes {end:,} bytes of tensor data, "
            f"the file holds {have:,}",
        )
    if have > end:
        raise _corrupt(path, f"{have - end:,} unexpected bytes follow the tensor data")
    return header


def _meta(path: Path, meta: Mapping[str, str], key: str) -> str:
    try:
        return meta[key]
    except KeyError:
        raise _corrupt(path, f"its metadata lacks {key!r}") from None


def _parse_info(path: Path, meta: Mapping[str, str], size: int) -> TicketInfo:
    fmt = meta.get("format")
    if fmt != FORMAT_NAME:
        raise _corrupt(
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
        layers = json.loads(_meta(path, meta, "layers"))
        pa, pb = float(_meta(path, meta, "pa")), float(_meta(path, meta, "pb"))
        if not (0.0 <= pa < 1.0 and 0.0 <= pb < 1.0) or meta.get("mode") not in ("lt", "mp"):
            raise ValueError(f"pa={pa!r}, pb={pb!r}, mode={meta.get('mode')!r}")
        for rec in layers:
            rec["shape"] = [int(s) for s in rec["shape"]]
            rec["pa"] = float(rec["pa"])
            rec["kept"] = int(rec["kept"])
            for key in ("name", "class", "dense", "mode"):
                if not isinstance(rec[key], str):
                    raise TypeError(key)
            if rec["mode"] not in ("lt", "mp") or not 0.0 <= rec["pa"] < 1.0:
                raise ValueError(rec["name"])
    except (TypeError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise _corrupt(path, f"its settings or layer table are malformed ({exc!r})") from None
    user = {k[len(_USER_PREFIX) :]: v for k, v in meta.items() if k.startswith(_USER_PREFIX)}
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
    )


def _read(path: PathLike) -> tuple[TicketInfo, dict[str, Tensor]]:
    path = Path(path)
    data = path.read_bytes()
    header = _parse_header(path, data)
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise _corrupt(path, "its metadata is not a table of strings")
    info = _parse_info(path, meta, len(data))
    try:
        tensors = safetensors.torch.load(data)
    except SafetensorError as exc:
        raise _corrupt(path, f"safetensors cannot read it ({exc})") from None
    digest = meta.get("sha256")
    if digest is None or digest != _digest(tensors, meta):
        raise _corrupt(
            path,
            "the SHA-256 of its tensors and metadata does not match the one recorded when it "
            "was saved (the file was corrupted or edited)",
        )
    _check_keys(path, info, tensors)
    return info, tensors


def _check_keys(path: Path, info: TicketInfo, tensors: Mapping[str, Tensor]) -> None:
    """Every tensor belongs to a listed layer or to ``state/``; every layer has its tensors."""
    expected: set[str] = set()
    for rec in info.layers:
        name = rec["name"]
        own = ["mask", "sign", "alpha"] if rec["mode"] == "mp" else ["mask", "weight"]
        if info.include_scores:
            own.append("scores")
        for kind in own:
            key = f"{kind}/{name}"
            if key not in tensors:
                raise _corrupt(path, f"the tensor {key!r} of layer {name!r} is missing")
            expected.add(key)
    stray = [k for k in tensors if k not in expected and not k.startswith("state/")]
    if stray:
        raise _corrupt(path, f"it has tensors that belong to no listed layer: {_list(stray)}")
    if info.pb > 0 and not info.patch_embed:
        raise _corrupt(path, f"it prunes patches (pb={info.pb:g}) but names no patch embedding")


def read_ticket_info(path: PathLike) -> TicketInfo:
    """Read and check a ticket file's metadata (and checksum) without a model.

    >>> print(read_ticket_info("ticket.safetensors"))  # doctest: +SKIP
    spikelottery ticket v1 (470,212 bytes, spikelottery 0.1.0): 9 layers, mode='mp', ...
    """
    info, _ = _read(path)
    return info


# ----------------------------------------------------------------------------- loading


@dataclass
class _LayerPlan:
    name: str
    rec: dict[str, Any]
    mask: Tensor
    weight: Tensor
    scores: Tensor


def _expect(
    path: Path,
    tensors: Mapping[str, Tensor],
    key: str,
    dtype: torch.dtype | None,
    shape: tuple[int, ...] | None,
) -> Tensor:
    t = tensors.get(key)
    if t is None:
        raise _corrupt(path, f"the tensor {key!r} is missing")
    if dtype is not None and t.dtype != dtype:
        raise _corrupt(path, f"the tensor {key!r} has dtype {t.dtype}, expected {dtype}")
    if shape is not None and tuple(t.shape) != shape:
        raise _corrupt(path, f"the tensor {key!r} has shape {tuple(t.shape)}, expected {shape}")
    return t


def _exact_magnitudes(alpha: Tensor, mask: Tensor, kept: int) -> Tensor | None:
    """``kept`` magnitudes whose ``mp_alpha`` is ``alpha`` bit for bit, or ``None``.

    ``mp_alpha`` computes ``fl(sum |W|) / k``. The saved alpha came from some
    floating-point sum ``S`` with ``fl(S / k) = alpha``; ``S`` lies within a few ulps of
    ``k * alpha``, so it is found by trying those. Writing ``S = N * q`` with ``q`` a
    power of two and ``N < 2**bits`` (the mantissa width), the magnitudes ``n_i * q``
    with integers ``n_i >= 1`` summing to ``N`` have exactly representable partial sums,
    so every summation order (CPU or GPU) gives ``S`` exactly.
    """
    dtype = alpha.dtype
    bits = 1 - round(math.log2(torch.finfo(dtype).eps))  # significand bits: 24 for float32
    a = float(alpha)
    if kept == 0 or a <= 0.0 or not math.isfinite(a) or kept > 2 ** (bits - 1):
        return None
    count = mask.sum()
    s = torch.tensor(a * kept, dtype=torch.float64).to(dtype)
    found = None
    for direction in (math.inf, -math.inf):
        cand = s.clone()
        for _ in range(8):
            if torch.equal(cand.to(alpha.device) / count.clamp_min(1), alpha):
                found = cand
                break
            cand = torch.nextafter(cand, torch.full_like(cand, direction))
        if found is not None:
            break
    if found is None:
        return None
    _, exp = math.frexp(float(found))
    q = math.ldexp(1.0, exp - bits)
    n = round(float(found) / q)
    if n < kept or q < torch.finfo(dtype).tiny:
        return None
    base, extra = divmod(n, kept)
    mags = torch.full((kept,), base, dtype=torch.float64)
    mags[:extra] += 1
    return (mags * q).to(dtype=dtype, device=alpha.device)


def _mp_weight(signs: Tensor, mask: Tensor, alpha: Tensor) -> Tensor:
    """A frozen weight whose mp ticket is ``alpha * signs * mask`` exactly.

    Kept entries get ``±|w_i|`` with magnitudes from :func:`_exact_magnitudes`, the rest
    0. Where no exact choice exists (a layer keeping more than ``2**23`` float32 weights,
    some half-precision layers), every kept magnitude is alpha itself and the layer's
    alpha may then differ from the saved one in the last bit.
    """
    kept = signs.numel()
    mags = _exact_magnitudes(alpha, mask, kept)
    if mags is None:
        mags = alpha.expand(kept)
    weight = torch.zeros(mask.shape, dtype=alpha.dtype, device=alpha.device)
    weight[mask] = signs * mags
    return weight


def _plan_layer(
    path: Path, tensors: Mapping[str, Tensor], rec: dict[str, Any], layer: nn.Module
) -> _LayerPlan:
    name = rec["name"]
    shape = tuple(rec["shape"])
    n = math.prod(shape)
    ref = _weight(layer)
    try:
        mask = unpack_bits(_expect(path, tensors, f"mask/{name}", torch.uint8, None), shape)
    except ValueError as exc:
        raise _corrupt(path, f"the mask of layer {name!r} is damaged: {exc}") from None
    kept = int(mask.sum())
    if kept != rec["kept"] or kept != kept_count(n, rec["pa"]):
        raise _corrupt(
            path,
            f"the mask of layer {name!r} keeps {kept} weights, but pa={rec['pa']:g} of {n} "
            f"keeps {kept_count(n, rec['pa'])} (the table says {rec['kept']})",
        )
    mask = mask.to(ref.device)
    with torch.no_grad():
        if rec["mode"] == "mp":
            packed = _expect(path, tensors, f"sign/{name}", torch.uint8, None)
            try:
                signs = unpack_bits(packed, (kept,)).to(ref.device)
            except ValueError as exc:
                raise _corrupt(path, f"the signs of layer {name!r} are damaged: {exc}") from None
            alpha = _expect(path, tensors, f"alpha/{name}", None, ())
            if not alpha.is_floating_point() or not torch.isfinite(alpha):
                raise _corrupt(path, f"alpha of layer {name!r} is {alpha!r}")
            sign_values = torch.where(signs, 1.0, -1.0).to(ref.dtype)
            weight = _mp_weight(sign_values, mask, alpha.to(device=ref.device, dtype=ref.dtype))
        else:
            values = _expect(path, tensors, f"weight/{name}", None, (kept,))
            if not values.is_floating_point():
                raise _corrupt(path, f"the weights of layer {name!r} have dtype {values.dtype}")
            weight = torch.zeros(shape, dtype=ref.dtype, device=ref.device)
            weight[mask] = values.to(device=ref.device, dtype=ref.dtype)
        stored = tensors.get(f"scores/{name}")
        if stored is not None:
            if tuple(stored.shape) != shape or not stored.is_floating_point():
                raise _corrupt(
                    path, f"the scores of layer {name!r} have shape {tuple(stored.shape)}"
                )
            scores = stored.to(device=ref.device, dtype=ref.dtype)
            if not torch.equal(topk_mask(scores, rec["pa"]), mask):
                raise _corrupt(path, f"the scores of layer {name!r} do not give its saved mask")
        else:
            # 1 on kept, 0 elsewhere: the top-k of |scores| is then exactly the saved mask.
            scores = mask.to(ref.dtype)
    return _LayerPlan(name, rec, mask, weight, scores)


def _list(names: list[str] | set[str], limit: int = 8) -> str:
    names = sorted(names)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(repr(n) for n in names[:limit]) + more


def _check_architecture(
    path: Path, info: TicketInfo, model: nn.Module, tensors: Mapping[str, Tensor], strict: bool
) -> tuple[dict[str, nn.Module], dict[str, Tensor]]:
    """Check that ``model`` can take the ticket; nothing is modified."""
    walked: dict[str, tuple[nn.Module, nn.Module]] = {}
    for ref in walk(model):
        walked.setdefault(ref.name, (ref.parent, ref.module))
    modules: dict[str, nn.Module] = {}
    for rec in info.layers:
        name = rec["name"]
        shape = tuple(rec["shape"])
        where = f"layer {name!r} ({rec['dense']} with weight {shape})"
        if name not in walked:
            hint = (
                "" if name not in dict(model.named_modules()) else " (it is inside another layer)"
            )
            raise SpikeLotteryError(
                f"the ticket {str(path)!r} has {where}, but {type(model).__name__} has no such "
                f"convertible layer{hint}: load the ticket into the architecture it was saved from"
            )
        _parent, module = walked[name]
        if not isinstance(module, _DENSE_BASES):
            raise SpikeLotteryError(
                f"the ticket has {where}, but the model has a {type(module).__name__} there"
            )
        have = tuple(_weight(module).shape)
        if _dense_base(module) != rec["dense"] or have != shape:
            raise SpikeLotteryError(
                f"the ticket has {where}, but the model's {name!r} is a {_dense_base(module)} with "
                f"weight {have}: a different architecture or configuration"
            )
        if not isinstance(module, SubnetLayer):
            reason = refusal(module, name) or skip_reason(module)
            if reason is not None:
                raise SpikeLotteryError(f"cannot place {where} in the model: {reason}")
        modules[name] = module

    names = set(modules)
    extra_subnets = [n for n, _ in _subnet_layers(model) if n not in names]
    if extra_subnets and strict:
        raise SpikeLotteryError(
            f"the model has score-mask layers that the ticket {str(path)!r} lacks: "
            f"{_list(extra_subnets)}; load it into the architecture it was saved from, or pass "
            "strict=False to leave those layers as they are"
        )
    # The model's state_dict keys once the ticket's layers are score-mask layers.
    every_name = names_of(model)
    prefixes = {
        alias
        for n in [*names, *extra_subnets]
        for alias in every_name.get(id(model.get_submodule(n)), [n])
    }
    owned = {f"{p}.{k}" for p in prefixes for k in ("weight", "scores")}
    model_state = {k: v for k, v in model.state_dict().items() if k not in owned}
    file_state = {k[len("state/") :]: v for k, v in tensors.items() if k.startswith("state/")}
    missing = set(model_state) - set(file_state)
    unexpected = set(file_state) - set(model_state)
    if strict and (missing or unexpected):
        parts = []
        if unexpected:
            parts.append(f"the ticket has tensors the model lacks: {_list(unexpected)}")
        if missing:
            parts.append(f"the model has tensors the ticket lacks: {_list(missing)}")
        raise SpikeLotteryError(
            f"the ticket {str(path)!r} does not fit {type(model).__name__}: "
            + "; ".join(parts)
            + ". Load it into the architecture it was saved from (or pass strict=False to skip "
            "those tensors)"
        )
    if missing or unexpected:
        warnings.warn(
            f"load_ticket(strict=False) skipped {len(unexpected)} tensors of the ticket and "
            f"left {len(missing)} tensors of the model as they were: "
            f"{_list(unexpected | missing)}",
            stacklevel=3,
        )
    loadable: dict[str, Tensor] = {}
    for key in set(file_state) & set(model_state):
        have, want = model_state[key], file_state[key]
        if tuple(have.shape) != tuple(want.shape):
            raise SpikeLotteryError(
                f"tensor {key!r} has shape {tuple(want.shape)} in the ticket {str(path)!r} but "
                f"{tuple(have.shape)} in the model: a different architecture or configuration"
            )
        loadable[key] = want
    if info.pb > 0 and info.patch_embed not in dict(model.named_modules()):
        raise SpikeLotteryError(
            f"the ticket prunes patches (pb={info.pb:g}) after {info.patch_embed!r}, which "
            f"{type(model).__name__} does not have"
        )
    return modules, loadable


def load_ticket(model: M, path: PathLike, *, strict: bool = True) -> M:
    """Load a ticket saved by :func:`save_ticket` into ``model``, in place, and return it.

    ``model`` is either a fresh DENSE instance of the architecture the ticket was saved
    from (the ticket's layers are then sparsified with their recorded ``pa`` and mode,
    keeping no random state, and the patch selector is attached) or an already
    sparsified one. Everything is checked before the model is touched: a file that is
    not a ticket, truncated, corrupted (a SHA-256 guards the tensors) or of another
    format version, and a model that lacks a layer, has an extra one, or shapes one
    differently, raise :class:`~spikelottery.SpikeLotteryError` naming the problem and
    leave the model unchanged. The file is never unpickled.

    After loading, each layer's :meth:`~spikelottery.SubnetLayer.mask` is the saved mask
    and its effective weight the saved one (``alpha * sign(W) * M`` bit for bit; ``W * M``
    bit for bit unless saved with a smaller ``weight_dtype``), so outputs are equal. The
    frozen weights outside the mask are 0 and, unless the ticket includes scores, the
    scores are 1 on kept weights and 0 elsewhere: enough for inference and fine-tuning,
    not for continuing the search.

    Args:
        model: The model to load into (dense or sparsified).
        path: The ticket file.
        strict: If ``False``, tensors outside the ticket's score-mask layers that only the
            file or only the model has are skipped with a warning, and score-mask layers
            that the ticket does not list are left alone. The ticket's layers must exist
            with the right shape either way.

    Returns:
        ``model``.

    >>> net = load_ticket(build_my_dense_model(), "ticket.safetensors")  # doctest: +SKIP
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    path = Path(path)
    info, tensors = _read(path)
    if not info.layers:
        raise _corrupt(path, "it lists no score-mask layer")
    modules, loadable = _check_architecture(path, info, model, tensors, strict)
    plans = [_plan_layer(path, tensors, rec, modules[rec["name"]]) for rec in info.layers]

    # Everything is checked: now modify the model.
    names = {p.name for p in plans}
    to_swap = [p for p in plans if not isinstance(modules[p.name], SubnetLayer)]
    cuda_devices = sorted(
        {p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"}
    )
    # New layers draw random scores (on the parameters' device): not from the user's stream.
    with torch.random.fork_rng(devices=cuda_devices):
        if to_swap or info.pb > 0 or _find_patch_selector(model)[1] > 0:
            sparsify(
                model,
                info.pa,
                info.pb,
                mode=info.mode,
                filter=lambda module, name: name in names,
                layer_pa={p.name: p.rec["pa"] for p in plans},
                init="keep",
                patch_embed=info.patch_embed if info.pb > 0 else None,
            )
    state = dict(loadable)
    for plan in plans:
        layer = model.get_submodule(plan.name)
        assert isinstance(layer, SubnetLayer)
        layer.set_pa(plan.rec["pa"])
        layer.set_mode(plan.rec["mode"])
        state[f"{plan.name}.weight"] = plan.weight
        state[f"{plan.name}.scores"] = plan.scores
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys:  # excluded by the checks above; a bug if it happens
        raise SpikeLotteryError(f"internal error: unexpected keys {result.unexpected_keys}")
    for plan in plans:
        layer = model.get_submodule(plan.name)
        assert isinstance(layer, SubnetLayer)
        if not torch.equal(layer.mask(), plan.mask):  # pragma: no cover - a bug if it happens
            raise SpikeLotteryError(f"internal error: layer {plan.name!r} did not take its mask")
    return model


# ----------------------------------------------------------------------------- export


def export_dense(model: M) -> M:
    """A plain-PyTorch copy of ``model`` with the ticket baked into dense layers.

    The copy (``model`` is not changed) has every score-mask layer replaced by the dense
    layer it was made from holding ``W * M`` or ``alpha * sign(W) * M`` (see
    :func:`~spikelottery.densify`), and any patch selector removed with its hooks: the
    result runs without spikelottery's layers, and patch pruning is NOT applied. Its
    ``state_dict`` loads with ``strict=True`` into the original dense architecture.

    >>> dense = export_dense(sparsify(nn.Sequential(nn.Linear(8, 2)), pa=0.5))
    >>> type(dense[0]).__name__, sorted(dense.state_dict())
    ('Linear', ['0.bias', '0.weight'])
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    out = copy.deepcopy(model)
    if isinstance(out, SubnetLayer):
        return out.to_dense()  # type: ignore[return-value]
    attach_patch_selector(out, 0.0)  # removes the selectors and their hooks
    densify(out)
    invalidate_spikingjelly_cache(out)
    return out


def _have_onnxscript() -> bool:
    try:
        import onnxscript  # noqa: F401
    except Exception:
        return False
    return True


def export_onnx(
    model: nn.Module,
    path: PathLike,
    example_input: Tensor | tuple[Any, ...],
    *,
    dynamo: bool | None = None,
    **kwargs: Any,
) -> Path:
    """Export the ticket in ``model`` to ONNX, as the dense network of :func:`export_dense`.

    The copy is put in eval mode, its LIF neurons on the eager backend, and passed to
    :func:`torch.onnx.export`. Its newer
    exporter (``dynamo=True``, torch's default) needs the ``onnxscript`` package; without
    it the TorchScript exporter (``dynamo=False``) is used, which works offline and is
    what spikelottery tests. Spiking models export with their time loop unrolled for
    the ``T`` of ``example_input``; patch pruning is not applied.

    Args:
        model: A sparsified (or plain) model.
        path: The ``.onnx`` file to write.
        example_input: One input tensor, or a tuple of the forward's arguments.
        dynamo: ``True``/``False`` to choose the exporter; ``None`` picks ``True`` when
            ``onnxscript`` is installed.
        **kwargs: Passed to :func:`torch.onnx.export` (``input_names``, ``opset_version``...).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    >>> export_onnx(net, "ticket.onnx", torch.rand(1, 3, 32, 32))  # doctest: +SKIP
    PosixPath('ticket.onnx')
    """
    path = Path(path)
    dense = export_dense(model).eval()
    for module in dense.modules():
        if isinstance(module, LIFNeuron):
            # The fused kernel is a compiled autograd function that tracing cannot follow
            # (its graph passes onnx.checker but computes wrong shapes); the eager loop
            # has the same semantics and traces into plain ops.
            module.backend = "eager"
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    if dynamo is None:
        dynamo = _have_onnxscript()
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = dynamo
    elif dynamo:
        raise ValueError(f"torch {torch.__version__} has no dynamo ONNX exporter; use dynamo=False")
    with warnings.catch_warnings():
        # Choosing the TorchScript exporter is deliberate when onnxscript is missing.
        warnings.filterwarnings(
            "ignore", message=r".*legacy TorchScript-based ONNX export", category=DeprecationWarning
        )
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx\.")
        with torch.no_grad():
            torch.onnx.export(dense, args, str(path), **kwargs)
    return path
