"""The report as a whole: collect, summarise, compare, draw, write (:func:`make_report`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._io import atomic_write_bytes
from ..errors import SpikeLotteryError
from .collect import (
    BAD_VALUES_KEY,
    CONVENTIONS_KEY,
    METRICS,
    SETTING_COLUMNS,
    collect_runs,
    varying_axes,
)
from .environment import ENVIRONMENT_COLUMNS, EnvironmentCheck, check_environments
from .tables import CLIPPED_NOTE, compare_rows, summary_rows, to_csv, to_latex, to_markdown

__all__ = ["Report", "make_report", "select_rows", "unfinished_lines"]

logger = logging.getLogger("spikelottery.report")


@dataclass
class Report:
    """What :func:`make_report` found and wrote.

    Attributes:
        rows: Every run (see :func:`collect_runs`).
        axes: The axes the summary is grouped by.
        summary: The summary rows.
        comparison: The paired comparison rows of every pair in ``compare`` (each row
            names its pair in ``a`` and ``b``; empty without ``compare``).
        unfinished: The rows of runs that failed, have not finished, or whose results
            are damaged (``invalid``): none of them is in the summary.
        files: Everything written.
        notes: Figures skipped, damaged results and values left out, and why.
        conventions: The energy estimator's disclosure lines of the finished runs, one
            per distinct set of conventions, each after the methods whose runs it
            describes (``"ann, mplt: preset fp32-45nm; ..."``).
        environment: Where the report averages or pairs runs of different environments
            (torch version, device, threads...; :mod:`~spikelottery.report.environment`).
    """

    rows: list[dict[str, Any]]
    axes: list[str]
    summary: list[dict[str, Any]]
    comparison: list[dict[str, Any]] = field(default_factory=list)
    unfinished: list[dict[str, Any]] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    conventions: list[str] = field(default_factory=list)
    environment: EnvironmentCheck = field(default_factory=EnvironmentCheck)

    def pairs(self) -> list[tuple[str, str]]:
        """The compared pairs ``(A, B)``, in the order asked."""
        return list(dict.fromkeys((str(r["a"]), str(r["b"])) for r in self.comparison))

    def comparison_of(self, a: str, b: str) -> tuple[list[dict[str, Any]], list[str]]:
        """The comparison rows of the pair ``(a, b)``, and the axes they are grouped by."""
        rows = [r for r in self.comparison if (r["a"], r["b"]) == (a, b)]
        return rows, _compare_axes(self.axes, rows)

    def markdown(self) -> str:
        """The summary (and comparison, and unfinished runs) as Markdown."""
        parts = ["## Summary over seeds", "", to_markdown(self.summary, self.axes)]
        if any(r.get("accuracy_ci_clipped") for r in self.summary):
            parts += ["", CLIPPED_NOTE]
        for a, b in self.pairs():
            rows, group = self.comparison_of(a, b)
            parts += [
                "",
                f"## Paired difference: {a} - {b} (accuracy points, over matching seeds)",
                "",
                to_markdown(rows, group, kind="compare"),
            ]
        if self.conventions:
            parts += ["", "## Energy conventions", ""]
            parts += [f"- {line}" for line in self.conventions]
        if self.environment.lines():
            parts += ["", "## Environment", ""]
            parts += [f"- {line}" for line in self.environment.lines()]
        if self.unfinished:
            parts += ["", "## Runs not in the summary", "", *unfinished_lines(self.unfinished)]
        return "\n".join(parts) + "\n"


#: Why each kind of run is not in the summary, in the order they are listed.
_WHY = {
    "invalid": "damaged results",
    "failed": "failed (retried by the next sweep)",
    "interrupted": "interrupted (resumed by the next sweep)",
    "missing": "not started",
}
#: How many runs of each kind are named one by one before "and N more".
_LISTED = {"invalid": 10, "failed": 10, "interrupted": 5, "missing": 5}


def unfinished_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The runs left out of the summary: a count per kind, then a few of each by name.

    Every one of them is a row of ``runs.csv`` (with its status and error); a partial
    sweep of hundreds of runs is a few lines here, not one line per run.
    """
    kinds: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        kinds.setdefault(str(r["status"]), []).append(r)
    order = [k for k in _WHY if k in kinds] + [k for k in kinds if k not in _WHY]
    lines = [
        f"{len(rows)} runs: "
        + ", ".join(f"{len(kinds[k])} {_WHY.get(k, k)}" for k in order)
        + "; every run is a row of runs.csv.",
        "",
    ]
    for kind in order:
        members = kinds[kind]
        shown = members[: _LISTED.get(kind, 5)]
        lines += [
            f"- {kind}: `{r['run']}`"
            + (f" ({r['error']})" if r.get("error") else "")
            + (f" [SLURM job {r['slurm_job']}]" if r.get("slurm_job") else "")
            for r in shown
        ]
        if len(members) > len(shown):
            lines.append(f"- {kind}: ... and {len(members) - len(shown)} more (see runs.csv)")
    return lines


