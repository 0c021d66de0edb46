"""Bake a ticket into dense layers (:func:`densify`), export it as plain PyTorch or ONNX.

:func:`densify` is the one function; its flags say how its two former spellings differed:

* ``densify(model)``: in place, the patch selectors stay (the model computes the same
  ticket, patch pruning included);
* ``densify(model, copy=True, patches="remove")``: a copy (``model`` unchanged), with the
  patch selectors and their hooks removed: plain PyTorch, what :func:`export_onnx`
  exports. This is what ``export_dense(model)`` did (the old name warns, and goes in 0.2).
"""

from __future__ import annotations

import copy
import inspect
import warnings
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from .._io import atomic_path
from .._modules import invalidate_spikingjelly_cache
from ..errors import SpikeLotteryError
from ..layers import SubnetLayer
from ..neuron import LIFNeuron
from ..patch import attach_patch_selector
from ..sparsify import densify as bake_in_place
from ._common import PathLike, as_path

__all__ = ["ONNX_MARK", "PATCH_OPTIONS", "densify", "export_dense", "export_onnx", "is_onnx_export"]

M = TypeVar("M", bound=nn.Module)

#: The ``patches`` values of :func:`densify`: keep the patch selectors, or remove them.
PATCH_OPTIONS: tuple[str, ...] = ("keep", "remove")


