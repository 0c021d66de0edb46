"""Theoretical energy of a network on neuromorphic hardware (paper Eq. 3-4, Appendix A).

The estimate follows the paper:

.. math::

    E_\\text{ANN} = e_\\text{MAC} \\sum_l \\text{FLOPs}_l, \\qquad
    E_\\text{SNN} = e_\\text{MAC}\\,\\text{FLOPs}_1
        + e_\\text{AC} \\sum_{l \\ge 2} \\text{fr}_l \\, T \\, \\text{FLOPs}_l,

with ``e_MAC = 4.6 pJ`` and ``e_AC = 0.9 pJ`` (45 nm), ``FLOPs_l`` the multiply-accumulates
of layer ``l`` for one sample and one time step (``E_ANN`` is the same network run once,
as an ANN on a static input; ``ann_every_step=True`` charges an ANN that really runs ``T``
steps, e.g. on event frames, for each of them) and ``fr_l`` the firing rate of the layer's
binary input, measured on real data (a layer whose input is not binary, e.g. average-pooled
spikes, is priced at its input's mean absolute value). Conv, linear and attention matmuls
count; BatchNorm is folded into the preceding layer; pooling, residual additions,
normalisation and neurons are free.

The operations are found on any model (ours, SpikingJelly's, a user's own) by watching the
functional calls (``F.conv*``, ``F.linear``, matmuls, ``einsum``, scaled-dot-product and
multi-head attention) while the model runs, and naming each after the innermost module
that issued it. :func:`estimate_energy` runs the model and prices the result;
:func:`count_ops` only counts, and :func:`energy_from_counts` is the formula on its own, so
one measurement can be priced under several conventions.
"""

from __future__ import annotations

import csv
import dataclasses
import inspect
import io
import math
import os
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from ._io import atomic_open
from ._state import finite_or_none, reset_states, split_batch
from .errors import SpikeLotteryError

__all__ = [
    "ATTENTION_ORDERS",
    "E_AC_PJ",
    "E_MAC_PJ",
    "EnergyReport",
    "LayerEnergy",
    "OpCount",
    "count_ops",
    "energy_from_counts",
    "estimate_energy",
]

#: Energy of one 32-bit float multiply-accumulate at 45 nm, in pJ (Horowitz, ISSCC 2014).
E_MAC_PJ = 4.6
#: Energy of one 32-bit float accumulate at 45 nm, in pJ.
E_AC_PJ = 0.9
#: Values of ``attention_order``: keep the order the model ran, or re-cost a spiking
#: attention as ``(Q K^T) V`` (``"qk_first"``) or ``Q (K^T V)`` (``"kv_first"``).
ATTENTION_ORDERS: tuple[str, ...] = ("as_run", "qk_first", "kv_first")

_PJ_PER_MJ = 1e9


# --------------------------------------------------------------------------- public records


@dataclass(frozen=True)
class OpCount:
    """What one layer did, per sample, measured on real inputs.

    Attributes:
        name: Qualified module name (``features.0.conv``), or module name plus the op's
            index when a module issues several ops (``blocks.0.attn.matmul0``).
        kind: ``"conv"``, ``"linear"`` or ``"matmul"``.
        module: Class name of the module that issued the op.
        shape: Human-readable shape of one sample at one time step.
        macs: Dense multiply-accumulates per sample per time step (``FLOPs_l``).
        steps: Time steps the layer ran per sample (``T`` for almost every layer).
        rate: Firing rate of the binary input (fraction of ones over time, batch and
            units); for a non-binary input, its mean absolute value (the mean spike count
            of a sum of spikes, the pre-pooling rate of average-pooled spikes).
        binary: The input was binary (all values in {0, 1}) on every call; for a matmul,
            one operand was (a product with a 0/1 factor is an accumulate).
        density: Fraction of non-zero weight entries (1 for activation-activation matmuls).
        spike_operand: ``"input"`` (conv, linear), ``"left"``, ``"right"`` or ``"both"``
            (matmul; the rate is the left operand's when it is binary), ``""`` if none.
        calls: Number of calls recorded.
        alternatives: For the two matmuls of a spiking attention, the same row costed in
            each :data:`ATTENTION_ORDERS` entry (empty otherwise).
    """

    name: str
    kind: str
    module: str
    shape: str
    macs: float
    steps: float
    rate: float
    binary: bool
    density: float
    spike_operand: str = ""
    calls: int = 1
    alternatives: Mapping[str, OpCount] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class LayerEnergy:
    """One row of an :class:`EnergyReport`: a layer and its energy per sample.

    ``name``, ``kind``, ``shape``, ``macs``, ``steps``, ``rate``, ``binary`` and
    ``density`` are as in :class:`OpCount` (``macs`` is the dense count; ``density``
    scales it only with ``density_scaling=True``).

    Attributes:
        op: How the SNN pays for the layer: ``"MAC"`` (the first layer; non-binary inputs
            with ``nonbinary_as_mac=True``) or ``"AC"`` (accumulates).
        ops: Operations per sample over all time steps: the synaptic operations
            ``SOPs = fr * T * FLOPs`` for an ``"AC"`` row, the MACs for a ``"MAC"`` row.
        snn_pj: Energy of the layer in the SNN, pJ per sample.
        ann_pj: Energy of the layer as an ANN, pJ per sample: run once (``e_mac * FLOPs``),
            or on each of its ``steps`` with ``ann_every_step=True``.
    """

    name: str
    kind: str
    shape: str
    macs: float
    steps: float
    rate: float
    binary: bool
    density: float
    op: str
    ops: float
    snn_pj: float
    ann_pj: float

    @property
    def snn_mj(self) -> float:
        """:attr:`snn_pj` in mJ."""
        return self.snn_pj / _PJ_PER_MJ

    @property
    def ann_mj(self) -> float:
        """:attr:`ann_pj` in mJ."""
        return self.ann_pj / _PJ_PER_MJ


