"""Export a ticket as a plain dense PyTorch model, or to ONNX."""

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
from ..sparsify import densify
from ._common import PathLike, as_path

__all__ = ["ONNX_MARK", "export_dense", "export_onnx", "is_onnx_export"]

M = TypeVar("M", bound=nn.Module)


def export_dense(model: M) -> M:
    """A plain-PyTorch copy of ``model`` with the ticket baked into dense layers.

    The copy (``model`` is not changed) has every score-mask layer replaced by the dense
    layer it was made from holding ``W * M`` or ``alpha * sign(W) * M`` (see
    :func:`~spikelottery.densify`), and any patch selector removed with its hooks: the
    result runs without spikelottery's layers, and patch pruning is NOT applied. Its
    ``state_dict`` loads with ``strict=True`` into the original dense architecture.

    Binary activations (``sparsify(..., activations="binary")``) stay in the copy as
    :class:`~spikelottery.BinaryActivation` modules (a sign; no state), so the copy
    computes the ticket. The original architecture, loaded with this ``state_dict``,
    still has its real activations and does not: swap them with
    :func:`~spikelottery.binarize_activations` there too.

    >>> from spikelottery import sparsify
    >>> dense = export_dense(sparsify(nn.Sequential(nn.Linear(8, 2)), pa=0.5))
    >>> type(dense[0]).__name__, sorted(dense.state_dict())
    ('Linear', ['0.bias', '0.weight'])
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    out = copy.deepcopy(model)
    if isinstance(out, SubnetLayer):
        return out.to_dense()  # type: ignore[return-value]
    attach_patch_selector(out, 0.0)  # removes the selectors and their hooks
    densify(out)
    invalidate_spikingjelly_cache(out)
    return out


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
    """Export the ticket in ``model`` to ONNX, as the dense network of :func:`export_dense`.

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
    dense = export_dense(model).eval()
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
