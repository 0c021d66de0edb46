"""What the ticket modules share: the layers a ticket covers, and how messages list names."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from torch import nn

from ..errors import SpikeLotteryError
from ..layers import SubnetLayer, convertible_types, kind_of
from ..patch import PatchSelector, find_patch_selectors

__all__ = [
    "DENSE_BASES",
    "PathLike",
    "active_patch_selector",
    "as_path",
    "dense_base",
    "entry_key",
    "patch_pruning",
    "quote_names",
    "subnet_layers",
]

PathLike = str | os.PathLike[str]


def as_path(path: object, *, what: str = "path") -> Path:
    """``path`` as a :class:`~pathlib.Path`, or a ``TypeError`` that names the argument.

    >>> as_path(5)
    Traceback (most recent call last):
    ...
    TypeError: path must be a str or an os.PathLike (a file name), got int 5
    """
    if isinstance(path, str) or (
        isinstance(path, os.PathLike) and isinstance(os.fspath(path), str)
    ):
        return Path(path)
    raise TypeError(
        f"{what} must be a str or an os.PathLike (a file name), got {type(path).__name__} {path!r}"
    )


# The PyTorch layer types a ticket records (its ``dense`` field) and loads into.
DENSE_BASES: tuple[type[nn.Module], ...] = convertible_types()


def dense_base(module: nn.Module) -> str:
    """The name of the PyTorch layer type ``module`` is (``"Conv2d"``), as a ticket records it."""
    kind = kind_of(module)
    if kind is None:
        raise SpikeLotteryError(f"{type(module).__name__} is not a layer type spikelottery masks")
    return kind.dense.__name__


def entry_key(rec: Mapping[str, object]) -> str:
    """The tensor-key suffix of a ticket record: the layer name, plus ``.param`` for a
    masked parameter other than ``weight`` (``"attn.in_proj_weight"``).

    >>> entry_key({"name": "fc"}), entry_key({"name": "rnn", "param": "weight_hh_l0"})
    ('fc', 'rnn.weight_hh_l0')
    """
    param = rec.get("param", "weight")
    return str(rec["name"]) if param == "weight" else f"{rec['name']}.{param}"


def patch_pruning(model: nn.Module) -> tuple[str | None, float]:
    """``(patch-embedding name, pb)`` of an attached patch selector, or ``(None, 0.0)``."""
    selector = active_patch_selector(model)
    return (None, 0.0) if selector is None else (selector[0], float(selector[1].pb))


def active_patch_selector(model: nn.Module) -> tuple[str, PatchSelector] | None:
    """``(patch-embedding name, selector)`` of the selector that prunes (``pb > 0``), if any."""
    for name, selector in find_patch_selectors(model):
        if selector.pb > 0:
            return name, selector
    return None


def subnet_layers(model: nn.Module) -> list[tuple[str, SubnetLayer]]:
    """``(qualified name, layer)`` of every score-mask layer in ``model``, each once."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, SubnetLayer)]


def quote_names(names: list[str] | set[str], limit: int = 8) -> str:
    """``names`` sorted and quoted for a message, at most ``limit`` of them.

    >>> quote_names(["b", "a"])
    "'a', 'b'"
    """
    names = sorted(names)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(repr(n) for n in names[:limit]) + more
