"""What a sparsified model keeps: :func:`summary` per layer and :func:`kept_fraction` overall.

Both are computed from the score-mask layers themselves, so they are never stale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ._table import format_rows
from .errors import SpikeLotteryError
from .layers import SubnetLayer

__all__ = ["TicketSummary", "kept_fraction", "summary"]


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
        lines = format_rows(header, body, numeric=range(4, 8))
        lines.append(
            f"total: {self.kept_weights:,} of {self.total_weights:,} masked weights kept "
            f"({100 * self.kept_fraction:.2f}%), sparsity {100 * self.sparsity:.2f}%; "
            f"{self.total_params:,} parameters in the model"
        )
        return "\n".join(lines)


def summary(model: nn.Module) -> TicketSummary:
    """Kept count, alpha and mode per score-mask layer, and the total sparsity.

    A layer used at several places in the model is listed once; layers tied to one
    frozen weight (and so one set of scores) are listed each and counted once in the totals.

    >>> from spikelottery import sparsify
    >>> print(summary(sparsify(nn.Sequential(nn.Linear(10, 10)), pa=0.3)))  # doctest: +ELLIPSIS
    layer  type ...
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"summary(model): model must be an nn.Module, got {type(model).__name__}")
    rows: list[dict[str, Any]] = []
    for name, module in model.named_modules():
        if not isinstance(module, SubnetLayer):
            continue
        for param in module.masked_names:  # one row per masked weight tensor
            alpha = module.alpha(param)
            weight = module.frozen_of(param)
            label = name or "(model)"
            rows.append(
                {
                    "name": label if param == "weight" else f"{label}.{param}",
                    "type": type(module).__name__,
                    "shape": list(weight.shape),
                    "mode": module.mask_mode,
                    "pa": module.pa,
                    "kept": int(module.mask(param).sum()),
                    "total": weight.numel(),
                    "alpha": None if alpha is None else float(alpha),
                    "_scores": id(module.scores_of(param)),
                }
            )
    if not rows:
        raise SpikeLotteryError(
            "summary(model): the model has no score-mask layer; call sparsify(model, pa) first"
        )
    # Layers tied to one frozen weight and one set of scores are listed each, counted once.
    unique = {r.pop("_scores"): r for r in rows}.values()
    total = sum(r["total"] for r in unique)
    kept = sum(r["kept"] for r in unique)
    n_params = sum(p.numel() for p in model.parameters())
    return TicketSummary(rows=rows, total_weights=total, kept_weights=kept, total_params=n_params)


def kept_fraction(model: nn.Module) -> float:
    """Fraction of the score-mask layers' weights kept (1.0 for a model with none).

    Raises:
        TypeError: ``model`` is not a module.
        SpikeLotteryError: A layer's scores hold NaN or infinity (naming the layer).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"kept_fraction(model): model must be an nn.Module, got {type(model).__name__}"
        )
    total = kept = 0
    seen: set[int] = set()  # tied layers share their scores: their weights count once
    for name, module in model.named_modules():
        if not isinstance(module, SubnetLayer):
            continue
        for param in module.masked_names:
            scores = module.scores_of(param)
            if id(scores) in seen:
                continue
            seen.add(id(scores))
            if not bool(torch.isfinite(scores.detach().sum())):
                raise SpikeLotteryError(
                    f"kept_fraction: layer {name or '(model)'!r} has NaN or infinite scores, "
                    "so it has no exact mask and no kept count; the search diverged (lower "
                    "the learning rate, or check the loss for NaN)"
                )
            total += scores.numel()
            kept += module.kept_of(param)  # under a global scope, the count its scores give now
    return kept / total if total else 1.0
