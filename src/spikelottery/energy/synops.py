"""Exact synaptic operations: pure functions on tensors that count the products a layer
really does, each non-zero input times its kept, non-zero outgoing connections.

For a binary input this is the number of accumulates an event-driven chip performs (one
per spike and reached weight); for a real-valued input it is the number of effective
multiply-accumulates (zero inputs and zero weights skipped). Each function returns the
count per leading row (one sample-step of a ``[T * B, C, H, W]`` conv input, one row of a
``[T, B, ..., F]`` linear input), in float64, so the caller can split it over time.

``values=True`` weighs each input by its absolute value instead of counting it once: the
exact form of the paper's SOPs for a graded input (a sum of ``k`` spikes costs ``k``
accumulates per reached weight). For a binary input both counts are equal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["conv_reach", "conv_synops", "linear_synops", "matmul_synops", "row_counts"]

_IntOrTuple = int | Sequence[int]
# float32 sums small integers exactly up to 2**24; above it the kernels run in float64.
_EXACT_F32 = 2**24


def _operand(x: Tensor, values: bool) -> Tensor:
    """The input as the count kernels read it: ``|x|`` or the indicator of ``x != 0``."""
    if values:
        return x.abs()
    return (x != 0).to(x.dtype if x.is_floating_point() else torch.float32)


def conv_synops(
    x: Tensor,
    weight: Tensor,
    *,
    stride: _IntOrTuple = 1,
    padding: _IntOrTuple | str = 0,
    dilation: _IntOrTuple = 1,
    groups: int = 1,
    transposed: bool = False,
    output_padding: _IntOrTuple = 0,
    values: bool = False,
) -> Tensor:
    """Synaptic operations of ``F.conv{1,2,3}d(x, weight, ...)`` per row of ``x``.

    Each input element meets the kept (non-zero) weights that connect it to an output
    element; taps that fall on padding never meet an input, and with a stride the taps
    between output positions are never computed. The count is the convolution of the
    input indicator (or ``|x|`` with ``values=True``) with the indicator of
    ``weight != 0`` summed over the output channels of each group, summed over the
    output: exact for any padding, stride, dilation and grouping (and for transposed
    convs, whose cropped outputs are not computed either).

    Args:
        x: Input ``[N, C, *spatial]`` (or unbatched ``[C, *spatial]``).
        weight: The weight the conv received (masked for a ticket).
        stride: As in ``F.conv2d``.
        padding: As in ``F.conv2d`` (ints or ``"same"`` / ``"valid"``).
        dilation: As in ``F.conv2d``.
        groups: As in ``F.conv2d``.
        transposed: ``weight`` is a transposed conv's ``[C_in, C_out / groups, *k]``.
        output_padding: As in ``F.conv_transpose2d``.
        values: Weigh each input by ``|x|`` instead of counting non-zeros.

    Returns:
        A float64 tensor ``[N]`` (a 0-dim tensor for an unbatched input).

    >>> x = torch.zeros(1, 1, 3, 3); x[0, 0, 0, 0] = x[0, 0, 1, 1] = 1  # 2 spikes
    >>> w = torch.ones(1, 1, 3, 3)
    >>> conv_synops(x, w, padding=1, stride=2)  # the corner spike reaches 1 output, the centre 4
    tensor([5.], dtype=torch.float64)
    """
    nd = weight.dim() - 2
    unbatched = x.dim() == nd + 1
    xb = x.unsqueeze(0) if unbatched else x
    ind = (weight != 0).to(torch.float32)
    if transposed:
        # [C_in, C_out/g, *k]: sum over the outputs of each input channel.
        kernel = ind.sum(dim=1, keepdim=True)  # [C_in, 1, *k]
        fan = kernel.shape[0] // groups * math.prod(kernel.shape[2:]) * ind.shape[1]
    else:
        c_out = ind.shape[0]
        per = c_out // groups
        kernel = ind.reshape(groups, per, *ind.shape[1:]).sum(dim=1)  # [g, C_in/g, *k]
        fan = per * math.prod(ind.shape[1:])
    dtype = torch.float32
    if fan * (float(xb.abs().max()) if values and xb.numel() else 1.0) >= _EXACT_F32:
        dtype = torch.float64
    inp = _operand(xb, values).to(dtype)
    kernel = kernel.to(device=inp.device, dtype=dtype)
    if transposed:
        tfn: Any = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[nd - 1]
        out = tfn(
            inp,
            kernel,
            stride=stride,
            padding=padding,
            output_padding=output_padding,
            groups=groups,
            dilation=dilation,
        )
    else:
        fn: Any = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
        out = fn(inp, kernel, stride=stride, padding=padding, dilation=dilation, groups=groups)
    counts = out.flatten(1).sum(dim=1, dtype=torch.float64)
    return counts[0] if unbatched else counts


def conv_reach(
    input_shape: Sequence[int],
    weight: Tensor,
    *,
    stride: _IntOrTuple = 1,
    padding: _IntOrTuple | str = 0,
    dilation: _IntOrTuple = 1,
    groups: int = 1,
    transposed: bool = False,
    output_padding: _IntOrTuple = 0,
) -> Tensor:
    """How many kept (non-zero) weights each input element of a conv reaches: the
    ``(output element, kept tap)`` pairs that read it, over padding, stride, dilation and
    groups. ``conv_synops(x, ...)`` of a row is ``(x != 0)`` of the row times this map,
    summed, so a layer's count costs one pass over its input once the map is known.

    The map is the adjoint of the conv applied to ones (computed by autograd on one
    all-zero sample), float32 with integer values.

    Args:
        input_shape: One sample's shape ``[C, *spatial]``.
        weight: The weight the conv received.
        stride: As in ``F.conv2d``.
        padding: As in ``F.conv2d``.
        dilation: As in ``F.conv2d``.
        groups: As in ``F.conv2d``.
        transposed: A transposed conv's weight ``[C_in, C_out / groups, *k]``.
        output_padding: As in ``F.conv_transpose2d``.

    Returns:
        A float32 tensor of ``input_shape``.

    >>> w = torch.ones(1, 1, 3, 3)
    >>> conv_reach([1, 3, 3], w, padding=1, stride=2)[0]  # the corner reaches 1, the centre 4
    tensor([[1., 2., 1.],
            [2., 4., 2.],
            [1., 2., 1.]])
    """
    nd = weight.dim() - 2
    # Autograd runs even under torch.inference_mode (the indicator is a normal tensor).
    with torch.inference_mode(False), torch.enable_grad():
        ind = (weight.detach() != 0).to(torch.float32).clone()
        z = torch.zeros((1, *input_shape), dtype=torch.float32, device=weight.device)
        z.requires_grad_(True)
        if transposed:
            tfn: Any = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[nd - 1]
            out = tfn(
                z,
                ind,
                stride=stride,
                padding=padding,
                output_padding=output_padding,
                groups=groups,
                dilation=dilation,
            )
        else:
            fn: Any = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
            out = fn(z, ind, stride=stride, padding=padding, dilation=dilation, groups=groups)
        (grad,) = torch.autograd.grad(out.sum(), z)
    return grad[0]


def row_counts(x: Tensor, reach: Tensor, *, values: bool = False, binary: bool = False) -> Tensor:
    """Per row of ``x`` (its first dim), the sum of ``reach`` over its non-zero elements
    (or weighted by ``|x|`` with ``values=True``), in float64; ``binary``: ``x`` holds
    only zeros and ones (read as its own indicator).

    One float32 matrix-vector product, split into chunks whose sums stay below ``2**24``
    so that integer counts (and dyadic values, such as pooled spikes ``k / 4``) are exact.

    >>> row_counts(torch.tensor([[1.0, 0.0, 1.0], [0.0, 2.0, 0.0]]), torch.tensor([1.0, 2.0, 3.0]))
    tensor([4., 2.], dtype=torch.float64)
    """
    rows = x.reshape(x.shape[0], -1)
    r = reach.reshape(-1).to(device=rows.device, dtype=torch.float32)
    if binary:
        weights, high = rows.to(torch.float32), 1.0
    else:
        nonneg = bool(rows.amin() >= 0) if rows.numel() else True
        size = rows if nonneg else rows.abs()
        if values:
            weights = size.to(torch.float32)
            high = float(weights.amax()) if weights.numel() else 0.0
        else:  # the indicator of x != 0 (sign is a float op: cheaper than a bool mask)
            weights, high = torch.sign(size).to(torch.float32), 1.0
    bound = float(r.amax()) * high if r.numel() else 0.0
    # Columns per chunk so that every partial sum of a row (non-negative terms) stays
    # below 2**24: exact in float32 for counts (and dyadic values such as pooled k / 4).
    width = (
        r.numel() if bound * r.numel() < _EXACT_F32 else max(int(_EXACT_F32 // max(bound, 1)), 1)
    )
    out = torch.zeros(rows.shape[0], dtype=torch.float64, device=rows.device)
    for lo in range(0, r.numel(), width):
        out += (weights[:, lo : lo + width] @ r[lo : lo + width]).to(torch.float64)
    return out


def linear_synops(x: Tensor, weight: Tensor, *, values: bool = False) -> Tensor:
    """Synaptic operations of ``F.linear(x, weight)`` per row of ``x`` (all but the last dim).

    Input feature ``j`` reaches the outputs whose weight in column ``j`` is kept and
    non-zero: its fan-out. The count of a row is the sum of its inputs' fan-outs (each
    input counted once, or weighted by ``|x|`` with ``values=True``).

    Args:
        x: Input ``[..., in_features]``.
        weight: ``[out_features, in_features]`` (or a vector ``[in_features]``).
        values: Weigh each input by ``|x|`` instead of counting non-zeros.

    Returns:
        A float64 tensor of shape ``x.shape[:-1]``.

    >>> w = torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, 3.0]])  # fan-outs 1, 0, 2
    >>> linear_synops(torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0]]), w)
    tensor([3., 0.], dtype=torch.float64)
    """
    w = weight if weight.dim() == 2 else weight.unsqueeze(0)
    fan_out = (w != 0).sum(dim=0).to(torch.float64)
    return _operand(x, values).to(torch.float64) @ fan_out.to(x.device)


def matmul_synops(a: Tensor, b: Tensor, *, values_of: str = "") -> Tensor:
    """Synaptic operations of ``a @ b`` per matrix product (all but the last two dims).

    Element ``k`` of a row of ``a`` meets the non-zero entries of row ``k`` of ``b``:
    the count of one product is ``sum_k nnz(a[:, k]) * nnz(b[k, :])``, the pairs of
    non-zero factors. In a spiking self-attention ``Q K^T`` of two spike matrices counts
    the coincident spikes, and ``(Q K^T) V`` the non-zero scores times the spikes of ``V``.

    Args:
        a: ``[..., n, d]`` (a vector ``[d]`` is one row).
        b: ``[..., d, m]`` (a vector ``[d]`` is one column); the batch dims broadcast.
        values_of: ``"a"`` or ``"b"`` weighs that operand's entries by their absolute
            value (the graded input of a product), ``""`` counts non-zeros.

    Returns:
        A float64 tensor of the broadcast batch shape (0-dim for two matrices).

    >>> q = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # 2 tokens, 2 features
    >>> matmul_synops(q, q.T)  # feature 0: 2 x 2 pairs; feature 1: 1 x 1
    tensor(5., dtype=torch.float64)
    """
    if values_of not in ("", "a", "b"):
        raise ValueError(f"values_of must be '', 'a' or 'b', got values_of={values_of!r}")
    am = a.unsqueeze(0) if a.dim() == 1 else a
    bm = b.unsqueeze(-1) if b.dim() == 1 else b
    col_a = _operand(am, values_of == "a").to(torch.float64).sum(dim=-2)  # [..., d]
    row_b = _operand(bm, values_of == "b").to(torch.float64).sum(dim=-1)  # [..., d]
    return (col_a * row_b.to(col_a.device)).sum(dim=-1)
