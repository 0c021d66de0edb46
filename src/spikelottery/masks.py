"""Pure tensor functions behind the score-mask layers.

Everything here is a function of tensors (no modules, no state), so it is easy to test
on its own; :mod:`spikelottery.layers` holds the parameters and calls these.

The vocabulary is fixed: ``pa`` is the fraction of weights REMOVED, and a layer of ``n``
weights keeps exactly :func:`~spikelottery.kept_count` ``(n, pa) = n - floor(pa * n)``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ._validation import check_ratio, kept_count

__all__ = [
    "INITS",
    "approx_sign",
    "binary_sign",
    "init_weight_",
    "mask_scores",
    "mp_alpha",
    "precompute_subnet",
    "random_mask",
    "subnet_weight",
    "subnet_weight_precomputed",
    "top_count_mask",
    "topk_mask",
    "topk_mask_sorted",
]

#: The frozen-weight initialisations of :func:`init_weight_`.
INITS: tuple[str, ...] = ("kaiming_normal", "signed_constant", "keep")


def topk_mask(scores: Tensor, pa: float) -> Tensor:
    """Boolean mask of the ``n - floor(pa * n)`` entries of ``|scores|`` with the largest values.

    Uses :func:`torch.kthvalue` (linear time, no full sort). Ties at the threshold are
    broken by position (the earliest tied entries are kept), so the count is always exact.

    Args:
        scores: Any shape; only magnitudes matter.
        pa: Fraction of entries REMOVED, in ``[0, 1)``.

    Returns:
        A ``torch.bool`` tensor shaped like ``scores``.

    >>> m = topk_mask(torch.tensor([[0.1, -3.0], [2.0, 0.5]]), pa=0.5)
    >>> m.tolist()
    [[False, True], [True, False]]
    """
    pa = check_ratio("pa", pa)
    n = scores.numel()
    keep = kept_count(n, pa)
    flat = scores.detach().abs().flatten()
    if not bool(torch.isfinite(flat.sum())):  # one reduction: NaN and inf show up in the sum
        bad = int((~torch.isfinite(flat)).sum())
        raise ValueError(
            f"the scores hold {bad} NaN or infinite value(s) of {n}: their ranking is "
            "undefined, so no mask is exact. The search diverged: lower the learning rate "
            "or check the loss for NaN"
        )
    if keep == n:
        return torch.ones_like(scores, dtype=torch.bool)
    removed = n - keep
    threshold = flat.kthvalue(removed).values
    mask = flat > threshold
    deficit = keep - int(mask.sum())
    if deficit > 0:  # ties at the threshold: keep the earliest ones, deterministically
        tied = (flat == threshold).nonzero().flatten()
        mask[tied[:deficit]] = True
    return mask.view_as(scores)


def topk_mask_sorted(scores: Tensor, pa: float) -> Tensor:
    """:func:`topk_mask` with shapes that do not depend on the data (same mask, bit for bit).

    A stable descending sort keeps the strongest ``n - floor(pa * n)`` entries and, among
    ties, the earliest, as :func:`topk_mask` does. Slower (a full sort), but free of
    data-dependent shapes, so ``torch.compile``, ``torch.export`` and ``torch.func`` can
    trace it; the layers use it only while tracing.

    >>> s = torch.tensor([[0.1, -3.0], [2.0, 0.5]])
    >>> torch.equal(topk_mask_sorted(s, 0.5), topk_mask(s, 0.5))
    True
    """
    pa = check_ratio("pa", pa)
    n = scores.numel()
    keep = kept_count(n, pa)
    flat = scores.detach().abs().flatten()
    order = torch.sort(flat, descending=True, stable=True).indices[:keep]
    mask = torch.zeros(n, dtype=torch.bool, device=scores.device).index_fill(0, order, True)
    return mask.view_as(scores)


def init_weight_(weight: Tensor, init: str = "kaiming_normal") -> Tensor:
    """Re-initialise a frozen random weight in place.

    >>> init_weight_(torch.empty(4, 3), "signed_constant").abs().unique().numel()
    1

    Args:
        weight: A conv or linear weight (``[out, in/groups, *kernel]`` or ``[out, in]``).
        init: ``"kaiming_normal"`` (fan_in, ReLU gain; the default), ``"signed_constant"``
            (``±sqrt(2 / fan_in)`` with random signs, edge-popup's best variant) or
            ``"keep"`` (leave the values alone, e.g. for a pretrained weight).

    Returns:
        ``weight``.
    """
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if init == "keep":
        return weight
    with torch.no_grad():
        if init == "kaiming_normal":
            nn.init.kaiming_normal_(weight, mode="fan_in", nonlinearity="relu")
        else:
            fan_in = nn.init._calculate_correct_fan(weight, "fan_in")
            std = nn.init.calculate_gain("relu") / math.sqrt(fan_in)
            weight.copy_(torch.randn_like(weight).sign() * std)
            weight[weight == 0] = std
    return weight


def top_count_mask(values: Tensor, keep: int) -> Tensor:
    """Boolean mask of the ``keep`` largest entries of ``values`` (not their magnitudes).

    The rule of :func:`topk_mask` (one :func:`torch.kthvalue`, ties at the threshold
    broken by position, the earliest kept) for a count instead of a ratio: magnitude
    pruning and the global threshold use it.

    Args:
        values: Any shape, NaN-free; ``-inf`` marks entries that never win a place
            unless ``keep`` needs them.
        keep: How many entries to keep, in ``[0, values.numel()]``.

    >>> top_count_mask(torch.tensor([0.5, -2.0, 3.0, 0.5]), 2).tolist()
    [True, False, True, False]
    """
    n = values.numel()
    if not 0 <= keep <= n:
        raise ValueError(f"keep must be in [0, {n}], got keep={keep}")
    flat = values.detach().flatten()
    if keep == n:
        return torch.ones_like(values, dtype=torch.bool)
    if keep == 0:
        return torch.zeros_like(values, dtype=torch.bool)
    threshold = flat.kthvalue(n - keep).values
    mask = flat > threshold
    deficit = keep - int(mask.sum())
    if deficit > 0:  # ties at the threshold: keep the earliest ones, deterministically
        tied = (flat == threshold).nonzero().flatten()
        mask[tied[:deficit]] = True
    return mask.view_as(values)


def mask_scores(mask: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """Scores whose top-k at the mask's own count is exactly ``mask``: 1 kept, 0 removed.

    How a fixed mask (magnitude pruning, a random control, a loaded ticket) lives in a
    score-mask layer: :func:`topk_mask` of these scores at the ratio that keeps
    ``mask.sum()`` entries gives ``mask`` back, bit for bit.

    >>> from spikelottery._validation import ratio_for_count
    >>> m = torch.tensor([True, False, True])
    >>> torch.equal(topk_mask(mask_scores(m), ratio_for_count(3, 2)), m)
    True
    """
    return mask.to(dtype)


def random_mask(
    shape: torch.Size | tuple[int, ...],
    keep: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """A uniformly random boolean mask of ``shape`` with exactly ``keep`` entries set.

    The control for a found ticket: the same kept count, no selection.

    >>> int(random_mask((4, 5), 7, generator=torch.Generator().manual_seed(0)).sum())
    7
    """
    n = math.prod(shape)
    if not 0 <= keep <= n:
        raise ValueError(f"keep must be in [0, {n}], got keep={keep}")
    order = torch.randperm(n, generator=generator)[:keep].to(device)
    mask = torch.zeros(n, dtype=torch.bool, device=device)
    mask[order] = True
    return mask.view(shape)


def binary_sign(x: Tensor) -> Tensor:
    """``+1`` where ``x >= 0`` and ``-1`` elsewhere (never 0, so one bit stores it)."""
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


def mp_alpha(weight: Tensor, mask: Tensor, kept: int | None = None) -> Tensor:
    """The multi-prize gain: mean ``|W|`` over the kept weights, ``sum(|W| * M) / sum(M)``.

    Returns a 0-d tensor. A layer with no kept weight (impossible with ``pa < 1``) gets 0.
    ``kept`` is ``sum(M)`` when the caller knows it (a layer does: ``n - floor(pa * n)``),
    which saves a pass over the mask; the result is the same.
    """
    count = mask.sum() if kept is None else torch.tensor(kept, device=mask.device)
    total = (weight.detach().abs() * mask).sum()
    return torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total))


def subnet_weight(
    scores: Tensor, weight: Tensor, mask: Tensor, alpha: Tensor | None = None
) -> Tensor:
    """Effective weight of a sub-network, differentiable with respect to ``scores``.

    Args:
        scores: Per-weight scores, same shape as ``weight``.
        weight: The frozen random weights.
        mask: Boolean mask (usually ``topk_mask(scores, pa)``).
        alpha: ``None`` for a lottery ticket (``W * M``); a 0-d gain for a multi-prize
            ticket (``alpha * sign(W) * M``).

    Returns:
        The effective weight. Its gradient to ``scores`` is ``sign(s) * W * dL/dw_eff``.

    >>> s, w = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3)
    >>> subnet_weight(s, w, topk_mask(s, 0.5)).shape
    torch.Size([4, 3])
    """
    if scores.shape != weight.shape or mask.shape != weight.shape:
        raise ValueError(
            f"scores {tuple(scores.shape)}, weight {tuple(weight.shape)} and mask "
            f"{tuple(mask.shape)} must have the same shape"
        )
    return subnet_weight_precomputed(scores, weight, precompute_subnet(scores, weight, mask, alpha))


class _PrecomputedSubnetWeight(torch.autograd.Function):
    """The effective weight with the straight-through score gradient.

    Forward returns ``weff`` (``W * M`` or ``alpha * sign(W) * M``) as a view: no copy per
    call, and autograd marks a view made inside a custom Function so that an in-place
    write to it fails loudly instead of being lost. Backward: ``dL/dM = W * dL/dw_eff``
    passes unchanged to ``|s|``, so ``dL/ds = dL/dw_eff * (W * sign(s))`` in both modes
    (alpha is a constant there), computed from the parameters themselves: nothing
    weight-sized is cached for it. Fine-tuning the weights of a found ticket gets
    ``dL/dW = wgrad * dL/dw_eff`` with ``wgrad = M`` (or ``alpha * M``: straight through
    ``sign``), cached only while the weight trains. ``setup_context`` keeps it usable
    under ``torch.func`` transforms.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        scores: Tensor, weight: Tensor, weff: Tensor, wgrad: Tensor | None
    ) -> Tensor:
        return weff.view_as(weff)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        scores, weight, _, wgrad = inputs
        ctx.has_wgrad = wgrad is not None
        ctx.save_for_backward(scores, weight, *([wgrad] if wgrad is not None else []))

    @staticmethod
    def backward(ctx: Any, grad: Tensor):  # type: ignore[override]
        scores, weight, *rest = ctx.saved_tensors
        grad_scores = grad * (weight * torch.sign(scores)) if ctx.needs_input_grad[0] else None
        grad_weight = None
        if ctx.needs_input_grad[1]:
            if not ctx.has_wgrad:
                raise RuntimeError(
                    "the frozen weight needs a gradient, but the effective weight was "
                    "precomputed without one: precompute_subnet(..., weight_grad=True)"
                )
            grad_weight = grad * rest[0]
        return grad_scores, grad_weight, None, None


