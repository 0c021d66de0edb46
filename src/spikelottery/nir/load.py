"""``load_nir``: a NIR graph as a PyTorch model built from the library's own layers.

The model runs the graph on whole sequences ``[T, B, ...]`` (every NIR node of a
feed-forward graph can: its neurons are :class:`~spikelottery.neuron.LIFNeuron` in
multi-step mode, its convs and affines plain ``nn.Conv2d`` / ``nn.Linear`` inside
:class:`~spikelottery.multistep.MultiStep`), so :func:`~spikelottery.sparsify` finds its
layers and the engine can search a ticket in a network designed in another framework.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..models import encode_input
from ..multistep import MultiStep
from ..neuron import LIFNeuron
from ._package import nir_package
from .errors import NIRImportError
from .mapping import DEFAULT_DT, neuron_from_nir

__all__ = ["NIRNetwork", "load_nir"]


def _tensor(a: Any) -> Tensor:
    return torch.as_tensor(np.asarray(a), dtype=torch.get_default_dtype())


def _pair(a: Any) -> tuple[int, int]:
    arr = np.atleast_1d(np.asarray(a)).astype(int)
    return (int(arr[0]), int(arr[-1]))


class _SumPool(nn.Module):
    """NIR's ``SumPool2d``: the sum over each window (an average pool times its size)."""

    def __init__(
        self, kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int]
    ) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(kernel, stride, padding)
        self.size = kernel[0] * kernel[1]

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(x) * self.size


class _Flatten(nn.Module):
    """NIR's ``Flatten`` (dims counted over one sample) on ``[T, B, ...]``."""

    def __init__(self, start: int, end: int) -> None:
        super().__init__()
        self.start, self.end = start, end

    def forward(self, x: Tensor) -> Tensor:
        rank = x.dim() - 2
        return x.flatten(2 + self.start % rank, 2 + self.end % rank)

    def extra_repr(self) -> str:
        return f"start_dim={self.start}, end_dim={self.end} (of one sample)"


def _module(name: str, node: Any, dt: float) -> nn.Module | None:
    """The library module of one NIR node; ``None`` for the input and output nodes."""
    nir = nir_package()

    if isinstance(node, (nir.Input, nir.Output)):
        return None
    params = neuron_from_nir(node, name, dt=dt)
    if params is not None:
        if not 0.0 <= params.beta <= 1.0:
            raise NIRImportError(
                f"NIR node {name!r} ({params.source}) decays by {params.beta:g} per step at "
                f"dt={dt!r} (a time constant shorter than dt); pass the dt it was made for"
            )
        return LIFNeuron(beta=params.beta, gamma=params.gamma, threshold=params.threshold)
    if isinstance(node, nir.Conv2d):
        weight = _tensor(node.weight)
        conv = nn.Conv2d(
            weight.shape[1] * int(node.groups),
            weight.shape[0],
            (int(weight.shape[2]), int(weight.shape[3])),
            stride=_pair(node.stride),
            padding=_pair(node.padding),
            dilation=_pair(node.dilation),
            groups=int(node.groups),
            bias=node.bias is not None,
        )
        with torch.no_grad():
            conv.weight.copy_(weight)
            if conv.bias is not None:
                conv.bias.copy_(_tensor(node.bias).reshape(-1))
        return MultiStep(conv)
    if isinstance(node, (nir.Affine, nir.Linear)):
        weight = _tensor(node.weight)
        bias = getattr(node, "bias", None)
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        with torch.no_grad():
            linear.weight.copy_(weight)
            if bias is not None:
                linear.bias.copy_(_tensor(bias))
        return linear  # nn.Linear takes [T, B, ..., D] as it is
    if isinstance(node, (nir.SumPool2d, nir.AvgPool2d)):
        kernel, stride, padding = _pair(node.kernel_size), _pair(node.stride), _pair(node.padding)
        if isinstance(node, nir.SumPool2d):
            return MultiStep(_SumPool(kernel, stride, padding))
        return MultiStep(nn.AvgPool2d(kernel, stride, padding))
    if isinstance(node, nir.Flatten):
        return _Flatten(int(node.start_dim), int(node.end_dim))
    raise NIRImportError(
        f"NIR node {name!r} is a {type(node).__name__}, which load_nir does not build; it "
        "reads Conv2d, Affine, Linear, SumPool2d, AvgPool2d, Flatten and CubaLIF / LIF / IF "
        "neurons"
    )


def _order(nodes: Mapping[str, Any], edges: list[tuple[str, str]]) -> list[str]:
    """The nodes in an order where every node comes after all its inputs (Kahn)."""
    indegree = {name: 0 for name in nodes}
    for src, dst in edges:
        for end in (src, dst):
            if end not in indegree:
                raise NIRImportError(
                    f"NIR edge ({src!r}, {dst!r}) names a node {end!r} the graph lacks"
                )
        indegree[dst] += 1
    ready = [name for name, d in indegree.items() if d == 0]
    order = []
    while ready:
        name = ready.pop(0)
        order.append(name)
        for src, dst in edges:
            if src == name:
                indegree[dst] -= 1
                if indegree[dst] == 0:
                    ready.append(dst)
    if len(order) != len(nodes):
        loop = sorted(set(nodes) - set(order))
        raise NIRImportError(
            f"the NIR graph has a cycle through {loop[:4]}: a recurrent graph runs step by step, "
            "and load_nir builds feed-forward graphs (run on whole sequences) only"
        )
    return order


