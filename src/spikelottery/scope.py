"""One kept count for the whole model: a global threshold over the score-mask layers.

With ``sparsify(model, pa, scope="global")`` the swapped layers together keep the top
``kept_count(N, pa)`` of their ``N`` weights, ranked by score, instead of each layer
keeping ``kept_count(n, pa)`` of its own. The scores are compared on a common scale:
each layer's ``|scores|`` divided by the standard deviation of that layer's scores
(:func:`score_magnitudes`), because their initial scale is ``1 / sqrt(fan_in)``, and raw
magnitudes would prune the wide layers first. Every layer keeps at least its best
weight, so no layer is ever emptied (a layer with no weight would cut the network).

The selection is a per-layer kept count (:func:`global_kept_counts`, one
:func:`torch.kthvalue` over all layers); each layer then keeps its own top count with
its usual mask, so tickets, ``densify``, the energy estimate and export see ordinary
layers with a ``pa`` of their own. :class:`GlobalScope` recomputes the counts once per
change of any member's scores, when a member is next used.

>>> from spikelottery import sparsify
>>> net = sparsify(nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 4)), 0.5, scope="global")
>>> net[0].kept + net[1].kept  # of 8 * 16 + 16 * 4 = 192 weights
96
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ._validation import check_ratio, kept_count, ratio_for_count
from .errors import SpikeLotteryError

if TYPE_CHECKING:
    from .layers import SubnetLayer

__all__ = [
    "SCOPES",
    "GlobalScope",
    "annealed_ratio",
    "attach_scope",
    "global_kept_counts",
    "score_magnitudes",
    "set_model_pa",
]

#: ``"layer"``: each layer keeps ``n - floor(pa * n)`` of its weights; ``"global"``: the
#: layers together keep ``N - floor(pa * N)`` (at least one each).
SCOPES: tuple[str, ...] = ("layer", "global")


def score_magnitudes(scores: Tensor) -> Tensor:
    """``|scores| / std(scores)``: a layer's score magnitudes on a scale shared by all layers.

    Dividing by a positive number keeps the order within the layer, so the layer's own
    top-k of ``|scores|`` is the same set. A layer whose scores are all equal (std 0)
    is left unscaled.

    >>> score_magnitudes(torch.tensor([-2.0, 2.0])).tolist()
    [1.0, 1.0]
    """
    s = scores.detach()
    std = s.std(correction=0) if s.numel() > 1 else torch.zeros((), dtype=s.dtype)
    return s.abs() / torch.where(std > 0, std, torch.ones_like(std))


def global_kept_counts(values: Sequence[Tensor], keep: int) -> list[int]:
    """Per-layer counts of the ``keep`` largest entries over all ``values``, at least 1 each.

    Each layer's largest entry is reserved first (no layer is emptied); the others compete
    in one :func:`torch.kthvalue` over all layers. Ties at the threshold go to the earliest
    entries (layer order, then position), as in :func:`~spikelottery.topk_mask`, so each
    layer's own top count of its ``values`` is the global selection.

    Args:
        values: One tensor per layer, comparable across layers and NaN-free; ``-inf``
            marks entries that are out of the competition (e.g. weights pruned before).
        keep: The total kept, in ``[len(values), sum of sizes]``.

    Returns:
        The kept count of each layer; they sum to ``keep``.

    Raises:
        ValueError: ``keep`` is out of range, or ``values`` hold NaN.

    >>> global_kept_counts([torch.tensor([3.0, 0.1, 0.2]), torch.tensor([0.5, 0.4])], 3)
    [1, 2]
    """
    sizes = [v.numel() for v in values]
    total = sum(sizes)
    if not values or not len(values) <= keep <= total:
        raise ValueError(
            f"a global threshold keeps between one weight per layer ({len(values)}) and all "
            f"{total} weights, got keep={keep}; lower pa or sparsify fewer layers"
        )
    if keep == total:
        return sizes
    device = values[0].device
    flats = []
    for v in values:
        flat = v.detach().flatten().to(device=device, dtype=torch.float64, copy=True)
        flat[flat.argmax()] = torch.inf  # reserved: the layer's best entry is always kept
        flats.append(flat)
    everything = torch.cat(flats)
    if bool(torch.isnan(everything).any()):
        raise ValueError(
            "the values hold NaN: their ranking is undefined. The search diverged: lower "
            "the learning rate or check the loss for NaN"
        )
    threshold = everything.kthvalue(total - keep).values
    stats = torch.stack(
        [torch.stack([(f > threshold).sum(), (f == threshold).sum()]) for f in flats]
    ).tolist()
    deficit = keep - sum(above for above, _ in stats)
    counts = []
    for above, tied in stats:
        take = min(tied, deficit)
        counts.append(above + take)
        deficit -= take
    return counts


def annealed_ratio(pa: float, epoch: int, anneal_epochs: int, start_kept: float = 0.5) -> float:
    """The ratio removed at ``epoch`` when the kept fraction moves linearly to ``1 - pa``.

    The kept fraction is ``start_kept`` at epoch 0 and reaches ``1 - pa`` at epoch
    ``anneal_epochs`` (biprop's schedule, which lets the scores settle before the
    network is thinned to the target). ``anneal_epochs = 0`` gives ``pa`` throughout.

    >>> [round(annealed_ratio(0.8, e, 3), 3) for e in range(5)]
    [0.5, 0.6, 0.7, 0.8, 0.8]
    """
    pa = check_ratio("pa", pa)
    if anneal_epochs <= 0 or epoch >= anneal_epochs:
        return pa
    kept = start_kept + ((1.0 - pa) - start_kept) * epoch / anneal_epochs
    return check_ratio("annealed pa", 1.0 - kept)


class GlobalScope:
    """Sets the ``pa`` of a group of score-mask layers so that they share one threshold.

    Made by ``sparsify(..., scope="global")`` and held by each member (``layer._scope``);
    a member asks it to :meth:`sync` before it computes its mask. Tied layers (one set
    of scores) count once.

    Args:
        layers: The score-mask layers that compete.
        pa: Fraction of all their weights REMOVED.
    """

    def __init__(self, layers: Iterable[SubnetLayer], pa: float) -> None:
        self.pa = check_ratio("pa", pa)
        groups: dict[int, list[SubnetLayer]] = {}
        for layer in layers:
            if len(layer.masked_names) > 1:
                raise SpikeLotteryError(
                    f"scope='global' sets one pa per weight tensor, and "
                    f"{type(layer).__name__} masks {len(layer.masked_names)} of them "
                    f"({', '.join(layer.masked_names)}) with one pa: use scope='layer' for "
                    "it (sparsify(..., filter=...) in two calls), or leave it out"
                )
            groups.setdefault(id(layer.scores), []).append(layer)
        if not groups:
            raise ValueError("a global scope needs at least one score-mask layer")
        self.groups = list(groups.values())
        self._key: tuple[Any, ...] | None = None

    def set_pa(self, pa: float) -> None:
        """Change the fraction removed over all members; the masks follow on their next use."""
        self.pa = check_ratio("pa", pa)

    @property
    def total(self) -> int:
        """The number of weights that compete."""
        return sum(g[0].scores.numel() for g in self.groups)

    def sync(self) -> None:
        """Recompute every member's ``pa`` if any member's scores (or ``pa``) changed."""
        scores = [g[0].scores for g in self.groups]
        key = (self.pa, *((s._version, s.data_ptr()) for s in scores))
        if key == self._key:
            return
        keep = kept_count(self.total, self.pa)
        counts = global_kept_counts([score_magnitudes(s) for s in scores], keep)
        for group, count in zip(self.groups, counts, strict=True):
            ratio = ratio_for_count(group[0].scores.numel(), count)
            for layer in group:
                layer.pa = ratio
        self._key = key

    def __repr__(self) -> str:
        return f"GlobalScope(pa={self.pa:g}, layers={len(self.groups)})"


def _layers(model: nn.Module) -> list[SubnetLayer]:
    from .layers import SubnetLayer  # layers.py calls into this module

    return [m for m in model.modules() if isinstance(m, SubnetLayer)]


def set_model_pa(model: nn.Module, pa: float) -> None:
    """Set the fraction removed of every score-mask layer (of their global scope, if any).

    What annealing calls each epoch; the masks follow on the next use.

    >>> from spikelottery import sparsify
    >>> net = sparsify(nn.Sequential(nn.Linear(4, 4)), 0.5)
    >>> set_model_pa(net, 0.25); net[0].kept
    12
    """
    pa = check_ratio("pa", pa)
    for layer in _layers(model):
        scope = layer.__dict__.get("_scope")
        if scope is not None:
            scope.set_pa(pa)
        else:
            layer.set_pa(pa)


def attach_scope(layers: Sequence[SubnetLayer], scope: str, pa: float) -> None:
    """Give ``layers`` one :class:`GlobalScope` (``"global"``) or none (``"layer"``)."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    shared = GlobalScope(layers, pa) if scope == "global" and layers else None
    for layer in layers:
        layer._scope = shared
    if shared is not None:
        shared.sync()  # an impossible pa fails here, not at the first forward
