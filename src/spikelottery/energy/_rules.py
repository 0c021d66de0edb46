"""The per-op rules: how many MACs a torch call does, read from its operands and output.

Each rule takes the ``Recorder``, the call's arguments and its output,
and records the call; :class:`OpMode` watches every torch function call while the model
runs and hands each priced one (``F.conv*``, ``F.linear``, matmuls, ``einsum``,
scaled-dot-product and multi-head attention) to its rule.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from ._operands import (
    Stats,
    is_weight,
    mm_base,
    mm_macs,
    mm_shape,
    virtual_stats,
)
from ._recorder import Recorder, SynCount, Tally, matmul_count
from .synops import conv_reach, linear_synops, matmul_synops, row_counts

__all__ = ["OpMode"]

# A rule: (recorder, args, kwargs, output) of one call -> records it.
_Rule = Callable[[Recorder, tuple[Any, ...], Mapping[str, Any], Any], None]


def _arg(
    args: tuple[Any, ...], kwargs: Mapping[str, Any], i: int, name: str, default: Any = None
) -> Any:
    return args[i] if len(args) > i else kwargs.get(name, default)


def _conv_shape(
    x: Tensor, w: Tensor, out: Tensor, stride: Any, groups: int, transposed: bool
) -> str:
    nd = w.dim() - 2
    sin = "x".join(str(s) for s in x.shape[-nd:])
    sout = "x".join(str(s) for s in out.shape[-nd:])
    cin, cout = x.shape[-nd - 1], out.shape[-nd - 1]
    text = f"{cin}x{sin} -> {cout}x{sout}, k{'x'.join(str(k) for k in w.shape[2:])}"
    strides = (stride,) * nd if isinstance(stride, int) else tuple(stride)
    if any(s != 1 for s in strides):
        text += f", s{'x'.join(str(s) for s in strides)}"
    if groups != 1:
        text += f", g{groups}"
    if transposed:
        text += ", transposed"
    return text


def _conv_count(
    rec: Recorder,
    x: Tensor,
    w: Tensor,
    binary: bool,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    transposed: bool,
) -> SynCount | None:
    """The exact count of one conv call (``None`` when the recorder does not count): the
    input's non-zeros times the map of kept weights each input element reaches
    (:func:`conv_reach`, once per weight and shape), one pass over the input."""
    if not rec.exact:
        return None
    if transposed:
        # conv_transpose(input, weight, bias, stride, padding, output_padding, groups, dilation)
        settings: dict[str, Any] = {
            "stride": _arg(args, kwargs, 3, "stride", 1),
            "padding": _arg(args, kwargs, 4, "padding", 0),
            "output_padding": _arg(args, kwargs, 5, "output_padding", 0),
            "groups": _arg(args, kwargs, 6, "groups", 1),
            "dilation": _arg(args, kwargs, 7, "dilation", 1),
            "transposed": True,
        }
    else:
        # conv(input, weight, bias, stride, padding, dilation, groups)
        settings = {
            "stride": _arg(args, kwargs, 3, "stride", 1),
            "padding": _arg(args, kwargs, 4, "padding", 0),
            "dilation": _arg(args, kwargs, 5, "dilation", 1),
            "groups": _arg(args, kwargs, 6, "groups", 1),
        }
    batched = x.dim() == w.dim()
    sample = tuple(x.shape[1:]) if batched else tuple(x.shape)
    reach = rec.reach(w, sample, settings, lambda: conv_reach(sample, w, **settings))
    rows = x if batched else x.unsqueeze(0)
    events = row_counts(rows, reach, binary=binary)
    values = None if binary else row_counts(rows, reach, values=True)
    if not batched:
        events, values = events[0], (None if values is None else values[0])
    return events, values


def _conv_taps(
    rec: Recorder, x: Tensor, w: Tensor, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> float | None:
    """In-range (input, weight) pairs of one conv call, every input and weight counted
    (padding left out): an all-ones input through an all-ones weight, once per shape."""
    if not rec.exact or x.dim() != w.dim():
        return None
    settings = tuple(_arg(args, kwargs, i, n, d) for i, n, d in _CONV_SETTINGS)
    key = (tuple(x.shape[1:]), tuple(w.shape), repr(settings))
    per_row = rec.taps_cache.get(key)
    if per_row is None:
        stride, padding, dilation, groups = settings
        kw = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
        sample = tuple(x.shape[1:])
        if rec.weight_count(w)[0] == w.numel():  # no zero weight: the reach map's sum
            reach = rec.reach(w, sample, kw, lambda: conv_reach(sample, w, **kw))
        else:
            reach = conv_reach(sample, torch.ones_like(w, dtype=torch.float32), **kw)
        per_row = float(reach.sum(dtype=torch.float64))
        rec.taps_cache[key] = per_row
    return per_row * x.shape[0]


# conv(input, weight, bias, stride, padding, dilation, groups): (index, name, default).
_CONV_SETTINGS = ((3, "stride", 1), (4, "padding", 0), (5, "dilation", 1), (6, "groups", 1))


def _rule_conv(
    rec: Recorder, args: tuple[Any, ...], kwargs: Mapping[str, Any], out: Tensor
) -> None:
    x, w = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "weight")
    groups = _arg(args, kwargs, 6, "groups", 1)
    k = math.prod(w.shape[2:])
    macs = out.numel() * w.shape[1] * k  # w.shape[1] = in_channels / groups
    rows = out.shape[0] if x.dim() == w.dim() else 1  # [T * B, C, ...]: T * B sample-steps
    shape = _conv_shape(x, w, out, _arg(args, kwargs, 3, "stride", 1), groups, False)
    stats = rec.stats(x)
    syn = _conv_count(rec, x, w, stats[0], args, kwargs, False) if math.isfinite(stats[1]) else None
    taps = _conv_taps(rec, x, w, args, kwargs)
    tally = rec.record("conv", shape, None, macs, rows, stats, weight=w, synops=syn, taps=taps)
    _note_pooled(rec, tally, x, stats)


def _rule_conv_transpose(
    rec: Recorder, args: tuple[Any, ...], kwargs: Mapping[str, Any], out: Tensor
) -> None:
    x, w = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "weight")
    groups = _arg(args, kwargs, 6, "groups", 1)
    macs = (
        x.numel() * w.shape[1] * math.prod(w.shape[2:])
    )  # each input scatters to out/groups x kernel
    rows = out.shape[0] if x.dim() == w.dim() else 1
    shape = _conv_shape(x, w, out, _arg(args, kwargs, 3, "stride", 1), groups, True)
    stats = rec.stats(x)
    syn = _conv_count(rec, x, w, stats[0], args, kwargs, True) if math.isfinite(stats[1]) else None
    tally = rec.record("conv", shape, None, macs, rows, stats, weight=w, synops=syn)
    _note_pooled(rec, tally, x, stats)


def _rule_linear(
    rec: Recorder, args: tuple[Any, ...], kwargs: Mapping[str, Any], out: Tensor
) -> None:
    x, w = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "weight")
    fin, fout = w.shape[-1], (w.shape[0] if w.dim() == 2 else 1)
    stats = rec.stats(x)
    syn: SynCount | None = None
    if rec.exact and math.isfinite(stats[1]):
        values = None if stats[0] else linear_synops(x, w, values=True)
        syn = (linear_synops(x, w), values)
    tally = rec.record(
        "linear",
        f"{fin} -> {fout}",
        fin * fout,
        out.numel() * fin,
        rec.lead(out.shape[:-1]),
        stats,
        weight=w,
        synops=syn,
    )
    _note_pooled(rec, tally, x, stats)


def _note_pooled(rec: Recorder, tally: Tally, x: Tensor, stats: Stats) -> None:
    """A layer fed average-pooled spikes keeps the pool's window area (one call is enough:
    a layer's input comes from the same pool on every call)."""
    if not stats[0]:
        area = rec.pool_area(x)
        if area > 1.0:
            tally.pool_area = area