@dataclass(frozen=True)
class EnergyReport:
    """Per-layer and total energy of one sample, with the conventions used.

    ``print(report)`` gives a fixed-width table; :meth:`to_markdown`, :meth:`to_csv` and
    :meth:`to_dict` export it.

    Attributes:
        rows: One :class:`LayerEnergy` per layer, in execution order.
        ann_mj: ``E_ANN`` in mJ per sample: by default the same network run once, as an
            ANN on a static input (the paper's reference, whatever ``T`` the model ran);
            with ``ann_every_step=True``, charged for every time step each layer ran.
        snn_mj: ``E_SNN`` in mJ per sample.
        ratio: ``snn_mj / ann_mj`` (``nan`` when the ANN costs nothing).
        macs: Dense MACs per sample and time step, summed over the layers (the ANN count).
        sops: Synaptic operations (accumulates) per sample in the SNN.
        snn_macs: Multiply-accumulates per sample in the SNN (the first layer, plus
            non-binary inputs with ``nonbinary_as_mac=True``).
        mean_rate: Firing rate averaged over the binary-input layers, weighted by their
            ``T * MACs`` (``nan`` if no layer had binary input).
        timesteps: ``T``.
        samples: Number of samples measured.
        attention_pairs: Matmul pairs that ``attention_order`` can re-cost.
        options: The pricing conventions (energies per op and the option switches).
        counts: The measured :class:`OpCount` rows, for :func:`energy_from_counts`.
    """

    rows: tuple[LayerEnergy, ...]
    ann_mj: float
    snn_mj: float
    ratio: float
    macs: float
    sops: float
    snn_macs: float
    mean_rate: float
    timesteps: float
    samples: int
    attention_pairs: int
    options: Mapping[str, Any]
    counts: tuple[OpCount, ...] = field(default=(), repr=False, compare=False)

    def reprice(self, **options: Any) -> EnergyReport:
        """The same measurement priced with other options (no model run).

        Takes the keyword options of :func:`energy_from_counts`; the others keep their
        values from this report.

        >>> report.reprice(nonbinary_as_mac=True, e_ac=0.03)  # doctest: +SKIP
        """
        unknown = set(options) - set(self.options)
        if unknown:
            raise TypeError(
                f"reprice() got unknown option(s) {sorted(unknown)}; valid: {sorted(self.options)}"
            )
        merged = {**self.options, **options}
        return energy_from_counts(
            self.counts, timesteps=self.timesteps, samples=self.samples, **merged
        )

    # -- export ----------------------------------------------------------------------
    def conventions(self) -> str:
        """One line naming the conventions the numbers follow."""
        o = self.options
        first = "times T" if o["first_layer_times_t"] else "once"
        ann = "every time step it ran" if o["ann_every_step"] else "once (T = 1)"
        nonbin = "as MAC every step" if o["nonbinary_as_mac"] else "as AC at their mean |value|"
        density = (
            "scaled by weight density"
            if o["density_scaling"]
            else "dense (not scaled by weight density)"
        )
        return (
            f"paper Eq. 3-4: e_MAC={o['e_mac']:g} pJ, e_AC={o['e_ac']:g} pJ; first layer as MAC, "
            f"counted {first}; non-binary inputs {nonbin}; attention order {o['attention_order']}; "
            f"FLOPs {density}; ANN counted {ann}; BN folded, pooling/residual adds/neurons "
            "free; per sample"
        )

    def summary(self) -> str:
        """One line with the totals."""
        saving = "" if math.isnan(self.ratio) else f" ({100 * self.ratio:.1f}% of ANN)"
        rate = "n/a" if math.isnan(self.mean_rate) else f"{self.mean_rate:.4f}"
        return (
            f"E_ANN {self.ann_mj:.4f} mJ | E_SNN {self.snn_mj:.4f} mJ{saving} | "
            f"MACs/step {_si(self.macs)} | SOPs {_si(self.sops)} | SNN MACs {_si(self.snn_macs)} | "
            f"mean firing rate {rate} | T {_num(self.timesteps)} | samples {self.samples}"
        )

    def _table(self) -> tuple[list[str], list[list[str]], list[str]]:
        header = [
            *["layer", "kind", "shape", "MACs/step", "T", "rate", "input", "density", "op", "ops"],
            "SNN mJ",
            "ANN mJ",
        ]
        body = [
            [
                r.name,
                r.kind,
                r.shape,
                f"{r.macs:,.0f}",
                _num(r.steps),
                f"{r.rate:.4f}",
                "spike" if r.binary else "real",
                f"{r.density:.3f}",
                r.op,
                f"{r.ops:,.0f}",
                f"{r.snn_mj:.6f}",
                f"{r.ann_mj:.6f}",
            ]
            for r in self.rows
        ]
        blank = [""] * 6
        total = [
            "total",
            "",
            "",
            f"{self.macs:,.0f}",
            *blank,
            f"{self.snn_mj:.6f}",
            f"{self.ann_mj:.6f}",
        ]
        return header, body, total

    def __str__(self) -> str:
        header, body, total = self._table()
        numeric = {3, 4, 5, 7, 9, 10, 11}
        widths = [max(len(row[i]) for row in [header, *body, total]) for i in range(len(header))]

        def line(cells: list[str]) -> str:
            return "  ".join(
                c.rjust(w) if i in numeric else c.ljust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            ).rstrip()

        rule = "-" * len(line(header))
        out = [
            line(header),
            rule,
            *(line(r) for r in body),
            rule,
            line(total),
            self.summary(),
            self.conventions(),
        ]
        return "\n".join(out)

    def to_markdown(self) -> str:
        """The table as GitHub-flavoured Markdown, with the totals and conventions below it."""
        header, body, total = self._table()
        right = {3, 4, 5, 7, 9, 10, 11}
        lines = [
            "| " + " | ".join(header) + " |",
            "|" + "|".join("---:" if i in right else "---" for i in range(len(header))) + "|",
        ]
        for row in [*body, [f"**{total[0]}**", *total[1:]]]:
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
        return "\n".join([*lines, "", self.summary(), "", self.conventions()]) + "\n"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict: ``rows``, ``totals``, ``options`` (``nan`` becomes ``None``)."""
        rows = []
        for r in self.rows:
            d = dataclasses.asdict(r)
            d["snn_mj"], d["ann_mj"] = r.snn_mj, r.ann_mj
            rows.append({k: finite_or_none(v) for k, v in d.items()})
        totals = {
            "ann_mj": self.ann_mj,
            "snn_mj": self.snn_mj,
            "ratio": self.ratio,
            "macs": self.macs,
            "sops": self.sops,
            "snn_macs": self.snn_macs,
            "mean_rate": self.mean_rate,
        }
        return {
            "rows": rows,
            "totals": {k: finite_or_none(v) for k, v in totals.items()},
            "options": {k: finite_or_none(v) for k, v in self.options.items()},
            "timesteps": finite_or_none(self.timesteps),
            "samples": self.samples,
            "attention_pairs": self.attention_pairs,
            "conventions": self.conventions(),
        }

    def to_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write one line per layer to ``path`` (atomically: a temp file, then ``os.replace``).

        Columns: ``name, kind, shape, macs, steps, rate, binary, density, op, ops, snn_pj,
        ann_pj, snn_mj, ann_mj``. The totals are in :meth:`to_dict`.

        Returns:
            The path written.
        """
        path = Path(path)
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        cols = [
            "name",
            "kind",
            "shape",
            "macs",
            "steps",
            "rate",
            "binary",
            "density",
            "op",
            "ops",
            "snn_pj",
            "ann_pj",
        ]
        writer.writerow([*cols, "snn_mj", "ann_mj"])
        for r in self.rows:
            writer.writerow([*(getattr(r, c) for c in cols), r.snn_mj, r.ann_mj])
        with atomic_open(path, "w", newline="") as f:
            f.write(buf.getvalue())
        return path


