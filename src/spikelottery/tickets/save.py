"""Save the ticket found in a model: masks, signs, gains and kept weights, atomically."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import Tensor, nn

from .._io import atomic_write_bytes
from .._modules import names_of
from .._version import __version__
from ..activations import binary_activation_names
from ..errors import SpikeLotteryError
from ..layers import SubnetLayer
from ..subnet import scores_name
from ._common import (
    PathLike,
    active_patch_selector,
    as_path,
    dense_base,
    entry_key,
    patch_pruning,
    subnet_layers,
)
from .format import (
    FORMAT_NAME,
    FORMAT_VERSION,
    FORMAT_VERSION_BINARY_ACTIVATIONS,
    USER_PREFIX,
    pack_bits,
    ticket_digest,
)

__all__ = ["save_ticket"]

_WEIGHT_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}


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
        out[USER_PREFIX + key] = value
    return out


def _ticket_tensors(
    model: nn.Module, weight_dtype: str | None, include_scores: bool
) -> tuple[dict[str, Tensor], list[dict[str, Any]]]:
    layers = subnet_layers(model)
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
            for param in layer.masked_names:
                rec = {"name": name, **({} if param == "weight" else {"param": param})}
                key = entry_key(rec)
                try:
                    mask = layer.mask(param)
                except SpikeLotteryError as exc:  # NaN or infinite scores: no mask to save
                    raise SpikeLotteryError(
                        f"cannot save the ticket: layer {key!r} has no valid mask: {exc}"
                    ) from None
                weight = layer.frozen_of(param).detach()
                tensors[f"mask/{key}"] = pack_bits(mask)
                if layer.mask_mode == "mp":
                    alpha = layer.alpha(param)
                    assert alpha is not None
                    kept_w = weight[mask]  # row-major order of the kept positions
                    tensors[f"sign/{key}"] = pack_bits(kept_w >= 0)
                    tensors[f"alpha/{key}"] = alpha.detach().to(weight.dtype).cpu().clone()
                else:
                    dtype = weight.dtype if weight_dtype is None else _WEIGHT_DTYPES[weight_dtype]
                    tensors[f"weight/{key}"] = weight[mask].to(dtype).cpu().contiguous()
                if include_scores:
                    scores = layer.scores_of(param)
                    tensors[f"scores/{key}"] = scores.detach().cpu().contiguous().clone()
                records.append(
                    {
                        **rec,
                        "class": type(layer).__name__,
                        "dense": dense_base(layer),
                        "shape": list(weight.shape),
                        "pa": layer.pa,
                        "mode": layer.mask_mode,
                        "kept": int(mask.sum()),
                    }
                )
                for alias in aliases.get(id(layer), [name]):  # a layer registered twice
                    skip.update({f"{alias}.{param}", f"{alias}.{scores_name(param)}"})
        for key, value in model.state_dict().items():
            if key in skip:
                continue
            # clone: safetensors refuses tensors that share memory (tied weights, views).
            tensors[f"state/{key}"] = value.detach().cpu().contiguous().clone()
    return tensors, records


def _selector_settings(model: nn.Module) -> dict[str, str]:
    """The patch selector's prefix tokens and layout (what sparsify cannot always detect)."""
    found = active_patch_selector(model)
    if found is None:
        return {}
    selector = found[1]
    return {"num_prefix_tokens": str(selector.num_prefix_tokens), "patch_layout": selector.layout}


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
    dense layers) is stored as is, and so are the names of the binary activations
    (:func:`~spikelottery.binarize_activations`; such a ticket is format version 2, which
    older readers refuse rather than load with real activations). A VGG-9 ``"mp"`` ticket at ``pa = 0.4`` is about 19x
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
        SpikeLotteryError: ``model`` has no score-mask layer, or a layer's scores hold
            NaN or infinite values (no exact mask exists; the message names the layer).
            Nothing is written then.
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
    path = as_path(path)
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
    patch_embed, pb = patch_pruning(model)
    binary = binary_activation_names(model)
    info = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION_BINARY_ACTIVATIONS if binary else FORMAT_VERSION,
        "library_version": __version__,
        "torch_version": torch.__version__,
        "pa": repr(float(pa)),
        "pb": repr(float(pb)),
        "mode": mode,
        "patch_embed": patch_embed or "",
        **_selector_settings(model),
        "layers": json.dumps(records, separators=(",", ":")),
        "weight_dtype": weight_dtype or "same",
        "include_scores": "true" if include_scores else "false",
        **({"binary_activations": json.dumps(binary)} if binary else {}),
    }
    meta = {**info, **user}
    meta["sha256"] = ticket_digest(tensors, meta)
    data = safetensors.torch.save(tensors, metadata=meta)
    atomic_write_bytes(path, data)
    return path