def _pool_dims(v: Any, nd: int) -> tuple[int, ...]:
    return (int(v),) * nd if isinstance(v, int) else tuple(int(n) for n in v)


def _avg_pool_area(args: tuple[Any, ...], kwargs: Mapping[str, Any], nd: int) -> float | None:
    """Inputs per window of ``F.avg_poolNd`` when every window has the same divisor."""
    # avg_poolNd(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    kernel = _pool_dims(_arg(args, kwargs, 1, "kernel_size"), nd)
    padding = _pool_dims(_arg(args, kwargs, 3, "padding", 0), nd)
    ceil_mode = bool(_arg(args, kwargs, 4, "ceil_mode", False))
    include_pad = bool(_arg(args, kwargs, 5, "count_include_pad", True))
    divisor = _arg(args, kwargs, 6, "divisor_override", None)
    if divisor:
        return float(divisor)
    if ceil_mode or (any(padding) and not include_pad):
        return None  # edge windows average over fewer inputs
    return float(math.prod(kernel))


def _warn_uneven(what: str) -> None:
    """Say that pooled spikes from windows of different sizes are priced at their values."""
    warnings.warn(
        f"{what} averages spikes over windows of different sizes: the exact view prices "
        "the layer it feeds at the pooled values (a fraction of an accumulate per spike, "
        'as pooled_inputs="values"), not one accumulate per pre-pool spike, so it '
        "undercounts that layer; pool with equal windows (no ceil_mode, padding counted, "
        "an adaptive output that divides the input) for the per-spike count",
        UserWarning,
        stacklevel=2,
    )


