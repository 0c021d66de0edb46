"""The report's figures, laid out like the paper's: accuracy against ``pa``, ``pb``, ``T`` and
the decay per method, energy per method, accuracy against energy (the Pareto view), and the
energy per layer (the paper's formula beside the exact synaptic operations).

Each figure has one panel per combination of the other varying settings (data set,
model, ...), one line per method, the mean over seeds with its 95% interval as error
bars; a dense baseline (which does not depend on ``pa`` or ``pb``) is a dashed level with
its interval as a band. A figure whose x axis does not vary is not drawn. Figures are
written as PNG and SVG; matplotlib comes with ``pip install "spikelottery[plot]"``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._io import atomic_path
from ..errors import SpikeLotteryError
from .collect import LAYERS_KEY
from .tables import group_key, summary_rows

__all__ = ["CURVES", "MAX_PANELS", "write_difference_figure", "write_figures"]

#: The x axes of the accuracy curves: setting -> (file stem, axis label).
CURVES: Mapping[str, tuple[str, str]] = {
    "pa": ("accuracy_vs_pa", "pa (fraction of weights removed)"),
    "pb": ("accuracy_vs_pb", "pb (fraction of patches removed)"),
    "timesteps": ("accuracy_vs_timesteps", "time steps T"),
    "beta": ("accuracy_vs_decay", "LIF decay (lambda)"),
}
#: Figures with more panels than this are skipped (the report says so).
MAX_PANELS = 12


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SpikeLotteryError(
            'report figures need matplotlib: pip install "spikelottery[plot]" (or --no-figures)'
        ) from None
    return plt


def _panels(
    summary: Sequence[Mapping[str, Any]], context: Sequence[str]
) -> dict[str, list[Mapping[str, Any]]]:
    panels: dict[str, list[Mapping[str, Any]]] = {}
    for row in summary:
        panels.setdefault(group_key(row, context), []).append(row)
    return panels


def _title(key: str, context: Sequence[str]) -> str:
    values = json.loads(key)
    return ", ".join(f"{a}={v}" for a, v in zip(context, values, strict=True)) or "all runs"


def _grid(plt: Any, n: int) -> tuple[Any, list[Any]]:
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _save(plt: Any, fig: Any, stem: Path, title: str) -> list[Path]:
    """Title ``fig``, write it as ``stem.png`` and ``stem.svg`` (atomically), close it."""
    fig.tight_layout(rect=(0.0, 0.0, 1.0, 0.95))  # no panel's labels over its neighbour's
    fig.suptitle(title, fontsize=10)
    written = []
    for suffix in (".png", ".svg"):
        target = stem.with_suffix(suffix)
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=suffix[1:], dpi=150, bbox_inches="tight")
        written.append(target)
    plt.close(fig)
    return written


def _err(row: Mapping[str, Any], metric: str) -> float:
    lo, mean = row.get(f"{metric}_ci_low"), row.get(f"{metric}_mean")
    return 0.0 if lo is None or mean is None else float(mean) - float(lo)


def write_figures(
    rows: Sequence[Mapping[str, Any]], axes: Sequence[str], folder: str | Path
) -> tuple[list[Path], list[str]]:
    """Draw every figure that the varying ``axes`` allow into ``folder``.

    Returns:
        The files written, and notes on the figures skipped (and why).
    """
    plt = _pyplot()
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    notes: list[str] = []
    methods_vary = "method" in axes
    # A setting each method takes one value of (patch_epochs: 2 for MultiSp, 0 for PEPSp)
    # tells methods apart, not panels: it is left out of the panels' titles and keys.
    axes = [a for a in axes if a == "method" or not _decided_by_method(rows, a)]
    # Dense baselines do not depend on pa or pb: drawn as a level line across the panel.
    dense = {str(r["method"]) for r in rows if r.get("mode") == "dense"}
    for x, (stem, label) in CURVES.items():
        if x not in axes:
            continue
        context = [a for a in axes if a not in ("method", x)]
        summary = summary_rows(rows, [*context, "method", x])
        panels = _panels(summary, context)
        if len(panels) > MAX_PANELS:
            notes.append(f"{stem}: {len(panels)} panels (over {MAX_PANELS}); not drawn")
            continue
        fig, subplots = _grid(plt, len(panels))
        colors = {
            m: f"C{i % 10}" for i, m in enumerate(sorted({str(r["method"]) for r in summary}))
        }
        for ax, (key, members) in zip(subplots, sorted(panels.items()), strict=True):
            for method in sorted({str(m["method"]) for m in members}):
                line = sorted(
                    (m for m in members if str(m["method"]) == method), key=lambda m: m[x]
                )
                color = colors[method]
                if method in dense and x in ("pa", "pb") and len(line) == 1:
                    level, err = 100 * line[0]["accuracy_mean"], 100 * _err(line[0], "accuracy")
                    ax.axhline(level, color=color, linestyle="--", linewidth=1.2, label=method)
                    ax.axhspan(level - err, level + err, color=color, alpha=0.12)
                    continue
                ax.errorbar(
                    [m[x] for m in line],
                    [100 * m["accuracy_mean"] for m in line],
                    yerr=[100 * _err(m, "accuracy") for m in line],
                    marker="o",
                    capsize=3,
                    color=color,
                    label=method,
                )
            low, high = ax.get_ylim()  # an interval of two seeds can reach past 0 or 100
            ax.set_ylim(max(low, -1.0), min(high, 101.0))
            ax.set_title(_title(key, context), fontsize=9)
            ax.set_xlabel(label)
            ax.set_ylabel("test accuracy (%)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        written += _save(plt, fig, out / stem, "Accuracy (mean over seeds, 95% CI)")
    done = [r for r in rows if r.get("status") == "done" and r.get("energy_mj") is not None]
    if done and methods_vary:
        context = [a for a in axes if a != "method"]
        summary = summary_rows(done, [*context, "method"])
        panels = _panels(summary, context)
        if len(panels) > MAX_PANELS:
            notes.append(f"energy figures: {len(panels)} panels (over {MAX_PANELS}); not drawn")
        else:
            written += _energy_bars(plt, panels, context, out)
        # Pareto: every configuration (method and curve settings) as a point, per context.
        outer = [a for a in axes if a != "method" and a not in CURVES]
        inner = [a for a in axes if a in CURVES]
        points = _panels(summary_rows(done, [*outer, "method", *inner]), outer)
        if len(points) > MAX_PANELS:
            notes.append(f"accuracy_vs_energy: {len(points)} panels (over {MAX_PANELS}); not drawn")
        else:
            written += _pareto(plt, points, outer, out)
    elif not done:
        notes.append("energy figures: no finished run has an energy estimate")
    with_layers = [r for r in done if r.get(LAYERS_KEY)]
    if with_layers:
        groups = _layer_groups(with_layers, axes)
        if len(groups) > MAX_PANELS:
            notes.append(f"energy_per_layer: {len(groups)} panels (over {MAX_PANELS}); not drawn")
        else:
            written += _energy_per_layer(plt, groups, out)
    return written, notes


def _decided_by_method(rows: Sequence[Mapping[str, Any]], axis: str) -> bool:
    methods: dict[str, set[str]] = {}
    for r in rows:
        methods.setdefault(str(r.get("method")), set()).add(json.dumps(r.get(axis)))
    return len(methods) > 1 and all(len(values) == 1 for values in methods.values())


def _layer_groups(
    rows: Sequence[Mapping[str, Any]], axes: Sequence[str]
) -> dict[str, dict[str, list[float | None]]]:
    """Per group of runs (every varying axis but the seed): each layer's mean energies."""
    keys = [a for a in axes if a != "seed"]
    members: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        title = ", ".join(f"{a}={r.get(a)}" for a in keys) or "all runs"
        members.setdefault(title, []).append(r)
    out: dict[str, dict[str, list[float | None]]] = {}
    for title, group in sorted(members.items()):
        names = [layer["name"] for layer in group[0][LAYERS_KEY]]
        means: dict[str, list[float | None]] = {}
        for view in ("snn_mj", "exact_mj"):
            column: list[float | None] = []
            for i in range(len(names)):
                values = [
                    r[LAYERS_KEY][i][view]
                    for r in group
                    if len(r[LAYERS_KEY]) > i and r[LAYERS_KEY][i][view] is not None
                ]
                column.append(sum(values) / len(values) if values else None)
            means[view] = column
        out[title] = {"names": names, **means}  # type: ignore[dict-item]
    return out


