"""Load a ticket into a fresh dense model (or a sparsified one), checking everything first.

Each of the ticket's layers gets a plan (its mask, and the frozen weight and scores that
give that mask and effective weight) before the model is touched.
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from .._modules import names_of, refusal, skip_reason, walk
from .._validation import kept_count
from ..activations import binarize_activations, check_binarized
from ..errors import SpikeLotteryError
from ..layers import SubnetLayer, masked_names
from ..masks import topk_mask
from ..sparsify import sparsify
from ..subnet import scores_name
from ._common import (
    DENSE_BASES,
    PathLike,
    as_path,
    dense_base,
    entry_key,
    quote_names,
    subnet_layers,
)
from .format import TicketInfo, invalid_ticket, read_ticket_file, unpack_bits

__all__ = ["load_ticket"]

M = TypeVar("M", bound=nn.Module)


def _weight(module: nn.Module, param: str = "weight") -> Tensor:
    """The stored weight (for a score-mask layer the frozen one, not the effective one)."""
    weight = module._parameters.get(param)
    if not isinstance(weight, Tensor):
        raise SpikeLotteryError(
            f"{type(module).__name__} has no parameter {param!r} (masked: "
            f"{', '.join(masked_names(module)) or 'none'})"
        )
    return weight


@dataclass
class _LayerPlan:
    name: str
    param: str
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
        raise invalid_ticket(path, f"the tensor {key!r} is missing")
    if dtype is not None and t.dtype != dtype:
        raise invalid_ticket(path, f"the tensor {key!r} has dtype {t.dtype}, expected {dtype}")
    if shape is not None and tuple(t.shape) != shape:
        raise invalid_ticket(
            path, f"the tensor {key!r} has shape {tuple(t.shape)}, expected {shape}"
        )
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
    name = entry_key(rec)
    param = rec.get("param", "weight")
    shape = tuple(rec["shape"])
    n = math.prod(shape)
    ref = _weight(layer, param)
    try:
        mask = unpack_bits(_expect(path, tensors, f"mask/{name}", torch.uint8, None), shape)
    except ValueError as exc:
        raise invalid_ticket(path, f"the mask of layer {name!r} is damaged: {exc}") from None
    kept = int(mask.sum())
    if kept != rec["kept"] or kept != kept_count(n, rec["pa"]):
        raise invalid_ticket(
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
                raise invalid_ticket(
                    path, f"the signs of layer {name!r} are damaged: {exc}"
                ) from None
            alpha = _expect(path, tensors, f"alpha/{name}", None, ())
            if not alpha.is_floating_point() or not torch.isfinite(alpha):
                raise invalid_ticket(path, f"alpha of layer {name!r} is {alpha!r}")
            sign_values = torch.where(signs, 1.0, -1.0).to(ref.dtype)
            weight = _mp_weight(sign_values, mask, alpha.to(device=ref.device, dtype=ref.dtype))
        else:
            values = _expect(path, tensors, f"weight/{name}", None, (kept,))
            if not values.is_floating_point():
                raise invalid_ticket(
                    path, f"the weights of layer {name!r} have dtype {values.dtype}"
                )
            weight = torch.zeros(shape, dtype=ref.dtype, device=ref.device)
            weight[mask] = values.to(device=ref.device, dtype=ref.dtype)
        stored = tensors.get(f"scores/{name}")
        if stored is not None:
            if tuple(stored.shape) != shape or not stored.is_floating_point():
                raise invalid_ticket(
                    path, f"the scores of layer {name!r} have shape {tuple(stored.shape)}"
                )
            scores = stored.to(device=ref.device, dtype=ref.dtype)
            if not torch.equal(topk_mask(scores, rec["pa"]), mask):
                raise invalid_ticket(
                    path, f"the scores of layer {name!r} do not give its saved mask"
                )
        else:
            # 1 on kept, 0 elsewhere: the top-k of |scores| is then exactly the saved mask.
            scores = mask.to(ref.dtype)
    return _LayerPlan(rec["name"], param, rec, mask, weight, scores)


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
        param = rec.get("param", "weight")
        shape = tuple(rec["shape"])
        where = f"layer {name!r} ({rec['dense']} with {param} {shape})"
        if name not in walked:
            hint = (
                "" if name not in dict(model.named_modules()) else " (it is inside another layer)"
            )
            raise SpikeLotteryError(
                f"the ticket {str(path)!r} has {where}, but {type(model).__name__} has no such "
                f"convertible layer{hint}: load the ticket into the architecture it was saved from"
            )
        _parent, module = walked[name]
        if not isinstance(module, DENSE_BASES):
            raise SpikeLotteryError(
                f"the ticket has {where}, but the model has a {type(module).__name__} there"
            )
        if param not in masked_names(module):
            raise SpikeLotteryError(
                f"the ticket has {where}, but the model's {name!r} masks "
                f"{', '.join(masked_names(module)) or 'nothing'}: a different architecture or "
                "configuration"
            )
        have = tuple(_weight(module, param).shape)
        if dense_base(module) != rec["dense"] or have != shape:
            raise SpikeLotteryError(
                f"the ticket has {where}, but the model's {name!r} is a {dense_base(module)} with "
                f"{param} {have}: a different architecture or configuration"
            )
        if not isinstance(module, SubnetLayer):
            reason = refusal(module, name) or skip_reason(module)
            if reason is not None:
                raise SpikeLotteryError(f"cannot place {where} in the model: {reason}")
        modules[name] = module

    listed: dict[str, set[str]] = {}
    for rec in info.layers:
        listed.setdefault(rec["name"], set()).add(rec.get("param", "weight"))
    for name, params in listed.items():
        lacking = [p for p in masked_names(modules[name]) if p not in params]
        if lacking:
            raise SpikeLotteryError(
                f"the ticket {str(path)!r} lists layer {name!r} without its masked "
                f"{', '.join(lacking)}: a different architecture or configuration"
            )
    names = set(modules)
    extra_subnets = [n for n, _ in subnet_layers(model) if n not in names]
    if extra_subnets and strict:
        raise SpikeLotteryError(
            f"the model has score-mask layers that the ticket {str(path)!r} lacks: "
            f"{quote_names(extra_subnets)}; load it into the architecture it was saved from, or pass "
            "strict=False to leave those layers as they are"
        )
    # The model's state_dict keys once the ticket's layers are score-mask layers.
    every_name = names_of(model)
    owned = {
        f"{prefix}.{key}"
        for n in [*names, *extra_subnets]
        for prefix in every_name.get(id(model.get_submodule(n)), [n])
        for attr in masked_names(model.get_submodule(n))
        for key in (attr, scores_name(attr))
    }
    model_state = {k: v for k, v in model.state_dict().items() if k not in owned}
    file_state = {k[len("state/") :]: v for k, v in tensors.items() if k.startswith("state/")}
    missing = set(model_state) - set(file_state)
    unexpected = set(file_state) - set(model_state)
    if strict and (missing or unexpected):
        parts = []
        if unexpected:
            parts.append(f"the ticket has tensors the model lacks: {quote_names(unexpected)}")
        if missing:
            parts.append(f"the model has tensors the ticket lacks: {quote_names(missing)}")
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
            f"{quote_names(unexpected | missing)}",
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
    path = as_path(path)
    info, tensors = read_ticket_file(path)
    if not info.layers:
        raise invalid_ticket(path, "it lists no score-mask layer")
    modules, loadable = _check_architecture(path, info, model, tensors, strict)
    check_binarized(model, info.binary_activations)
    plans = [_plan_layer(path, tensors, rec, modules[rec["name"]]) for rec in info.layers]
    modes = {p.name: p.rec["mode"] for p in plans}
    ratios = {p.name: p.rec["pa"] for p in plans}
    for plan in plans:  # one pa and one mode per layer, whatever it masks
        if (ratios[plan.name], modes[plan.name]) != (plan.rec["pa"], plan.rec["mode"]):
            raise invalid_ticket(path, f"layer {plan.name!r} has records with different pa or mode")

    # Everything is checked: now modify the model.
    names = {p.name for p in plans}
    cuda_devices = sorted(
        {p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"}
    )
    # New layers draw random scores (on the parameters' device): not from the user's stream.
    with torch.random.fork_rng(devices=cuda_devices):
        # One call sets every layer's pa and mode from its plan (swapping the dense ones)
        # and attaches, updates or removes the patch selector.
        sparsify(
            model,
            info.pa,
            info.pb,
            mode=info.mode,
            filter=lambda module, name: name in names,
            layer_pa=ratios,
            layer_mode=modes,
            init="keep",
            patch_embed=info.patch_embed if info.pb > 0 else None,
            num_prefix_tokens=info.num_prefix_tokens if info.pb > 0 else None,
            patch_layout=(info.patch_layout or "auto") if info.pb > 0 else "auto",
        )
    if info.binary_activations:
        binary = set(info.binary_activations)
        binarize_activations(model, lambda module, name: name in binary)
    state = dict(loadable)
    for plan in plans:
        state[f"{plan.name}.{plan.param}"] = plan.weight
        state[f"{plan.name}.{scores_name(plan.param)}"] = plan.scores
    # Keep the modules' state_dict versions: some _load_from_state_dict need them
    # (torchvision's MNASNet raises without).
    ordered: OrderedDict[str, Tensor] = OrderedDict(state)
    ordered._metadata = getattr(model.state_dict(), "_metadata", None)  # type: ignore[attr-defined]
    result = model.load_state_dict(ordered, strict=False)
    if result.unexpected_keys:  # excluded by the checks above; a bug if it happens
        raise SpikeLotteryError(f"internal error: unexpected keys {result.unexpected_keys}")
    for plan in plans:
        layer = model.get_submodule(plan.name)
        assert isinstance(layer, SubnetLayer)
        if not torch.equal(
            layer.mask(plan.param), plan.mask
        ):  # pragma: no cover - a bug if it happens
            raise SpikeLotteryError(f"internal error: layer {plan.name!r} did not take its mask")
    return model