def _compare_axes(axes: Sequence[str], comparison: Sequence[Mapping[str, Any]]) -> list[str]:
    # The comparison's groups: the axes but the method, the seed and the settings that
    # tell the two methods apart (pb of MultiSp against PEPSp), which compare_rows drops.
    return [x for x in axes if x not in ("method", "seed") and x in comparison[0]]


def _check_duplicates(rows: Sequence[Mapping[str, Any]]) -> None:
    seen: dict[tuple[Any, ...], str] = {}
    for r in rows:
        if r.get("status") != "done":
            continue
        key = (r.get("method"), *(repr(r.get(c)) for c in SETTING_COLUMNS if c != "method"))
        if key in seen:
            raise SpikeLotteryError(
                f"runs {seen[key]!r} and {r['run']!r} have the same settings (seed included): "
                "a report would count one run twice; pass only one of their folders"
            )
        seen[key] = str(r["run"])


def _write(path: Path, text: str, files: list[Path]) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
    files.append(path)


def make_report(
    dirs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    compare: tuple[str, str] | Sequence[tuple[str, str]] | None = None,
    where: Mapping[str, Sequence[Any]] | None = None,
    latex: bool = False,
    figures: bool = True,
) -> Report:
    """Collect the runs under ``dirs`` and write the report into ``out``.

    Args:
        dirs: Folders searched (recursively) for ``results.json`` and sweep run folders.
        out: The report's folder.
        compare: ``(A, B)``, or several such pairs: the paired difference ``A - B`` of
            two methods, with a verdict per group.
        where: Keep only the runs whose setting ``KEY`` takes one of the given values
            (``{"beta": [0.99]}``: the time-step curve of a sweep that also varies the
            decay). Numbers match numerically, other values by their text.
        latex: Also write ``summary.tex`` (and ``compare_A_vs_B.tex``).
        figures: Draw the figures (needs matplotlib).

    Raises:
        SpikeLotteryError: No run found (or none left by ``where``), an unknown method in
            ``compare`` or setting in ``where``, two runs with the same settings, or an
            unreadable file (naming it).
    """
    rows = collect_runs(dirs)
    if not rows:
        raise SpikeLotteryError(
            f"report: no results.json under {', '.join(map(str, dirs))}; run a sweep first"
        )
    if where:
        rows = select_rows(rows, where)
    _check_duplicates(rows)
    done = [r for r in rows if r["status"] == "done"]
    axes = varying_axes(done, exclude=("seed",))
    report = Report(rows, axes, summary_rows(done, axes))
    report.unfinished = [r for r in rows if r["status"] != "done"]
    report.notes += [
        f"{r['run']}: {', '.join(r[BAD_VALUES_KEY])} not a number; left out of the mean"
        for r in done
        if r.get(BAD_VALUES_KEY)
    ]
    report.notes += [
        f"{r['run']}: {r['error']}; left out of the summary"
        for r in report.unfinished
        if r["status"] == "invalid"
    ]
    report.conventions = _conventions(done)
    pairs = _pairs(compare)
    methods = {r["method"] for r in done}
    for a, b in pairs:
        if a == b:
            raise SpikeLotteryError(f"--compare {a} {b}: compare two different methods")
        missing = [m for m in (a, b) if m not in methods]
        if missing:
            raise SpikeLotteryError(
                f"--compare: no finished run of method(s) {', '.join(missing)}"
                + (" left by --where" if where else "")
                + f"; methods found: {', '.join(sorted(methods))}"
            )
        report.comparison += compare_rows(done, a, b)
    comparisons = [(a, b, *report.comparison_of(a, b)) for a, b in report.pairs()]
    report.environment = check_environments(done, axes, comparisons)
    for line in report.environment.warnings:
        logger.warning("report: %s", line)
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise SpikeLotteryError(f"--out {str(folder)!r} is a file; give a folder for the report")
    folder.mkdir(parents=True, exist_ok=True)
    columns = ["run", "status", "method", *[c for c in SETTING_COLUMNS if c != "method"], *METRICS]
    columns += [*ENVIRONMENT_COLUMNS]
    columns += [c for c in ("error", "slurm_job") if any(c in r for r in rows)]
    _write(folder / "runs.csv", to_csv(rows, columns), report.files)
    _write(folder / "summary.csv", to_csv(report.summary), report.files)
    _write(folder / "summary.md", report.markdown(), report.files)
    if latex:
        _write(folder / "summary.tex", to_latex(report.summary, axes) + "\n", report.files)
    for a, b in report.pairs():
        stem = f"compare_{a}_vs_{b}"
        rows_ab, group = report.comparison_of(a, b)
        _write(folder / f"{stem}.csv", to_csv(rows_ab), report.files)
        _write(
            folder / f"{stem}.md", to_markdown(rows_ab, group, kind="compare") + "\n", report.files
        )
        if latex:
            _write(
                folder / f"{stem}.tex",
                to_latex(rows_ab, group, kind="compare") + "\n",
                report.files,
            )
    if figures and done:
        from .figures import write_difference_figure, write_figures

        written, notes = write_figures(done, axes, folder)
        for a, b in report.pairs():
            more, why = write_difference_figure(*report.comparison_of(a, b), folder)
            written += more
            notes += why
        report.files += written
        report.notes += notes
    return report


