"""Pure tensor functions behind the score-mask layers.

Everything here is a function of tensors (no modules, no state), so it is easy to test
on its own; :mod:`spikelottery.layers` holds the parameters and calls these.

The vocabulary is fixed: ``pa`` is the fraction of weights REMOVED, and a layer of ``n``
weights keeps exactly :func:`~spikelottery.kept_count` ``(n, pa) = n - floor(pa * n)``.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import torch
from torch import Tensor, nn

from ._validation import check_ratio, kept_count, nonfinite_scores_error
from .native import native_score_grad

__all__ = [
    "INITS",
    "approx_sign",
    "binary_sign",
    "float_mask",
    "init_weight_",
    "layer_subnet_weight",
    "mask_scores",
    "mp_alpha",
    "precompute_subnet",
    "random_mask",
    "subnet_weight",
    "subnet_weight_precomputed",
    "top_count_mask",
    "topk_mask",
    "topk_mask_kthvalue",
    "topk_mask_sorted",
]

#: The frozen-weight initialisations of :func:`init_weight_`.
INITS: tuple[str, ...] = ("kaiming_normal", "signed_constant", "keep")


def topk_mask_kthvalue(scores: Tensor, pa: float) -> Tensor:
    """The reference :func:`topk_mask`: one :func:`torch.kthvalue`, then one comparison.

    The threshold is the ``floor(pa * n)``-th smallest ``|score|``; the entries above it
    are kept, and as many of the entries equal to it as the count still needs, the
    earliest first. :func:`topk_mask` gives the same mask, bit for bit, at a fraction of
    the cost; this one stays as the definition that tests and benchmarks compare against.

    >>> s = torch.tensor([[0.1, -3.0], [2.0, 0.5]])
    >>> torch.equal(topk_mask_kthvalue(s, 0.5), topk_mask(s, 0.5))
    True
    """
    pa = check_ratio("pa", pa)
    n = scores.numel()
    keep = kept_count(n, pa)
    flat = scores.detach().abs().flatten()
    if not bool(torch.isfinite(flat.sum())):  # one reduction: NaN and inf show up in the sum
        bad = int((~torch.isfinite(flat)).sum())
        if bad:  # else the sum overflowed (float16 overflows at 65504)
            raise nonfinite_scores_error(bad, n)
    if keep == n:
        return torch.ones_like(scores, dtype=torch.bool)
    return _kthvalue_mask(flat, keep).view_as(scores)


def _kthvalue_mask(flat_abs: Tensor, keep: int) -> Tensor:
    """The reference selection on a flat ``|scores|`` free of NaN and inf, ``0 < keep < n``."""
    threshold = flat_abs.kthvalue(flat_abs.numel() - keep).values
    mask = flat_abs > threshold
    deficit = keep - int(mask.sum())
    if deficit > 0:  # ties at the threshold: keep the earliest ones, deterministically
        tied = (flat_abs == threshold).nonzero().flatten()
        mask[tied[:deficit]] = True
    return mask


# For each floating dtype the radix select handles: how many 16-bit words one value has,
# and the top word of +inf (every NaN and inf has a top word at least this, every finite
# value a smaller one).
_RADIX_DTYPES: dict[torch.dtype, tuple[int, int]] = {
    torch.float16: (1, 0x7C00),
    torch.bfloat16: (1, 0x7F80),
    torch.float32: (2, 0x7F80),
    torch.float64: (4, 0x7FF0),
}
_BUCKETS = 0x8000  # the top word without its sign bit: 15 bits
# Below this many entries one kthvalue is cheaper than a 32768-bucket histogram (measured).
_RADIX_MIN_NUMEL = 8192


def _top_words(flat: Tensor) -> Tensor:
    """The most significant 16 bits of each value of a contiguous 1-D float tensor, as int16.

    A view where the value has one word (float16, bfloat16), else a strided view of every
    second (float32) or fourth (float64) word: the high one, which sits last in memory on
    a little-endian machine and first on a big-endian one.
    """
    words, _ = _RADIX_DTYPES[flat.dtype]
    halves = flat.view(torch.int16)
    if words == 1:
        return halves
    return halves[(words - 1 if sys.byteorder == "little" else 0) :: words]


def _true_positions(flags: Tensor) -> Tensor:
    """``flags.nonzero().flatten()`` for a sparse 1-D bool tensor, in ascending order.

    Reads the flags eight at a time (as ``int64`` words) and looks inside the few words
    that hold one: about 2x faster than ``nonzero`` over every byte on CPU.
    """
    if flags.storage_offset() % 8 or not flags.is_contiguous():
        return flags.nonzero().flatten()  # not viewable as words
    n = flags.numel()
    whole = n - n % 8
    words = flags[:whole].view(torch.int64).nonzero().flatten()
    row, col = flags[:whole].view(-1, 8)[words].nonzero().unbind(1)
    idx = words[row] * 8 + col
    if whole < n:
        idx = torch.cat((idx, flags[whole:].nonzero().flatten() + whole))
    return idx


def _radix_mask(flat: Tensor, keep: int, dtype: torch.dtype = torch.bool) -> Tensor:
    """The flat mask of :func:`topk_mask` by the radix select (``0 < keep < n``), as ``dtype``.

    Raises the NaN/inf ``ValueError`` of :func:`topk_mask`.
    """
    n = flat.numel()
    _, inf_key = _RADIX_DTYPES[flat.dtype]
    # |x| of an IEEE float is its bit pattern with the sign bit cleared, and for
    # non-negative floats that pattern, read as an integer, orders as the value does
    # (+0 < denormals < normals < inf < NaN). Its top 16 bits (sign cleared: 15) are a
    # bucket number that keeps the order: every value of a higher bucket is larger.
    top = _top_words(flat)
    # A strided view reads slowly: copy it out, then clear the sign bits in place.
    key = top & 0x7FFF if top.is_contiguous() else top.contiguous().bitwise_and_(0x7FFF)
    hist = torch.bincount(key, minlength=_BUCKETS)
    cum = hist.cumsum(0)
    bad = n - int(cum[inf_key - 1])  # the buckets from inf up: NaN and inf
    if bad:
        raise nonfinite_scores_error(bad, n)
    removed = n - keep  # the threshold is the removed-th smallest |value|
    bucket = int(torch.searchsorted(cum, removed))  # the first bucket reaching that rank
    # Entries in the buckets below the threshold's, and through it.
    below, through = cum[bucket - 1 : bucket + 1].tolist() if bucket else (0, int(cum[0]))
    if through - below > max(n // 4, 4096):  # heavy ties: one kthvalue over all is cheaper
        return _as_mask_dtype(_kthvalue_mask(flat.abs(), keep), dtype)
    # Only the threshold's bucket needs the full values: its entries in position order.
    idx = _true_positions(key == bucket)
    vals = flat[idx].abs()  # abs turns -0.0 into +0.0, as in the reference
    threshold = vals.kthvalue(removed - below).values
    greater = vals > threshold
    # Every entry of a higher bucket; written straight into a float mask when one is
    # wanted (the comparison's output cast costs nothing, a separate conversion a pass).
    mask = (
        key > bucket
        if dtype == torch.bool
        else torch.gt(key, bucket, out=flat.new_empty(n, dtype=dtype))
    )
    mask[idx[greater]] = 1
    deficit = keep - (n - through) - int(greater.sum())
    if deficit > 0:  # ties at the threshold: the earliest ones, as in the reference
        mask[idx[vals == threshold][:deficit]] = 1
    return mask


def _as_mask_dtype(mask: Tensor, dtype: torch.dtype) -> Tensor:
    return mask if dtype == torch.bool else float_mask(mask, dtype)


def topk_mask(scores: Tensor, pa: float, *, dtype: torch.dtype = torch.bool) -> Tensor:
    """Mask of the ``n - floor(pa * n)`` entries of ``|scores|`` with the largest values.

    Exact, with ties at the threshold broken by position (the earliest tied entries are
    kept), so the count is always exact: the same mask, bit for bit, as
    :func:`topk_mask_kthvalue` (one :func:`torch.kthvalue` and a comparison).

    The selection is a radix select on the float bits. Clearing the sign bit of an IEEE
    float gives ``|x|``, and the bit patterns of non-negative floats, read as integers,
    are ordered as their values are (``+0`` below the denormals, below the normals, below
    ``inf`` and ``NaN``). So the top 16 bits of ``|x|`` are a bucket number that respects
    the order: one histogram of them (:func:`torch.bincount`) and its running sum name
    the bucket that holds the threshold (the ``floor(pa * n)``-th smallest value), every
    entry of a higher bucket is kept and every entry of a lower one removed, and only the
    few entries of that one bucket, taken in position order, go through
    :func:`torch.kthvalue`. The kept count above the threshold is known from the
    histogram, so the earliest ties are found inside the bucket too. No value is rounded
    or compared other than as the reference compares it, hence the same mask. The
    histogram also counts the NaN and inf entries (the buckets from ``inf`` up), so the
    check for them costs nothing extra. The work is one pass over the values (copying
    out their top 16 bits) and four light ones over those 16-bit words or the flags
    made from them (histogram, bucket test, bucket positions, final comparison): about
    2x one compare-and-count pass over the scores, against 6-7x for
    :func:`torch.kthvalue` (``benchmarks/bench_mask.py``).
    float16, bfloat16, float32 and float64 take this path (float64's top 16 bits make
    coarser buckets; still exact) on CPU and CUDA; other dtypes and devices, tensors of
    fewer than 8192 entries (where one ``kthvalue`` is cheaper), ``pa = 0`` and a
    threshold bucket holding over a quarter of the entries (heavy ties) use the
    reference.

    Args:
        scores: Any shape; only magnitudes matter.
        pa: Fraction of entries REMOVED, in ``[0, 1)``.
        dtype: ``torch.bool`` (the default), or a floating dtype for the same mask as
            ``1.0`` kept and ``0.0`` removed, written directly (one pass fewer than
            converting the bool mask): what the layers multiply the weights by.

    Returns:
        A ``dtype`` tensor shaped like ``scores``.

    Raises:
        ValueError: ``pa`` is not in ``[0, 1)``, the scores hold NaN or inf, or ``dtype``
            is neither bool nor floating.

    >>> m = topk_mask(torch.tensor([[0.1, -3.0], [2.0, 0.5]]), pa=0.5)
    >>> m.tolist()
    [[False, True], [True, False]]
    """
    pa = check_ratio("pa", pa)
    if dtype != torch.bool and not dtype.is_floating_point:
        raise ValueError(f"dtype must be torch.bool or a floating dtype, got {dtype}")
    n = scores.numel()
    keep = kept_count(n, pa)
    flat = scores.detach().reshape(-1)
    if (
        keep == n
        or n < _RADIX_MIN_NUMEL
        or flat.dtype not in _RADIX_DTYPES
        or flat.device.type not in ("cpu", "cuda")  # bincount of int16 elsewhere: unsure
    ):
        return _as_mask_dtype(topk_mask_kthvalue(scores, pa), dtype)
    return _radix_mask(flat, keep, dtype).view_as(scores)


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


def float_mask(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """``mask.to(dtype)`` for arithmetic: 1.0 where kept, 0.0 elsewhere (the mask itself if
    it already has ``dtype``).

    A bool mask is read as bytes (``uint8``, the same 0 and 1), whose conversion to float
    PyTorch vectorises on CPU: about 2x faster than converting the bool tensor.

    >>> float_mask(torch.tensor([True, False]), torch.float32)
    tensor([1., 0.])
    """
    if mask.dtype == torch.bool:
        return mask.view(torch.uint8).to(dtype)
    return mask.to(dtype)


def mp_alpha(weight: Tensor, mask: Tensor, kept: int | None = None) -> Tensor:
    """The multi-prize gain: mean ``|W|`` over the kept weights, ``sum(|W| * M) / sum(M)``.

    Returns a 0-d tensor. A layer with no kept weight (impossible with ``pa < 1``) gets 0.
    ``kept`` is ``sum(M)`` when the caller knows it (a layer does: ``n - floor(pa * n)``),
    which saves a pass over the mask; the result is the same.
    """
    count = mask.sum() if kept is None else torch.tensor(kept, device=mask.device)
    kept_abs = weight.detach().abs()
    if mask.dtype in (torch.bool, kept_abs.dtype):
        # The mask as floats, multiplied in place: the same values as with the bool mask,
        # without PyTorch's slow mixed-dtype product.
        total = kept_abs.mul_(float_mask(mask, kept_abs.dtype)).sum()
    else:
        total = (kept_abs * mask).sum()
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
        grad_scores = None
        if ctx.needs_input_grad[0]:
            if torch.is_grad_enabled() or not scores.dtype == weight.dtype == grad.dtype:
                # a graph of the gradient itself (no in-place ops), or mixed dtypes
                grad_scores = grad * (weight * torch.sign(scores))
            else:  # the same products (exact by +-1 and 0, then one rounding), one tensor
                grad_scores = native_score_grad(grad, weight, scores)
                if grad_scores is None:  # not a float32 CPU tensor, or no native kernels
                    grad_scores = torch.sign(scores).mul_(weight).mul_(grad)
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
        own = mask.dtype != weight.dtype  # then maskf is a fresh tensor, free to overwrite
        maskf = float_mask(mask, weight.dtype)  # the mask itself if already a float mask
        if alpha is None:
            if weight_grad:
                weff, wgrad = weight * maskf, maskf
            else:  # M * W is W * M bit for bit; in place, one weight-sized tensor fewer
                weff, wgrad = (maskf.mul_(weight) if own else weight * maskf), None
        else:
            # alpha * sign(W): copysign on W + 0.0, which turns -0.0 into +0.0 so that
            # sign(0) = +1 as in binary_sign; three fast passes instead of a `where`, the
            # last two in place.
            weff = weight + 0.0
            torch.copysign(alpha.to(weight.dtype), weff, out=weff).mul_(maskf)
            wgrad = None
            if weight_grad:  # never scale the caller's own float mask in place
                wgrad = maskf.mul_(alpha) if own else maskf * alpha
    return weff, wgrad


class _LayerSubnetWeight(torch.autograd.Function):
    """:class:`_PrecomputedSubnetWeight` for the layers' own reads, its context set up in
    ``forward``: PyTorch binds the arguments of every ``apply`` of a Function that has
    ``setup_context`` to its signature (:func:`inspect.signature`, some 0.1 ms a call),
    and the layers take this path only outside ``torch.func`` and ``torch.compile``."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, scores: Tensor, weight: Tensor, weff: Tensor, wgrad: Tensor | None
    ) -> Tensor:
        _PrecomputedSubnetWeight.setup_context(ctx, (scores, weight, weff, wgrad), weff)
        return weff.view_as(weff)

    backward = _PrecomputedSubnetWeight.backward


def layer_subnet_weight(
    scores: Tensor, weight: Tensor, cache: tuple[Tensor, Tensor | None]
) -> Tensor:
    """:func:`subnet_weight_precomputed` without the ``torch.func`` support, and cheaper to
    call: what a score-mask layer hands out outside transforms and compilation."""
    weff, wgrad = cache
    return _LayerSubnetWeight.apply(scores, weight, weff, wgrad)


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