def _num(v: float) -> str:
    return f"{v:.0f}" if abs(v - round(v)) < 1e-9 else f"{v:.3g}"


def _si(v: float) -> str:
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.2f}{unit}"
    return f"{v:.0f}"


# --------------------------------------------------------------------------- the formula


def _check_energy(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of pJ per operation, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"{name} must be a finite energy >= 0 (pJ per operation), got {name}={value!r}"
        )
    return float(value)


def _check_flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {name}={value!r}")
    return value


def _check_order(value: Any) -> str:
    if value not in ATTENTION_ORDERS:
        raise ValueError(
            f"attention_order must be one of {ATTENTION_ORDERS}, got attention_order={value!r}"
        )
    return value


def energy_from_counts(
    counts: Sequence[OpCount],
    *,
    e_mac: float = E_MAC_PJ,
    e_ac: float = E_AC_PJ,
    first_layer_times_t: bool = False,
    nonbinary_as_mac: bool = False,
    attention_order: str = "as_run",
    density_scaling: bool = False,
    ann_every_step: bool = False,
    timesteps: float | None = None,
    samples: int = 0,
) -> EnergyReport:
    """Price measured op counts with paper Eq. 3-4 (the pure formula, no model needed).

    The first count is the first layer. Per layer, with ``d`` the weight density when
    ``density_scaling`` (else 1) and ``F = macs * d``:

    * ANN: ``e_mac * F`` (the network run once), or ``e_mac * steps * F`` with
      ``ann_every_step=True``.
    * SNN, first layer: ``e_mac * F`` (times its time steps with ``first_layer_times_t``).
    * SNN, binary input: ``e_ac * rate * steps * F`` (the synaptic operations).
    * SNN, non-binary input: ``e_ac * rate * steps * F`` with ``rate`` the input's mean
      absolute value (the paper: every layer after the first is priced in SOPs), or
      ``e_mac * steps * F`` with ``nonbinary_as_mac=True``.

    Args:
        counts: :class:`OpCount` rows in execution order (from :func:`count_ops` or
            :attr:`EnergyReport.counts`).
        e_mac: pJ per multiply-accumulate.
        e_ac: pJ per accumulate.
        first_layer_times_t: Charge the first layer once per time step (default: once,
            as the paper).
        nonbinary_as_mac: Charge layers whose input is not binary (integer residual sums,
            average-pooled spikes) as a MAC per weight and step, instead of the paper's
            SOPs at the input's mean absolute value.
        attention_order: ``"as_run"``, ``"qk_first"`` or ``"kv_first"``.
        density_scaling: Multiply every layer's FLOPs by its weight density (pruned
            weights do no work), in the ANN and the SNN alike.
        ann_every_step: Charge the ANN for every time step each layer ran, for a network
            that does not spike but really runs ``T`` steps (an ANN on event frames).
            Default: once per sample, the paper's ANN on a static input.
        timesteps: ``T`` for the report (default: the largest ``steps``).
        samples: Samples measured, for the report.

    Returns:
        An :class:`EnergyReport`.

    >>> c = OpCount("fc", "linear", "Linear", "100 -> 10", macs=1000, steps=4, rate=0.5,
    ...             binary=True, density=1.0)
    >>> first = OpCount("stem", "conv", "Conv2d", "...", 1e6, 4, 1.0, False, 1.0)
    >>> round(energy_from_counts([first, c]).snn_mj * 1e9)  # 4.6e6 + 0.9 * 0.5 * 4 * 1000 pJ
    4601800
    """
    e_mac = _check_energy("e_mac", e_mac)
    e_ac = _check_energy("e_ac", e_ac)
    _check_flag("first_layer_times_t", first_layer_times_t)
    _check_flag("nonbinary_as_mac", nonbinary_as_mac)
    _check_flag("density_scaling", density_scaling)
    _check_flag("ann_every_step", ann_every_step)
    _check_order(attention_order)
    counts = tuple(counts)
    if not counts:
        raise ValueError("counts is empty: there is no layer to price")
    rows: list[LayerEnergy] = []
    for i, c in enumerate(counts):
        if attention_order != "as_run" and attention_order in c.alternatives:
            c = c.alternatives[attention_order]
        d = c.density if density_scaling else 1.0
        flops = c.macs * d
        if i == 0:
            op, ops = "MAC", flops * (c.steps if first_layer_times_t else 1.0)
        elif c.binary or not nonbinary_as_mac:
            op, ops = "AC", c.rate * c.steps * flops
        else:
            op, ops = "MAC", c.steps * flops
        energy = (e_mac if op == "MAC" else e_ac) * ops
        rows.append(
            LayerEnergy(
                name=c.name,
                kind=c.kind,
                shape=c.shape,
                macs=c.macs,
                steps=c.steps,
                rate=c.rate,
                binary=c.binary,
                density=c.density,
                op=op,
                ops=ops,
                snn_pj=energy,
                ann_pj=e_mac * flops * (c.steps if ann_every_step else 1.0),
            )
        )
    ann_pj = math.fsum(r.ann_pj for r in rows)
    snn_pj = math.fsum(r.snn_pj for r in rows)
    spike_work = math.fsum(r.steps * r.macs for r in rows if r.binary)
    mean_rate = (
        math.fsum(r.rate * r.steps * r.macs for r in rows if r.binary) / spike_work
        if spike_work
        else math.nan
    )
    options = {
        "e_mac": e_mac,
        "e_ac": e_ac,
        "first_layer_times_t": first_layer_times_t,
        "nonbinary_as_mac": nonbinary_as_mac,
        "attention_order": attention_order,
        "density_scaling": density_scaling,
        "ann_every_step": ann_every_step,
    }
    return EnergyReport(
        rows=tuple(rows),
        ann_mj=ann_pj / _PJ_PER_MJ,
        snn_mj=snn_pj / _PJ_PER_MJ,
        ratio=snn_pj / ann_pj if ann_pj else math.nan,
        macs=math.fsum(r.macs for r in rows),
        sops=math.fsum(r.ops for r in rows if r.op == "AC"),
        snn_macs=math.fsum(r.ops for r in rows if r.op == "MAC"),
        mean_rate=mean_rate,
        timesteps=float(timesteps) if timesteps is not None else max(c.steps for c in counts),
        samples=int(samples),
        attention_pairs=sum(1 for c in counts if c.alternatives) // 2,
        options=options,
        counts=counts,
    )


