"""``export_nir``: a ticket (or any supported spiking model) as a NIR graph file."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._io import atomic_path
from .._version import __version__
from ..models import Spikformer, SpikingModel
from ..patch import find_patch_selectors
from ..tickets import densify
from ._package import nir_package
from .errors import NO_ATTENTION, NO_PATCH_SELECTION, NIRExportError
from .graph import GraphSpec, build_graph
from .mapping import DEFAULT_DT, NEURON_NODES, neuron_params

__all__ = ["NIRExport", "export_nir", "is_nir_export", "nir_graph"]


@dataclass(frozen=True)
class NIRExport:
    """What :func:`export_nir` wrote.

    Attributes:
        graph: The ``nir.NIRGraph`` (one time step of one sample).
        path: The file, or ``None`` when no path was given.
        sample_shape: The input of one step, e.g. ``(1, 8, 8)``.
        timesteps: T of the model's direct encoding (``None`` if it has none).
        counts: Conv, affine, neuron and pool nodes.
        size_bytes: The file's size (0 without a file).
    """

    graph: Any
    path: Path | None
    sample_shape: tuple[int, ...]
    timesteps: int | None
    counts: dict[str, int]
    size_bytes: int


def _leading_dims(model: nn.Module) -> int:
    """How many axes come before one sample in ``model``'s input: 2 ([T, B]) when a neuron
    runs multi-step, else 1 ([B], single-step)."""
    modes = {getattr(m, "step_mode", None) for m in model.modules()} - {None}
    return 2 if "m" in modes else 1


def _sample_shape(model: nn.Module, example_input: Tensor) -> tuple[int, ...]:
    if not isinstance(example_input, Tensor):
        raise TypeError(f"example_input must be a tensor, got {type(example_input).__name__}")
    if isinstance(model, SpikingModel):
        with torch.no_grad():
            return tuple(model.encode(example_input).shape[2:])
    lead = _leading_dims(model)
    if example_input.dim() <= lead:
        raise ValueError(
            f"example_input of shape {tuple(example_input.shape)} has no sample axes: the model "
            f"runs {'multi-step, [T, B, ...]' if lead == 2 else 'single-step, [B, ...]'}"
        )
    return tuple(example_input.shape[lead:])


def _check_exportable(model: nn.Module) -> None:
    selectors = [name for name, sel in find_patch_selectors(model) if sel.pb > 0]
    if selectors:
        raise NIRExportError(f"{selectors[0]} has patch selection (pb > 0): {NO_PATCH_SELECTION}")
    for name, module in model.named_modules():
        if isinstance(module, Spikformer):
            raise NIRExportError(f"{name or 'the model'} (Spikformer): {NO_ATTENTION}")


def nir_graph(
    model_or_ticket: nn.Module,
    example_input: Tensor,
    *,
    dt: float = DEFAULT_DT,
    neuron: str = "cubalif",
) -> NIRExport:
    """The NIR graph of a ticket without writing a file (see :func:`export_nir`)."""
    if not isinstance(model_or_ticket, nn.Module):
        raise TypeError(
            f"model_or_ticket must be an nn.Module, got {type(model_or_ticket).__name__}"
        )
    if neuron not in NEURON_NODES:
        raise ValueError(f"neuron must be one of {NEURON_NODES}, got neuron={neuron!r}")
    if not (isinstance(dt, (int, float)) and 0 < dt < float("inf")):
        raise ValueError(f"dt must be a positive number of seconds, got dt={dt!r}")
    _check_exportable(model_or_ticket)
    dense = densify(model_or_ticket, copy=True, patches="remove").eval()
    shape = _sample_shape(dense, example_input)
    graph, counts = build_graph(dense, shape, GraphSpec(dt=float(dt), neuron=neuron))
    timesteps = getattr(dense, "timesteps", None)
    graph.metadata = _metadata(dense, float(dt), neuron, timesteps)
    return NIRExport(graph, None, shape, timesteps, counts, 0)


def _metadata(model: nn.Module, dt: float, neuron: str, timesteps: int | None) -> dict[str, Any]:
    surrogates = sorted(
        {
            str(getattr(m, "surrogate", None) or getattr(m, "surrogate_function", ""))
            for m in model.modules()
            if neuron_params(m) is not None
        }
        - {""}
    )
    if neuron == "lif":
        node = "LIF with tau = dt / (1 - lambda), r = gamma tau / dt"
    else:
        node = (
            "CubaLIF with tau_syn = dt, tau_mem = dt / (1 - lambda), r = tau_mem / dt, w_in = gamma"
        )
    meta: dict[str, Any] = {
        "generator": f"spikelottery {__version__}",
        "dt": float(dt),
        "discretisation": (
            f"forward Euler at dt; {node} is V[n] = lambda V[n-1] + gamma I[n], spike at "
            "V >= v_threshold, reset to 0; no leak (lambda = 1): IF with r = gamma / dt"
        ),
        "model": type(model).__name__,
        "readout": "the output node at every step; the library's logits are its mean over T",
    }
    if timesteps is not None:
        meta["timesteps"] = int(timesteps)
        meta["encoding"] = "direct: the same static input at every one of the T steps"
    if surrogates:
        meta["surrogate"] = (
            f"{', '.join(surrogates)} (training only: the forward pass is a Heaviside step, "
            "exported exactly; NIR has no surrogate gradient)"
        )
    return meta


def export_nir(
    model_or_ticket: nn.Module,
    example_input: Tensor,
    path: str | os.PathLike[str],
    *,
    dt: float = DEFAULT_DT,
    neuron: str = "cubalif",
) -> NIRExport:
    """Write a ticket as a NIR graph (the Neuromorphic Intermediate Representation).

    The graph is one time step of one sample: the ticket's effective weights (``W * M``, or
    ``alpha * sign(W) * M`` for ``mp``, via :func:`~spikelottery.densify`), BatchNorm
    folded into the conv or linear before it, neurons as NIR ``CubaLIF`` nodes whose Euler
    step at ``dt`` is the library's ``V[n] = lambda V[n-1] + gamma I[n]`` with a reset to 0
    (see :mod:`spikelottery.nir.mapping`), average pools, flattens and the residual adds of
    the zoo's ResNets (as edges: NIR sums a node's inputs). Run it by feeding the same
    input at each of the T steps; the library's logits are the mean of the output over T.

    Args:
        model_or_ticket: A sparsified model (the ticket), or a dense spiking model: the
            zoo's VGG and SpikingResNet, or an ``nn.Sequential`` of conv / linear /
            BatchNorm / average pool / flatten layers and LIF / IF neurons (ours or
            SpikingJelly's).
        example_input: An input batch as the model takes it (sets the input shape).
        path: The file to write (HDF5, by ``nir.write``; written atomically).
        dt: The importers' time step in seconds (snnTorch's reader fixes 1e-4; give the same
            to ``norse.torch.from_nir(..., dt=dt)``).
        neuron: ``"cubalif"`` (read exactly by snnTorch and Norse) or ``"lif"``.

    Returns:
        A :class:`NIRExport` with the graph, the file and its size.

    Raises:
        NIRExportError: Something NIR cannot express (a Spikformer's spike-spike attention,
            patch selection, max pooling, a soft reset, ...); the message names the module.

    >>> import torch
    >>> from spikelottery import sparsify
    >>> from spikelottery.models import create_model
    >>> net = sparsify(create_model("vgg_tiny", in_channels=1, img_size=8), pa=0.5)
    >>> out = export_nir(net, torch.rand(2, 1, 8, 8), "/tmp/vgg_tiny.nir")  # doctest: +SKIP
    """
    result = nir_graph(model_or_ticket, example_input, dt=dt, neuron=neuron)
    nir = nir_package()

    target = Path(path)
    with atomic_path(target) as tmp:
        nir.write(str(tmp), result.graph)
    return NIRExport(
        result.graph,
        target,
        result.sample_shape,
        result.timesteps,
        result.counts,
        target.stat().st_size,
    )


def is_nir_export(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a NIR file written by :func:`export_nir` (safe to replace).

    The file's graph metadata names its generator (``"spikelottery <version>"``); any
    other file, NIR or not, is not known to be ours.
    """
    try:
        import nir

        graph = nir.read(str(path))
    except Exception:  # not NIR (or HDF5), or no nir package: not known to be ours
        return False
    generator = str((getattr(graph, "metadata", None) or {}).get("generator", ""))
    return generator.startswith("spikelottery")
