"""Rewrite any network in place into a lottery-ticket search, and back.

:func:`sparsify` swaps every matching ``nn.Conv1d`` / ``nn.Conv2d`` / ``nn.Linear`` (their
subclasses included) for a score-mask layer, freezes the weights, and with ``pb > 0``
attaches a patch selector after the patch embedding. :func:`densify` bakes the found
ticket back into plain dense layers; :func:`summary` tabulates what was kept.

The module swap follows torchao's pattern: walk ``named_children()`` top-down, replace
with ``setattr``, never descend into what was just replaced. New layers hold copies of
the weights, so on any failure every swap is rolled back and the original layers are
exactly as they were.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ._validation import check_ratio, kept_count
from .errors import SpikeLotteryError
from .layers import INITS, SubnetLayer, _check_mode, subnet_class_for

__all__ = ["SparsifyReport", "TicketSummary", "densify", "kept_fraction", "sparsify", "summary"]

logger = logging.getLogger("spikelottery")

M = TypeVar("M", bound=nn.Module)
FilterFn = Callable[[nn.Module, str], bool]
Filter = str | type | tuple[type, ...] | FilterFn | None

_CONVERTIBLE: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Linear)


@dataclass
class SparsifyReport:
    """What one :func:`sparsify` call did: layers swapped, updated and skipped (with why)."""

    pa: float
    pb: float
    mode: str
    swapped: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    patch_embed: str | None = None

    def __str__(self) -> str:
        lines = [
            f"sparsify(pa={self.pa:g}, pb={self.pb:g}, mode={self.mode!r}): "
            f"{len(self.swapped)} swapped, {len(self.updated)} updated, {len(self.skipped)} skipped"
        ]
        lines += [f"  swapped  {name}" for name in self.swapped]
        lines += [f"  updated  {name}" for name in self.updated]
        lines += [f"  skipped  {name}: {why}" for name, why in self.skipped.items()]
        if self.patch_embed is not None:
            lines.append(f"  patch selector (pb={self.pb:g}) after {self.patch_embed!r}")
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


def _skip_reason(module: nn.Module, parent: nn.Module | None) -> str | None:
    if isinstance(parent, nn.MultiheadAttention):
        return "inside nn.MultiheadAttention, which reads out_proj.weight directly"
    if isinstance(module, nn.modules.lazy.LazyModuleMixin) and module.has_uninitialized_params():
        return "lazy layer not initialised yet: run one forward pass before sparsify"
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or not weight.is_floating_point():
        return "has no floating-point weight"
    return None


def _resolve_layer_pa(layer_pa: Mapping[str, float] | None, names: list[str]) -> dict[str, float]:
    """Map each candidate layer name to its pa override (exact name first, then regex fullmatch)."""
    if not layer_pa:
        return {}
    out: dict[str, float] = {}
    for key, value in layer_pa.items():
        ratio = check_ratio(f"layer_pa[{key!r}]", value)
        hits = [n for n in names if n == key]
        if not hits:
            try:
                pattern = re.compile(key)
            except re.error as exc:
                raise ValueError(
                    f"layer_pa key {key!r} is neither a layer name nor a valid regex: {exc}"
                ) from None
            hits = [n for n in names if pattern.fullmatch(n)]
        if not hits:
            raise SpikeLotteryError(
                f"layer_pa key {key!r} matches no convertible layer; candidates are: "
                f"{', '.join(names[:20])}{' ...' if len(names) > 20 else ''}"
            )
        for n in hits:
            out.setdefault(n, ratio)
    return out


def _walk(
    module: nn.Module, prefix: str, parent: nn.Module | None
) -> Iterator[tuple[nn.Module, str, str, nn.Module]]:
    """Yield (parent, attr, qualified name, module) top-down, not descending into layers."""
    for attr, child in module.named_children():
        name = f"{prefix}.{attr}" if prefix else attr
        yield module, attr, name, child
        if not isinstance(child, (*_CONVERTIBLE, SubnetLayer)):
            yield from _walk(child, name, module)


def _invalidate_spikingjelly_cache(model: nn.Module) -> None:
    # reset_net caches the list of modules with reset() per net; a swap must refresh it.
    try:
        from spikingjelly.activation_based import functional as sj_functional
    except Exception:  # spikingjelly is optional
        return
    invalidate = getattr(sj_functional, "invalidate_reset_cache", None)
    if invalidate is not None:
        invalidate(model)


def sparsify(
    model: M,
    pa: float,
    pb: float = 0.0,
    *,
    mode: str = "lt",
    filter: Filter = None,
    layer_pa: Mapping[str, float] | None = None,
    init: str = "kaiming_normal",
    batchnorm: str = "keep",
    patch_embed: str | None = None,
    verbose: bool = False,
) -> M:
    """Turn ``model`` into a lottery-ticket search, in place, and return it.

    Every ``nn.Conv1d`` / ``nn.Conv2d`` / ``nn.Linear`` (or subclass, e.g. SpikingJelly's
    multi-step ``layer.Conv2d``) that ``filter`` accepts becomes a score-mask layer with its
    weight frozen; only the scores (and any parameter outside the swapped layers) train.
    Layers that are already score-mask layers are updated (``pa``, ``mode``), never wrapped
    twice. With ``pb > 0`` a :class:`~spikelottery.PatchSelector` is attached after the patch
    embedding.

    Args:
        model: Any ``nn.Module``: plain PyTorch, SpikingJelly, or the spikelottery zoo.
        pa: Fraction of weights REMOVED per layer, in ``[0, 1)``.
        pb: Fraction of patches REMOVED after the patch embedding, in ``[0, 1)``.
        mode: ``"lt"`` (``W * M``) or ``"mp"`` (``alpha * sign(W) * M``).
        filter: Which layers to convert: a regex searched in the qualified name
            (``"patch_embed"``), a module type or tuple of types, or a callable
            ``(module, qualified_name) -> bool``. ``None`` converts all.
        layer_pa: Per-layer overrides of ``pa``: ``{qualified name or regex: pa}``.
        init: Frozen-weight initialisation: ``"kaiming_normal"`` (default),
            ``"signed_constant"``, or ``"keep"`` to keep the current (e.g. pretrained) values.
        batchnorm: ``"keep"``, or ``"nonaffine"`` to fix every BatchNorm's affine
            parameters at weight 1, bias 0 and freeze them (a score-only search, as in
            edge-popup); the keys stay, so :func:`densify` still loads strictly.
        patch_embed: Qualified name of the patch embedding (only with ``pb > 0``); found
            automatically for Spikformer-style models.
        verbose: Print the report (it is always logged at INFO and stored as
            ``model.spikelottery_report``).

    Returns:
        ``model`` itself.

    Raises:
        ValueError: ``pa``, ``pb``, ``mode``, ``init`` or ``batchnorm`` is invalid.
        SpikeLotteryError: ``filter`` or a ``layer_pa`` key matches no layer, or no patch
            embedding is found for ``pb > 0``.

    >>> net = sparsify(nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8, 2)), pa=0.4)
    >>> net[0].kept
    130
    """
    from .patch import attach_patch_selector  # patch.py imports this module

    pa = check_ratio("pa", pa)
    pb = check_ratio("pb", pb)
    mode = _check_mode(mode)
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if batchnorm not in ("keep", "nonaffine"):
        raise ValueError(f"batchnorm must be 'keep' or 'nonaffine', got {batchnorm!r}")
    if patch_embed is not None and pb == 0.0:
        raise ValueError(
            "patch_embed is only used with pb > 0; pass pb (the fraction of patches removed)"
        )
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    accept = _as_filter(filter)

    report = SparsifyReport(pa=pa, pb=pb, mode=mode)
    candidates: list[tuple[nn.Module, str, str, nn.Module]] = []
    for parent, attr, name, child in _walk(model, "", None):
        if not isinstance(child, (*_CONVERTIBLE, SubnetLayer)):
            continue
        if not accept(child, name):
            report.skipped[name] = "excluded by filter"
            continue
        reason = None if isinstance(child, SubnetLayer) else _skip_reason(child, parent)
        if reason is not None:
            report.skipped[name] = reason
            continue
        candidates.append((parent, attr, name, child))

    if not candidates and (filter is not None or pb == 0.0):
        where = f"filter={filter!r}" if filter is not None else "the model"
        raise SpikeLotteryError(
            f"{where} matched no nn.Conv1d/nn.Conv2d/nn.Linear layer to sparsify"
            + (f" (skipped: {report.skipped})" if report.skipped else "")
            + ". Check the qualified names with [n for n, _ in model.named_modules()]."
        )
    overrides = _resolve_layer_pa(layer_pa, [c[2] for c in candidates])

    done: list[tuple[nn.Module, str, nn.Module, dict[str, Any] | None]] = []
    try:
        for parent, attr, name, child in candidates:
            layer_ratio = overrides.get(name, pa)
            if isinstance(child, SubnetLayer):
                done.append((parent, attr, child, {"pa": child.pa, "mode": child.mode}))
                child.set_pa(layer_ratio)
                child.set_mode(mode)
                report.updated.append(name)
                continue
            with torch.no_grad():
                subnet = subnet_class_for(type(child)).from_dense(
                    child, layer_ratio, mode, init=init
                )
            setattr(parent, attr, subnet)
            done.append((parent, attr, child, None))
            report.swapped.append(name)
        if pb > 0.0:
            report.patch_embed = attach_patch_selector(model, pb, patch_embed=patch_embed)
        else:
            attach_patch_selector(model, 0.0)  # pb = 0: remove a selector a previous call attached
    except BaseException:
        for parent, attr, old, previous in reversed(done):
            if previous is None:
                setattr(parent, attr, old)
            else:
                old.set_pa(previous["pa"])
                old.set_mode(previous["mode"])
        raise

    if batchnorm == "nonaffine":
        _freeze_batchnorm_affine(model)
    _invalidate_spikingjelly_cache(model)
    model.__dict__["spikelottery_report"] = report
    logger.info("%s", report)
    if verbose:
        print(report)
    return model


def _freeze_batchnorm_affine(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, _BatchNorm) and module.affine:
            with torch.no_grad():
                module.weight.fill_(1.0)
                module.bias.zero_()
            module.weight.requires_grad_(False)
            module.bias.requires_grad_(False)


def densify(model: M) -> M:
    """Bake the ticket into plain dense layers, in place, and return ``model``.

    Each score-mask layer becomes the class it was made from (``nn.Conv2d``, SpikingJelly's
    ``layer.Conv2d``, ...) holding ``W * M`` or ``alpha * sign(W) * M``; the ``scores`` are
    dropped. The ``state_dict`` of the result loads with ``strict=True`` into the user's
    original, unmodified architecture. A patch selector, having no state, stays attached.

    >>> net = sparsify(nn.Sequential(nn.Linear(4, 3)), pa=0.5)
    >>> type(densify(net)[0]).__name__
    'Linear'
    """
    replaced = False
    for parent, attr, _name, child in list(_walk(model, "", None)):
        if isinstance(child, SubnetLayer):
            setattr(parent, attr, child.to_dense())
            replaced = True
    if isinstance(model, SubnetLayer):
        raise TypeError("densify(model) needs a container; call layer.to_dense() on a single layer")
    if replaced:
        _invalidate_spikingjelly_cache(model)
    return model


@dataclass
class TicketSummary:
    """Per-layer kept counts, alpha and mode of a sparsified model, and the totals.

    ``str(summary)`` is a table; :meth:`to_dict` is JSON-safe.
    """

    rows: list[dict[str, Any]]
    total_weights: int
    kept_weights: int
    total_params: int

    @property
    def sparsity(self) -> float:
        """Fraction of the score-mask layers' weights removed."""
        return 1.0 - self.kept_weights / self.total_weights if self.total_weights else 0.0

    @property
    def kept_fraction(self) -> float:
        """Fraction of the score-mask layers' weights kept."""
        return 1.0 - self.sparsity

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": self.rows,
            "total_weights": self.total_weights,
            "kept_weights": self.kept_weights,
            "total_params": self.total_params,
            "sparsity": self.sparsity,
        }

    def __str__(self) -> str:
        header = ("layer", "type", "shape", "mode", "pa", "kept", "total", "alpha")
        body = [
            (
                r["name"],
                r["type"],
                "x".join(map(str, r["shape"])),
                r["mode"],
                f"{r['pa']:g}",
                str(r["kept"]),
                str(r["total"]),
                "-" if r["alpha"] is None else f"{r['alpha']:.4g}",
            )
            for r in self.rows
        ]
        widths = [
            max(len(h), *(len(b[i]) for b in body)) if body else len(h)
            for i, h in enumerate(header)
        ]
        fmt = "  ".join(f"{{:<{w}}}" if i < 4 else f"{{:>{w}}}" for i, w in enumerate(widths))
        lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
        lines += [fmt.format(*b) for b in body]
        lines.append(
            f"total: {self.kept_weights:,} of {self.total_weights:,} masked weights kept "
            f"({100 * self.kept_fraction:.2f}%), sparsity {100 * self.sparsity:.2f}%; "
            f"{self.total_params:,} parameters in the model"
        )
        return "\n".join(lines)