def _energy_per_layer(plt: Any, groups: Mapping[str, Mapping[str, Any]], out: Path) -> list[Path]:
    fig, subplots = _grid(plt, len(groups))
    for ax, (title, g) in zip(subplots, groups.items(), strict=True):
        x = list(range(len(g["names"])))
        for offset, view, label in (
            (-0.2, "snn_mj", "paper formula"),
            (0.2, "exact_mj", "exact synaptic ops"),
        ):
            values = [1e6 * (v or 0.0) for v in g[view]]
            ax.bar([i + offset for i in x], values, width=0.4, label=label)
        ax.set_xticks(x, g["names"], rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("energy per sample (nJ)")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7)
    return _save(plt, fig, out / "energy_per_layer", "Energy per layer (mean over seeds)")


def _energy_bars(
    plt: Any, panels: Mapping[str, list[Mapping[str, Any]]], context: Sequence[str], out: Path
) -> list[Path]:
    fig, subplots = _grid(plt, len(panels))
    for ax, (key, members) in zip(subplots, sorted(panels.items()), strict=True):
        members = sorted(members, key=lambda m: str(m["method"]))
        names = [str(m["method"]) for m in members]
        x = list(range(len(members)))
        exact = any(m.get("energy_exact_mj_mean") is not None for m in members)
        width = 0.4 if exact else 0.8
        views = [("energy_mj", "paper formula", "tab:blue")]
        views += [("energy_exact_mj", "exact synaptic ops", "tab:orange")] if exact else []
        for i, (metric, label, color) in enumerate(views):
            offset = (i - (len(views) - 1) / 2) * width
            ax.bar(
                [p + offset for p in x],
                [1e3 * (m.get(f"{metric}_mean") or 0.0) for m in members],
                width=width,
                yerr=[1e3 * _err(m, metric) for m in members],
                capsize=3,
                color=color,
                label=label,
            )
        ax.set_xticks(x, names)
        if exact:
            ax.legend(fontsize=7)
        ax.set_title(_title(key, context), fontsize=9)
        ax.set_ylabel("energy per sample (uJ)")
        ax.tick_params(axis="x", rotation=45, labelsize=8)
        ax.grid(alpha=0.3, axis="y")
    title = "Energy per method (mean over seeds; no exact view for an ANN)"
    return _save(plt, fig, out / "energy_per_method", title)


