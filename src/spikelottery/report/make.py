"""The report as a whole: collect, summarise, compare, draw, write (:func:`make_report`)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._io import atomic_write_bytes
from ..errors import SpikeLotteryError
from .collect import METRICS, SETTING_COLUMNS, collect_runs, varying_axes
from .tables import compare_rows, summary_rows, to_csv, to_latex, to_markdown

__all__ = ["Report", "make_report"]


@dataclass
class Report:
    """What :func:`make_report` found and wrote.

    Attributes:
        rows: Every run (see :func:`collect_runs`).
        axes: The axes the summary is grouped by.
        summary: The summary rows.
        comparison: The paired comparison rows (empty without ``compare``).
        unfinished: The rows of runs that failed or have not finished.
        files: Everything written.
        notes: Figures skipped, and why.
    """

    rows: list[dict[str, Any]]
    axes: list[str]
    summary: list[dict[str, Any]]
    comparison: list[dict[str, Any]] = field(default_factory=list)
    unfinished: list[dict[str, Any]] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        """The summary (and comparison, and unfinished runs) as Markdown."""
        parts = ["## Summary over seeds", "", to_markdown(self.summary, self.axes)]
        if self.comparison:
            a, b = self.comparison[0]["a"], self.comparison[0]["b"]
            group = _compare_axes(self.axes, self.comparison)
            parts += [
                "",
                f"## Paired difference: {a} - {b} (accuracy points, over matching seeds)",
                "",
                to_markdown(self.comparison, group, kind="compare"),
            ]
        if self.unfinished:
            parts += ["", "## Runs without results (not in the summary)", ""]
            parts += [
                f"- {r['status']}: `{r['run']}`"
                + (f" ({r['error']})" if r.get("error") else "")
                + (f" [SLURM job {r['slurm_job']}]" if r.get("slurm_job") else "")
                for r in self.unfinished
            ]
        return "\n".join(parts) + "\n"


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
    compare: tuple[str, str] | None = None,
    latex: bool = False,
    figures: bool = True,
) -> Report:
    """Collect the runs under ``dirs`` and write the report into ``out``.

    Args:
        dirs: Folders searched (recursively) for ``results.json`` and sweep run folders.
        out: The report's folder.
        compare: ``(A, B)``: the paired difference ``A - B`` of two methods.
        latex: Also write ``summary.tex`` (and ``compare_A_vs_B.tex``).
        figures: Draw the figures (needs matplotlib).

    Raises:
        SpikeLotteryError: No run found, an unknown method in ``compare``, two runs
            with the same settings, or an unreadable file (naming it).
    """
    rows = collect_runs(dirs)
    if not rows:
        raise SpikeLotteryError(
            f"report: no results.json under {', '.join(map(str, dirs))}; run a sweep first"
        )
    _check_duplicates(rows)
    done = [r for r in rows if r["status"] == "done"]
    axes = varying_axes(done, exclude=("seed",))
    report = Report(rows, axes, summary_rows(done, axes))
    report.unfinished = [r for r in rows if r["status"] != "done"]
    if compare is not None:
        methods = {r["method"] for r in done}
        missing = [m for m in compare if m not in methods]
        if missing:
            raise SpikeLotteryError(
                f"--compare: no finished run of method(s) {', '.join(missing)}; "
                f"methods found: {', '.join(sorted(methods))}"
            )
        report.comparison = compare_rows(done, *compare)
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise SpikeLotteryError(f"--out {str(folder)!r} is a file; give a folder for the report")
    folder.mkdir(parents=True, exist_ok=True)
    columns = ["run", "status", "method", *[c for c in SETTING_COLUMNS if c != "method"], *METRICS]
    columns += [c for c in ("error", "slurm_job") if any(c in r for r in rows)]
    _write(folder / "runs.csv", to_csv(rows, columns), report.files)
    _write(folder / "summary.csv", to_csv(report.summary), report.files)
    _write(folder / "summary.md", report.markdown(), report.files)
    if latex:
        _write(folder / "summary.tex", to_latex(report.summary, axes) + "\n", report.files)
    if report.comparison:
        assert compare is not None
        a, b = compare
        stem = f"compare_{a}_vs_{b}"
        group = _compare_axes(axes, report.comparison)
        _write(folder / f"{stem}.csv", to_csv(report.comparison), report.files)
        _write(
            folder / f"{stem}.md",
            to_markdown(report.comparison, group, kind="compare") + "\n",
            report.files,
        )
        if latex:
            _write(
                folder / f"{stem}.tex",
                to_latex(report.comparison, group, kind="compare") + "\n",
                report.files,
            )
    if figures and done:
        from .figures import write_figures

        written, notes = write_figures(done, axes, folder)
        report.files += written
        report.notes += notes
    return report