# --------------------------------------------------------------------------- measuring

# Sample-steps of one call: a conv's batch dim, or (leading dims, B) of a linear / matmul
# output, resolved by _lead_sample_steps once T is known.
_Steps = float | tuple[tuple[int, ...], int]

# (binary, sum of |values|, element count) of one operand: its rate is sum / count, the
# firing rate for spikes, the mean spike count for sums of spikes.
_Stats = tuple[bool, float, int]


def _stats(t: Tensor) -> _Stats:
    n = t.numel()
    if n == 0:
        return False, 0.0, 0
    if t.dtype == torch.bool:
        return True, float(torch.count_nonzero(t)), n
    binary = bool(((t == 0) | (t == 1)).all())
    total = float(torch.count_nonzero(t)) if binary else float(t.abs().sum(dtype=torch.float64))
    return binary, total, n


def _virtual(numel: int) -> _Stats:
    # An intermediate product the run never made: assumed non-binary, rate 1.
    return False, float(numel), numel


def _is_weight(t: Any) -> bool:
    return isinstance(t, nn.Parameter) or isinstance(getattr(t, "_base", None), nn.Parameter)


@dataclass
class _Acc:
    """Running totals of one layer over all calls and batches."""

    module: str
    label: str
    custom_label: bool
    kind: str
    module_type: str
    seq: int
    shape: str
    base_macs: int | None
    macs: int = 0
    sample_steps: float = 0.0  # convs: their batch dim, summed
    leads: dict[tuple[tuple[int, ...], int], int] = field(
        default_factory=dict
    )  # (lead, B) -> calls
    calls: int = 0
    binary: bool = True
    spike_operand: str = ""
    spike_sum: float = 0.0
    spike_numel: int = 0
    act_sum: float = 0.0
    act_numel: int = 0
    w_nnz: int | None = None
    w_numel: int | None = None

    def add(
        self,
        macs: int,
        steps: _Steps,
        left: _Stats,
        right: _Stats | None,
        weight: tuple[int, int] | None,
        *,
        right_is_weight: bool = False,
    ) -> None:
        """Add one call; ``weight`` is the ``(nonzero, numel)`` count of its weight."""
        self.calls += 1
        self.macs += macs
        if isinstance(steps, tuple):
            self.leads[steps] = self.leads.get(steps, 0) + 1
        else:
            self.sample_steps += steps
        if right is None:  # conv / linear: the left operand is the input
            spike, which = (left if left[0] else None), "input"
        elif left[0]:
            spike, which = left, ("both" if right[0] and not right_is_weight else "left")
        elif right[0] and not right_is_weight:
            spike, which = right, "right"
        else:
            spike, which = None, ""
        if spike is None:
            self.binary = False
        else:
            self.spike_sum += spike[1]
            self.spike_numel += spike[2]
            self.spike_operand = self.spike_operand or which
        self.act_sum += left[1]
        self.act_numel += left[2]
        if weight is not None:
            self.w_nnz, self.w_numel = weight


@dataclass
class _Pending:
    """An activation-activation matmul that a following one may pair with."""

    key: tuple[str, str]
    a: _Stats
    b: _Stats
    a_shape: tuple[int, ...]
    b_shape: tuple[int, ...]
    derived: list[Tensor]


@dataclass
class _Pair:
    run_order: str
    calls: int = 0
    other: tuple[_Acc, _Acc] | None = None


@dataclass
class _Frame:
    module: nn.Module
    name: str
    counts: dict[str, int] = field(default_factory=dict)
    pending: _Pending | None = None


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


