"""Which layers ``sparsify`` rewrites, and why the others are left alone.

A pure planning step over the model: the filter, the per-layer overrides, modules
registered twice, tied weights, layers refused because their weight is computed, and
the weights that stay dense. :mod:`spikelottery.sparsify` carries the plan out.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from ._modules import CONVERTIBLE, Reference, refusal, skip_reason, walk, weight_holders
from .errors import SpikeLotteryError
from .layers import MODES, SubnetLayer
from .sparsify_report import SparsifyReport

__all__ = [
    "Candidate",
    "Filter",
    "FilterFn",
    "as_filter",
    "check_layer_mode",
    "check_tied_updates",
    "convertible_layers",
    "resolve_overrides",
    "select_layers",
    "tie_groups",
    "weights_left_dense",
]

FilterFn = Callable[[nn.Module, str], bool]
Filter = str | type | tuple[type, ...] | FilterFn | None


def as_filter(filter: Filter) -> FilterFn:
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


def resolve_overrides(
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


def check_layer_mode(name: str, mode: Any) -> str:
    if mode not in MODES:
        raise ValueError(f"{name} must be one of {MODES}, got {mode!r}")
    return str(mode)


@dataclass
class Candidate:
    """One convertible module and every place it is registered."""

    refs: list[Reference]

    @property
    def name(self) -> str:
        return self.refs[0].name

    @property
    def module(self) -> nn.Module:
        return self.refs[0].module


def convertible_layers(model: nn.Module) -> list[Candidate]:
    """Every convertible module of ``model`` once, with all its references, in walk order."""
    by_id: dict[int, Candidate] = {}
    for ref in walk(model):
        if isinstance(ref.module, CONVERTIBLE):
            by_id.setdefault(id(ref.module), Candidate([])).refs.append(ref)
    return list(by_id.values())


def weights_left_dense(model: nn.Module, report: SparsifyReport) -> dict[str, str]:
    """Weights that stay dense although they are not listed yet: say so in the report.

    Weight tensors (2-D or more) of layer types sparsify does not mask (timm's
    ``CondConv2d``, a module's own raw weight parameters ...; the masked types are
    :data:`spikelottery.layers.LAYER_KINDS`), and supported layers nested inside another
    one (which the swap does not descend into). Embedding
    tables are lookups, not synapses, and are not listed.
    """
    listed = set(report.skipped) | set(report.aliases)
    out: dict[str, str] = {}
    for name, module in model.named_modules():
        if name in listed or isinstance(module, (SubnetLayer, nn.Embedding, nn.EmbeddingBag)):
            continue
        if isinstance(module, CONVERTIBLE):
            out[name] = (
                "inside another supported layer, which sparsify does not descend into: "
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
        supported = ", ".join(f"nn.{t.__name__}" for t in CONVERTIBLE)
        why = (
            f"a {type(module).__name__}, not a layer type sparsify masks ({supported} and "
            "their subclasses)"
        )
        out[name or "(model)"] = f"{why}: {', '.join(keys)} stay dense and trainable"
    return out


def check_tied_updates(
    model: nn.Module, candidates: list[Candidate], settings: Callable[[str], tuple[float, str]]
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


def tie_groups(
    model: nn.Module, candidates: list[Candidate], report: SparsifyReport
) -> tuple[list[Candidate], dict[int, str]]:
    """Drop candidates whose parameters are tied to something that will not be swapped.

    Returns the remaining candidates and, for a weight tied only between candidates,
    ``id(original weight) -> name of the first layer holding it``.
    """
    holders = weight_holders(model)
    if not holders:
        return candidates, {}
    names = {c.name for c in candidates}
    keep: list[Candidate] = []
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


def select_layers(
    model: nn.Module, accept: FilterFn, report: SparsifyReport
) -> tuple[list[Candidate], dict[int, str]]:
    """The layers to swap or update; refuses (raises) on layers that cannot be masked."""
    candidates: list[Candidate] = []
    refused: list[str] = []
    for layer in convertible_layers(model):
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
    kept_fresh, first_holder = tie_groups(model, fresh, report)
    chosen = {id(c.module) for c in kept_fresh}
    candidates = [
        c for c in candidates if isinstance(c.module, SubnetLayer) or id(c.module) in chosen
    ]
    return candidates, first_holder
