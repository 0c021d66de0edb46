"""Which ticket loses less against its own baseline: the paper's wording of its Rewards.

Reward 1 says spiking tickets *lose less* than ANN tickets: the drop from the dense SNN to
the MPSLT is smaller than the drop from the dense ANN to the MPLT. Reward 2 says the same
of MultiSp-SLT against MultiSp-LT as ``pb`` grows, against the tickets without patch
pruning (PEPSp). This script reads a report's ``runs.csv`` and gives, per setting, the
two losses and their paired difference over seeds, with its 95% interval:

    loss(S) = accuracy(S's baseline) - accuracy(S)         for each seed
    difference = loss(ANN ticket) - loss(spiking ticket)   > 0: the spiking ticket loses less

A ticket run is paired with the baseline run of the same seed, data set, model, time
steps, decay and epochs, and of the same value of any other setting that varies among
the baseline's runs (``pa``, when the baselines are tickets at several ``pa``). Two runs
that would both be the partner are refused, never picked silently. Run from the repository root, after the
study's ``report`` commands (docs/reproduction.md):

    python docs/_scripts/loss_vs_base.py report/study/reward1/runs.csv
    python docs/_scripts/loss_vs_base.py report/study/reward2/runs.csv \
        --spiking multisp-slt pepsp-slt --ann multisp-lt pepsp-lt
    python docs/_scripts/loss_vs_base.py report/study/reward2/runs.csv \
        --spiking multisp-slt multisp-slt --ann multisp-lt multisp-lt --base-where pb=0.1

It prints a Markdown table (accuracy points) with a verdict per row.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from spikelottery.report import summarize, verdict
from spikelottery.report.collect import SETTING_COLUMNS

#: The settings that tell the ticket runs' groups apart (when they vary).
GROUP = ("dataset", "model", "pa", "pb", "timesteps", "beta", "epochs")
#: The settings a baseline run is always matched on, besides the seed; any other setting
#: that varies among the baseline's runs is matched too.
MATCH = ("dataset", "model", "timesteps", "beta", "epochs")


#: verdict()'s words for "ANN loss - spiking loss" read as which ticket loses less.
SAID = {"a higher": "spiking loses less", "b higher": "ANN loses less"}


def _key(row: Mapping[str, str], names: Iterable[str]) -> tuple[str, ...]:
    return tuple(row.get(n, "") for n in names)


def _varying(rows: Sequence[Mapping[str, str]]) -> list[str]:
    names = [c for c in SETTING_COLUMNS if c not in ("method", "seed")]
    return [c for c in names if len({r.get(c, "") for r in rows}) > 1]


def losses(
    rows: Sequence[Mapping[str, str]],
    ticket: str,
    base: str,
    base_where: Mapping[str, str] | None = None,
) -> dict[tuple[str, ...], dict[str, float]]:
    """Per ticket group: seed -> accuracy(base) - accuracy(ticket), both of that seed.

    Raises:
        ValueError: Two runs of the baseline, or of the ticket in one group, with the
            same seed (say which with ``report --where``).
    """
    base_rows = [r for r in rows if r["method"] == base and _holds(r, base_where or {})]
    ticket_rows = [r for r in rows if r["method"] == ticket]
    match = list(dict.fromkeys([*MATCH, *_varying(base_rows)]))
    group = list(dict.fromkeys([*GROUP, *match, *_varying(ticket_rows)]))
    bases: dict[tuple[str, ...], float] = {}
    for r in base_rows:
        key = (*_key(r, match), r["seed"])
        if key in bases:
            raise ValueError(_twice(base, r["seed"], match))
        bases[key] = float(r["accuracy"])
    out: dict[tuple[str, ...], dict[str, float]] = {}
    for r in ticket_rows:
        matched = bases.get((*_key(r, match), r["seed"]))
        if matched is None:
            continue
        seeds = out.setdefault(_key(r, GROUP), {})
        if r["seed"] in seeds:
            raise ValueError(_twice(ticket, r["seed"], group))
        seeds[r["seed"]] = matched - float(r["accuracy"])
    return out


def _holds(row: Mapping[str, str], where: Mapping[str, str]) -> bool:
    return all(_num(row.get(k, "")) == _num(v) for k, v in where.items())


def _twice(method: str, seed: str, names: Sequence[str]) -> str:
    return (
        f"two runs of {method} with seed {seed} agree on {', '.join(names)}: which is meant? "
        "Keep one with `spikelottery report ... --where KEY=VALUE` and use its runs.csv"
    )


def table(
    rows: Sequence[Mapping[str, str]],
    spiking: tuple[str, str],
    ann: tuple[str, str],
    base_where: Mapping[str, str] | None = None,
) -> str:
    """The Markdown table of both losses and their paired difference, per group.

    ``base_where`` keeps only the baseline runs with these settings: with the ticket
    itself as its baseline and ``{"pb": "0.1"}``, the loss is the drop from ``pb = 0.1``.
    """
    done = [r for r in rows if r.get("status") == "done" and r.get("accuracy")]
    spk, an = losses(done, *spiking, base_where), losses(done, *ann, base_where)
    varying = [i for i, n in enumerate(GROUP) if len({k[i] for k in spk | an}) > 1]
    names = [GROUP[i] for i in varying]
    head = [*names, "pairs", "spiking loss", "ANN loss", "ANN - spiking (points)", "95% CI"]
    lines = ["| " + " | ".join([*head, "verdict"]) + " |", "|" + "---|" * (len(head) + 1)]
    for group in sorted(spk.keys() & an.keys(), key=lambda k: [_num(k[i]) for i in varying]):
        seeds = sorted(spk[group].keys() & an[group].keys())
        diffs = [an[group][s] - spk[group][s] for s in seeds]
        if not diffs:
            continue
        s = summarize(diffs)
        low, high = (None, None) if math.isnan(s.ci_low) else (s.ci_low, s.ci_high)
        # verdict() names the higher side; here the difference > 0 means the spiking
        # ticket loses less.
        said = verdict(low, high, "a", "b")
        said = SAID.get(said, said)
        ci = "-" if low is None else f"[{100 * low:.2f}, {100 * high:.2f}]"
        spk_mean = 100 * sum(spk[group][x] for x in seeds) / len(seeds)
        an_mean = 100 * sum(an[group][x] for x in seeds) / len(seeds)
        cells = [group[i] for i in varying]
        cells += [str(len(seeds)), f"{spk_mean:.2f}", f"{an_mean:.2f}", f"{100 * s.mean:.2f}"]
        lines.append("| " + " | ".join([*cells, ci, said]) + " |")
    return "\n".join(lines)


def _num(text: str) -> tuple[int, float | str]:
    try:
        return (0, float(text))
    except ValueError:
        return (1, text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs_csv", type=Path, help="a report's runs.csv")
    parser.add_argument(
        "--spiking", nargs=2, default=("mpslt", "snn"), metavar=("TICKET", "BASELINE")
    )
    parser.add_argument("--ann", nargs=2, default=("mplt", "ann"), metavar=("TICKET", "BASELINE"))
    parser.add_argument(
        "--base-where",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keep only the baseline runs with this setting (e.g. pb=0.1, with each ticket "
        "as its own baseline: the drop from pb = 0.1)",
    )
    args = parser.parse_args(argv)
    if not args.runs_csv.is_file():
        parser.error(f"{args.runs_csv}: no such file; run the study's report commands first")
    with open(args.runs_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    methods = {r["method"] for r in rows}
    missing = [m for m in (*args.spiking, *args.ann) if m not in methods]
    if missing:
        parser.error(f"{args.runs_csv}: no runs of {', '.join(missing)}")
    base_where = {}
    for item in args.base_where:
        key, sep, value = item.partition("=")
        if not sep or key not in rows[0]:
            parser.error(f"--base-where {item!r}: expected KEY=VALUE with KEY a runs.csv column")
        base_where[key] = value
    try:
        print(table(rows, tuple(args.spiking), tuple(args.ann), base_where))
    except ValueError as exc:
        parser.error(f"{args.runs_csv}: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