class _Recorder:
    """Module stack (via hooks) plus the per-layer accumulators."""

    def __init__(self, model: nn.Module) -> None:
        self.names = {id(m): n for n, m in model.named_modules()}
        self.leaf = {n: next(iter(m.children()), None) is None for n, m in model.named_modules()}
        self.stack: list[_Frame] = []
        self.accs: dict[tuple[str, str], _Acc] = {}
        self.pairs: dict[tuple[tuple[str, str], tuple[str, str]], _Pair] = {}
        self.handles: list[Any] = []
        self.batch = 1
        # id(weight) -> (weak reference, (version, data_ptr), nonzero count): counting the
        # non-zeros of every layer's weight on every call would sync a GPU once per call.
        # The weak reference proves the id still names the same tensor; the version counter
        # and the data pointer, that its values did not change since.
        self._density: dict[int, tuple[weakref.ref[Tensor], tuple[int, int], int]] = {}
        for m in model.modules():
            self.handles.append(m.register_forward_pre_hook(self._pre))
            self.handles.append(m.register_forward_hook(self._post, always_call=True))

    def weight_count(self, weight: Tensor) -> tuple[int, int]:
        """``(nonzero, numel)`` of a weight, counted once per tensor and version."""
        try:
            version = (weight._version, weight.data_ptr())
            ref = weakref.ref(weight)
        except (RuntimeError, TypeError):  # inference or traced tensors: no cache
            return int(torch.count_nonzero(weight)), weight.numel()
        hit = self._density.get(id(weight))
        if hit is not None and hit[0]() is weight and hit[1] == version:
            return hit[2], weight.numel()
        nnz = int(torch.count_nonzero(weight))
        self._density[id(weight)] = (ref, version, nnz)
        return nnz, weight.numel()

    def lead(self, lead: Sequence[int]) -> _Steps:
        """The output's leading (non-feature) dims and this batch's B: read once T is known."""
        return tuple(int(n) for n in lead), self.batch

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def _pre(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if self.stack and self.stack[-1].pending is not None:
            derived = self.stack[-1].pending.derived
            if any(
                any(a is d for d in derived) for a in tree_flatten(args)[0] if isinstance(a, Tensor)
            ):
                self.stack[-1].pending = None  # a child module (a neuron?) transforms the product
        self.stack.append(_Frame(module, self.names.get(id(module), type(module).__name__)))

    def _post(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        while self.stack:
            if self.stack.pop().module is module:
                break

    # -- recording ---------------------------------------------------------------
    def _acc(
        self, frame: _Frame, kind: str, label: str | None, shape: str, base_macs: int | None
    ) -> _Acc:
        custom = label is not None
        if label is None:
            i = frame.counts.get(kind, 0)
            frame.counts[kind] = i + 1
            label = f"{kind}{i}"
        key = (frame.name, label)
        acc = self.accs.get(key)
        if acc is None:
            acc = _Acc(
                frame.name,
                label,
                custom,
                kind,
                type(frame.module).__name__,
                len(self.accs),
                shape,
                base_macs,
            )
            self.accs[key] = acc
        return acc

    def record(
        self,
        kind: str,
        shape: str,
        base_macs: int | None,
        macs: int,
        steps: _Steps,
        left: _Stats,
        right: _Stats | None = None,
        weight: Tensor | None = None,
        *,
        label: str | None = None,
        right_is_weight: bool = False,
    ) -> _Acc:
        frame = self.stack[-1]
        frame.pending = None
        acc = self._acc(frame, kind, label, shape, base_macs)
        counted = None if weight is None else self.weight_count(weight)
        acc.add(macs, steps, left, right, counted, right_is_weight=right_is_weight)
        return acc

    def record_pairable(self, a: Tensor, b: Tensor, out: Tensor) -> None:
        """An activation-activation matmul: record it and pair it with the previous one."""
        frame = self.stack[-1]
        pending = frame.pending
        sa, sb = _stats(a), _stats(b)
        acc = self.record(
            "matmul",
            _mm_shape(a, b),
            _mm_base(a, b),
            _mm_macs(a, out),
            self.lead(out.shape[:-2]),
            sa,
            sb,
        )
        key = (acc.module, acc.label)
        if pending is not None and any(a is d for d in pending.derived):
            # (A B) C: A, B from the pending product, C = b.
            self._pair(
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
            self._pair(
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

    def _pair(
        self,
        first: _Pending,
        second: tuple[str, str],
        run_order: str,
        a: tuple[_Stats, tuple[int, ...]],
        b: tuple[_Stats, tuple[int, ...]],
        c: tuple[_Stats, tuple[int, ...]],
        out: Tensor,
    ) -> None:
        (sa, ash), (sb, bsh), (sc, csh) = a, b, c
        n, d, m, e = ash[-2], ash[-1], bsh[-1], csh[-1]
        batch = out.numel() // max(n * e, 1)
        pair = self.pairs.setdefault((first.key, second), _Pair(run_order))
        pair.calls += 1
        if pair.run_order != run_order:
            return  # inconsistent across calls: the pair is dropped when aggregating
        if run_order == "qk_first":  # the other order: B C first, then A (B C)
            ops = (
                (f"{d}x{m} @ {m}x{e}", d * m * e, batch * d * m * e, sb, sc),
                (f"{n}x{d} @ {d}x{e}", n * d * e, batch * n * d * e, sa, _virtual(batch * d * e)),
            )
        else:  # the other order: A B first, then (A B) C
            ops = (
                (f"{n}x{d} @ {d}x{m}", n * d * m, batch * n * d * m, sa, sb),
                (f"{n}x{m} @ {m}x{e}", n * m * e, batch * n * m * e, _virtual(batch * n * m), sc),
            )
        if pair.other is None:
            pair.other = tuple(
                _Acc(k[0], k[1], False, "matmul", "", 0, shape, base)
                for k, (shape, base, *_rest) in zip((first.key, second), ops, strict=True)
            )  # type: ignore[assignment]
        assert pair.other is not None
        for acc, (_shape, _base, macs, left, right) in zip(pair.other, ops, strict=True):
            acc.add(macs, 0.0, left, right, None)  # steps: those of the measured rows

    def passthrough(
        self, func: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any], out: Any
    ) -> None:
        """Follow a pending attention product through scalar scaling and no-op layout calls."""
        frame = self.stack[-1]
        pending = frame.pending
        assert pending is not None
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


def _mm_macs(a: Tensor, out: Tensor) -> int:
    return out.numel() * a.shape[-1]


def _mm_shape(a: Tensor, b: Tensor) -> str:
    def mat(t: Tensor) -> str:
        return "x".join(str(s) for s in t.shape[-2:])

    return f"{mat(a)} @ {mat(b)}"


def _mm_base(a: Tensor, b: Tensor) -> int | None:
    if a.dim() < 2 or b.dim() < 2:
        return None
    return a.shape[-2] * a.shape[-1] * b.shape[-1]


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


def _rule_conv(
    rec: _Recorder, args: tuple[Any, ...], kwargs: Mapping[str, Any], out: Tensor
) -> None:
    x, w = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "weight")
    groups = _arg(args, kwargs, 6, "groups", 1)
    k = math.prod(w.shape[2:])
    macs = out.numel() * w.shape[1] * k  # w.shape[1] = in_channels / groups
    rows = out.shape[0] if x.dim() == w.dim() else 1  # [T * B, C, ...]: T * B sample-steps
    shape = _conv_shape(x, w, out, _arg(args, kwargs, 3, "stride", 1), groups, False)
    rec.record("conv", shape, None, macs, rows, _stats(x), weight=w)


def _rule_conv_transpose(
    rec: _Recorder, args: tuple[Any, ...], kwargs: Mapping[str, Any], out: Tensor
) -> None:
    x, w = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "weight")
    groups = _arg(args, kwargs, 6, "groups", 1)
    macs = (
        x.numel() * w.shape[1] * math.prod(w.shape[2:])
    )  # each input scatters to out/groups x kernel
    rows = out.shape[0] if x.dim() == w.dim() else 1
    shape = _conv_shape(x, w, out, _arg(args, kwargs, 3, "stride", 1), groups, True)
    rec.record("conv", shape, None, macs, rows, _stats(x), weight=w)


def _rule_linear(
    rec: _Recorder, args: tuple[Any, ...], kwargs: Mapping[str, Any], out: Tensor
) -> None:
    x, w = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "weight")
    fin, fout = w.shape[-1], (w.shape[0] if w.dim() == 2 else 1)
    rec.record(
        "linear",
        f"{fin} -> {fout}",
        fin * fout,
        out.numel() * fin,
        rec.lead(out.shape[:-1]),
        _stats(x),
        weight=w,
    )