def _rule_pool(nd: int, adaptive: bool) -> _Rule:
    """The rule of an average pool: remember the window area of pooled spikes."""

    def rule(rec: Recorder, args: tuple[Any, ...], kwargs: Mapping[str, Any], out: Any) -> None:
        x = _arg(args, kwargs, 0, "input")
        if not (isinstance(x, Tensor) and isinstance(out, Tensor)) or x.dim() < nd:
            return
        if not rec.stats(x)[0]:
            return  # not spikes: a pooled real value is one input, as any other
        if adaptive:
            sizes_in, sizes_out = x.shape[-nd:], out.shape[-nd:]
            if any(o == 0 or i % o for i, o in zip(sizes_in, sizes_out, strict=True)):
                if any(i > o for i, o in zip(sizes_in, sizes_out, strict=True)):
                    _warn_uneven(
                        f"adaptive_avg_pool{nd}d from {list(sizes_in)} to {list(sizes_out)}"
                    )
                return  # windows of different sizes: priced by their values
            area: float | None = float(
                math.prod(i // o for i, o in zip(sizes_in, sizes_out, strict=True))
            )
        else:
            area = _avg_pool_area(args, kwargs, nd)
            if area is None:
                _warn_uneven(f"avg_pool{nd}d with ceil_mode or uncounted padding")
        if area is not None and area > 1.0:
            rec.mark_pooled(out, area)

    return rule


def _matmul_operands(rec: Recorder, a: Any, b: Any, out: Tensor) -> None:
    if not (isinstance(a, Tensor) and isinstance(b, Tensor)):
        return
    wa, wb = is_weight(a), is_weight(b)
    if not (wa or wb) and a.dim() >= 2 and b.dim() >= 2:
        rec.record_pairable(a, b, out)
        return
    shape = (
        mm_shape(a, b) if a.dim() >= 2 and b.dim() >= 2 else f"{tuple(a.shape)} @ {tuple(b.shape)}"
    )
    _record_product(rec, shape, mm_base(a, b), mm_macs(a, out), a, b, out)


def _record_product(
    rec: Recorder,
    shape: str,
    base: Any,
    macs: int,
    a: Tensor,
    b: Tensor,
    out: Tensor,
    *,
    countable: bool = True,
) -> None:
    """Record a two-operand product; a weight operand is never the spike operand.

    ``countable``: ``a @ b`` is the product (an einsum is not: no exact count).
    """
    wa, wb = is_weight(a), is_weight(b)
    left, right, weight = (b, a, a) if wa and not wb else (a, b, b if wb else None)
    sl, sr = rec.stats(left), rec.stats(right)
    syn = None
    if rec.exact and countable and math.isfinite(sl[1]) and math.isfinite(sr[1]):
        # The input is the activation operand (``left``); weigh it when it is graded.
        spike = sl[0] or (sr[0] and weight is None)
        if weight is b and a.dim() >= 1 and b.dim() == 2:  # x @ W: one count per row of x
            events = linear_synops(a, b.T)
            syn = events, (None if spike else linear_synops(a, b.T, values=True))
        elif left is a:
            syn = matmul_count(a, b, spike)
        else:  # x on the right of a weight: count W @ x with x as the graded input
            events = matmul_synops(a, b)
            syn = events, (None if spike else matmul_synops(a, b, values_of="b"))
    rec.record(
        "matmul",
        shape,
        base,
        macs,
        rec.lead(out.shape[:-1]),
        sl,
        sr,
        weight,
        right_is_weight=weight is not None,
        synops=syn,
    )


def _rule_matmul(
    rec: Recorder, args: tuple[Any, ...], kwargs: Mapping[str, Any], out: Tensor
) -> None:
    _matmul_operands(
        rec, _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "other", kwargs.get("mat2")), out
    )


