"""Runs compared across environments: which fields differ where a report averages or pairs runs.

A run's ``results.json`` records its ``environment``
(:func:`~spikelottery.engine.environment.describe_environment`: library, torch, numpy and
Python versions, platform, CPU, device, threads, deterministic flags). Two runs of the
same settings and seed agree bit for bit only when these agree too; across them the
per-seed numbers move (``docs/experiments.md``, "How far numbers move across machines").
:func:`check_environments` looks at every group the report averages (a summary row) and
every group it pairs (a comparison row) and names the fields whose values differ inside
one, with the values and their run counts. Runs written before the record existed read
as ``"not recorded"``.

>>> rows = [
...     {"method": "mpslt", "pa": 0.4, "seed": s, "environment": {"torch": t, "threads": 1}}
...     for s, t in [(0, "2.14.1"), (1, "2.13.0")]
... ]
>>> check = check_environments(rows, ["method", "pa"])
>>> check.warnings[0]
'torch differs inside 1 of 1 averaged groups (e.g. method=mpslt, pa=0.4): 2.13.0 (1 run), 2.14.1 (1 run)'
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..engine.environment import ENVIRONMENT_FIELDS

__all__ = [
    "ENVIRONMENT_COLUMNS",
    "ENVIRONMENT_KEY",
    "NOT_RECORDED",
    "EnvironmentCheck",
    "check_environments",
    "environment_columns",
]

#: The key of a row's environment record (a dict, or ``None``; not a CSV column).
ENVIRONMENT_KEY = "environment"
#: How a run without an environment record (an older ``results.json``) reads.
NOT_RECORDED = "not recorded"
#: The environment fields that ``runs.csv`` shows, as ``env_<field>`` columns.
ENVIRONMENT_COLUMNS = tuple(f"env_{k}" for k in ("spikelottery", "torch", "device", "threads"))


def environment_columns(record: Mapping[str, Any] | None) -> dict[str, Any]:
    """A row's ``env_<field>`` columns from its environment record (``None``: empty cells).

    >>> environment_columns({"torch": "2.14.1", "threads": 1})["env_threads"]
    1
    """
    record = record or {}
    return {c: record.get(c.removeprefix("env_")) for c in ENVIRONMENT_COLUMNS}


def _value(row: Mapping[str, Any], name: str) -> str:
    record = row.get(ENVIRONMENT_KEY)
    if not isinstance(record, Mapping) or name not in record:  # an older record: no such field
        return NOT_RECORDED
    value = record[name]
    return str(value) if not isinstance(value, bool) else str(value).lower()


def _key(row: Mapping[str, Any], axes: Sequence[str]) -> str:
    return json.dumps([row.get(a) for a in axes], sort_keys=True, default=str)


def _label(row: Mapping[str, Any], axes: Sequence[str]) -> str:
    return ", ".join(f"{a}={row.get(a)}" for a in axes) or "all runs"


@dataclass
class EnvironmentCheck:
    """What :func:`check_environments` found.

    Attributes:
        warnings: One line per field that differs inside an averaged or paired group
            (its values and run counts, and an example group), and one for runs without
            a record; empty when every group ran in one environment.
        common: The environment the finished runs share (one line), or ``None``.
    """

    warnings: list[str] = field(default_factory=list)
    common: str | None = None

    def lines(self) -> list[str]:
        """The section of ``summary.md``: the warnings, or the shared environment."""
        return list(self.warnings) if self.warnings else [self.common] if self.common else []


def _differing(
    groups: Sequence[Sequence[Mapping[str, Any]]], name: str
) -> tuple[int, int | None, dict[int, Mapping[str, Any]]]:
    """The groups in which field ``name`` differs: how many, the first, their runs by id.

    Runs that did not record the field are left out (they are reported once, apart).
    """
    hits, first = 0, None
    runs: dict[int, Mapping[str, Any]] = {}
    for i, members in enumerate(groups):
        if len({_value(r, name) for r in members} - {NOT_RECORDED}) > 1:
            hits += 1
            first = i if first is None else first
            runs.update((id(r), r) for r in members)
    return hits, first, runs


def _describe(runs: Sequence[Mapping[str, Any]], name: str) -> str:
    counts = Counter(_value(r, name) for r in runs)
    return ", ".join(f"{v} ({n} run{'s' if n != 1 else ''})" for v, n in sorted(counts.items()))


def check_environments(
    rows: Sequence[Mapping[str, Any]],
    axes: Sequence[str],
    comparisons: Sequence[tuple[str, str, Sequence[Mapping[str, Any]], Sequence[str]]] = (),
) -> EnvironmentCheck:
    """The environment fields that differ inside the groups a report averages or pairs.

    Args:
        rows: The finished runs (each with its :data:`ENVIRONMENT_KEY` record or ``None``).
        axes: The summary's axes: runs that agree on them (all seeds) are averaged.
        comparisons: ``(A, B, comparison rows, group axes)`` per compared pair: the runs
            of ``A`` and ``B`` that agree on the group axes are paired.

    Returns:
        The warnings (empty when every group ran in one environment) and the shared
        environment.
    """
    names = list(ENVIRONMENT_FIELDS)
    check = EnvironmentCheck()
    by_group: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        by_group.setdefault(_key(r, axes), []).append(r)
    averaged = list(by_group.values())
    paired: list[list[Mapping[str, Any]]] = []
    paired_labels: list[str] = []
    for a, b, comparison, group in comparisons:
        members = [r for r in rows if r.get("method") in (a, b)]
        for c in comparison:
            key = _key(c, group)
            paired.append([r for r in members if _key(r, group) == key])
            paired_labels.append(f"{a} vs {b}" + (f", {_label(c, group)}" if group else ""))
    missing = sum(not isinstance(r.get(ENVIRONMENT_KEY), Mapping) for r in rows)
    if missing:
        check.warnings.append(
            f"environment {NOT_RECORDED} for {missing} of {len(rows)} runs (results.json "
            "written before spikelottery recorded it): the report cannot tell whether they "
            "ran with the same torch, device and threads as the others"
        )
    for name in names:
        parts: list[str] = []
        runs: dict[int, Mapping[str, Any]] = {}
        hits, first, found = _differing(averaged, name)
        if hits and first is not None:
            example = _label(averaged[first][0], axes)
            parts.append(f"{hits} of {len(averaged)} averaged groups (e.g. {example})")
            runs |= found
        hits, first, found = _differing(paired, name)
        if hits and first is not None:
            parts.append(f"{hits} of {len(paired)} paired groups (e.g. {paired_labels[first]})")
            runs |= found
        if parts:
            check.warnings.append(
                f"{name} differs inside {' and '.join(parts)}: {_describe(list(runs.values()), name)}"
            )
    recorded = [r[ENVIRONMENT_KEY] for r in rows if isinstance(r.get(ENVIRONMENT_KEY), Mapping)]
    if recorded and not missing:
        values = {
            n: sorted({_value({ENVIRONMENT_KEY: e}, n) for e in recorded} - {NOT_RECORDED})
            for n in names
        }
        shared = [f"{n} {v[0]}" for n, v in values.items() if len(v) == 1]
        varying = [n for n, v in values.items() if len(v) > 1]
        check.common = (
            f"{len(recorded)} runs: "
            + ", ".join(shared)
            + (f"; differing between (not inside) groups: {', '.join(varying)}" if varying else "")
        )
    return check