def _matmul_operands(rec: _Recorder, a: Any, b: Any, out: Tensor) -> None:
    if not (isinstance(a, Tensor) and isinstance(b, Tensor)):
        return
    wa, wb = _is_weight(a), _is_weight(b)
    if not (wa or wb) and a.dim() >= 2 and b.dim() >= 2:
        rec.record_pairable(a, b, out)
        return
    shape = (
        _mm_shape(a, b) if a.dim() >= 2 and b.dim() >= 2 else f"{tuple(a.shape)} @ {tuple(b.shape)}"
    )
    _record_product(rec, shape, _mm_base(a, b), _mm_macs(a, out), a, b, out)


def _record_product(
    rec: _Recorder, shape: str, base: Any, macs: int, a: Tensor, b: Tensor, out: Tensor
) -> None:
    """Record a two-operand product; a weight operand is never the spike operand."""
    wa, wb = _is_weight(a), _is_weight(b)
    left, right, weight = (b, a, a) if wa and not wb else (a, b, b if wb else None)
    rec.record(
        "matmul",
        shape,
        base,
        macs,
        rec.lead(out.shape[:-1]),
        _stats(left),
        _stats(right),
        weight,
        right_is_weight=weight is not None,
    )


def _rule_matmul(
    rec: _Recorder, args: tuple[Any, ...], kwargs: Mapping[str, Any], out: Tensor
) -> None:
    _matmul_operands(
        rec, _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 1, "other", kwargs.get("mat2")), out
    )


def _rule_addmm(
    rec: _Recorder, args: tuple[Any, ...], kwargs: Mapping[str, Any], out: Tensor
) -> None:
    a = _arg(args, kwargs, 1, "mat1", kwargs.get("batch1"))
    b = _arg(args, kwargs, 2, "mat2", kwargs.get("batch2"))
    _matmul_operands(rec, a, b, out)


def _rule_einsum(
    rec: _Recorder, args: tuple[Any, ...], kwargs: Mapping[str, Any], out: Tensor
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
    _record_product(rec, f"einsum {eq}", None, macs, a, b, out)


def _rule_sdpa(
    rec: _Recorder, args: tuple[Any, ...], kwargs: Mapping[str, Any], out: Tensor
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
        _stats(q),
        _stats(k),
    )
    # softmax(Q K^T) is real-valued: only V can make the second product an accumulate.
    rec.record(
        "matmul",
        f"{n_q}x{s} @ {s}x{ev}",
        n_q * s * ev,
        batch * n_q * s * ev,
        steps,
        _virtual(batch * n_q * s),
        _stats(v),
    )


_MHA_SIGNATURE = inspect.signature(F.multi_head_attention_forward)


def _rule_mha(rec: _Recorder, args: tuple[Any, ...], kwargs: Mapping[str, Any], out: Any) -> None:
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
    parts = [_stats(t) for t in seen]
    pooled = (all(s[0] for s in parts), sum(s[1] for s in parts), sum(s[2] for s in parts))
    src_eff = src + (p["bias_k"] is not None) + bool(p["add_zero_attn"])
    frame = rec.stack[-1]
    i = frame.counts.get("mha", 0)
    frame.counts["mha"] = i + 1
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
        _virtual(n * length * e),
        _virtual(n * src_eff * e),
        label=f"{prefix}matmul0",
    )
    rec.record(
        "matmul",
        f"{length}x{src_eff} @ {src_eff}x{e}",
        None,
        attn,
        steps,
        _virtual(n * length * src_eff),
        _virtual(n * src_eff * e),
        label=f"{prefix}matmul1",
    )
    rec.record(
        "linear",
        f"{e} -> {e}",
        e * e,
        rows * e * e,
        steps,
        _virtual(rows * e),
        weight=p["out_proj_weight"],
        label=f"{prefix}out_proj",
    )


def _build_rules() -> dict[Any, Any]:
    groups: tuple[tuple[tuple[Any, ...], Any], ...] = (
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
    )
    return {func: rule for funcs, rule in groups for func in funcs}


_RULES = _build_rules()


class _OpMode(TorchFunctionMode):
    """Sees every torch function call; prices the conv / linear / matmul ones."""

    def __init__(self, rec: _Recorder) -> None:
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
        elif rec.stack[-1].pending is not None:
            rec.passthrough(func, args, kwargs, out)
        return out


# --------------------------------------------------------------------------- driving the model


def _split_batch(batch: Any) -> tuple[Tensor, int | None]:
    """``x`` and the number of labels of a batch (``None`` without labels)."""
    try:
        x, y = split_batch(batch)
    except TypeError as exc:
        raise TypeError(f"{exc}; the model is called as model(x)") from None
    return x, (int(y.shape[0]) if isinstance(y, Tensor) and y.dim() >= 1 else None)