def _rule_addmm(
    rec: Recorder, args: tuple[Any, ...], kwargs: Mapping[str, Any], out: Tensor
) -> None:
    a = _arg(args, kwargs, 1, "mat1", kwargs.get("batch1"))
    b = _arg(args, kwargs, 2, "mat2", kwargs.get("batch2"))
    _matmul_operands(rec, a, b, out)


def _rule_einsum(
    rec: Recorder, args: tuple[Any, ...], kwargs: Mapping[str, Any], out: Tensor
) -> None:
    equation, *ops = args
    if len(ops) == 1 and isinstance(ops[0], (list, tuple)):
        ops = list(ops[0])
    if len(ops) != 2 or not isinstance(out, Tensor):
        return  # one operand (trace, transpose) does no MACs; three or more are not priced
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    subs = lhs.split(",")
    sizes: dict[str, int] = {}
    for sub, t in zip(subs, ops, strict=True):
        pre, dots, post = sub.partition("...")
        for i, ch in enumerate(pre):
            sizes[ch] = t.shape[i]
        if dots:
            for i, ch in enumerate(post):
                sizes[ch] = t.shape[t.dim() - len(post) + i]
    letters = "".join(s.replace("...", "") for s in subs)
    kept = (
        set(rhs.replace("...", "")) if arrow else {ch for ch in letters if letters.count(ch) == 1}
    )
    macs = out.numel() * math.prod(n for ch, n in sizes.items() if ch not in kept)
    a, b = ops
    _record_product(rec, f"einsum {eq}", None, macs, a, b, out, countable=False)


def _rule_sdpa(
    rec: Recorder, args: tuple[Any, ...], kwargs: Mapping[str, Any], out: Tensor
) -> None:
    q, k, v = (_arg(args, kwargs, i, n) for i, n in enumerate(("query", "key", "value")))
    n_q, e, s, ev = q.shape[-2], q.shape[-1], k.shape[-2], v.shape[-1]
    batch = out.numel() // max(n_q * ev, 1)
    steps = rec.lead(out.shape[:-2])
    rec.record(
        "matmul",
        f"{n_q}x{e} @ {e}x{s}",
        n_q * e * s,
        batch * n_q * e * s,
        steps,
        rec.stats(q),
        rec.stats(k),
    )
    # softmax(Q K^T) is real-valued: only V can make the second product an accumulate.
    rec.record(
        "matmul",
        f"{n_q}x{s} @ {s}x{ev}",
        n_q * s * ev,
        batch * n_q * s * ev,
        steps,
        virtual_stats(batch * n_q * s),
        rec.stats(v),
    )