def precompute_subnet(
    scores: Tensor,
    weight: Tensor,
    mask: Tensor,
    alpha: Tensor | None,
    *,
    weight_grad: bool | None = None,
) -> tuple[Tensor, Tensor | None]:
    """The tensors :func:`subnet_weight_precomputed` needs: ``(weff, wgrad)``.

    ``wgrad`` (the weight's straight-through factor, ``M`` or ``alpha * M``) is made only
    with ``weight_grad`` (default: ``weight.requires_grad``); while the weights are frozen
    the effective weight is the only weight-sized tensor kept.
    """
    if weight_grad is None:
        weight_grad = weight.requires_grad
    with torch.no_grad():
        maskf = mask.to(weight.dtype)
        if alpha is None:
            weff = weight * maskf
            wgrad = maskf if weight_grad else None
        else:
            # alpha * sign(W): copysign on W + 0.0, which turns -0.0 into +0.0 so that
            # sign(0) = +1 as in binary_sign; three fast passes instead of a `where`.
            weff = torch.copysign(alpha.to(weight.dtype), weight + 0.0).mul_(maskf)
            wgrad = maskf.mul_(alpha) if weight_grad else None
    return weff, wgrad


def subnet_weight_precomputed(
    scores: Tensor, weight: Tensor, cache: tuple[Tensor, Tensor | None]
) -> Tensor:
    """:func:`subnet_weight` from the output of :func:`precompute_subnet` (same values, same gradients)."""
    weff, wgrad = cache
    return _PrecomputedSubnetWeight.apply(scores, weight, weff, wgrad)


class _ApproxSign(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor):  # type: ignore[override]
        ctx.save_for_backward(x)
        return binary_sign(x)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * torch.clamp(2.0 * (1.0 - x.abs()), min=0.0)


def approx_sign(x: Tensor) -> Tensor:
    """Binary activation: ``sign(x)`` forward (``+1`` at 0), ApproxSign gradient backward.

    The gradient is ``2 * (1 - |x|)`` for ``|x| <= 1`` and 0 elsewhere (Bi-Real Net's
    piecewise-quadratic estimator, as used by multi-prize tickets).

    >>> approx_sign(torch.tensor([-0.3, 0.0, 2.0])).tolist()
    [-1.0, 1.0, 1.0]
    """
    return _ApproxSign.apply(x)
