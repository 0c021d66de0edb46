"""The report's tables: the summary over seeds, the paired comparison of two methods.

Both are pure functions of the collected rows (:func:`~spikelottery.report.collect.collect_runs`):
:func:`summary_rows` groups the finished runs by every axis that varies except the seed;
:func:`compare_rows` pairs the runs of two methods that agree on every other axis,
the seed included, and summarises the differences.

>>> rows = [
...     {"status": "done", "method": m, "pa": 0.4, "seed": s, "accuracy": a}
...     for m, s, a in [("mplt", 0, 0.90), ("mplt", 1, 0.92), ("mpslt", 0, 0.93), ("mpslt", 1, 0.94)]
... ]
>>> [(r["method"], r["n"], round(r["accuracy_mean"], 3)) for r in summary_rows(rows)]
[('mplt', 2, 0.91), ('mpslt', 2, 0.935)]
>>> round(compare_rows(rows, "mpslt", "mplt")[0]["diff_mean"], 3)
0.025
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..engine.presets import METHODS as PRESETS
from .collect import varying_axes
from .stats import summarize

__all__ = [
    "CLIPPED",
    "CLIPPED_NOTE",
    "FRACTIONS",
    "SUMMARY_METRICS",
    "compare_rows",
    "group_key",
    "summary_rows",
    "to_csv",
    "to_latex",
    "to_markdown",
    "verdict",
]

#: The metrics summarised over seeds.
SUMMARY_METRICS = (
    "accuracy",
    "energy_mj",
    "energy_exact_mj",
    "ann_reference_mj",
    "ann_energy_mj",
    "kept_fraction",
    "epochs_run",
    "seconds_per_epoch",
)


def group_key(row: Mapping[str, Any], axes: Sequence[str]) -> str:
    """A row's values on ``axes``, as a sortable, hashable key."""
    return json.dumps([row.get(a) for a in axes], sort_keys=True)


def _done(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in rows if r.get("status") == "done"]


#: The metrics that are fractions: their intervals are clipped to [0, 1].
FRACTIONS = ("accuracy", "kept_fraction")
#: What a clipped interval's cell says, and why (printed under the table).
CLIPPED = "(clipped)"
CLIPPED_NOTE = (
    f"{CLIPPED}: the Student-t interval (mean +- t * std / sqrt(n)) passed 0% or 100%, "
    "which an accuracy cannot; it is shown clipped to that bound. The t interval assumes "
    "values spread around the mean without a ceiling: near 100% with few seeds, read it "
    "as 'close to the ceiling' and run more seeds for a tighter figure."
)


def _stats(prefix: str, values: list[float], *, bounded: bool = False) -> dict[str, Any]:
    if not values:
        return {f"{prefix}_{k}": None for k in ("mean", "std", "ci_low", "ci_high")}
    s = summarize(values)
    low = None if math.isnan(s.ci_low) else s.ci_low
    high = None if math.isnan(s.ci_high) else s.ci_high
    out = {
        f"{prefix}_mean": s.mean,
        f"{prefix}_std": None if math.isnan(s.std) else s.std,
        f"{prefix}_ci_low": low,
        f"{prefix}_ci_high": high,
    }
    if bounded and low is not None and high is not None and (low < 0.0 or high > 1.0):
        out[f"{prefix}_ci_low"] = max(low, 0.0)
        out[f"{prefix}_ci_high"] = min(high, 1.0)
        out[f"{prefix}_ci_clipped"] = True
    return out


