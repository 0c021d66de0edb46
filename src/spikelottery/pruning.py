"""Masks that no score chose: magnitude pruning (IMP) and random controls, as fixed masks.

Both write a fixed mask into the score-mask layers (:meth:`SubnetLayer.set_mask
<spikelottery.SubnetLayer.set_mask>`), so the result is an ordinary ticket: ``summary``,
``save_ticket``, ``densify``, the energy estimate and export need nothing new. Freeze the
scores and train the kept weights (``layer.frozen_weight.requires_grad_(True)``) to use
them as iterative magnitude pruning or random-pruning baselines.

* :func:`magnitude_masks` / :func:`prune_by_magnitude`: remove the fraction ``p`` of the
  weights still kept, smallest ``|W|`` first, per layer (``n - floor(p * n)`` of each
  layer's ``n`` kept) or over all layers (``N - floor(p * N)`` of the ``N`` kept, raw
  magnitudes compared across layers as in Frankle et al.'s global IMP, at least one per
  layer). After ``r`` rounds a layer keeps exactly the ``r``-fold repeated count.
* :func:`random_masks`: each layer keeps a uniformly random set of the size it keeps now.

>>> from spikelottery import sparsify
>>> net = sparsify(nn.Sequential(nn.Linear(10, 10)), 0.0)
>>> prune_by_magnitude(net, 0.2); prune_by_magnitude(net, 0.2)
{'0': 80}
{'0': 64}
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ._validation import check_ratio, kept_count, ratio_for_count
from .errors import SpikeLotteryError
from .layers import SubnetLayer
from .masks import random_mask, top_count_mask
from .scope import SCOPES, attach_scope, global_kept_counts

__all__ = [
    "check_one_mask_each",
    "magnitude_masks",
    "prune_by_magnitude",
    "random_masks",
    "restore_fixed_masks",
    "ticket_layers",
]


def magnitude_masks(
    weights: Sequence[Tensor], masks: Sequence[Tensor], fraction: float, scope: str = "layer"
) -> list[Tensor]:
    """One round of magnitude pruning: the masks after removing ``fraction`` of the kept weights.

    Args:
        weights: One weight per layer.
        masks: Their current boolean masks (what is still kept).
        fraction: The fraction of the KEPT weights removed, in ``[0, 1)``.
        scope: ``"layer"`` (each layer keeps ``n - floor(fraction * n)`` of its ``n``
            kept) or ``"global"`` (the layers keep ``N - floor(fraction * N)`` of their
            ``N`` kept, the largest ``|W|`` over all of them, at least one each).

    Returns:
        The new masks; a weight removed before stays removed.

    >>> w = torch.tensor([[0.1, -0.9, 0.5, 0.3]])
    >>> magnitude_masks([w], [torch.tensor([[True, True, True, False]])], 0.5)[0].tolist()
    [[False, True, True, False]]
    """
    fraction = check_ratio("fraction", fraction)
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    if len(weights) != len(masks):
        raise ValueError(f"{len(weights)} weights but {len(masks)} masks")
    values = [
        torch.where(m, w.detach().abs(), torch.full_like(w, -torch.inf))
        for w, m in zip(weights, masks, strict=True)
    ]
    kept = [int(m.sum()) for m in masks]
    if scope == "layer":
        counts = [kept_count(k, fraction) for k in kept]
    else:
        counts = global_kept_counts(values, kept_count(sum(kept), fraction))
    return [top_count_mask(v, c) for v, c in zip(values, counts, strict=True)]


def ticket_layers(model: nn.Module) -> dict[str, list[SubnetLayer]]:
    """The score-mask layers by their first name; tied layers (one set of scores) together.

    >>> from spikelottery import sparsify
    >>> list(ticket_layers(sparsify(nn.Sequential(nn.Linear(2, 2)), 0.5)))
    ['0']
    """
    groups: dict[int, tuple[str, list[SubnetLayer]]] = {}
    for name, module in model.named_modules():
        if isinstance(module, SubnetLayer):
            entry = groups.setdefault(id(module.scores), (name, []))
            if all(m is not module for m in entry[1]):
                entry[1].append(module)
    if not groups:
        raise SpikeLotteryError(
            "the model has no score-mask layer; call spikelottery.sparsify(model, pa) first"
        )
    return dict(groups.values())


def _fix(groups: Sequence[list[SubnetLayer]], masks: Sequence[Tensor]) -> None:
    # A fixed mask has no global threshold: the counts are the masks' own.
    attach_scope([layer for g in groups for layer in g], "layer", 0.0)
    for group, mask in zip(groups, masks, strict=True):
        for layer in group:
            layer.set_mask(mask)


def check_one_mask_each(groups: dict[str, list[SubnetLayer]], what: str) -> None:
    """Refuse layers with several masked tensors (attention, recurrent) before ``what``
    fixes masks: one ``pa`` per layer cannot hold the per-tensor counts it would give.

    Raises:
        SpikeLotteryError: Naming each such layer and its masked tensors.
    """
    several = [
        f"{n} ({', '.join(g[0].masked_names)})"
        for n, g in groups.items()
        if len(g[0].masked_names) > 1
    ]
    if several:
        raise SpikeLotteryError(
            f"{what} fixes one mask per layer; {', '.join(several)} mask several tensors "
            "under one pa, which cannot keep the counts it would give each. Leave them dense "
            "(sparsify(..., filter=...)) or use a score search (method 'lt'/'mp' presets)"
        )


def _fix_each(
    layer_groups: Sequence[list[SubnetLayer]], masks: Sequence[dict[str, Tensor]]
) -> None:
    """Fix every masked tensor of each group: ``pa`` from the first tensor's count, then
    each mask (its count must be the one that ``pa`` gives, else ``set_mask`` refuses)."""
    attach_scope([layer for g in layer_groups for layer in g], "layer", 0.0)
    for group, by_name in zip(layer_groups, masks, strict=True):
        for layer in group:
            first = next(iter(by_name.values()))
            layer.set_pa(ratio_for_count(first.numel(), int(first.sum())))
            for name, mask in by_name.items():
                layer.set_mask(mask, name)


def prune_by_magnitude(model: nn.Module, fraction: float, scope: str = "layer") -> dict[str, int]:
    """One round of magnitude pruning of ``model``'s score-mask layers, in place.

    The current masks (``layer.mask()``) and frozen weights (``layer.frozen_weight``)
    give the new fixed masks (see :func:`magnitude_masks`).

    Returns:
        The kept count of each layer, by name.
    """
    groups = ticket_layers(model)
    check_one_mask_each(groups, "magnitude pruning")
    layers = [g[0] for g in groups.values()]
    with torch.no_grad():
        masks = magnitude_masks(
            [m.frozen_weight for m in layers], [m.mask() for m in layers], fraction, scope
        )
    _fix(list(groups.values()), masks)
    return {name: int(mask.sum()) for name, mask in zip(groups, masks, strict=True)}


def random_masks(model: nn.Module, generator: torch.Generator | None = None) -> dict[str, int]:
    """Give every score-mask layer a random fixed mask of the size it keeps now, in place.

    The control for a found ticket at the same per-layer kept counts (those of a global
    threshold or of magnitude pruning included).

    Returns:
        The kept count of each layer, by name.

    >>> from spikelottery import sparsify
    >>> random_masks(sparsify(nn.Sequential(nn.Linear(10, 10)), 0.3))
    {'0': 70}
    """
    groups = ticket_layers(model)
    masks = []
    for group in groups.values():
        layer = group[0]
        masks.append(
            {
                name: random_mask(
                    layer.frozen_of(name).shape,
                    layer.kept_of(name),
                    generator=generator,
                    device=layer.frozen_of(name).device,
                )
                for name in layer.masked_names
            }
        )
    _fix_each(list(groups.values()), masks)
    return _kept_counts(groups, masks)


def _kept_counts(
    groups: dict[str, list[SubnetLayer]], masks: Sequence[dict[str, Tensor]]
) -> dict[str, int]:
    """Kept count by layer name (``layer.param`` for layers with several masked tensors)."""
    counts = {}
    for (layer_name, group), by_name in zip(groups.items(), masks, strict=True):
        several = len(group[0].masked_names) > 1
        for name, mask in by_name.items():
            counts[f"{layer_name}.{name}" if several else layer_name] = int(mask.sum())
    return counts


def restore_fixed_masks(model: nn.Module) -> dict[str, int]:
    """Re-fix the masks that ``model``'s scores hold (1 kept, 0 removed), in place.

    A fixed mask lives in the scores (:func:`~spikelottery.masks.mask_scores`) and in
    each layer's ``pa``, which is not part of a ``state_dict``: after loading the
    state of a magnitude-pruned or random-mask model (a checkpoint), this sets each
    layer's ``pa`` back to the count its scores keep.

    Returns:
        The kept count of each layer, by name.

    >>> from spikelottery import sparsify
    >>> net = sparsify(nn.Sequential(nn.Linear(10, 10)), 0.3)
    >>> _ = random_masks(net)
    >>> state = net.state_dict()
    >>> net[0].pa = 0.0  # what a fresh model holds before its masks are fixed
    >>> _ = net.load_state_dict(state)
    >>> restore_fixed_masks(net)
    {'0': 70}
    """
    groups = ticket_layers(model)
    masks = [
        {name: g[0].scores_of(name).detach() > 0.5 for name in g[0].masked_names}
        for g in groups.values()
    ]
    _fix_each(list(groups.values()), masks)
    return _kept_counts(groups, masks)