def _conventions(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Each distinct disclosure line, after the methods whose runs it describes."""
    methods: dict[str, set[str]] = {}
    for r in rows:
        if r.get(CONVENTIONS_KEY):
            methods.setdefault(str(r[CONVENTIONS_KEY]), set()).add(str(r.get("method")))
    return [f"{', '.join(sorted(m))}: {line}" for line, m in sorted(methods.items())]


def _pairs(
    compare: tuple[str, str] | Sequence[tuple[str, str]] | None,
) -> list[tuple[str, str]]:
    if compare is None:
        return []
    if len(compare) == 2 and all(isinstance(m, str) for m in compare):
        return [(str(compare[0]), str(compare[1]))]
    pairs = []
    for pair in compare:
        if isinstance(pair, str) or len(pair) != 2:
            raise SpikeLotteryError(f"compare: expected pairs of two methods (A, B), got {pair!r}")
        pairs.append((str(pair[0]), str(pair[1])))
    return list(dict.fromkeys(pairs))


def select_rows(
    rows: Sequence[Mapping[str, Any]], where: Mapping[str, Sequence[Any]]
) -> list[dict[str, Any]]:
    """The rows whose setting ``key`` takes one of ``where[key]``'s values, for every key.

    Numbers match numerically (``0.99`` matches ``0.99`` and ``"0.99"``), anything else by
    its text. A single value (``{"seed": "12"}``) is one value, not a list of characters.

    Raises:
        SpikeLotteryError: A key that is not a setting column, or no row left.
    """
    unknown = [k for k in where if k not in SETTING_COLUMNS]
    if unknown:
        raise SpikeLotteryError(
            f"--where: unknown setting(s) {', '.join(map(repr, unknown))}; "
            f"settings are: {', '.join(SETTING_COLUMNS)}"
        )
    wanted = {k: _values(v) for k, v in where.items()}
    kept = [dict(r) for r in rows if all(_matches(r.get(k), v) for k, v in wanted.items())]
    if not kept:
        asked = " ".join(f"{k}={','.join(map(str, v))}" for k, v in wanted.items())
        raise SpikeLotteryError(f"--where {asked}: no run matches; check the values")
    return kept


def _values(value: Any) -> Sequence[Any]:
    # A str is a Sequence too: {"seed": "12"} is the one value "12", not "1" and "2".
    return [value] if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) else value


def _matches(value: Any, wanted: Sequence[Any]) -> bool:
    return any(_same(value, w) for w in wanted)


def _same(value: Any, wanted: Any) -> bool:
    if value is None or isinstance(value, bool):
        text = "null" if value is None else str(value).lower()
        return text == str(wanted).lower() or (value is None and str(wanted).lower() == "none")
    try:
        return float(value) == float(wanted)
    except (TypeError, ValueError):
        return str(value) == str(wanted)
