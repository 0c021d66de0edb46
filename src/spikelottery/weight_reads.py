"""Which score-mask layers had their masked weight read: :func:`record_weight_reads`.

:func:`~spikelottery.check_ticket` uses it to tell a layer that nobody used from one
whose weight was read but bypassed on the way to the output.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

__all__ = ["note_read", "record_weight_reads"]

# The ids of the score-mask layers whose masked weight was read, while record_weight_reads runs.
_READS: set[int] | None = None


@contextlib.contextmanager
def record_weight_reads() -> Iterator[set[int]]:
    """Collect ``id(layer)`` of every score-mask layer whose masked weight is read meanwhile.

    :func:`~spikelottery.check_ticket` uses it to tell a layer that nobody used from one
    whose weight was read but bypassed on the way to the output.

    >>> from spikelottery import SubnetLinear
    >>> layer = SubnetLinear(4, 2, pa=0.5)
    >>> with record_weight_reads() as reads:
    ...     _ = layer.weight
    >>> id(layer) in reads
    True
    """
    global _READS
    previous, _READS = _READS, set()
    try:
        yield _READS
    finally:
        _READS = previous


def note_read(layer: nn.Module) -> None:
    """Record a read of ``layer``'s masked weight (for :func:`record_weight_reads`)."""
    if _READS is not None:
        _READS.add(id(layer))
