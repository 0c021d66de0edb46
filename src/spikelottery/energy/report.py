"""The energy report: totals, the three views, printing and exports."""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._io import atomic_open
from .._state import finite_or_none
from .._table import format_rows
from ._formula import ann_passes_of
from ._memory import ASSUMPTIONS, ann_memory_pj, footprint_bits, memory_parts, sram_note, to_mj
from .hardware import ANN_BASELINES, HARDWARE_PRESETS
from .options import PricingOptions, merge_options
from .records import PJ_PER_MJ, LayerEnergy, NeuronCount, OpCount, plain_number

__all__ = ["VIEWS", "EnergyReport"]

# Columns of the table right-aligned in print(report) and in to_markdown().
_NUMERIC = (3, 4, 5, 7, 9, 10, 11, 12, 13)
# Columns of to_csv() read from each LayerEnergy (then snn_mj and ann_mj).
_CSV_COLUMNS = (
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
    "exact",
    "exact_op",
    "exact_ops",
    "exact_pj",
    "memory_pj",
)
# The three views of :meth:`EnergyReport.views`, in order.
VIEWS = ("paper formula", "exact synaptic ops", "memory-aware")


@dataclass(frozen=True)
class EnergyReport:
    """Per-layer and total energy of one sample, with the conventions used.

    ``print(report)`` gives a fixed-width table; :meth:`to_markdown`, :meth:`to_csv` and
    :meth:`to_dict` export it.

    Attributes:
        rows: One :class:`LayerEnergy` per layer, in execution order.
        ann_mj: ``E_ANN`` in mJ per sample, the ANN reference: the same network as a
            dense ANN, one pass per distinct input frame (once on a static input, the
            paper's reference whatever ``T`` the model ran; ``T`` passes on event frames);
            ``ann_every_step`` forces every step (``True``) or one pass (``False``).
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
        options: The pricing conventions by name (the fields of :class:`PricingOptions`).
        counts: The measured :class:`OpCount` rows, for :func:`energy_from_counts`.
        neurons: The membrane updates of each spiking neuron module (empty when not
            measured).
        frames: Distinct input frames per sample: 1 for a static input, ``T`` for event
            frames. The ANN reference runs one pass per frame (``ann_every_step=None``),
            and so does a first layer with real-valued input.
        spiking: A spiking neuron ran (``False``: the SNN figures price the model's
            activations as if they were spikes; read :attr:`ann_mj`).

    Besides the paper's formula (``snn_mj``), every report carries the exact view
    (:attr:`exact_snn_mj`: the counted synaptic operations, :attr:`LayerEnergy.exact_ops`)
    and the memory-aware view (:attr:`memory_snn_mj`), and compares each with a dense
    fp32 and an int8 ANN (:meth:`views`).
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
    neurons: tuple[NeuronCount, ...] = field(default=(), repr=False, compare=False)
    frames: float = 1.0
    spiking: bool = True

    # -- the exact and memory-aware views -------------------------------------------
    @property
    def pricing(self) -> PricingOptions:
        """:attr:`options` as a :class:`PricingOptions`."""
        return PricingOptions(**self.options)

    @property
    def exact_snn_mj(self) -> float:
        """``E_SNN`` from the exact synaptic operations, mJ per sample (compute only)."""
        return math.fsum(r.exact_pj for r in self.rows) / PJ_PER_MJ

    @property
    def exact_sops(self) -> float:
        """Exact accumulates per sample (the ``"AC"`` rows of the exact view)."""
        return math.fsum(r.exact_ops for r in self.rows if r.exact_op == "AC")

    @property
    def exact_macs(self) -> float:
        """Exact (effective) multiply-accumulates per sample in the SNN."""
        return math.fsum(r.exact_ops for r in self.rows if r.exact_op == "MAC")

    @property
    def exact_layers(self) -> int:
        """Rows counted exactly; the others use the formula's counts in the exact view."""
        return sum(1 for r in self.rows if r.exact)

    @property
    def neuron_updates(self) -> float:
        """Membrane updates per sample, all neurons and time steps (``units x T``)."""
        return math.fsum(n.updates for n in self.neurons)

    @property
    def activation_sparsity(self) -> float:
        """Fraction of the neurons' outputs that are zero, over all neurons and steps
        (NeuroBench's activation sparsity; ``nan`` without neurons)."""
        updates = self.neuron_updates
        spikes = math.fsum(n.spikes for n in self.neurons)
        return 1.0 - spikes / updates if updates else math.nan

    def memory_parts(self, *, weight_bits: int | None = None) -> dict[str, float]:
        """The SNN's memory traffic in mJ per sample, by part: ``weights`` (one read per
        synaptic op), ``mask`` (a pruned layer's bitmap), ``membranes`` (a read and a
        write per update) and ``activations`` (spikes written and read at 1 bit); see
        :data:`MEMORY_ASSUMPTIONS`. ``weight_bits`` reads every weight at that width,
        binarised layers included (the like-for-like comparison)."""
        parts = memory_parts(
            self.rows,
            self.counts or _no_counts(self.rows),
            self.neurons,
            self.pricing,
            weight_bits=weight_bits,
        )
        return to_mj(parts)

    @property
    def memory_mj(self) -> float:
        """The memory term of the SNN, mJ per sample: the sum of :meth:`memory_parts`."""
        return math.fsum(self.memory_parts().values())

    @property
    def memory_snn_mj(self) -> float:
        """``E_SNN`` of the memory-aware view: :attr:`exact_snn_mj` + :attr:`memory_mj`."""
        return self.exact_snn_mj + self.memory_mj

    def memory_like_for_like(self) -> dict[str, float]:
        """The memory-aware ``E_SNN`` with every weight at the same width, beside the
        headline (each layer at its own width, a binarised one at 1 bit): compare a
        ticket with a dense network at ``memory_<bits>bit_mj`` on both sides.

        Returns:
            ``memory_snn_mj`` (the headline), ``memory_<weight_bits>bit_mj`` and
            ``memory_1bit_mj``, mJ per sample.
        """
        out = {"memory_snn_mj": self.memory_snn_mj}
        for bits in dict.fromkeys((self.pricing.weight_bits, 1)):
            total = math.fsum(self.memory_parts(weight_bits=bits).values())
            out[f"memory_{bits}bit_mj"] = self.exact_snn_mj + total
        return out

    def memory_footprint(self) -> dict[str, Any]:
        """What the model stores (bits of weights, masks, membranes) and whether it fits
        the SRAM whose per-bit cost is assumed (``sram_kib``), with a sentence saying so."""
        bits = footprint_bits(self.counts, self.neurons, self.pricing)
        return {"parts_bits": bits, **sram_note(bits, self.pricing)}

    def memory_summary(self) -> str:
        """The memory view's parts, its like-for-like figures and the SRAM note, as lines."""
        parts = self.memory_parts()
        like = self.memory_like_for_like()
        text = ", ".join(f"{k} {v:.4f}" for k, v in parts.items())
        same = ", ".join(
            f"{k[7:-3]} weights {v:.4f}" for k, v in like.items() if k != "memory_snn_mj"
        )
        return (
            f"memory parts (mJ): {text} | like for like, every weight at: {same} mJ | "
            f"{self.memory_footprint()['text']}"
        )

    @property
    def ann_macs(self) -> float:
        """MACs per sample of the ANN reference (one pass per distinct input frame by
        default; see ``ann_every_step``)."""
        o = self.pricing
        return math.fsum(
            r.macs
            * (r.density if o.density_scaling else 1.0)
            * ann_passes_of(r.steps, self.frames, o.ann_every_step)
            for r in self.rows
        )

    @property
    def per_step_synops(self) -> tuple[float, ...]:
        """Exact synaptic operations per time step, summed over the counted layers."""
        steps = max((len(r.per_step) for r in self.rows), default=0)
        return tuple(
            math.fsum(r.per_step[i] for r in self.rows if len(r.per_step) > i) for i in range(steps)
        )

    def ann_baseline(self, preset: str, *, memory: bool = False) -> float:
        """``E_ANN`` in mJ per sample of the dense ANN at a preset's costs, with its weight
        reads (one per MAC at the preset's bit width) when ``memory``.

        >>> report.ann_baseline("int8-45nm")  # doctest: +SKIP
        """
        p = HARDWARE_PRESETS[preset]
        pj = self.ann_macs * p.e_mac
        if memory:
            passes = ann_passes_of(self.timesteps, self.frames, self.pricing.ann_every_step)
            parts = ann_memory_pj(
                self.ann_macs, passes, self.neurons, preset, self.pricing.e_mem_bit
            )
            pj += math.fsum(parts.values())
        return pj / PJ_PER_MJ

    def views(self) -> list[dict[str, Any]]:
        """The three views side by side: the paper's formula, the exact synaptic
        operations, and the memory-aware estimate, each against the dense fp32 and the
        int8 ANN (with their weight reads in the memory-aware view).

        Returns:
            One dict per view: ``view``, ``snn_mj``, then per baseline ``ann_<name>_mj``
            and ``pct_<name>`` (the SNN's percentage of it), names from
            :data:`ANN_BASELINES` with ``-45nm`` dropped (``ann_fp32_mj``).
        """
        out = []
        for view, snn in zip(
            VIEWS, (self.snn_mj, self.exact_snn_mj, self.memory_snn_mj), strict=True
        ):
            row: dict[str, Any] = {"view": view, "snn_mj": snn}
            for name in ANN_BASELINES:
                ann = self.ann_baseline(name, memory=view == "memory-aware")
                short = name.split("-")[0]
                row[f"ann_{short}_mj"] = ann
                row[f"pct_{short}"] = 100 * snn / ann if ann else math.nan
            out.append(row)
        return out

    def views_table(self) -> str:
        """:meth:`views` as a fixed-width table."""
        header = ["view", "SNN mJ"]
        for name in ANN_BASELINES:
            short = name.split("-")[0]
            header += [f"ANN {short} mJ", f"SNN % of {short}"]
        body = []
        for v in self.views():
            line = [v["view"], f"{v['snn_mj']:.6f}"]
            for name in ANN_BASELINES:
                short = name.split("-")[0]
                line += [f"{v[f'ann_{short}_mj']:.6f}", _pct(v[f"pct_{short}"])]
            body.append(line)
        return "\n".join(format_rows(header, body, numeric=range(1, len(header))))

    def reprice(self, **changes: Any) -> EnergyReport:
        """The same measurement priced with other options (no model run).

        Takes :class:`PricingOptions` fields as keywords; the others keep their values
        from this report.

        >>> report.reprice(nonbinary_as_mac=True, e_ac=0.03)  # doctest: +SKIP
        """
        from .pricing import energy_from_counts  # it builds reports: imported when used

        options = merge_options(self.options, changes, caller="reprice")
        return energy_from_counts(
            self.counts,
            options=options,
            timesteps=self.timesteps,
            samples=self.samples,
            neurons=self.neurons,
            frames=self.frames,
            spiking=self.spiking,
        )

    # -- export ----------------------------------------------------------------------
    def conventions(self) -> str:
        """The disclosure line: the preset and the conventions the numbers follow."""
        return self.pricing.conventions()

    def exact_summary(self) -> str:
        """One line with the exact and memory-aware totals."""
        fp32 = self.ann_baseline("fp32-45nm")
        saving = f" ({_pct(100 * self.exact_snn_mj / fp32)} of ANN fp32)" if fp32 else ""
        return (
            f"exact: E_SNN {self.exact_snn_mj:.4f} mJ{saving} | synops {_si(self.exact_sops)} "
            f"AC + {_si(self.exact_macs)} MAC ({self.exact_layers}/{len(self.rows)} layers "
            f"counted) | neuron updates {_si(self.neuron_updates)} | memory-aware "
            f"{self.memory_snn_mj:.4f} mJ (memory {self.memory_mj:.4f} mJ)"
        )

    def summary(self) -> str:
        """One line with the totals."""
        saving = "" if math.isnan(self.ratio) else f" ({100 * self.ratio:.1f}% of ANN)"
        rate = "n/a" if math.isnan(self.mean_rate) else f"{self.mean_rate:.4f}"
        return (
            f"E_ANN {self.ann_mj:.4f} mJ | E_SNN {self.snn_mj:.4f} mJ{saving} | "
            f"MACs/step {_si(self.macs)} | SOPs {_si(self.sops)} | SNN MACs {_si(self.snn_macs)} | "
            f"mean firing rate {rate} | T {plain_number(self.timesteps)} | samples {self.samples}"
        )

    def _table(self) -> tuple[list[str], list[list[str]], list[str]]:
        header = [
            *["layer", "kind", "shape", "MACs/step", "T", "rate", "input", "density", "op", "ops"],
            "SNN mJ",
            "ANN mJ",
            "synops",
            "exact mJ",
        ]
        body = [
            [
                r.name,
                r.kind,
                r.shape,
                f"{r.macs:,.0f}",
                plain_number(r.steps),
                f"{r.rate:.4f}",
                "spike" if r.binary else "real",
                f"{r.density:.3f}",
                r.op,
                f"{r.ops:,.0f}",
                f"{r.snn_mj:.6f}",
                f"{r.ann_mj:.6f}",
                f"{r.exact_ops:,.0f}" if r.exact else "n/a",
                f"{r.exact_mj:.6f}",
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
            "",
            f"{self.exact_snn_mj:.6f}",
        ]
        return header, body, total

    def __str__(self) -> str:
        header, body, total = self._table()
        # One unbroken rule as wide as the header, above the layers and above the total
        # (format_rows' own rule breaks between the columns).
        head, _, *lines, last = format_rows(header, [*body, total], numeric=_NUMERIC)
        rule = "-" * len(head)
        return "\n".join(
            [
                head,
                rule,
                *lines,
                rule,
                last,
                self.summary(),
                self.exact_summary(),
                self.memory_summary(),
                self.views_table(),
                *self._warnings(),
                self.conventions(),
            ]
        )

    def to_markdown(self) -> str:
        """The table as GitHub-flavoured Markdown, with the totals and conventions below it."""
        header, body, total = self._table()
        lines = [
            "| " + " | ".join(header) + " |",
            "|" + "|".join("---:" if i in _NUMERIC else "---" for i in range(len(header))) + "|",
        ]
        for row in [*body, [f"**{total[0]}**", *total[1:]]]:
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
        views = [
            "| view | SNN mJ | ANN fp32 mJ | SNN % of fp32 | ANN int8 mJ | SNN % of int8 |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for v in self.views():
            views.append(
                f"| {v['view']} | {v['snn_mj']:.6f} | {v['ann_fp32_mj']:.6f} | "
                f"{_pct(v['pct_fp32'])} | {v['ann_int8_mj']:.6f} | {_pct(v['pct_int8'])} |"
            )
        parts = [*lines, "", self.summary(), "", self.exact_summary(), "", self.memory_summary()]
        parts += ["", *views, *(f"\n{w}" for w in self._warnings())]
        return "\n".join([*parts, "", self.conventions()]) + "\n"

    def _warnings(self) -> list[str]:
        if self.spiking:
            return []
        return [
            "warning: no spiking neuron ran; the SNN figures price the activations as if "
            "they were spikes (read E_ANN for an ANN)"
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict: ``rows``, ``totals``, ``options`` (``nan`` becomes ``None``)."""
        rows = []
        for r in self.rows:
            d = dataclasses.asdict(r)
            d["snn_mj"], d["ann_mj"], d["exact_mj"] = r.snn_mj, r.ann_mj, r.exact_mj
            d["per_step"] = list(r.per_step)
            rows.append({k: finite_or_none(v) for k, v in d.items()})
        totals = {
            "ann_mj": self.ann_mj,
            "snn_mj": self.snn_mj,
            "ratio": self.ratio,
            "macs": self.macs,
            "sops": self.sops,
            "snn_macs": self.snn_macs,
            "mean_rate": self.mean_rate,
            "exact_snn_mj": self.exact_snn_mj,
            "exact_sops": self.exact_sops,
            "exact_macs": self.exact_macs,
            "memory_mj": self.memory_mj,
            "memory_snn_mj": self.memory_snn_mj,
            "neuron_updates": self.neuron_updates,
            **{f"ann_{n.split('-')[0]}_mj": self.ann_baseline(n) for n in ANN_BASELINES},
        }
        views = [{k: finite_or_none(v) for k, v in view.items()} for view in self.views()]
        return {
            "rows": rows,
            "neurons": [dataclasses.asdict(n) for n in self.neurons],
            "per_step_synops": list(self.per_step_synops),
            "views": views,
            "preset": self.pricing.preset_name(),
            "totals": {k: finite_or_none(v) for k, v in totals.items()},
            "options": {k: finite_or_none(v) for k, v in self.options.items()},
            "timesteps": finite_or_none(self.timesteps),
            "samples": self.samples,
            "attention_pairs": self.attention_pairs,
            "frames": self.frames,
            "spiking": self.spiking,
            "memory": {
                "parts_mj": self.memory_parts(),
                "like_for_like": self.memory_like_for_like(),
                "footprint": self.memory_footprint(),
                "assumptions": [
                    {"part": p, "assumption": a, "source": src} for p, a, src in ASSUMPTIONS
                ],
                "ann": {
                    name.split("-")[0]: to_mj(
                        ann_memory_pj(
                            self.ann_macs,
                            ann_passes_of(self.timesteps, self.frames, self.pricing.ann_every_step),
                            self.neurons,
                            name,
                            self.pricing.e_mem_bit,
                        )
                    )
                    for name in ANN_BASELINES
                },
            },
            "conventions": self.conventions(),
        }

    def ann_dict(self) -> dict[str, Any]:
        """JSON-safe dict of the ANN figures only, for a network that does not spike (the
        SNN views would price its activations as spikes): per-layer dense MACs and
        ``ann_mj``, the totals against the fp32 and int8 baselines with their memory
        traffic, ``frames`` and the options."""
        rows = [
            {
                "name": r.name,
                "kind": r.kind,
                "shape": r.shape,
                "macs": r.macs,
                "steps": r.steps,
                "density": r.density,
                "ann_mj": r.ann_mj,
            }
            for r in self.rows
        ]
        totals = {"ann_mj": self.ann_mj, "macs": self.macs, "ann_macs": self.ann_macs}
        for name in ANN_BASELINES:
            short = name.split("-")[0]
            totals[f"ann_{short}_mj"] = self.ann_baseline(name)
            totals[f"ann_{short}_memory_mj"] = self.ann_baseline(name, memory=True)
        return {
            "rows": [{k: finite_or_none(v) for k, v in r.items()} for r in rows],
            "totals": {k: finite_or_none(v) for k, v in totals.items()},
            "timesteps": finite_or_none(self.timesteps),
            "frames": self.frames,
            "samples": self.samples,
            "spiking": False,
            "options": {k: finite_or_none(v) for k, v in self.options.items()},
            "conventions": self.pricing.disclosure()
            + "; ANN: a MAC per weight, one pass per distinct input frame; per sample",
        }

    def to_csv(self, path: str | os.PathLike[str]) -> Path:
        """Write one line per layer to ``path`` (atomically: a temp file, then ``os.replace``).

        Columns: ``name, kind, shape, macs, steps, rate, binary, density, op, ops, snn_pj,
        ann_pj, exact, exact_op, exact_ops, exact_pj, memory_pj, snn_mj, ann_mj``. The
        totals are in :meth:`to_dict`.

        Returns:
            The path written.
        """
        path = Path(path)
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow([*_CSV_COLUMNS, "snn_mj", "ann_mj"])
        for r in self.rows:
            writer.writerow([*(getattr(r, c) for c in _CSV_COLUMNS), r.snn_mj, r.ann_mj])
        with atomic_open(path, "w", newline="") as f:
            f.write(buf.getvalue())
        return path


def _pct(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:.1f}%"


def _si(v: float) -> str:
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.2f}{unit}"
    return f"{v:.0f}"


def _no_counts(rows: Sequence[LayerEnergy]) -> tuple[OpCount, ...]:
    # A report built without its counts: dense layers, no weights known.
    return tuple(
        OpCount(r.name, r.kind, "", r.shape, r.macs, r.steps, r.rate, r.binary, 1.0) for r in rows
    )