def _batches(inputs: Any) -> Iterator[Any]:
    if isinstance(inputs, (Tensor, tuple)):
        yield inputs
        return
    if (
        isinstance(inputs, list)
        and len(inputs) == 2
        and all(isinstance(t, Tensor) for t in inputs)
        and inputs[1].dim() < inputs[0].dim()
    ):
        yield inputs  # one [x, y] batch, as a DataLoader yields it
        return
    if not isinstance(inputs, Iterable):
        raise TypeError(
            f"inputs must be a tensor, an (x, y) batch or an iterable of batches (e.g. a DataLoader), "
            f"got {type(inputs).__name__}"
        )
    yield from inputs


def _check_count(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int or None, got {name}={value!r}")
    return value


def _near_int(v: float) -> float:
    r = round(v)
    return float(r) if abs(v - r) < 1e-6 * max(1.0, abs(v)) else v


def count_ops(
    model: nn.Module,
    inputs: Any,
    *,
    timesteps: int | None = None,
    batch_size: int | None = None,
    max_batches: int | None = None,
) -> list[OpCount]:
    """Run ``model`` on ``inputs`` and count each layer's MACs, firing rate and weight density.

    The model runs under ``torch.no_grad()`` in eval mode (each module's ``training`` flag is
    restored afterwards), called as ``model(x)``; neuron states are reset before every batch
    and after the last (SpikingJelly's ``functional.reset_net`` when installed, else every
    module's ``reset()``).

    The batch size ``B`` of a batch is ``batch_size`` if given, else the length of the
    labels ``y`` of an ``(x, y)`` batch, else ``x.shape[1]`` for a 5-D ``x`` with
    ``x.shape[0] == timesteps`` (SpikingJelly's ``[T, B, C, H, W]``), else ``x.shape[0]``.
    Each call of a layer processes some sample-steps: a conv's batch dim (multi-step
    layers see ``[T * B, C, ...]``); for linear and matmul ops the output's leading dims
    (``[B, ...]`` is one step per sample, ``[T, B, ...]`` and ``[T * B, ...]`` are ``T``);
    a single-step loop calls the layer ``T`` times. A layer's ``steps`` is its
    sample-steps per sample (capped at ``T`` for linear and matmul ops, whose token dims
    can look like time). ``T`` is ``timesteps`` if given, else the largest ``steps`` of any
    conv, or, in a model without convs, the first layer's ``steps``. If a row's ``steps``
    looks wrong (sizes that coincide, e.g. ``B`` equal to ``T`` and to the token count),
    measure with another batch size.

    Args:
        model: Any ``nn.Module``.
        inputs: One batch (a tensor ``x`` or an ``(x, y)`` pair) or an iterable of batches
            (e.g. a ``DataLoader``).
        timesteps: ``T``; inferred when ``None``.
        batch_size: Samples per batch when neither labels nor the layout tell.
        max_batches: Stop after this many batches.

    Returns:
        One :class:`OpCount` per layer, in execution order.

    Raises:
        SpikeLotteryError: No conv, linear or matmul ran, or ``T`` could not be inferred.

    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 16, 10))
    >>> [(c.name, c.macs) for c in count_ops(net, torch.rand(2, 3, 4, 4))]
    [('0', 3456.0), ('2', 1280.0)]
    """
    return _count(model, inputs, timesteps, batch_size, max_batches)[0]


def _count(
    model: nn.Module,
    inputs: Any,
    timesteps: int | None,
    batch_size: int | None,
    max_batches: int | None,
) -> tuple[list[OpCount], float, int]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    timesteps = _check_count("timesteps", timesteps)
    batch_size = _check_count("batch_size", batch_size)
    max_batches = _check_count("max_batches", max_batches)
    device = next((t.device for t in [*model.parameters(), *model.buffers()]), None)
    flags = [(m, m.training) for m in model.modules()]
    rec = _Recorder(model)
    samples = batches = 0
    try:
        model.eval()
        with torch.no_grad():
            for batch in _batches(inputs):
                x, labels = _split_batch(batch)
                if batch_size is not None:
                    b = batch_size
                elif labels is not None:
                    b = labels
                elif timesteps is not None and x.dim() == 5 and x.shape[0] == timesteps:
                    b = int(x.shape[1])
                else:
                    b = int(x.shape[0]) if x.dim() else 1
                if b < 1:
                    raise ValueError(f"batch {batches} has no sample (x of shape {tuple(x.shape)})")
                if device is not None:
                    x = x.to(device)
                reset_states(model)
                rec.stack.clear()
                rec.batch = b
                with _OpMode(rec):
                    model(x)
                samples += b
                batches += 1
                if max_batches is not None and batches >= max_batches:
                    break  # before the loader prepares another batch
    finally:
        rec.close()
        for m, flag in flags:
            m.training = flag
        if batches:
            reset_states(model)
    if not batches:
        raise ValueError(
            "inputs yielded no batch: pass a tensor, an (x, y) batch or a non-empty iterable of batches"
        )
    if not rec.accs:
        raise SpikeLotteryError(
            f"no conv, linear or matmul ran in {type(model).__name__}: estimate_energy prices F.conv*, F.linear, "
            "matmul/bmm/einsum and attention calls; check that the model computes with them"
        )
    counts, t = _aggregate(rec, samples, timesteps)
    return counts, t, samples


def _aggregate(rec: _Recorder, samples: int, timesteps: int | None) -> tuple[list[OpCount], float]:
    accs = sorted(rec.accs.values(), key=lambda a: a.seq)

    def per_sample(a: _Acc, t: float) -> float:
        from_leads = sum(
            calls * _lead_sample_steps(dims, b, t) for (dims, b), calls in a.leads.items()
        )
        return (a.sample_steps + from_leads) / samples

    if timesteps is None:
        convs = [per_sample(a, 1.0) for a in accs if a.kind == "conv"]
        t_est = max(convs) if convs else per_sample(accs[0], 1.0)
        t_round = _near_int(t_est)
        if t_round != round(t_round) or t_round < 1:
            raise SpikeLotteryError(
                f"could not infer the number of time steps: layer {_name(rec, accs[0])!r} processed "
                f"{t_est:g} time steps per sample with {samples} samples; pass timesteps= (and batch_size= or (x, y) "
                "batches when the input is [T, B, ...])"
            )
        t = t_round
    else:
        t = float(timesteps)

    def steps_of(a: _Acc) -> float:
        r = _near_int(per_sample(a, t))
        return r if a.kind == "conv" else min(t, r)

    def to_count(a: _Acc, name: str, steps: float, module: str) -> OpCount:
        macs = _near_int(a.macs / samples / steps) if steps else 0.0
        shape = a.shape
        if a.base_macs and macs and abs(macs / a.base_macs - 1) > 1e-9:
            shape = f"{_num(macs / a.base_macs)}x ({shape})"
        if a.binary:
            rate = a.spike_sum / a.spike_numel if a.spike_numel else 0.0
        else:
            rate = a.act_sum / a.act_numel if a.act_numel else 0.0
        density = a.w_nnz / a.w_numel if a.w_nnz is not None and a.w_numel else 1.0
        return OpCount(
            name,
            a.kind,
            module,
            shape,
            macs,
            steps,
            rate,
            a.binary,
            density,
            a.spike_operand if a.binary else "",
            a.calls,
        )

    counts: dict[tuple[str, str], OpCount] = {}
    for a in accs:
        counts[(a.module, a.label)] = to_count(a, _name(rec, a), steps_of(a), a.module_type)
    for (k1, k2), pair in rec.pairs.items():
        a1, a2 = rec.accs[k1], rec.accs[k2]
        if pair.other is None or pair.calls != a1.calls or pair.calls != a2.calls:
            continue  # paired on some calls only: no consistent alternative
        other = "kv_first" if pair.run_order == "qk_first" else "qk_first"
        for key, alt in ((k1, pair.other[0]), (k2, pair.other[1])):
            c = counts[key]
            alt_count = to_count(alt, c.name, c.steps, c.module)
            counts[key] = dataclasses.replace(c, alternatives={pair.run_order: c, other: alt_count})
    return list(counts.values()), t


def _lead_sample_steps(lead: tuple[int, ...], b: int, t: float) -> float:
    """Sample-steps in one call whose output has leading dims ``lead`` in a batch of ``b``.

    With ``T > 1`` known, ``[T, B, ...]`` and ``[T * B, ...]`` are read first (so ``B == T``
    is not mistaken for tokens); then ``[B, ...]`` is one step, ``[X, B, ...]`` is X steps
    and ``[k * B, ...]`` is k.
    """
    if not lead:
        return float(b)
    if t > 1:
        if len(lead) >= 2 and lead[0] == t and lead[1] == b:
            return t * b
        if lead[0] == t * b:
            return t * b
    if lead[0] == b:
        return float(b)
    if len(lead) >= 2 and lead[1] == b:
        return float(lead[0] * b)
    if lead[0] % b == 0:
        return float(lead[0])
    return float(b)


def _name(rec: _Recorder, a: _Acc) -> str:
    if not a.custom_label and rec.leaf.get(a.module, False) and a.module:
        siblings = sum(1 for b in rec.accs.values() if b.module == a.module)
        if siblings == 1:
            return a.module
    return f"{a.module}.{a.label}" if a.module else a.label


def estimate_energy(
    model: nn.Module,
    inputs: Any,
    *,
    timesteps: int | None = None,
    batch_size: int | None = None,
    e_mac: float = E_MAC_PJ,
    e_ac: float = E_AC_PJ,
    first_layer_times_t: bool = False,
    nonbinary_as_mac: bool = False,
    attention_order: str = "as_run",
    density_scaling: bool = False,
    ann_every_step: bool = False,
    max_batches: int | None = None,
) -> EnergyReport:
    """Estimate the energy per sample of ``model`` as an SNN and as an ANN (paper Eq. 3-4).

    Runs the model on real ``inputs`` (see :func:`count_ops` for how batches, ``B`` and
    ``T`` are read), measures each conv / linear / matmul layer's MACs, input firing rate
    and weight density, and prices them with :func:`energy_from_counts`. The defaults are
    the paper's conventions.

    Args:
        model: Any ``nn.Module`` (ours, SpikingJelly's, a user's own).
        inputs: One batch (``x`` or ``(x, y)``) or an iterable of batches.
        timesteps: ``T``; inferred when ``None``.
        batch_size: Samples per batch when neither labels nor the layout tell.
        e_mac: pJ per multiply-accumulate (4.6, 45 nm).
        e_ac: pJ per accumulate (0.9, 45 nm).
        first_layer_times_t: Charge the first layer once per time step instead of once.
        nonbinary_as_mac: Charge layers with non-binary input (integer residual sums,
            average-pooled spikes) as a MAC per weight and step, instead of the paper's
            SOPs at the input's mean absolute value.
        attention_order: ``"as_run"``, ``"qk_first"`` (``(Q K^T) V``) or ``"kv_first"``
            (``Q (K^T V)``) for a spiking attention's two matmuls.
        density_scaling: Scale each layer's FLOPs by its weight density.
        ann_every_step: Charge the ANN for every time step each layer ran (a network that
            does not spike but runs ``T`` steps, e.g. on event frames); default: once.
        max_batches: Stop after this many batches.

    Returns:
        An :class:`EnergyReport`; ``print`` it for a table.

    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 10))
    >>> report = estimate_energy(net, torch.rand(4, 3, 4, 4))
    >>> report.macs, round(report.ann_mj * 1e9, 1)  # 48*32 + 32*10 MACs, pJ
    (1856.0, 8537.6)
    """
    # Validate the pricing options before running the model.
    _check_energy("e_mac", e_mac)
    _check_energy("e_ac", e_ac)
    _check_flag("first_layer_times_t", first_layer_times_t)
    _check_flag("nonbinary_as_mac", nonbinary_as_mac)
    _check_flag("density_scaling", density_scaling)
    _check_flag("ann_every_step", ann_every_step)
    _check_order(attention_order)
    counts, t, samples = _count(model, inputs, timesteps, batch_size, max_batches)
    return energy_from_counts(
        counts,
        e_mac=e_mac,
        e_ac=e_ac,
        first_layer_times_t=first_layer_times_t,
        nonbinary_as_mac=nonbinary_as_mac,
        attention_order=attention_order,
        density_scaling=density_scaling,
        ann_every_step=ann_every_step,
        timesteps=t,
        samples=samples,
    )