_MHA_SIGNATURE = inspect.signature(F.multi_head_attention_forward)


def _rule_mha(rec: Recorder, args: tuple[Any, ...], kwargs: Mapping[str, Any], out: Any) -> None:
    # The functional multi-head attention hides its projections and matmuls from a
    # TorchFunctionMode (they run inside one intercepted call): price it from the shapes.
    bound = _MHA_SIGNATURE.bind(*args, **kwargs)
    bound.apply_defaults()
    p = bound.arguments
    q, k, v = p["query"], p["key"], p["value"]
    n = q.shape[1] if q.dim() == 3 else 1
    length, src, e = q.shape[0], k.shape[0], q.shape[-1]
    ek, ev = k.shape[-1], v.shape[-1]
    if p["use_separate_proj_weight"]:
        weights = [p["q_proj_weight"], p["k_proj_weight"], p["v_proj_weight"]]
        w_in = torch.cat([w.flatten() for w in weights])
    else:
        w_in = p["in_proj_weight"]
    proj_macs = n * e * (length * e + src * ek + src * ev)
    seen: list[Tensor] = []
    for t in (q, k, v):
        if not any(t is s for s in seen):
            seen.append(t)
    parts = [rec.stats(t) for t in seen]
    pooled = (all(s[0] for s in parts), sum(s[1] for s in parts), sum(s[2] for s in parts))
    src_eff = src + (p["bias_k"] is not None) + bool(p["add_zero_attn"])
    i = rec.take_index("mha")
    prefix = "" if i == 0 else f"mha{i}."
    rows = n * length
    steps = rec.lead((n,))  # the batch is dim 1 of [L, N, E]
    base = e * (e + ek + ev) if length == src else None
    rec.record(
        "linear",
        f"{e} -> 3x{e}",
        base,
        proj_macs,
        steps,
        pooled,
        weight=w_in,
        label=f"{prefix}in_proj",
    )
    attn = n * length * src_eff * e
    rec.record(
        "matmul",
        f"{length}x{e} @ {e}x{src_eff}",
        None,
        attn,
        steps,
        virtual_stats(n * length * e),
        virtual_stats(n * src_eff * e),
        label=f"{prefix}matmul0",
    )
    rec.record(
        "matmul",
        f"{length}x{src_eff} @ {src_eff}x{e}",
        None,
        attn,
        steps,
        virtual_stats(n * length * src_eff),
        virtual_stats(n * src_eff * e),
        label=f"{prefix}matmul1",
    )
    rec.record(
        "linear",
        f"{e} -> {e}",
        e * e,
        rows * e * e,
        steps,
        virtual_stats(rows * e),
        weight=p["out_proj_weight"],
        label=f"{prefix}out_proj",
    )


def _build_rules() -> dict[Any, _Rule]:
    groups: tuple[tuple[tuple[Any, ...], _Rule], ...] = (
        ((F.conv1d, F.conv2d, F.conv3d), _rule_conv),
        ((F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d), _rule_conv_transpose),
        ((F.linear,), _rule_linear),
        (
            (
                torch.matmul,
                Tensor.matmul,
                Tensor.__matmul__,
                torch.mm,
                Tensor.mm,
                torch.bmm,
                Tensor.bmm,
            ),
            _rule_matmul,
        ),
        ((torch.addmm, Tensor.addmm, torch.baddbmm, Tensor.baddbmm), _rule_addmm),
        ((torch.einsum,), _rule_einsum),
        ((F.scaled_dot_product_attention,), _rule_sdpa),
        ((F.multi_head_attention_forward,), _rule_mha),
        # Average pools record no MACs: they mark pooled spikes for the next layer.
        ((F.avg_pool1d,), _rule_pool(1, False)),
        ((F.avg_pool2d,), _rule_pool(2, False)),
        ((F.avg_pool3d,), _rule_pool(3, False)),
        ((F.adaptive_avg_pool1d,), _rule_pool(1, True)),
        ((F.adaptive_avg_pool2d,), _rule_pool(2, True)),
        ((F.adaptive_avg_pool3d,), _rule_pool(3, True)),
    )
    return {func: rule for funcs, rule in groups for func in funcs}