def _pareto(
    plt: Any, panels: Mapping[str, list[Mapping[str, Any]]], context: Sequence[str], out: Path
) -> list[Path]:
    fig, subplots = _grid(plt, len(panels))
    for ax, (key, members) in zip(subplots, sorted(panels.items()), strict=True):
        points = [
            (1e3 * m["energy_mj_mean"], 100 * m["accuracy_mean"], str(m["method"]))
            for m in members
            if m.get("energy_mj_mean") is not None and m.get("accuracy_mean") is not None
        ]
        for name in sorted({p[2] for p in points}):
            mine = [(e, acc) for e, acc, n in points if n == name]
            ax.scatter(*zip(*mine, strict=True), label=name, s=18)
        front, best = [], -math.inf
        for e, acc, _ in sorted(points, key=lambda p: (p[0], -p[1])):
            if acc > best:  # the best accuracy at each energy, better than any cheaper point
                front.append((e, acc))
                best = acc
        if len(front) > 1:
            ax.plot(*zip(*front, strict=True), color="gray", linestyle="--", linewidth=1)
        ax.set_title(_title(key, context), fontsize=9)
        ax.set_xlabel("energy per sample (uJ)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(
        plt, fig, out / "accuracy_vs_energy", "Accuracy against energy (dashed: Pareto front)"
    )


def write_difference_figure(
    comparison: Sequence[Mapping[str, Any]], axes: Sequence[str], folder: str | Path
) -> tuple[list[Path], list[str]]:
    """Draw the paired difference ``A - B`` of one pair against its curve axis.

    ``comparison`` holds the rows of one pair (see
    :func:`~spikelottery.report.compare_rows`), grouped by ``axes``. The x axis is the
    first of ``axes`` in :data:`CURVES` (``pa``, ``pb``, ``T``, the decay) that takes more
    than one value; there is one panel per combination of the other axes. Without such an
    axis, each group is a bar. Every point is the mean difference in accuracy points
    with its 95% interval; the dashed line is no difference.

    Returns:
        The files written (``difference_A_vs_B.png`` and ``.svg``), and notes on a
        figure skipped (and why).
    """
    rows = [r for r in comparison if r.get("diff_mean") is not None]
    if not rows:
        return [], ["difference figure: no pair of runs to compare"]
    a, b = str(rows[0]["a"]), str(rows[0]["b"])
    stem = f"difference_{a}_vs_{b}"
    x = next((k for k in CURVES if k in axes and len({r.get(k) for r in rows}) > 1), None)
    context = [k for k in axes if k != x]
    panels = _panels(rows, context) if x is not None else {"[]": list(rows)}
    if len(panels) > MAX_PANELS:
        return [], [f"{stem}: {len(panels)} panels (over {MAX_PANELS}); not drawn"]
    plt = _pyplot()
    fig, subplots = _grid(plt, len(panels))
    for ax, (key, members) in zip(subplots, sorted(panels.items()), strict=True):
        if x is not None:
            members = sorted(members, key=lambda m: m[x])
            positions: list[Any] = [m[x] for m in members]
            ax.set_xlabel(CURVES[x][1])
            ax.set_title(_title(key, context), fontsize=9)
        else:
            positions = list(range(len(members)))
            labels = [", ".join(f"{k}={m.get(k)}" for k in context) or "all" for m in members]
            ax.set_xticks(positions, labels, rotation=45, ha="right", fontsize=7)
        ax.errorbar(
            positions,
            [100 * m["diff_mean"] for m in members],
            yerr=[100 * _err(m, "diff") for m in members],
            marker="o",
            capsize=3,
            linestyle="-" if x is not None else "none",
        )
        ax.axhline(0.0, color="gray", linestyle="--", linewidth=1)
        ax.set_ylabel(f"{a} - {b} (points)")
        ax.grid(alpha=0.3)
    title = f"Paired difference {a} - {b} (mean over seeds, 95% CI)"
    return _save(plt, fig, Path(folder) / stem, title), []
