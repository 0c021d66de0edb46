"""``spikelottery report``: the runs' ``results.json`` files as tables, intervals and figures.

:func:`make_report` collects every run under some folders
(:mod:`~spikelottery.report.collect`), writes ``runs.csv`` (one row per run),
``summary.csv`` and ``summary.md`` (mean, std, n and 95% interval over seeds, grouped by
every axis that varies; :mod:`~spikelottery.report.tables`, :mod:`~spikelottery.report.stats`),
optionally ``summary.tex``, the paired comparisons of pairs of methods
(``compare_A_vs_B.csv``/``.md``, with a verdict per group), and the figures
(:mod:`~spikelottery.report.figures`, ``difference_A_vs_B`` per pair). ``where`` keeps a
subset of the runs. Runs that failed or have not finished are listed, never averaged.

>>> make_report(["runs/reward1"], "report", compare=[("mpslt", "mplt"), ("slt", "lt")])  # doctest: +SKIP
"""

from __future__ import annotations

from .collect import collect_runs, infer_method, varying_axes
from .make import Report, make_report, select_rows
from .stats import Summary, summarize, t_quantile
from .tables import compare_rows, summary_rows, verdict

__all__ = [
    "Report",
    "Summary",
    "collect_runs",
    "compare_rows",
    "infer_method",
    "make_report",
    "select_rows",
    "summarize",
    "summary_rows",
    "t_quantile",
    "varying_axes",
    "verdict",
]