_RULES = _build_rules()


class OpMode(TorchFunctionMode):
    """Sees every torch function call; hands the conv / linear / matmul ones to their rule.

    Inside a module, a call without a rule may carry a pending attention product along
    (``Recorder.passthrough``); calls outside every module are not counted.
    """

    def __init__(self, rec: Recorder) -> None:
        super().__init__()
        self.rec = rec

    def __torch_function__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        rec = self.rec
        if not rec.stack:
            return out
        try:
            rule = _RULES.get(func)
        except TypeError:  # an unhashable callable
            rule = None
        if rule is not None:
            rule(rec, args, kwargs, out)
        else:
            rec.carry_pooled(func, args, kwargs, out)
            rec.passthrough(func, args, kwargs, out)
        return out


# -- layer kinds masked since issue 26: bilinear and recurrent layers -------------------


def _rule_bilinear(
    rec: Recorder, args: tuple[Any, ...], kwargs: Mapping[str, Any], out: Tensor
) -> None:
    # bilinear(input1, input2, weight, bias): out_k = x1^T W_k x2, in1 * in2 MACs each
    x1, w = _arg(args, kwargs, 0, "input1"), _arg(args, kwargs, 2, "weight")
    fout, in1, in2 = w.shape
    rec.record(
        "linear",
        f"{in1}x{in2} -> {fout}",
        fout * in1 * in2,
        out.numel() * in1 * in2,
        rec.lead(out.shape[:-1]),
        rec.stats(x1),
        weight=w,
    )


def _rule_recurrent(
    rec: Recorder, args: tuple[Any, ...], kwargs: Mapping[str, Any], out: Any
) -> None:
    # torch.lstm(input, hx, params, has_biases, num_layers, dropout, train, bidirectional,
    # batch_first) or, for a packed sequence, (data, batch_sizes, hx, params, has_biases,
    # num_layers, dropout, train, bidirectional). Each 2-D parameter is a weight matrix
    # applied once per sequence item (time step x batch entry): the first layer's
    # weight_ih to the input, the others to hidden states (not spikes).
    x = args[0]
    packed = isinstance(args[1], Tensor) and args[1].dim() == 1 and not args[1].is_floating_point()
    at = 1 if packed else 0
    params, num_layers, bidirectional = args[2 + at], args[4 + at], args[7 + at]
    items = x.shape[0] if packed else x.numel() // x.shape[-1]
    steps = rec.lead(out[0].shape[:-1])
    weights = [p for p in params if p.dim() == 2]
    dirs = 2 if bidirectional else 1
    per_group = max(1, len(weights) // (num_layers * dirs))
    for i, w in enumerate(weights):
        reads_input = i < per_group * dirs and i % per_group == 0
        stats = rec.stats(x) if reads_input else virtual_stats(items * w.shape[1])
        rec.record(
            "linear",
            f"{w.shape[1]} -> {w.shape[0]}",
            w.numel(),
            items * w.numel(),
            steps,
            stats,
            weight=w,
            label=f"recurrent{i}",
        )


_RULES.update({F.bilinear: _rule_bilinear, torch.bilinear: _rule_bilinear})
_RULES.update(
    dict.fromkeys((torch.lstm, torch.gru, torch.rnn_tanh, torch.rnn_relu), _rule_recurrent)
)