class NIRNetwork(nn.Module):
    """A feed-forward NIR graph as a multi-step PyTorch model of the library's layers.

    ``forward`` takes what the zoo's models take (a static ``[B, C, H, W]`` input repeated
    ``timesteps`` times, or event frames ``[B, T, ...]``) and returns the output node's
    mean over T; :meth:`forward_sequence` runs ``[T, B, ...]`` and returns every step.
    Each node's input is the sum of its incoming edges (NIR's convention). Layers are
    children of :attr:`layers` under their NIR names (dots as ``_``).

    Attributes:
        timesteps: T for direct encoding of a static input.
        input_shape: One sample's input at one step.
        spiking: Always ``True`` (what the engine asks of a model).
    """

    def __init__(
        self,
        layers: Mapping[str, nn.Module],
        inputs: Mapping[str, list[str]],
        order: list[str],
        input_name: str,
        output_name: str,
        input_shape: tuple[int, ...],
        timesteps: int,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleDict(dict(layers))
        self.inputs = {k: list(v) for k, v in inputs.items()}
        self.order = list(order)
        self.input_name, self.output_name = input_name, output_name
        self.input_shape = tuple(input_shape)
        self.timesteps = int(timesteps)
        self.spiking = True

    def forward_sequence(self, x_seq: Tensor) -> Tensor:
        """``[T, B, *input_shape]`` -> the output node at every step, ``[T, B, ...]``."""
        values: dict[str, Tensor] = {self.input_name: x_seq}
        for name in self.order:
            if name == self.input_name:
                continue
            sources = self.inputs.get(name, [])
            if not sources:
                raise NIRImportError(f"NIR node {name!r} has no input edge")
            total = values[sources[0]]
            for src in sources[1:]:
                total = total + values[src]
            layer = self.layers[name] if name in self.layers else None  # noqa: SIM401 (ModuleDict)
            values[name] = layer(total) if layer is not None else total
        return values[self.output_name]

    def forward(self, x: Tensor) -> Tensor:
        """The output node's mean over T: ``[B, C, H, W]`` (repeated T times) or ``[B, T, ...]``."""
        if x.dim() == len(self.input_shape) + 1:
            x_seq = x.unsqueeze(0).expand(self.timesteps, *x.shape)
        elif x.dim() == len(self.input_shape) + 2:
            x_seq = x.transpose(0, 1)
        else:
            raise ValueError(
                f"NIRNetwork takes [B, *{self.input_shape}] or [B, T, *{self.input_shape}], "
                f"got shape {tuple(x.shape)}"
            )
        if len(self.input_shape) == 3:  # the zoo's check and cast of images and event frames
            x_seq = encode_input(x_seq, self.timesteps, self.input_shape[0], time_first=True)
        return self.forward_sequence(x_seq).mean(0)

    def extra_repr(self) -> str:
        return (
            f"input_shape={self.input_shape}, timesteps={self.timesteps}, nodes={len(self.order)}"
        )


def load_nir(
    graph_or_path: Any,
    *,
    dt: float | None = None,
    timesteps: int | None = None,
) -> NIRNetwork:
    """Build a PyTorch model of the library's layers from a NIR graph (or a NIR file).

    Neurons become :class:`~spikelottery.neuron.LIFNeuron` with the update the node's
    Euler step at ``dt`` gives (see :mod:`spikelottery.nir.mapping`); convs and affines
    become ``nn.Conv2d`` / ``nn.Linear`` that :func:`~spikelottery.sparsify` swaps.

    Args:
        graph_or_path: A ``nir.NIRGraph`` or the path of a NIR file.
        dt: The time step; ``None`` takes the graph's ``metadata["dt"]`` (written by
            :func:`export_nir`), else :data:`~spikelottery.nir.mapping.DEFAULT_DT`.
        timesteps: T for a static input; ``None`` takes ``metadata["timesteps"]``, else 4.

    Raises:
        NIRImportError: A node, a parameter or a cycle that it cannot build (named).
    """
    nir = nir_package()

    if isinstance(graph_or_path, (str, os.PathLike)):
        graph = nir.read(str(graph_or_path))
    else:
        graph = graph_or_path
    if not isinstance(graph, nir.NIRGraph):
        raise TypeError(
            f"graph_or_path must be a nir.NIRGraph or a path, got {type(graph).__name__}"
        )
    meta = dict(graph.metadata or {})
    dt = float(dt if dt is not None else meta.get("dt", DEFAULT_DT))
    steps = int(timesteps if timesteps is not None else meta.get("timesteps", 4))
    edges = [(str(s), str(d)) for s, d in graph.edges]
    order = _order(graph.nodes, edges)
    ins = [n for n, node in graph.nodes.items() if isinstance(node, nir.Input)]
    outs = [n for n, node in graph.nodes.items() if isinstance(node, nir.Output)]
    if len(ins) != 1 or len(outs) != 1:
        raise NIRImportError(
            f"load_nir needs one Input and one Output node, the graph has {len(ins)} and {len(outs)}"
        )
    layers: dict[str, nn.Module] = {}
    for name in order:
        module = _module(name, graph.nodes[name], dt)
        if module is not None:
            layers[name] = module
    inputs: dict[str, list[str]] = {}
    for src, dst in edges:
        inputs.setdefault(dst, []).append(src)
    shape = tuple(int(s) for s in np.asarray(graph.nodes[ins[0]].input_type["input"]).reshape(-1))
    key = {name: name.replace(".", "_") for name in order}
    return NIRNetwork(
        {key[n]: m for n, m in layers.items()},
        {key[d]: [key[s] for s in srcs] for d, srcs in inputs.items()},
        [key[n] for n in order],
        key[ins[0]],
        key[outs[0]],
        shape,
        steps,
    )
