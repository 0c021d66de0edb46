"""Small helpers that several ``spikelottery`` commands share: logging, JSON, shapes."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["dims", "log_to_stderr", "print_json"]


@contextlib.contextmanager
def log_to_stderr(quiet: bool, verbose: bool) -> Iterator[None]:
    """Print the ``spikelottery`` logger's messages to stderr while the command runs.

    The logger's handlers, level and ``propagate`` flag are restored afterwards, so an
    in-process ``main()`` (a test, a notebook) leaves the caller's logging as it was.
    """
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logger = logging.getLogger("spikelottery")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False  # no second copy through the root logger's handlers
    try:
        yield
    finally:
        logger.handlers[:] = saved[0]
        handler.close()
        logger.setLevel(saved[1])
        logger.propagate = saved[2]


def print_json(value: Any) -> None:
    """Print ``value`` as indented JSON (the ``--json`` output of a command)."""
    print(json.dumps(value, indent=2))


def dims(shape: Sequence[int] | None) -> str:
    """``(1, 8, 8)`` as ``1x8x8``.

    >>> dims((1, 8, 8)), dims(None)
    ('1x8x8', '-')
    """
    return "-" if shape is None else "x".join(str(n) for n in shape)
