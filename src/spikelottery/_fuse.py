"""``torch.ao.quantization.fuse_modules`` on score-mask layers: a named refusal (not public API).

PyTorch fuses by looking up the exact types of the modules to fuse in its table of fuser
methods; a score-mask layer is in no such entry, and PyTorch's own message ("did not find
fuser method") does not say why. Fusing would write BatchNorm into ``layer.weight``,
which after ``sparsify`` is computed from the frozen weight and the mask. So each pattern
PyTorch fuses for a dense conv or linear layer gets an entry for the score-mask class
that raises :class:`~spikelottery.SpikeLotteryError` saying what to do: bake the ticket
first (``densify``, in place or with ``copy=True``), then fuse.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .errors import SpikeLotteryError

__all__ = ["register_fuse_refusals"]


def _refuse(is_qat: bool, *modules: nn.Module) -> nn.Module:
    names = ", ".join(type(m).__name__ for m in modules)
    raise SpikeLotteryError(
        f"torch.ao.quantization.fuse_modules cannot fuse ({names}): after sparsify, a "
        "score-mask layer's weight is computed from its frozen weight and its mask, so a "
        "fused (BatchNorm-folded) weight would be masked again or lost. Bake the ticket "
        "first: spikelottery.densify(model) (in place) or densify(model, copy=True) (a copy), "
        "then fuse the dense model"
    )


def register_fuse_refusals(replacements: dict[type[nn.Module], type[nn.Module]]) -> None:
    """Add a refusing fuser method for every PyTorch pattern whose first module is a
    dense class in ``replacements`` (``{nn.Conv2d: SubnetConv, ...}``)."""
    try:
        from torch.ao.quantization import fuser_method_mappings as mappings

        table: dict[tuple[Any, ...], Any] = mappings._DEFAULT_OP_LIST_TO_FUSER_METHOD
    except (ImportError, AttributeError):  # pragma: no cover - another torch layout
        return
    for pattern in list(table):
        first = pattern[0] if isinstance(pattern, tuple) and pattern else None
        sub = replacements.get(first) if isinstance(first, type) else None
        if sub is not None:
            table.setdefault((sub, *pattern[1:]), _refuse)
