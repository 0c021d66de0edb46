"""``spikelottery report``: runs.csv, the summary over seeds, paired comparisons, figures."""

from __future__ import annotations

import argparse

from ..report import make_report

__all__ = ["add_report_flags", "report_command"]


def add_report_flags(p: argparse.ArgumentParser) -> None:
    """DIR..., ``--out``, ``--compare A B`` (repeatable), ``--where KEY=VALUE``, ``--latex``,
    ``--no-figures``."""
    p.add_argument(
        "dirs", nargs="+", metavar="DIR", help="folders holding runs (searched recursively)"
    )
    p.add_argument("--out", required=True, metavar="REPORT", help="the report's folder")
    p.add_argument(
        "--compare",
        nargs=2,
        metavar=("A", "B"),
        action="append",
        help="the paired difference A - B of two methods over matching seeds and settings, "
        "with a verdict per group (repeat for more pairs)",
    )
    p.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="KEY=VALUE[,VALUE...]",
        help="keep only the runs whose setting KEY takes one of the VALUEs (repeat for more "
        "settings), e.g. --where beta=0.99 for the time-step curve of a sweep that also "
        "varies the decay",
    )
    p.add_argument("--latex", action="store_true", help="also write the tables as LaTeX")
    p.add_argument("--no-figures", dest="figures", action="store_false", help="no figures")


def report_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``spikelottery report``: print the summary; exit 0 (runs without results are listed)."""
    report = make_report(
        args.dirs,
        args.out,
        compare=[(a, b) for a, b in args.compare] if args.compare else None,
        where=_where(parser, args.where),
        latex=args.latex,
        figures=args.figures,
    )
    print(report.markdown(), end="")
    for note in report.notes:
        print(f"note: {note}")
    print(f"report: {len(report.files)} files in {args.out}")
    return 0


def _where(parser: argparse.ArgumentParser, items: list[str]) -> dict[str, list[str]]:
    where: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not values.strip():
            parser.error(f"--where {item!r}: expected KEY=VALUE[,VALUE...], e.g. beta=0.99")
        where.setdefault(key.strip(), []).extend(v.strip() for v in values.split(","))
    return where