def densify(model: M, *, copy: bool = False, patches: str = "keep", activations: str = "keep") -> M:
    """Bake the ticket into plain dense layers and return the result.

    Every score-mask layer becomes the class it was made from (``nn.Conv2d``,
    SpikingJelly's ``layer.Conv2d``, ...) holding ``W * M`` or ``alpha * sign(W) * M``; the
    scores are dropped. A layer registered at several places stays one layer, and layers
    that shared a weight share the baked one. The ``state_dict`` of the result loads with
    ``strict=True`` into the user's original, unmodified architecture.

    Args:
        model: A sparsified model (or a single score-mask layer, with ``copy=True``).
        copy: Work on a deep copy and leave ``model`` unchanged (``False``: in place).
        patches: ``"keep"`` the patch selectors (stateless: the result still prunes
            patches) or ``"remove"`` them with their hooks (plain PyTorch, for export).
        activations: ``"keep"`` binary activations as
            :class:`~spikelottery.BinaryActivation` modules (the result computes the
            ticket), or ``"restore"`` the activations they replaced.

    Raises:
        TypeError: ``model`` is not a module, or a single layer with ``copy=False``.
        ValueError: An unknown ``patches`` or ``activations``.

    >>> from spikelottery import sparsify
    >>> net = sparsify(nn.Sequential(nn.Linear(8, 2)), pa=0.5)
    >>> dense = densify(net, copy=True, patches="remove")
    >>> type(dense[0]).__name__, type(net[0]).__name__, sorted(dense.state_dict())
    ('Linear', 'SubnetLinear', ['0.bias', '0.weight'])
    >>> type(densify(net)[0]).__name__  # in place
    'Linear'
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"densify(model): model must be an nn.Module, got {type(model).__name__}")
    if patches not in PATCH_OPTIONS:
        raise ValueError(f"patches must be 'keep' or 'remove', got patches={patches!r}")
    if activations not in ("keep", "restore"):
        raise ValueError(
            f"activations must be 'keep' or 'restore', got activations={activations!r}"
        )
    if isinstance(model, SubnetLayer):
        if not copy:
            raise TypeError(
                "densify(layer) cannot replace a single layer in place: pass copy=True (or "
                "call layer.to_dense())"
            )
        return copy_module(model).to_dense()  # type: ignore[return-value]
    out = copy_module(model) if copy else model
    if patches == "remove":
        attach_patch_selector(out, 0.0)  # removes the selectors and their hooks
    bake_in_place(out, activations=activations)
    invalidate_spikingjelly_cache(out)
    return out


def copy_module(model: M) -> M:
    """A deep copy of ``model`` (its parameters, buffers and hooks)."""
    return copy.deepcopy(model)


def export_dense(model: M) -> M:
    """Deprecated: ``densify(model, copy=True, patches="remove")`` (goes in 0.2).

    A plain-PyTorch copy of ``model`` with the ticket baked into dense layers and the
    patch selectors removed (patch pruning is NOT applied). Binary activations stay as
    :class:`~spikelottery.BinaryActivation` modules.
    """
    warnings.warn(
        "export_dense(model) is densify(model, copy=True, patches='remove') "
        "(spikelottery.densify); export_dense goes in spikelottery 0.2",
        FutureWarning,
        stacklevel=2,
    )
    return densify(model, copy=True, patches="remove")


def _have_onnxscript() -> bool:
    try:
        import onnxscript  # noqa: F401
    except Exception:
        return False
    return True


def export_onnx(
    model: nn.Module,
    path: PathLike,
    example_input: Tensor | tuple[Any, ...],
    *,
    dynamo: bool | None = None,
    **kwargs: Any,
) -> Path:
    """Export the ticket in ``model`` to ONNX, as ``densify(model, copy=True, patches="remove")``.

    The copy is put in eval mode, its LIF neurons on the eager backend, and passed to
    :func:`torch.onnx.export`. Its newer
    exporter (``dynamo=True``, torch's default) needs the ``onnxscript`` package; without
    it the TorchScript exporter (``dynamo=False``) is used, which works offline and is
    what spikelottery tests. Spiking models export with their time loop unrolled for
    the ``T`` of ``example_input``; patch pruning is not applied.

    Args:
        model: A sparsified (or plain) model.
        path: The ``.onnx`` file to write.
        example_input: One input tensor, or a tuple of the forward's arguments.
        dynamo: ``True``/``False`` to choose the exporter; ``None`` picks ``True`` when
            ``onnxscript`` is installed.
        **kwargs: Passed to :func:`torch.onnx.export` (``input_names``, ``opset_version``...).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    The file's metadata holds ``spikelottery.export`` (:data:`ONNX_MARK`), by which
    ``spikelottery export --to onnx`` knows a file it may replace.

    Raises:
        SpikeLotteryError: The model does not run on ``example_input`` (naming its shape
            and the error).
        OSError: ``path`` cannot be written (a missing folder, a full disk); the message
            names it. The file is written to a temporary name and renamed, so a failed
            export leaves no partial file and an existing one unchanged.

    >>> export_onnx(net, "ticket.onnx", torch.rand(1, 3, 32, 32))  # doctest: +SKIP
    PosixPath('ticket.onnx')
    """
    path = as_path(path)
    dense = densify(model, copy=True, patches="remove").eval()
    for module in dense.modules():
        if isinstance(module, LIFNeuron):
            # The fused kernel is a compiled autograd function that tracing cannot follow
            # (its graph passes onnx.checker but computes wrong shapes); the eager loop
            # has the same semantics and traces into plain ops.
            module.backend = "eager"
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    _check_runs_on(dense, args)
    if dynamo is None:
        dynamo = _have_onnxscript()
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = dynamo
    elif dynamo:
        raise ValueError(f"torch {torch.__version__} has no dynamo ONNX exporter; use dynamo=False")
    with warnings.catch_warnings():
        # Choosing the TorchScript exporter is deliberate when onnxscript is missing.
        warnings.filterwarnings(
            "ignore", message=r".*legacy TorchScript-based ONNX export", category=DeprecationWarning
        )
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx\.")
        with torch.no_grad(), atomic_path(path) as tmp:
            torch.onnx.export(dense, args, str(tmp), **kwargs)
            _mark(tmp)
    return path


#: The key of the metadata entry that marks an ONNX file as spikelottery's export.
ONNX_MARK = "spikelottery.export"


def _mark(path: Path) -> None:
    """Add :data:`ONNX_MARK` to the ONNX file at ``path`` (so that a CLI may replace it)."""
    import onnx

    from .._version import __version__

    graph = onnx.load(str(path), load_external_data=False)
    entry = graph.metadata_props.add()
    entry.key, entry.value = ONNX_MARK, f"dense ticket, spikelottery {__version__}"
    onnx.save(graph, str(path))


def is_onnx_export(path: PathLike) -> bool:
    """Whether ``path`` is an ONNX file written by :func:`export_onnx` (safe to replace)."""
    try:
        import onnx

        graph = onnx.load(str(path), load_external_data=False)
    except Exception:  # not ONNX, or no onnx package: not known to be ours
        return False
    return any(p.key == ONNX_MARK for p in graph.metadata_props)


def _describe(args: tuple[Any, ...]) -> str:
    return ", ".join(
        f"tensor of shape {list(a.shape)} ({a.dtype})"
        if isinstance(a, Tensor)
        else type(a).__name__
        for a in args
    )


def _check_runs_on(dense: nn.Module, args: tuple[Any, ...]) -> None:
    """Run ``dense`` once on ``args``: a wrong example input is named here, not in the tracer."""
    from .._state import reset_states

    try:
        with torch.no_grad():
            dense(*args)
    except Exception as exc:
        raise SpikeLotteryError(
            f"export_onnx: the model does not run on example_input ({_describe(args)}): "
            f"{type(exc).__name__}: {exc}. Give an input it accepts, e.g. one batch of its "
            "data (``[B, C, H, W]`` images, ``[T, B, ...]`` time steps for a multi-step model)"
        ) from exc
    finally:
        reset_states(dense)
