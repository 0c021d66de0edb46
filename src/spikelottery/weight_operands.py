"""Which weights the convolutions and linear maps of score-mask layers really compute with.

A score-mask layer hands out its effective weight (``W * M`` or ``alpha * sign(W) * M``),
zero at every removed entry. A subclass whose ``forward`` transforms that weight before
the convolution (timm's ``StdConv2d``, SpikingJelly's ``WSConv2d``: weight
standardisation, ``(w - mean) / std``) turns the removed zeros into ``-mean / std``: the
network then computes with a dense weight while the ticket, its kept fraction and its
energy say it is sparse. :func:`layers_computing_dense_weights` watches the weight
operand of every convolution and linear map that a score-mask layer's forward calls, and
names the layers whose operand is non-zero where their mask removed the weight.
:func:`~spikelottery.check_ticket` runs it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from .subnet import SubnetLayer

__all__ = ["layers_computing_dense_weights"]

# The ops whose second operand (or ``weight=``) is a layer's weight.
_WEIGHTED_OPS: frozenset[Callable[..., Any]] = frozenset(
    [
        F.linear,
        F.bilinear,
        F.conv1d,
        F.conv2d,
        F.conv3d,
        F.conv_transpose1d,
        F.conv_transpose2d,
        F.conv_transpose3d,
        torch.conv1d,
        torch.conv2d,
        torch.conv3d,
        torch.conv_transpose1d,
        torch.conv_transpose2d,
        torch.conv_transpose3d,
    ]
)


class _WeightWatch(TorchFunctionMode):
    """Calls ``seen(weight)`` for the weight operand of each conv and linear op."""

    def __init__(self, seen: Callable[[Tensor], None]) -> None:
        super().__init__()
        self._seen = seen

    def __torch_function__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        kwargs = dict(kwargs or {})
        if func in _WEIGHTED_OPS:
            weight = kwargs.get("weight", args[1] if len(args) > 1 else None)
            if isinstance(weight, Tensor):
                self._seen(weight)
        return func(*args, **kwargs)


def _storage(t: Tensor) -> int | None:
    try:
        return int(t.untyped_storage().data_ptr())
    except (RuntimeError, NotImplementedError):  # no storage (functional or meta tensors)
        return None


@contextmanager
def _active_layers(layers: list[SubnetLayer]) -> Iterator[list[SubnetLayer]]:
    """A stack of the score-mask layers whose forward is running."""
    stack: list[SubnetLayer] = []

    def enter(module: nn.Module, args: Any) -> None:
        stack.append(module)  # type: ignore[arg-type]

    def leave(module: nn.Module, args: Any, out: Any) -> None:
        stack.pop()  # returns None: a hook's return value would replace the output

    handles = []
    for layer in layers:
        handles.append(layer.register_forward_pre_hook(enter))
        handles.append(layer.register_forward_hook(leave, always_call=True))
    try:
        yield stack
    finally:
        for handle in handles:
            handle.remove()


def layers_computing_dense_weights(
    model: nn.Module, run: Callable[[], Any], layers: Mapping[str, SubnetLayer]
) -> list[str]:
    """Names of ``layers`` whose forward convolves (or multiplies) with a weight that is
    non-zero where the layer's mask removed it.

    ``run`` runs one forward of ``model`` (under ``torch.no_grad()``, say). Only an operand
    with the shape of one of the layer's masked tensors is compared with that tensor's
    mask, so a layer's other inputs (a bias, a second weight of another shape) are not
    mistaken for it. Recurrent layers call fused kernels that take every weight in one
    list; they are not watched (their weights are checked by the other parts of
    :func:`~spikelottery.check_ticket`).

    >>> from spikelottery import sparsify
    >>> net = sparsify(nn.Sequential(nn.Linear(8, 4)), pa=0.5)
    >>> layers_computing_dense_weights(net, lambda: net(torch.randn(2, 8)), {"0": net[0]})
    []
    """
    names = {id(layer): name for name, layer in layers.items()}
    removed: dict[int, list[Tensor]] = {
        id(layer): [~layer.mask(n) for n in layer.masked_names] for layer in layers.values()
    }
    # Operands held by the model as they are (a parameter, a buffer, an effective weight,
    # or a view of one, such as a chunk of an attention's in_proj) are not transformed
    # weights: another layer's weight that the forward reads, or the ticket itself.
    held = [*model.parameters(), *model.buffers()]
    held += [layer.effective_weight(n) for layer in layers.values() for n in layer.masked_names]
    known = {_storage(t) for t in held} - {None}
    found: dict[int, None] = {}

    with _active_layers(list(layers.values())) as stack:

        def seen(weight: Tensor) -> None:
            if not stack or id(stack[-1]) not in names or _storage(weight) in known:
                return
            key = id(stack[-1])
            for gone in removed[key]:
                if weight.shape == gone.shape and bool(
                    (weight.detach()[gone.to(weight.device)] != 0).any()
                ):
                    found[key] = None

        with _WeightWatch(seen):
            run()
    return [names[key] for key in found]
