"""Plain-text tables, the one printer behind every report's ``str()`` (not public API)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["format_rows"]


def format_rows(
    header: Sequence[str], rows: Sequence[Sequence[str]], *, numeric: Sequence[int] = ()
) -> list[str]:
    """Align ``rows`` under ``header`` in columns two spaces apart, with a dashed rule.

    Columns whose index is in ``numeric`` are right-aligned, the others left-aligned.

    >>> print("\\n".join(format_rows(["name", "n"], [["a", "1"], ["bb", "22"]], numeric=[1])))
    name   n
    ----  --
    a      1
    bb    22
    """
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths))
        ]
        return "  ".join(parts).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]