def summary(model: nn.Module) -> TicketSummary:
    """Kept count, alpha and mode per score-mask layer, and the total sparsity.

    >>> print(summary(sparsify(nn.Sequential(nn.Linear(10, 10)), pa=0.3)))  # doctest: +ELLIPSIS
    layer  type ...
    """
    rows: list[dict[str, Any]] = []
    for name, module in model.named_modules():
        if isinstance(module, SubnetLayer):
            alpha = module.alpha()
            rows.append(
                {
                    "name": name or "(model)",
                    "type": type(module).__name__,
                    "shape": list(module.weight.shape),
                    "mode": module.mode,
                    "pa": module.pa,
                    "kept": int(module.mask().sum()),
                    "total": module.weight.numel(),
                    "alpha": None if alpha is None else float(alpha),
                }
            )
    if not rows:
        raise SpikeLotteryError(
            "summary(model): the model has no score-mask layer; call sparsify(model, pa) first"
        )
    total = sum(r["total"] for r in rows)
    kept = sum(r["kept"] for r in rows)
    n_params = sum(p.numel() for p in model.parameters())
    return TicketSummary(rows=rows, total_weights=total, kept_weights=kept, total_params=n_params)


def kept_fraction(model: nn.Module) -> float:
    """Fraction of the score-mask layers' weights kept (1.0 for a model with none)."""
    total = kept = 0
    for module in model.modules():
        if isinstance(module, SubnetLayer):
            total += module.weight.numel()
            kept += kept_count(module.weight.numel(), module.pa)
    return kept / total if total else 1.0