def summary_rows(
    rows: Sequence[Mapping[str, Any]], axes: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Mean, std, n and 95% interval of each metric per group of finished runs.

    Args:
        rows: Collected rows; only ``status == "done"`` ones count.
        axes: The grouping axes (default: every axis that varies, except ``seed``).

    Returns:
        One dict per group: the axes' values, ``n``, the seeds, and
        ``<metric>_mean/_std/_ci_low/_ci_high`` for :data:`SUMMARY_METRICS`.
    """
    done = _done(rows)
    axes = list(axes) if axes is not None else varying_axes(done, exclude=("seed",))
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in done:
        groups.setdefault(group_key(r, axes), []).append(r)
    out = []
    for key in sorted(groups, key=lambda k: _sortable(json.loads(k))):
        members = groups[key]
        entry: dict[str, Any] = {a: members[0].get(a) for a in axes}
        entry["n"] = len(members)
        entry["seeds"] = " ".join(str(m.get("seed")) for m in members)
        for metric in SUMMARY_METRICS:
            values = [m[metric] for m in members if m.get(metric) is not None]
            entry.update(_stats(metric, values, bounded=metric in FRACTIONS))
        out.append(entry)
    return out


def compare_rows(
    rows: Sequence[Mapping[str, Any]],
    a: str,
    b: str,
    *,
    metric: str = "accuracy",
    axes: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """The paired difference ``a - b`` of ``metric`` over runs that match on every other axis.

    Runs of methods ``a`` and ``b`` are paired when they agree on every varying axis
    but the method (the seed included). The pairs are grouped by the varying axes other
    than the method and the seed; each group gets the mean difference, its standard
    deviation, the number of pairs and the 95% interval of the mean difference. A run
    without a partner is counted in ``unpaired``, never averaged.
    """
    done = [r for r in _done(rows) if r.get("method") in (a, b)]
    axes = list(axes) if axes is not None else varying_axes(done, exclude=("method",))
    decided = _decided_by_methods(done, a, b)
    match_axes = [x for x in axes if x != "method" and x not in decided]
    group_axes = [x for x in match_axes if x != "seed"]
    by_method: dict[str, dict[str, Mapping[str, Any]]] = {a: {}, b: {}}
    for r in done:
        by_method[str(r["method"])][group_key(r, match_axes)] = r
    groups: dict[str, list[tuple[Mapping[str, Any], Mapping[str, Any]]]] = {}
    unpaired: dict[str, int] = {}
    for key in by_method[a].keys() | by_method[b].keys():
        ra, rb = by_method[a].get(key), by_method[b].get(key)
        any_row = ra or rb
        assert any_row is not None
        gk = group_key(any_row, group_axes)
        if ra is None or rb is None or ra.get(metric) is None or rb.get(metric) is None:
            unpaired[gk] = unpaired.get(gk, 0) + 1
            continue
        groups.setdefault(gk, []).append((ra, rb))
    out = []
    for gk in sorted(groups.keys() | unpaired.keys(), key=lambda k: _sortable(json.loads(k))):
        pairs = groups.get(gk, [])
        values = dict(zip(group_axes, json.loads(gk), strict=True))
        entry: dict[str, Any] = {**values, "a": a, "b": b, "metric": metric, "pairs": len(pairs)}
        entry["seeds"] = " ".join(str(ra.get("seed")) for ra, _ in pairs)
        diffs = [float(ra[metric]) - float(rb[metric]) for ra, rb in pairs]
        stats = _stats("diff", diffs)
        entry.update(stats)
        entry["a_mean"] = _mean([float(ra[metric]) for ra, _ in pairs])
        entry["b_mean"] = _mean([float(rb[metric]) for _, rb in pairs])
        entry["unpaired"] = unpaired.get(gk, 0)
        entry["verdict"] = verdict(entry["diff_ci_low"], entry["diff_ci_high"], a, b)
        out.append(entry)
    return out


def verdict(ci_low: float | None, ci_high: float | None, a: str, b: str) -> str:
    """What a paired difference ``a - b`` says at 95%: which method is higher, or neither.

    ``"a higher"`` when the whole interval is above 0, ``"b higher"`` when it is below,
    ``"inconclusive"`` when it holds 0, and ``"too few pairs"`` without an interval (fewer
    than two pairs).

    >>> verdict(0.01, 0.05, "mpslt", "mplt"), verdict(-0.05, 0.01, "mpslt", "mplt")
    ('mpslt higher', 'inconclusive')
    """
    if ci_low is None or ci_high is None:
        return "too few pairs"
    if ci_low > 0:
        return f"{a} higher"
    if ci_high < 0:
        return f"{b} higher"
    return "inconclusive"


def _decided_by_methods(rows: Sequence[Mapping[str, Any]], a: str, b: str) -> set[str]:
    """The settings that presets ``a`` or ``b`` decide and that take one value per method.

    MultiSp is PEPSp plus ``pb``, an Early-Time ticket is a ticket searched at
    ``search_timesteps``: such a setting tells the methods apart, so runs are paired
    across it. A setting that varies within a method stays a matching axis (pairing
    across it would be ambiguous).
    """
    owned: set[str] = set()
    for name in (a, b):
        preset = PRESETS.get(name)
        if preset is not None:
            owned |= {*preset.fixed, *preset.defaults}
            owned |= {"search_timesteps"} if preset.early_time else set()

    def values(key: str, method: str) -> set[str]:
        return {json.dumps(r.get(key), sort_keys=True) for r in rows if r.get("method") == method}

    return {k for k in owned if len(values(k, a)) == 1 and len(values(k, b)) == 1}


def _mean(values: list[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def _sortable(values: list[Any]) -> list[tuple[int, Any]]:
    return [(0, v) if isinstance(v, (int, float)) else (1, str(v)) for v in values]


def to_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Rows as CSV text (columns: ``columns``, or the union of the rows' keys in order)."""
    cols = list(columns) if columns is not None else _columns(rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({c: _cell(r.get(c)) for c in cols})
    return buffer.getvalue()


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    return cols


def _cell(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return "" if value is None else value


def _fmt(value: Any, percent: bool) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{100 * value:.2f}" if percent else f"{value:.4g}"
    return str(value)


def _ci(prefix: str) -> Callable[[Mapping[str, Any]], str]:
    def cell(r: Mapping[str, Any]) -> str:
        low, high = r.get(f"{prefix}_ci_low"), r.get(f"{prefix}_ci_high")
        if low is None:
            return "-"
        clipped = f" {CLIPPED}" if r.get(f"{prefix}_ci_clipped") else ""
        return f"[{_fmt(low, True)}, {_fmt(high, True)}]{clipped}"

    return cell


def _value(key: str, percent: bool = False) -> Callable[[Mapping[str, Any]], str]:
    return lambda r: _fmt(r.get(key), percent)


def _share_of_ann(r: Mapping[str, Any]) -> str:
    # The run's energy (paper formula) as a share of its ANN reference (results.json's
    # ann_reference_mj: the dense ANN, one pass per distinct input frame, for SNN and ANN
    # runs alike), means over seeds; a run recorded before that name, by its
    # ann_energy_mj as recorded.
    snn = r.get("energy_mj_mean")
    ann = r.get("ann_reference_mj_mean")
    if ann is None:
        ann = r.get("ann_energy_mj_mean")
    return "-" if snn is None or not ann else _fmt(float(snn) / float(ann), True)


_Cell = Callable[[Mapping[str, Any]], str]

#: The summary's kept column: the fraction of the masked weights kept, as results.json
#: records it (``pa`` is the fraction REMOVED; a dense run keeps 100% at any ``pa``).
_KEPT = "kept %"

#: The printed columns of each table after its axes: header and cell.
_COLUMNS: dict[str, list[tuple[str, _Cell]]] = {
    "summary": [
        ("n", _value("n")),
        ("accuracy %", _value("accuracy_mean", True)),
        ("std", _value("accuracy_std", True)),
        ("95% CI", _ci("accuracy")),
        ("energy mJ", _value("energy_mj_mean")),
        ("exact mJ", _value("energy_exact_mj_mean")),
        ("% of ANN ref", _share_of_ann),
        (_KEPT, _value("kept_fraction_mean", True)),
        ("epochs run", _value("epochs_run_mean")),
        ("s/epoch", _value("seconds_per_epoch_mean")),
    ],
    "compare": [
        ("pairs", _value("pairs")),
        ("A - B (points)", _value("diff_mean", True)),
        ("95% CI", _ci("diff")),
        ("A mean %", _value("a_mean", True)),
        ("B mean %", _value("b_mean", True)),
        ("unpaired", _value("unpaired")),
        ("verdict", _value("verdict")),
    ],
}


def _layout(axes: Sequence[str], kind: str) -> list[tuple[str, _Cell, bool]]:
    """The printed columns in order: header, cell and whether it is an axis.

    In a summary grouped by ``pa`` the kept column stands right after ``pa``, so that
    the fraction removed is never read without the fraction kept.
    """
    columns = [(a, _value(a), True) for a in axes]
    columns += [(name, cell, False) for name, cell in _COLUMNS[kind]]
    if kind == "summary" and "pa" in axes:
        kept = next(c for c in columns if c[0] == _KEPT)
        columns.remove(kept)
        columns.insert(list(axes).index("pa") + 1, kept)
    return columns


def _formatted(
    rows: Sequence[Mapping[str, Any]], axes: Sequence[str], kind: str
) -> tuple[list[str], list[list[str]]]:
    columns = _layout(axes, kind)
    header = [name for name, _, _ in columns]
    body = [[cell(r) for _, cell, _ in columns] for r in rows]
    return header, body


def to_markdown(
    rows: Sequence[Mapping[str, Any]], axes: Sequence[str], kind: str = "summary"
) -> str:
    """A summary (or ``kind="compare"``) table as Markdown; accuracies in percent."""
    header, body = _formatted(rows, axes, kind)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines)


def to_latex(rows: Sequence[Mapping[str, Any]], axes: Sequence[str], kind: str = "summary") -> str:
    """The same table as a LaTeX ``tabular`` (booktabs rules)."""
    header, body = _formatted(rows, axes, kind)
    align = "".join("l" if is_axis else "r" for _, _, is_axis in _layout(axes, kind))

    def esc(text: str) -> str:
        for char, repl in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&")):
            text = text.replace(char, repl)
        return text

    lines = [
        r"\begin{tabular}{" + align + "}",
        r"\toprule",
        " & ".join(esc(h) for h in header) + r" \\",
        r"\midrule",
        *(" & ".join(esc(c) for c in cells) + r" \\" for cells in body),
        r"\bottomrule",
        r"\end{tabular}",
    ]
    return "\n".join(lines)
