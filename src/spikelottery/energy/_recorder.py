"""The op recorder: which module is running (via hooks) and each layer's running totals.

The :class:`Recorder` knows nothing of the torch functions themselves: the rules in
``_rules`` read each call's operands and tell it what to record.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten

from ..errors import SpikeLotteryError
from ..neuron import LIFNeuron
from ._neurons import is_neuron, step_mode
from ._operands import Stats, mm_base, mm_macs, mm_shape, operand_stats, virtual_stats
from ._tally import NeuronTally, Steps, SynCount, Tally, matmul_count
from ._weights import WeightCache

__all__ = ["NeuronTally", "Pair", "Recorder", "Steps", "SynCount", "Tally", "matmul_count"]


@dataclass
class _Pending:
    """An activation-activation matmul that a following one may pair with."""

    key: tuple[str, str]
    a: Stats
    b: Stats
    a_shape: tuple[int, ...]
    b_shape: tuple[int, ...]
    derived: list[Tensor]


@dataclass
class Pair:
    """Two matmuls of one attention, and the tallies of the order the model did not run."""

    run_order: str
    calls: int = 0
    other: tuple[Tally, Tally] | None = None


@dataclass
class _Frame:
    module: nn.Module
    name: str
    counts: dict[str, int] = field(default_factory=dict)
    pending: _Pending | None = None


# The modules whose inputs NeuroBench 2.x hooks for its synaptic operations (its
# STATELESS_LAYERS; transposed convs and functional calls are not among them).
_NEUROBENCH_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

# Ops that keep a pending attention product re-associable: scalar scaling, dtype and
# layout no-ops, metadata reads. Anything else applied to the product (softmax, a neuron,
# a transpose) means (Q K^T) V may not be re-costed as Q (K^T V).
_SCALE_OPS = frozenset(
    [
        "mul",
        "mul_",
        "__mul__",
        "__rmul__",
        "__imul__",
        "div",
        "div_",
        "__truediv__",
        "__itruediv__",
        "true_divide",
    ]
)
_PASS_OPS = frozenset(
    [
        "__get__",
        "size",
        "dim",
        "numel",
        "stride",
        "is_contiguous",
        "is_floating_point",
        "element_size",
        "__len__",
        "contiguous",
        "clone",
        "detach",
        "to",
        "float",
        "half",
        "double",
        "bfloat16",
        "type_as",
    ]
)

# Ops whose output holds the values of their tensor operands, rearranged or copied: pooled
# spikes stay pooled spikes through them.
_KEEP_VALUES_OPS = frozenset(
    [
        "clone",
        "contiguous",
        "detach",
        "to",
        "float",
        "double",
        "cat",
        "concat",
        "concatenate",
        "stack",
        "hstack",
        "vstack",
        "transpose",
        "permute",
        "movedim",
        "swapaxes",
        "swapdims",
        "reshape",
        "view",
        "flatten",
        "unflatten",
        "squeeze",
        "unsqueeze",
        "narrow",
        "select",
        "__getitem__",
        "chunk",
        "split",
        "unbind",
        "repeat",
        "expand",
        "flip",
        "roll",
        "t",
    ]
)


class Recorder:
    """Module stack (via hooks) plus the per-layer tallies.

    Hooks every module of ``model`` until :meth:`close`; :attr:`stack` names the modules
    running now (innermost last), :attr:`tallies` holds one :class:`Tally` per
    ``(module name, label)`` and :attr:`pairs` the attention matmul pairs.
    """

    def __init__(self, model: nn.Module) -> None:
        self.names = {id(m): n for n, m in model.named_modules()}
        self.leaf = {n: next(iter(m.children()), None) is None for n, m in model.named_modules()}
        self.stack: list[_Frame] = []
        self.tallies: dict[tuple[str, str], Tally] = {}
        self.pairs: dict[tuple[tuple[str, str], tuple[str, str]], Pair] = {}
        self.neurons: dict[str, NeuronTally] = {}
        self.handles: list[Any] = []
        self.batch_id = -1
        # The batch size B of each batch, by index (read after its run, from the neurons).
        self.batch_sizes: list[int] = []
        # What each neuron call of the running batch saw: (name, step_mode, input shape).
        self.seen: list[tuple[str, str, tuple[int, ...]]] = []
        # id(tensor) -> (weak reference, version, operand stats), for this batch.
        self._stats: dict[int, tuple[weakref.ref[Tensor], int, Stats]] = {}
        # (weight, version, sample shape, settings) -> (weak reference, conv reach map).
        # (input shape, weight shape, settings) -> in-range taps of one conv row.
        self.taps_cache: dict[tuple[Any, ...], float] = {}
        # id(average-pooled spike tensor) -> (weak reference, window area).
        self.pooled: dict[int, tuple[weakref.ref[Tensor], float]] = {}
        self.exact = True  # count exact synaptic operations (``_synops``)
        neuron_modules = {id(m) for m in model.modules() if is_neuron(m)}
        # A neuron inside another neuron module is counted once, at the innermost.
        self.neuron_ids = {
            id(m)
            for m in model.modules()
            if id(m) in neuron_modules
            and not any(id(c) in neuron_modules for c in m.modules() if c is not m)
        }
        # What is derived from each weight, shared by all measurements (_weights).
        self.weights = WeightCache()
        for m in model.modules():
            self.handles.append(m.register_forward_pre_hook(self._pre))
            self.handles.append(m.register_forward_hook(self._post, always_call=True))

    def start_batch(self) -> None:
        """Begin a model call on a new batch (its B is set by :meth:`end_batch`)."""
        self.stack.clear()
        self.seen.clear()
        self.pooled.clear()
        self._stats.clear()
        self.batch_id += 1

    def end_batch(self, batch: int) -> None:
        """The batch just run had ``batch`` samples."""
        self.batch_sizes.append(batch)

    def mark_pooled(self, out: Tensor, area: float) -> None:
        """``out`` is an average pool of spikes over windows of ``area`` inputs."""
        self.pooled[id(out)] = (weakref.ref(out), area)

    def carry_pooled(
        self, func: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any], out: Any
    ) -> None:
        """Keep the window area of pooled spikes on what a copy or a rearrangement of them
        (a clone, a contiguous copy, a concatenation, ...) returns: its values are the
        same pooled spikes. Only when every tensor operand is pooled over one area."""
        if torch.compiler.is_compiling():
            return  # inside a compiled kernel (the LIF's): no pooled spikes, and no guard
        if not self.pooled or getattr(func, "__name__", "") not in _KEEP_VALUES_OPS:
            return
        areas = {
            self.pool_area(t)
            for t in tree_flatten((args, dict(kwargs)))[0]
            if isinstance(t, Tensor) and t.numel() > 1
        }
        if len(areas) != 1 or (area := areas.pop()) <= 1.0:
            return
        for t in tree_flatten(out)[0]:
            if isinstance(t, Tensor):
                self.mark_pooled(t, area)

    def pool_area(self, x: Tensor) -> float:
        """The window area of the average-pooled spikes ``x`` is (a view of), else 1.0."""
        for t in (x, getattr(x, "_base", None)):
            hit = self.pooled.get(id(t)) if t is not None else None
            if hit is not None and hit[0]() is t:
                return hit[1]
        return 1.0

    def close(self) -> None:
        """Remove the hooks."""
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def weight_count(self, weight: Tensor) -> tuple[int, int, bool]:
        """``(nonzero, numel, binarised)`` of a weight (:meth:`WeightCache.count`).

        Raises:
            SpikeLotteryError: The weight holds a NaN or an infinity (naming the layer).
        """
        return self.weights.count(weight, self.where)

    def stats(self, t: Tensor) -> Stats:
        """:func:`operand_stats` of ``t``, computed once per tensor (and version): a
        neuron's spikes are read again by the layer they feed, often as a reshaped view."""
        keys = _same_elements(t)
        for key in keys:
            hit = self._stats.get(id(key))
            if hit is not None and hit[0]() is key and hit[1] == key._version:
                return hit[2]
        found = operand_stats(t)
        self._remember(keys, found)
        return found

    def remember_spikes(self, spikes: Tensor) -> None:
        """``spikes`` holds only zeros and ones (a neuron's Heaviside output): its stats
        are its sum, without the binary check."""
        n = spikes.numel()
        total = spikes.sum(dtype=torch.float64) if n >= 2**24 else spikes.sum()
        self._remember(_same_elements(spikes), (True, float(total), n))

    def _remember(self, keys: tuple[Tensor, ...], found: Stats) -> None:
        with contextlib.suppress(RuntimeError, TypeError):  # inference tensors: no cache
            for key in keys:
                self._stats[id(key)] = (weakref.ref(key), key._version, found)

    def reach(
        self,
        weight: Tensor,
        sample: tuple[int, ...],
        settings: Mapping[str, Any],
        make: Any,
    ) -> Tensor:
        """The reach map of a conv (:meth:`WeightCache.reach`)."""
        return self.weights.reach(weight, sample, settings, make)

    def where(self) -> str:
        """The qualified name of the running module (for error messages)."""
        if not self.stack:
            return "<model>"
        frame = self.stack[-1]
        return frame.name or type(frame.module).__name__

    def lead(self, lead: Sequence[int]) -> Steps:
        """The output's leading (non-feature) dims and this batch's index: read once B and
        T are known."""
        return tuple(int(n) for n in lead), self.batch_id

    def take_index(self, kind: str) -> int:
        """The next index of an op of ``kind`` in the running module (0, 1, ...)."""
        counts = self.stack[-1].counts
        i = counts.get(kind, 0)
        counts[kind] = i + 1
        return i

    def _pre(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if self.stack and self.stack[-1].pending is not None:
            derived = self.stack[-1].pending.derived
            if any(
                any(a is d for d in derived) for a in tree_flatten(args)[0] if isinstance(a, Tensor)
            ):
                self.stack[-1].pending = None  # a child module (a neuron?) transforms the product
        self.stack.append(_Frame(module, self.names.get(id(module), type(module).__name__)))

    def _post(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if id(module) in self.neuron_ids:
            out = next((t for t in tree_flatten(output)[0] if isinstance(t, Tensor)), None)
            inp = next((t for t in tree_flatten(args)[0] if isinstance(t, Tensor)), out)
            if out is not None:
                name = self.names.get(id(module), type(module).__name__)
                mode = step_mode(module)
                self.seen.append((name, mode, tuple(inp.shape) if inp is not None else ()))
                tally = self.neurons.get(name)
                if tally is None:
                    tally = NeuronTally(name, type(module).__name__, len(self.neurons))
                    self.neurons[name] = tally
                tally.updates += out.numel()
                if type(module) is LIFNeuron and out.is_floating_point():
                    self.remember_spikes(out)  # a Heaviside step: 0 or 1 by construction
                binary, total, _ = self.stats(out)
                tally.spikes += int(total) if binary else int(torch.count_nonzero(out))
                tally.calls += 1
        while self.stack:
            if self.stack.pop().module is module:
                break

    # -- recording ---------------------------------------------------------------
    def _tally(self, kind: str, label: str | None, shape: str, base_macs: int | None) -> Tally:
        frame = self.stack[-1]
        custom = label is not None
        if label is None:
            label = f"{kind}{self.take_index(kind)}"
        key = (frame.name, label)
        tally = self.tallies.get(key)
        if tally is None:
            tally = Tally(
                module=frame.name,
                label=label,
                custom_label=custom,
                kind=kind,
                module_type=type(frame.module).__name__,
                seq=len(self.tallies),
                shape=shape,
                base_macs=base_macs,
                neurobench=kind != "matmul" and isinstance(frame.module, _NEUROBENCH_LAYERS),
            )
            self.tallies[key] = tally
        return tally

    def record(
        self,
        kind: str,
        shape: str,
        base_macs: int | None,
        macs: int,
        steps: Steps,
        left: Stats,
        right: Stats | None = None,
        weight: Tensor | None = None,
        *,
        label: str | None = None,
        right_is_weight: bool = False,
        synops: SynCount | None = None,
        taps: float | None = None,
    ) -> Tally:
        """Add one call of an op to the running module's tally of it.

        Args:
            kind: ``"conv"``, ``"linear"`` or ``"matmul"``.
            shape: Shape text of one sample at one step.
            base_macs: MACs of one sample-step when the shape alone tells (else ``None``).
            macs: MACs of the whole call.
            steps: Sample-steps of the call (see :data:`Steps`).
            left: Stats of the input (conv, linear) or of the left operand (matmul).
            right: Stats of the right operand of a matmul.
            weight: The weight, whose density is counted.
            label: Name of the op within its module (default: ``kind`` and an index).
            right_is_weight: The right operand is a weight (never the spike operand).
            synops: The call's exact synaptic operations (``None``: not countable).
            taps: In-range (input, weight) pairs of the call, padding left out (default:
                ``macs``).

        Raises:
            SpikeLotteryError: An operand or the weight holds NaN or infinite values.
        """
        for stats, which in ((left, "input"), (right, "second operand")):
            if stats is not None and not math.isfinite(stats[1]):
                raise SpikeLotteryError(
                    f"layer {self.where()!r}: its {which} holds NaN or infinite values; "
                    "energy cannot be estimated (check the inputs and the layers before it)"
                )
        self.stack[-1].pending = None
        tally = self._tally(kind, label, shape, base_macs)
        counted = None if weight is None else self.weight_count(weight)
        tally.add(
            macs,
            steps,
            left,
            right,
            None if counted is None else counted[:2],
            right_is_weight=right_is_weight,
        )
        if counted is not None:
            tally.w_binarised = counted[2]
        tally.taps += float(macs if taps is None else taps)
        if self.exact:
            tally.add_synops(synops, self.batch_id)
        return tally

    def record_pairable(self, a: Tensor, b: Tensor, out: Tensor) -> None:
        """An activation-activation matmul: record it and pair it with the previous one."""
        frame = self.stack[-1]
        pending = frame.pending
        sa, sb = self.stats(a), self.stats(b)
        tally = self.record(
            "matmul",
            mm_shape(a, b),
            mm_base(a, b),
            mm_macs(a, out),
            self.lead(out.shape[:-2]),
            sa,
            sb,
            synops=matmul_count(a, b, sa[0] or sb[0]) if self.exact else None,
        )
        key = (tally.module, tally.label)
        if pending is not None and any(a is d for d in pending.derived):
            # (A B) C: A, B from the pending product, C = b.
            self.pair(
                pending,
                key,
                "qk_first",
                (pending.a, pending.a_shape),
                (pending.b, pending.b_shape),
                (sb, tuple(b.shape)),
                out,
            )
        elif pending is not None and any(b is d for d in pending.derived):
            # A (B C): B, C from the pending product, A = a.
            self.pair(
                pending,
                key,
                "kv_first",
                (sa, tuple(a.shape)),
                (pending.a, pending.a_shape),
                (pending.b, pending.b_shape),
                out,
            )
        else:
            frame.pending = _Pending(key, sa, sb, tuple(a.shape), tuple(b.shape), [out])

    def pair(
        self,
        first: _Pending,
        second: tuple[str, str],
        run_order: str,
        a: tuple[Stats, tuple[int, ...]],
        b: tuple[Stats, tuple[int, ...]],
        c: tuple[Stats, tuple[int, ...]],
        out: Tensor,
    ) -> None:
        (sa, ash), (sb, bsh), (sc, csh) = a, b, c
        n, d, m, e = ash[-2], ash[-1], bsh[-1], csh[-1]
        batch = out.numel() // max(n * e, 1)
        pair = self.pairs.setdefault((first.key, second), Pair(run_order))
        pair.calls += 1
        if pair.run_order != run_order:
            return  # inconsistent across calls: the pair is dropped when aggregating
        if run_order == "qk_first":  # the other order: B C first, then A (B C)
            ops = (
                (f"{d}x{m} @ {m}x{e}", d * m * e, batch * d * m * e, sb, sc),
                (
                    f"{n}x{d} @ {d}x{e}",
                    n * d * e,
                    batch * n * d * e,
                    sa,
                    virtual_stats(batch * d * e),
                ),
            )
        else:  # the other order: A B first, then (A B) C
            ops = (
                (f"{n}x{d} @ {d}x{m}", n * d * m, batch * n * d * m, sa, sb),
                (
                    f"{n}x{m} @ {m}x{e}",
                    n * m * e,
                    batch * n * m * e,
                    virtual_stats(batch * n * m),
                    sc,
                ),
            )
        if pair.other is None:
            (shape1, base1, *_), (shape2, base2, *_) = ops
            pair.other = (
                _alternative(first.key, shape1, base1),
                _alternative(second, shape2, base2),
            )
        for tally, (_shape, _base, macs, left, right) in zip(pair.other, ops, strict=True):
            tally.add(macs, 0.0, left, right, None)  # steps: those of the measured rows

    def passthrough(
        self, func: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any], out: Any
    ) -> None:
        """Follow a pending attention product through scalar scaling and no-op layout calls."""
        frame = self.stack[-1]
        pending = frame.pending
        if pending is None:
            return
        tensors = [t for t in tree_flatten((args, dict(kwargs)))[0] if isinstance(t, Tensor)]
        hit = [any(t is d for d in pending.derived) for t in tensors]
        if not any(hit):
            return
        name = getattr(func, "__name__", "")
        if name in _SCALE_OPS:
            ok = all(h or t.numel() == 1 for t, h in zip(tensors, hit, strict=True))
        else:
            ok = name in _PASS_OPS
        if not ok:
            frame.pending = None
            return
        pending.derived.extend(t for t in tree_flatten(out)[0] if isinstance(t, Tensor))


def _same_elements(t: Tensor) -> tuple[Tensor, ...]:
    """``t``, and the tensor it views when that holds the same elements (a reshape)."""
    base = t._base
    if (
        base is not None
        and base.numel() == t.numel()
        and base.storage_offset() == t.storage_offset()
    ):
        return (t, base)
    return (t,)


def _alternative(key: tuple[str, str], shape: str, base_macs: int) -> Tally:
    # The tally of one matmul in the order the model did not run.
    return Tally(
        module=key[0],
        label=key[1],
        custom_label=False,
        kind="matmul",
        module_type="",
        seq=0,
        shape=shape,
        base_macs=base_macs,
    )
