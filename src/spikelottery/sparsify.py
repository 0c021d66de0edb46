"""Rewrite any network in place into a lottery-ticket search, and back.

:func:`sparsify` swaps every matching ``nn.Conv1d`` / ``nn.Conv2d`` / ``nn.Linear`` (their
subclasses included) for a score-mask layer, freezes the weights, and with ``pb > 0``
attaches a patch selector after the patch embedding. :func:`densify` bakes the found
ticket back into plain dense layers.

The swap follows torchao's pattern: walk the children top-down, replace with ``setattr``,
never descend into what was just replaced. What ``sparsify`` guarantees (see the docs,
"What sparsify guarantees"):

* every read of a swapped layer's ``weight`` sees the ticket (its own forward, a
  subclass's forward, a parent passing ``child.weight`` to a functional op, PyTorch's
  fused inference paths): :attr:`SubnetLayer.weight` is the effective weight;
* a module registered at several places is swapped once, everywhere;
* weights tied between swapped layers stay tied (one frozen weight, one set of scores);
  a layer whose weight is tied to anything else is skipped, with the reason;
* a layer whose weight is computed (parametrizations, ``weight_norm``, ``prune``) is
  refused with :class:`~spikelottery.SpikeLotteryError`, never swapped half-way;
* on any failure every swap is rolled back: new layers hold copies of the weights.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, overload

import torch
from torch import Tensor, nn

from ._modules import (
    CONVERTIBLE,
    Reference,
    freeze_batchnorm_affine,
    invalidate_spikingjelly_cache,
    refusal,
    skip_reason,
    walk,
    weight_holders,
)
from ._validation import check_ratio
from .check import check_ticket
from .errors import SpikeLotteryError
from .layers import INITS, MODES, SubnetLayer, check_mode, subnet_class_for
from .summary import TicketSummary, kept_fraction, summary

__all__ = ["SparsifyReport", "TicketSummary", "densify", "kept_fraction", "sparsify", "summary"]

logger = logging.getLogger("spikelottery")

M = TypeVar("M", bound=nn.Module)
FilterFn = Callable[[nn.Module, str], bool]
Filter = str | type | tuple[type, ...] | FilterFn | None


@dataclass
class SparsifyReport:
    """What one :func:`sparsify` call did: layers swapped, updated and skipped (with why).

    ``aliases`` maps each further name of a layer registered at several places to the
    name it is listed under; ``tied`` maps a swapped layer to the swapped layers that
    share its frozen weight and scores.
    """

    pa: float
    pb: float | None
    mode: str
    swapped: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    tied: dict[str, list[str]] = field(default_factory=dict)
    patch_embed: str | None = None

    def __str__(self) -> str:
        pb = "unchanged" if self.pb is None else f"{self.pb:g}"
        lines = [
            f"sparsify(pa={self.pa:g}, pb={pb}, mode={self.mode!r}): "
            f"{len(self.swapped)} swapped, {len(self.updated)} updated, {len(self.skipped)} skipped"
        ]
        lines += [f"  swapped  {name}" for name in self.swapped]
        lines += [f"  updated  {name}" for name in self.updated]
        lines += [f"  shared   {alias} is {name}" for alias, name in self.aliases.items()]
        lines += [f"  tied     {name} with {', '.join(o)}" for name, o in self.tied.items()]
        lines += [f"  skipped  {name}: {why}" for name, why in self.skipped.items()]
        if self.patch_embed is not None:
            lines.append(f"  patch selector (pb={pb}) after {self.patch_embed!r}")
        return "\n".join(lines)


def _as_filter(filter: Filter) -> FilterFn:
    if filter is None:
        return lambda module, name: True
    if isinstance(filter, str):
        try:
            pattern = re.compile(filter)
        except re.error as exc:
            raise ValueError(
                f"filter={filter!r} is not a valid regular expression: {exc}"
            ) from None
        return lambda module, name: pattern.search(name) is not None
    if isinstance(filter, type) or (
        isinstance(filter, tuple) and filter and all(isinstance(t, type) for t in filter)
    ):
        types = filter
        return lambda module, name: isinstance(module, types)
    if callable(filter):
        return filter
    raise TypeError(
        "filter must be None, a regex on qualified names (str), a module type or tuple of types, "
        f"or a callable (module, name) -> bool; got {filter!r}"
    )


def _resolve_overrides(
    arg: str,
    overrides: Mapping[str, Any] | None,
    names: list[str],
    check: Callable[[str, Any], Any],
) -> dict[str, Any]:
    """Map each candidate layer name to its override (exact name first, then regex fullmatch)."""
    if not overrides:
        return {}
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        checked = check(f"{arg}[{key!r}]", value)
        hits = [n for n in names if n == key]
        if not hits:
            try:
                pattern = re.compile(key)
            except re.error as exc:
                raise ValueError(
                    f"{arg} key {key!r} is neither a layer name nor a valid regex: {exc}"
                ) from None
            hits = [n for n in names if pattern.fullmatch(n)]
        if not hits:
            raise SpikeLotteryError(
                f"{arg} key {key!r} matches no convertible layer; candidates are: "
                f"{', '.join(names[:20])}{' ...' if len(names) > 20 else ''}"
            )
        for n in hits:
            out.setdefault(n, checked)
    return out


def _check_layer_mode(name: str, mode: Any) -> str:
    if mode not in MODES:
        raise ValueError(f"{name} must be one of {MODES}, got {mode!r}")
    return str(mode)


@dataclass
class _Layer:
    """One convertible module and every place it is registered."""

    refs: list[Reference]

    @property
    def name(self) -> str:
        return self.refs[0].name

    @property
    def module(self) -> nn.Module:
        return self.refs[0].module


def _layers(model: nn.Module) -> list[_Layer]:
    """Every convertible module of ``model`` once, with all its references, in walk order."""
    by_id: dict[int, _Layer] = {}
    for ref in walk(model):
        if isinstance(ref.module, CONVERTIBLE):
            by_id.setdefault(id(ref.module), _Layer([])).refs.append(ref)
    return list(by_id.values())


def _weights_left_dense(model: nn.Module, report: SparsifyReport) -> dict[str, str]:
    """Weights that stay dense although they are not listed yet: say so in the report.

    Weight tensors (2-D or more) of layer types sparsify does not mask (``nn.Conv3d``,
    transposed convs, RNNs, ``nn.Bilinear``, the raw ``in_proj_weight`` of
    ``nn.MultiheadAttention``, timm's ``CondConv2d`` ...), and conv/linear layers nested
    inside another conv/linear layer (which the swap does not descend into). Embedding
    tables are lookups, not synapses, and are not listed.
    """
    listed = set(report.skipped) | set(report.aliases)
    out: dict[str, str] = {}
    for name, module in model.named_modules():
        if name in listed or isinstance(module, (SubnetLayer, nn.Embedding, nn.EmbeddingBag)):
            continue
        if isinstance(module, CONVERTIBLE):
            out[name] = (
                "inside another conv/linear layer, which sparsify does not descend into: "
                "stays dense and trainable"
            )
            continue
        keys = [
            k
            for k, p in module._parameters.items()
            if p is not None and "weight" in k and p.dim() > 1
        ]
        if not keys:
            continue
        if isinstance(module, nn.MultiheadAttention):
            why = "nn.MultiheadAttention's input projection is a raw parameter, not a layer"
        else:
            why = (
                f"a {type(module).__name__}, not a layer type sparsify masks (nn.Conv1d, "
                "nn.Conv2d, nn.Linear and their subclasses)"
            )
        out[name or "(model)"] = f"{why}: {', '.join(keys)} stay dense and trainable"
    return out


def _check_tied_updates(
    model: nn.Module, candidates: list[_Layer], settings: Callable[[str], tuple[float, str]]
) -> None:
    """Score-mask layers that share scores (tied) must be updated together, alike."""
    groups: dict[int, list[tuple[str, SubnetLayer]]] = {}
    for name, module in model.named_modules():
        if isinstance(module, SubnetLayer):
            groups.setdefault(id(module.scores), []).append((name, module))
    chosen = {id(c.module) for c in candidates}
    for members in groups.values():
        inside = [n for n, m in members if id(m) in chosen]
        if len(members) < 2 or not inside:
            continue
        names = ", ".join(repr(n) for n, _ in members)
        if len(inside) != len(members):
            raise SpikeLotteryError(
                f"layers {names} share one frozen weight and one set of scores (tied), but "
                f"only {', '.join(repr(n) for n in inside)} would be updated: update all of "
                "them or none (adjust filter=)"
            )
        if len({settings(n) for n in inside}) > 1:
            raise SpikeLotteryError(
                f"layers {names} share one frozen weight and one set of scores (tied) but "
                "would get different pa or mode (layer_pa / layer_mode); give them the same"
            )


def _tie_groups(
    model: nn.Module, candidates: list[_Layer], report: SparsifyReport
) -> tuple[list[_Layer], dict[int, str]]:
    """Drop candidates whose parameters are tied to something that will not be swapped.

    Returns the remaining candidates and, for a weight tied only between candidates,
    ``id(original weight) -> name of the first layer holding it``.
    """
    holders = weight_holders(model)
    if not holders:
        return candidates, {}
    names = {c.name for c in candidates}
    keep: list[_Layer] = []
    first_holder: dict[int, str] = {}
    for cand in candidates:
        reason = None
        for p_name, p in cand.module._parameters.items():
            where = holders.get(id(p)) if p is not None else None
            if where is None:
                continue
            others = [w for w in where if w != f"{cand.name}.{p_name}"]
            outside = [
                w for w in others if not (w.endswith(f".{p_name}") and w.rsplit(".", 1)[0] in names)
            ]
            if outside:
                reason = (
                    f"its {p_name} is tied to {', '.join(outside)}, which sparsify does not mask; "
                    "skipped so that the tie holds (mask both ends, or untie them first)"
                )
                break
            if p_name == "weight":
                first_holder.setdefault(id(p), cand.name)
        if reason is None:
            keep.append(cand)
        else:
            report.skipped[cand.name] = reason
    return keep, first_holder


def _select(
    model: nn.Module, accept: FilterFn, report: SparsifyReport
) -> tuple[list[_Layer], dict[int, str]]:
    """The layers to swap or update; refuses (raises) on layers that cannot be masked."""
    candidates: list[_Layer] = []
    refused: list[str] = []
    for layer in _layers(model):
        name, child = layer.name, layer.module
        report.aliases.update({r.name: name for r in layer.refs[1:]})
        if not accept(child, name):
            report.skipped[name] = "excluded by filter"
            continue
        if isinstance(child, SubnetLayer):
            candidates.append(layer)
            continue
        why_not = refusal(child, name)
        if why_not is not None:
            refused.append(why_not)
            continue
        reason = skip_reason(child)
        if reason is not None:
            report.skipped[name] = reason
            continue
        candidates.append(layer)
    if refused:
        raise SpikeLotteryError(
            "sparsify cannot mask these layers faithfully:\n- " + "\n- ".join(refused)
        )
    fresh = [c for c in candidates if not isinstance(c.module, SubnetLayer)]
    kept_fresh, first_holder = _tie_groups(model, fresh, report)
    chosen = {id(c.module) for c in kept_fresh}
    candidates = [
        c for c in candidates if isinstance(c.module, SubnetLayer) or id(c.module) in chosen
    ]
    return candidates, first_holder


def _selector_settings(model: nn.Module) -> list[tuple[str, float, int, str]]:
    """``(owner, pb, num_prefix_tokens, layout)`` of every attached patch selector."""
    from .patch import find_patch_selectors  # patch imports this module

    return [
        (name, sel.pb, sel.num_prefix_tokens, sel.layout)
        for name, sel in find_patch_selectors(model)
    ]


def _restore_selectors(model: nn.Module, settings: list[tuple[str, float, int, str]]) -> None:
    """Put the patch selectors back as :func:`_selector_settings` found them."""
    from .patch import attach_patch_selector  # patch imports this module

    attach_patch_selector(model, 0.0)
    for name, pb, prefix, layout in settings:
        if pb > 0:
            attach_patch_selector(
                model, pb, patch_embed=name, num_prefix_tokens=prefix, layout=layout
            )


@overload
def sparsify(
    model: M,
    pa: float,
    pb: float | None = ...,
    *,
    mode: str = ...,
    filter: Filter = ...,
    layer_pa: Mapping[str, float] | None = ...,
    layer_mode: Mapping[str, str] | None = ...,
    init: str = ...,
    batchnorm: str = ...,
    patch_embed: str | None = ...,
    num_prefix_tokens: int | None = ...,
    patch_layout: str = ...,
    example_inputs: Any = ...,
    return_report: Literal[False] = ...,
    verbose: bool = ...,
) -> M: ...
@overload
def sparsify(
    model: M,
    pa: float,
    pb: float | None = ...,
    *,
    mode: str = ...,
    filter: Filter = ...,
    layer_pa: Mapping[str, float] | None = ...,
    layer_mode: Mapping[str, str] | None = ...,
    init: str = ...,
    batchnorm: str = ...,
    patch_embed: str | None = ...,
    num_prefix_tokens: int | None = ...,
    patch_layout: str = ...,
    example_inputs: Any = ...,
    return_report: Literal[True],
    verbose: bool = ...,
) -> tuple[M, SparsifyReport]: ...
def sparsify(
    model: M,
    pa: float,
    pb: float | None = None,
    *,
    mode: str = "lt",
    filter: Filter = None,
    layer_pa: Mapping[str, float] | None = None,
    layer_mode: Mapping[str, str] | None = None,
    init: str = "kaiming_normal",
    batchnorm: str = "keep",
    patch_embed: str | None = None,
    num_prefix_tokens: int | None = None,
    patch_layout: str = "auto",
    example_inputs: Any = None,
    return_report: bool = False,
    verbose: bool = False,
) -> M | tuple[M, SparsifyReport]:
    """Turn ``model`` into a lottery-ticket search, in place, and return it.

    Every ``nn.Conv1d`` / ``nn.Conv2d`` / ``nn.Linear`` (or subclass, e.g. SpikingJelly's
    multi-step ``layer.Conv2d``) that ``filter`` accepts becomes a score-mask layer with its
    weight frozen; only the scores (and any parameter outside the swapped layers) train.
    After the call, every read of a swapped layer's ``.weight`` (by its own forward, a
    subclass's forward, a parent module, ``torch.func``, ``torch.compile``, PyTorch's fused
    inference paths) returns the effective weight; the frozen random weight is
    ``layer.frozen_weight``. Layers that are already score-mask layers are updated (``pa``,
    ``mode``), never wrapped twice. A module registered at several places is swapped once,
    everywhere. With ``pb > 0`` a :class:`~spikelottery.PatchSelector` is attached after the
    patch embedding.

    Args:
        model: Any ``nn.Module``: plain PyTorch, SpikingJelly, torchvision, timm, or the
            spikelottery zoo.
        pa: Fraction of weights REMOVED per layer, in ``[0, 1)``.
        pb: Fraction of patches REMOVED after the patch embedding, in ``[0, 1)``. ``None``
            (the default) leaves patch selection as it is; ``0`` removes an attached
            selector.
        mode: ``"lt"`` (``W * M``) or ``"mp"`` (``alpha * sign(W) * M``).
        filter: Which layers to convert: a regex searched in the qualified name
            (``"patch_embed"``), a module type or tuple of types, or a callable
            ``(module, qualified_name) -> bool``. ``None`` converts all.
        layer_pa: Per-layer overrides of ``pa``: ``{qualified name or regex: pa}``.
        layer_mode: Per-layer overrides of ``mode``: ``{qualified name or regex: mode}``.
        init: Frozen-weight initialisation: ``"kaiming_normal"`` (default),
            ``"signed_constant"``, or ``"keep"`` to keep the current (e.g. pretrained) values.
        batchnorm: ``"keep"``, or ``"nonaffine"`` to fix every BatchNorm's affine
            parameters at weight 1, bias 0 and freeze them (a score-only search, as in
            edge-popup); the keys stay, so :func:`densify` still loads strictly.
        patch_embed: Qualified name of the module after which patches are pruned (only with
            ``pb > 0``); found automatically for Spikformer-style, timm and torchvision
            vision transformers.
        num_prefix_tokens: Leading tokens never pruned (class, distillation, register
            tokens); detected for timm and torchvision vision transformers.
        patch_layout: The patch embedding's output layout (see
            :func:`~spikelottery.select_patches`); ``"auto"`` detects it.
        example_inputs: An input (or a tuple of forward arguments). If given, the ticket is
            verified on it with :func:`~spikelottery.check_ticket` (one forward and
            backward, one forward per swapped layer): a swapped layer whose scores get no
            gradient, or whose mask the output ignores, raises and rolls the swap back.
        return_report: Return ``(model, report)`` with the :class:`SparsifyReport`.
        verbose: Print the report (it is always logged at INFO).

    Returns:
        ``model`` itself, or ``(model, report)`` with ``return_report=True``.

    Raises:
        ValueError: ``pa``, ``pb``, ``mode``, ``init`` or ``batchnorm`` is invalid.
        SpikeLotteryError: ``filter`` or a ``layer_pa`` key matches no layer; a matched
            layer computes its weight (parametrization, ``weight_norm``) and cannot be
            masked faithfully; no patch embedding is found for ``pb > 0``; or the check on
            ``example_inputs`` fails.

    >>> net = sparsify(nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8, 2)), pa=0.4)
    >>> net[0].kept
    130
    """
    from .patch import attach_patch_selector  # patch.py imports this module

    pa = check_ratio("pa", pa)
    pb = None if pb is None else check_ratio("pb", pb)
    mode = check_mode(mode)
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if batchnorm not in ("keep", "nonaffine"):
        raise ValueError(f"batchnorm must be 'keep' or 'nonaffine', got {batchnorm!r}")
    if (patch_embed is not None or num_prefix_tokens is not None or patch_layout != "auto") and (
        not pb
    ):
        raise ValueError(
            "patch_embed, num_prefix_tokens and patch_layout are only used with pb > 0; pass pb "
            "(the fraction of patches removed)"
        )
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if isinstance(model, CONVERTIBLE):
        raise TypeError(
            f"sparsify(model) rewrites the layers inside a model, and {type(model).__name__} is "
            "itself a layer: wrap it (nn.Sequential(layer)) or use SubnetConv/SubnetLinear."
            "from_dense(layer, pa)"
        )
    accept = _as_filter(filter)

    report = SparsifyReport(pa=pa, pb=pb, mode=mode)
    candidates, first_holder = _select(model, accept, report)
    if not candidates and (filter is not None or not pb):
        where = f"filter={filter!r}" if filter is not None else "the model"
        raise SpikeLotteryError(
            f"{where} matched no nn.Conv1d/nn.Conv2d/nn.Linear layer to sparsify"
            + (f" (skipped: {report.skipped})" if report.skipped else "")
            + ". Check the qualified names with [n for n, _ in model.named_modules()]."
        )
    names = [c.name for c in candidates]
    overrides = _resolve_overrides("layer_pa", layer_pa, names, check_ratio)
    modes = _resolve_overrides("layer_mode", layer_mode, names, _check_layer_mode)
    _check_tied_updates(model, candidates, lambda n: (overrides.get(n, pa), modes.get(n, mode)))

    selectors_before = _selector_settings(model) if pb is not None else []
    done: list[tuple[nn.Module, str, nn.Module]] = []
    updated: list[tuple[SubnetLayer, float, str]] = []
    made: dict[int, SubnetLayer] = {}  # id(original weight) -> first new layer holding it
    copies: dict[int, Tensor] = {}  # id(original bias, ...) -> its copy, shared by all holders
    try:
        for cand in candidates:
            layer_ratio = overrides.get(cand.name, pa)
            layer_mode_ = modes.get(cand.name, mode)
            child = cand.module
            if isinstance(child, SubnetLayer):
                updated.append((child, child.pa, child.mode))
                child.set_pa(layer_ratio)
                child.set_mode(layer_mode_)
                report.updated.append(cand.name)
                continue
            original_weight = child._parameters["weight"]
            with torch.no_grad():
                subnet = subnet_class_for(type(child)).from_dense(
                    child, layer_ratio, layer_mode_, init=init
                )
            first = made.get(id(original_weight))
            if first is not None:  # tied to a layer swapped before: share weight and scores
                if (first.pa, first.mode) != (layer_ratio, layer_mode_):
                    raise SpikeLotteryError(
                        f"layers {first_holder[id(original_weight)]!r} and "
                        f"{cand.name!r} share one weight but were given different settings "
                        f"(pa={first.pa:g}, mode={first.mode!r} and pa={layer_ratio:g}, "
                        f"mode={layer_mode_!r}); give them the same pa and mode"
                    )
                subnet._parameters["weight"] = first.frozen_weight  # type: ignore[assignment]
                subnet._parameters["scores"] = first.scores
                subnet.invalidate()
                report.tied.setdefault(first_holder[id(original_weight)], []).append(cand.name)
            elif id(original_weight) in first_holder:
                made[id(original_weight)] = subnet
            for p_name, p in child._parameters.items():  # a tied bias stays tied
                if p is not None and p_name != "weight":
                    kept = copies.setdefault(id(p), subnet._parameters[p_name])  # type: ignore[arg-type]
                    subnet._parameters[p_name] = kept  # type: ignore[assignment]
            for ref in cand.refs:
                setattr(ref.parent, ref.attr, subnet)
                done.append((ref.parent, ref.attr, child))
            report.swapped.append(cand.name)
        if pb is not None:
            report.patch_embed = attach_patch_selector(
                model,
                pb,
                patch_embed=patch_embed,
                num_prefix_tokens=num_prefix_tokens,
                layout=patch_layout,
            )
        invalidate_spikingjelly_cache(model)
        if example_inputs is not None:
            check_ticket(model, example_inputs).raise_if_failed()
    except BaseException:
        if pb is not None:
            _restore_selectors(model, selectors_before)
        for parent, attr, old in reversed(done):
            setattr(parent, attr, old)
        for layer, old_pa, old_mode in updated:
            layer.set_pa(old_pa)
            layer.set_mode(old_mode)
        invalidate_spikingjelly_cache(model)
        raise

    report.skipped.update(_weights_left_dense(model, report))
    if batchnorm == "nonaffine":
        freeze_batchnorm_affine(model)
    logger.info("%s", report)
    if verbose:
        print(report)
    return (model, report) if return_report else model


def densify(model: M) -> M:
    """Bake the ticket into plain dense layers, in place, and return ``model``.

    Each score-mask layer becomes the class it was made from (``nn.Conv2d``, SpikingJelly's
    ``layer.Conv2d``, ...) holding ``W * M`` or ``alpha * sign(W) * M``; the ``scores`` are
    dropped. A layer registered at several places stays one layer, and layers that
    shared a weight share the baked one. The ``state_dict`` of the result loads with
    ``strict=True`` into the user's original, unmodified architecture. A patch selector,
    having no state, stays attached.

    >>> net = sparsify(nn.Sequential(nn.Linear(4, 3)), pa=0.5)
    >>> type(densify(net)[0]).__name__
    'Linear'
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"densify(model): model must be an nn.Module, got {type(model).__name__}")
    if isinstance(model, SubnetLayer):
        raise TypeError("densify(model) needs a container; call layer.to_dense() on a single layer")
    dense_of: dict[int, nn.Module] = {}
    baked: dict[tuple[int, int], nn.Parameter] = {}  # (frozen weight, scores) -> dense weight
    biases: dict[int, nn.Parameter] = {}  # id(bias) -> the dense layers' shared copy
    for ref in list(walk(model)):
        child = ref.module
        if not isinstance(child, SubnetLayer):
            continue
        dense = dense_of.get(id(child))
        if dense is None:
            dense = child.to_dense()
            key = (id(child.frozen_weight), id(child.scores))
            if key in baked:
                dense._parameters["weight"] = baked[key]
            else:
                baked[key] = dense._parameters["weight"]  # type: ignore[assignment]
            if child.bias is not None:  # a tied bias stays tied
                bias = biases.setdefault(id(child.bias), dense._parameters["bias"])  # type: ignore[arg-type]
                dense._parameters["bias"] = bias
            dense_of[id(child)] = dense
        setattr(ref.parent, ref.attr, dense)
    if dense_of:
        invalidate_spikingjelly_cache(model)
    return model
