"""``spikelottery report``: runs.csv, the summary over seeds, paired comparisons, figures."""

from __future__ import annotations

import argparse

from ..report import make_report

__all__ = ["add_report_flags", "report_command"]


def add_report_flags(p: argparse.ArgumentParser) -> None:
    """DIR..., ``--out``, ``--compare A B``, ``--latex``, ``--no-figures``."""
    p.add_argument(
        "dirs", nargs="+", metavar="DIR", help="folders holding runs (searched recursively)"
    )
    p.add_argument("--out", required=True, metavar="REPORT", help="the report's folder")
    p.add_argument(
        "--compare",
        nargs=2,
        metavar=("A", "B"),
        help="the paired difference A - B of two methods over matching seeds and settings",
    )
    p.add_argument("--latex", action="store_true", help="also write the tables as LaTeX")
    p.add_argument("--no-figures", dest="figures", action="store_false", help="no figures")


def report_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``spikelottery report``: print the summary; exit 0 (runs without results are listed)."""
    report = make_report(
        args.dirs,
        args.out,
        compare=tuple(args.compare) if args.compare else None,
        latex=args.latex,
        figures=args.figures,
    )
    print(report.markdown(), end="")
    for note in report.notes:
        print(f"note: {note}")
    print(f"report: {len(report.files)} files in {args.out}")
    return 0
