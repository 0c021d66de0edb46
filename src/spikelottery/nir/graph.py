"""Walk a (dense) spiking model and write the NIR graph it computes, one step at a time.

The walk follows what the model's ``forward`` does for the containers it knows
(``nn.Sequential``, :class:`~spikelottery.multistep.MultiStep`, SpikingJelly's
``SeqToANNContainer``, the zoo's blocks, VGG and SpikingResNet) and maps each leaf to a NIR
node. It never guesses a custom ``forward``: an unknown container is refused by name.

Two rewrites keep the graph exact and readable by the common NIR simulators:

* BatchNorm (in eval mode) is folded into the conv or linear before it:
  ``W' = W * s``, ``b' = (b - mean) * s + beta`` with ``s = gamma / sqrt(var + eps)``.
* An average pool is written as NIR's ``SumPool2d`` and its ``1 / k`` folded into the next
  conv or linear (Norse reads ``SumPool2d`` only, snnTorch both); for a 2x2 pool the
  factor is a power of two, so the fold is exact in floating point. Where no conv or linear
  follows, the pool stays an ``AvgPool2d``.

Values flowing through the walk are sums: NIR adds every edge into a node, so a residual
add is two sets of edges into the next node, never a node of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from ..binary import BinaryActivation
from ..models import VGG, BasicBlock, ConvBNAct, LinearBNAct, Spikformer, SpikingResNet
from ..multistep import MultiStep, SeqBatchNorm1d, SeqBatchNorm2d
from ._package import nir_package
from .errors import NO_ATTENTION, NIRExportError
from .mapping import DEFAULT_DT, neuron_params, neuron_to_nir

__all__ = ["GraphSpec", "build_graph"]


@dataclass(frozen=True)
class GraphSpec:
    """How to write the graph: the importers' time step and the NIR kind of a leaky neuron."""

    dt: float = DEFAULT_DT
    neuron: str = "cubalif"


@dataclass(frozen=True)
class _Value:
    """What flows along an edge: the NIR nodes whose outputs sum to it and its per-sample shape.

    ``pool`` names a ``SumPool2d`` whose ``1 / scale`` the next weighted layer still owes.
    """

    sources: tuple[str, ...]
    shape: tuple[int, ...]
    pool: str | None = None
    scale: float = 1.0


class _Builder:
    def __init__(self, spec: GraphSpec) -> None:
        self.spec = spec
        self.nodes: dict[str, Any] = {}
        self.edges: list[tuple[str, str]] = []
        self.count = {"conv": 0, "affine": 0, "neuron": 0, "pool": 0}

    def name(self, path: str) -> str:
        base = path or "node"
        name, i = base, 1
        while name in self.nodes:
            i += 1
            name = f"{base}_{i}"
        return name

    def add(self, path: str, node: Any, value: _Value, shape: tuple[int, ...]) -> _Value:
        name = self.name(path)
        self.nodes[name] = node
        self.edges.extend((src, name) for src in value.sources)
        return _Value((name,), shape)

    def settle(self, value: _Value) -> _Value:
        """``value`` with a pending pool scale made real (the pool becomes an ``AvgPool2d``)."""
        nir = nir_package()

        if value.pool is None:
            return value
        pool = self.nodes[value.pool]
        self.nodes[value.pool] = nir.AvgPool2d(pool.kernel_size, pool.stride, pool.padding)
        return replace(value, pool=None, scale=1.0)


def _array(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float32).cpu().numpy().copy()


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _run_shape(module: nn.Module, shape: tuple[int, ...]) -> tuple[int, ...]:
    with torch.no_grad():
        return tuple(module(torch.zeros(1, *shape)).shape[1:])


def _ungrouped(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """A grouped conv's weight ``[out, in / groups, kh, kw]`` as the equal dense one
    ``[out, in, kh, kw]`` (zeros between the groups).

    NIR 1.0's ``Conv2d`` reads its input channels off ``weight.shape[1]``, so a graph with
    ``groups > 1`` fails its own type check on reading; the dense weight computes the same.
    """
    if groups == 1:
        return weight
    out, per_in = weight.shape[:2]
    per_out = out // groups
    dense = weight.new_zeros(out, per_in * groups, *weight.shape[2:])
    for g in range(groups):
        rows, cols = slice(g * per_out, (g + 1) * per_out), slice(g * per_in, (g + 1) * per_in)
        dense[rows, cols] = weight[rows]
    return dense


def _conv(b: _Builder, path: str, conv: nn.Conv2d, v: _Value) -> _Value:
    nir = nir_package()

    if conv.padding_mode != "zeros":
        raise NIRExportError(
            f"{path} ({type(conv).__name__}) pads with {conv.padding_mode!r}; NIR's Conv2d "
            "pads with zeros only"
        )
    if len(v.shape) != 3:
        raise NIRExportError(f"{path} (Conv2d) reads a tensor of shape {v.shape}, not (C, H, W)")
    padding = conv.padding
    if isinstance(padding, str):  # "same" / "valid": the numbers torch uses
        k, d = _pair(conv.kernel_size), _pair(conv.dilation)
        total = tuple(d[i] * (k[i] - 1) for i in (0, 1))
        if padding == "same" and any(t % 2 for t in total):
            raise NIRExportError(
                f"{path} uses padding='same' with an even kernel (uneven padding); NIR's "
                "Conv2d pads both sides equally"
            )
        padding = (0, 0) if padding == "valid" else (total[0] // 2, total[1] // 2)
    weight = _ungrouped(conv.weight.detach() * v.scale, conv.groups)
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros(conv.out_channels)
    with torch.no_grad():  # the functional op: a SpikingJelly layer.Conv2d wants [T, B, ...]
        probe = torch.zeros(1, *v.shape, dtype=weight.dtype)
        shape = tuple(
            nn.functional.conv2d(probe, weight, None, conv.stride, padding, conv.dilation).shape[1:]
        )
    node = nir.Conv2d(
        input_shape=(int(v.shape[1]), int(v.shape[2])),
        weight=_array(weight),
        stride=_pair(conv.stride),
        padding=_pair(padding),
        dilation=_pair(conv.dilation),
        groups=1,
        bias=_array(bias),
    )
    b.count["conv"] += 1
    return b.add(path, node, v, shape)


def _linear(b: _Builder, path: str, linear: nn.Linear, v: _Value) -> _Value:
    nir = nir_package()

    if len(v.shape) != 1:
        raise NIRExportError(
            f"{path} (Linear) reads a tensor of shape {v.shape}; NIR's Affine maps vectors: "
            "flatten first"
        )
    weight = linear.weight.detach() * v.scale
    bias = linear.bias.detach() if linear.bias is not None else torch.zeros(linear.out_features)
    b.count["affine"] += 1
    return b.add(
        path, nir.Affine(weight=_array(weight), bias=_array(bias)), v, (linear.out_features,)
    )


def _batchnorm(b: _Builder, path: str, bn: nn.modules.batchnorm._BatchNorm, v: _Value) -> _Value:
    """Fold ``bn`` (eval statistics) into the conv or linear that made ``v``."""
    nir = nir_package()

    node = b.nodes.get(v.sources[0]) if len(v.sources) == 1 else None
    used = any(src == v.sources[0] for src, _ in b.edges) if node is not None else True
    if not isinstance(node, (nir.Conv2d, nir.Affine)) or used:
        raise NIRExportError(
            f"{path} ({type(bn).__name__}) does not directly follow a conv or linear layer; NIR "
            "has no BatchNorm node, and only a BatchNorm right after a conv/linear can be folded in"
        )
    if bn.running_mean is None or bn.running_var is None:
        raise NIRExportError(
            f"{path} ({type(bn).__name__}) keeps no running statistics "
            "(track_running_stats=False): its output depends on the batch, which NIR cannot express"
        )
    scale = 1.0 / torch.sqrt(bn.running_var.detach().double() + bn.eps)
    shift = -bn.running_mean.detach().double() * scale
    if bn.weight is not None:
        scale = scale * bn.weight.detach().double()
        shift = shift * bn.weight.detach().double()
    if bn.bias is not None:
        shift = shift + bn.bias.detach().double()
    weight = torch.as_tensor(node.weight, dtype=torch.float64)
    bias = torch.as_tensor(node.bias, dtype=torch.float64)
    view = (-1,) + (1,) * (weight.dim() - 1)
    new_weight = _array(weight * scale.view(view))
    new_bias = _array(bias * scale + shift)
    if isinstance(node, nir.Conv2d):
        b.nodes[v.sources[0]] = nir.Conv2d(
            input_shape=node.input_shape,
            weight=new_weight,
            stride=node.stride,
            padding=node.padding,
            dilation=node.dilation,
            groups=node.groups,
            bias=new_bias,
        )
    else:
        b.nodes[v.sources[0]] = nir.Affine(weight=new_weight, bias=new_bias)
    return v


def _pool(b: _Builder, path: str, pool: nn.Module, v: _Value) -> _Value:
    nir = nir_package()

    v = b.settle(v)
    if len(v.shape) != 3:
        raise NIRExportError(f"{path} ({type(pool).__name__}) reads shape {v.shape}, not (C, H, W)")
    if isinstance(pool, nn.AdaptiveAvgPool2d):
        out = _pair(
            tuple(
                s if s is not None else v.shape[1 + i]
                for i, s in enumerate(_pair_any(pool.output_size))
            )
        )
        if v.shape[1] % out[0] or v.shape[2] % out[1]:
            raise NIRExportError(
                f"{path} (AdaptiveAvgPool2d) pools {v.shape[1:]} to {out}, which is not a fixed "
                "window; NIR's pools have one kernel: use an input size divisible by the output"
            )
        kernel = (v.shape[1] // out[0], v.shape[2] // out[1])
        stride, padding = kernel, (0, 0)
    else:
        assert isinstance(pool, nn.AvgPool2d)
        kernel, padding = _pair(pool.kernel_size), _pair(pool.padding)
        stride = _pair(pool.stride if pool.stride is not None else pool.kernel_size)
        if padding != (0, 0) or pool.ceil_mode or pool.divisor_override is not None:
            raise NIRExportError(
                f"{path} (AvgPool2d) has padding={padding}, ceil_mode={pool.ceil_mode}, "
                f"divisor_override={pool.divisor_override}; the NIR readers' pools take none of them"
            )
    shape = _run_shape(nn.AvgPool2d(kernel, stride, padding), v.shape)
    node = nir.SumPool2d(np.array(kernel), np.array(stride), np.array(padding))
    b.count["pool"] += 1
    out_v = b.add(path, node, v, shape)
    return replace(out_v, pool=out_v.sources[0], scale=1.0 / (kernel[0] * kernel[1]))


def _pair_any(v: Any) -> tuple[Any, Any]:
    return (v, v) if not isinstance(v, (tuple, list)) else (v[0], v[1])


def _flatten(b: _Builder, path: str, start: int, end: int, v: _Value) -> _Value:
    """A flatten over the sample dims ``start..end`` (NIR counts without the batch axis)."""
    nir = nir_package()

    rank = len(v.shape)
    start, end = start % rank, end % rank
    shape = (*v.shape[:start], int(np.prod(v.shape[start : end + 1])), *v.shape[end + 1 :])
    if shape == v.shape:
        return v
    node = nir.Flatten(input_type={"input": np.array(v.shape)}, start_dim=start, end_dim=end)
    out = b.add(path, node, v, shape)
    return replace(out, pool=v.pool, scale=v.scale)


def _fold_gain(b: _Builder, v: _Value, gain: float) -> bool:
    """Scale the conv or linear that alone made ``v`` by ``gain``; ``False`` if there is none."""
    nir = nir_package()

    node = b.nodes.get(v.sources[0]) if len(v.sources) == 1 else None
    if not isinstance(node, (nir.Conv2d, nir.Affine)) or any(s == v.sources[0] for s, _ in b.edges):
        return False
    weight = (node.weight.astype(np.float64) * gain).astype(np.float32)
    bias = (node.bias.astype(np.float64) * gain).astype(np.float32)
    if isinstance(node, nir.Conv2d):
        b.nodes[v.sources[0]] = nir.Conv2d(
            input_shape=node.input_shape,
            weight=weight,
            stride=node.stride,
            padding=node.padding,
            dilation=node.dilation,
            groups=node.groups,
            bias=bias,
        )
    else:
        b.nodes[v.sources[0]] = nir.Affine(weight=weight, bias=bias)
    return True


def _neuron(b: _Builder, path: str, module: nn.Module, v: _Value) -> _Value:
    params = neuron_params(module, path)
    assert params is not None
    v = b.settle(v)
    # An input gain (SpikingJelly's decay_input: gamma = 1 / tau) goes into the weights
    # before it where it can, so the neuron node is the plain w_in = 1 that every reader takes.
    if params.gamma != 1.0 and _fold_gain(b, v, params.gamma):
        params = replace(params, gamma=1.0)
    node = neuron_to_nir(params, v.shape, dt=b.spec.dt, node=b.spec.neuron)
    b.count["neuron"] += 1
    return b.add(path, node, v, v.shape)


def _join(path: str, *parts: str) -> str:
    return ".".join(p for p in (path, *parts) if p)


def _block(b: _Builder, path: str, block: BasicBlock, v: _Value) -> _Value:
    v = b.settle(v)
    main = _walk(
        b, _join(path, "conv2"), block.conv2, _walk(b, _join(path, "conv1"), block.conv1, v)
    )
    short = v if block.shortcut is None else _walk(b, _join(path, "shortcut"), block.shortcut, v)
    total = _Value(main.sources + short.sources, main.shape)
    return _walk(b, _join(path, "act"), block.act, total)


def _zoo(b: _Builder, path: str, model: nn.Module, v: _Value) -> _Value:
    if isinstance(model, VGG):
        v = _walk(b, _join(path, "features"), model.features, v)
    else:
        assert isinstance(model, SpikingResNet)
        v = _walk(b, _join(path, "stem"), model.stem, v)
        v = _walk(b, _join(path, "stages"), model.stages, v)
        v = _walk(b, _join(path, "pool"), model.pool, v)
    v = _flatten(b, _join(path, "flatten"), 0, -1, v)
    v = _walk(b, _join(path, "hidden"), model.hidden, v)
    return _walk(b, _join(path, "head"), model.head, v)


def _refuse(path: str, module: nn.Module) -> NIRExportError:
    where = path or "the model"
    kind = type(module).__name__
    if isinstance(module, Spikformer) or "Attention" in kind:
        return NIRExportError(f"{where} ({kind}): {NO_ATTENTION}")
    if isinstance(module, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool2d)):
        return NIRExportError(
            f"{where} ({kind}): NIR has no max pooling node; use average pooling ('A' in a "
            "VGG config) for a model meant for NIR"
        )
    if isinstance(module, BinaryActivation):
        return NIRExportError(
            f"{where} (BinaryActivation): a sign activation gives -1/+1, and NIR's only "
            "threshold node gives 0/1; export the spiking model (its spikes are already binary)"
        )
    if isinstance(module, (nn.ReLU, nn.GELU, nn.Sigmoid, nn.Tanh, nn.Softmax)):
        return NIRExportError(
            f"{where} ({kind}): an ANN activation has no NIR node (NIR describes spiking "
            "networks); export the spiking model"
        )
    return NIRExportError(
        f"{where} ({kind}) is not a layer export_nir knows, and its forward cannot be read "
        "safely: export_nir follows nn.Sequential, the zoo's VGG and SpikingResNet, "
        "conv/linear/BatchNorm/average pool/flatten layers and LIF/IF neurons; write the "
        "model as an nn.Sequential of those"
    )


def _refuse_spikformer(b: _Builder, path: str, module: nn.Module, v: _Value) -> _Value:
    raise _refuse(path, module)


def _sequence(b: _Builder, path: str, module: nn.Module, v: _Value) -> _Value:
    for name, child in module.named_children():
        v = _walk(b, _join(path, name), child, v)
    return v


def _handlers() -> list[tuple[tuple[type, ...], Callable[..., _Value]]]:
    handlers: list[tuple[tuple[type, ...], Callable[..., _Value]]] = [
        ((Spikformer,), _refuse_spikformer),
        ((VGG, SpikingResNet), _zoo),
        ((BasicBlock,), _block),
        (
            (ConvBNAct,),
            lambda b, p, m, v: _walk(
                b,
                _join(p, "act"),
                m.act,
                _walk(b, _join(p, "bn"), m.bn, _walk(b, _join(p, "conv"), m.conv, v)),
            ),
        ),
        (
            (LinearBNAct,),
            lambda b, p, m, v: _walk(
                b,
                _join(p, "act"),
                m.act,
                _walk(b, _join(p, "bn"), m.bn, _walk(b, _join(p, "linear"), m.linear, v)),
            ),
        ),
        ((nn.Sequential,), _sequence),
        ((MultiStep,), lambda b, p, m, v: _walk(b, _join(p, "module"), m.module, v)),
        ((nn.Conv2d,), _conv),
        ((nn.Linear,), _linear),
        ((nn.BatchNorm1d, nn.BatchNorm2d), _batchnorm),
        ((nn.AvgPool2d, nn.AdaptiveAvgPool2d), _pool),
        (
            (nn.Flatten,),
            lambda b, p, m, v: _flatten(
                b, p, m.start_dim - 1, m.end_dim - 1 if m.end_dim > 0 else m.end_dim, v
            ),
        ),
        ((nn.Identity, nn.Dropout), lambda b, p, m, v: v),
    ]
    try:
        from spikingjelly.activation_based import layer as sj_layer

        handlers.append(((sj_layer.SeqToANNContainer,), _sequence))
    except ImportError:  # pragma: no cover
        pass
    return handlers


def _exact_forwards() -> tuple[type, ...]:
    """The classes whose own ``forward`` only steps their PyTorch base over time."""
    ours = (SeqBatchNorm1d, SeqBatchNorm2d)
    try:
        from spikingjelly.activation_based import layer as sj_layer
    except ImportError:  # pragma: no cover
        return ours
    names = ("Conv2d", "BatchNorm1d", "BatchNorm2d", "AvgPool2d", "AdaptiveAvgPool2d", "Flatten")
    return (*ours, *(getattr(sj_layer, n) for n in names), sj_layer.SeqToANNContainer)


def _check_forward(path: str, module: nn.Module, kinds: tuple[type, ...]) -> None:
    """Refuse a subclass of a PyTorch layer that computes something else in its ``forward``
    (timm's ``Conv2dSame`` pads unevenly, ``StdConv2d`` and SpikingJelly's ``WSConv2d``
    standardise the weight): the node would be written from the attributes alone."""
    if not all(k.__module__.startswith(("torch.nn.", "spikingjelly.")) for k in kinds):
        return  # the zoo's own classes: their handlers follow their forward
    owner = next(k for k in type(module).__mro__ if "forward" in vars(k))
    if owner.__module__.startswith("torch.nn.") or owner in _exact_forwards():
        return
    raise NIRExportError(
        f"{path or 'the model'} ({type(module).__name__}) overrides the forward of "
        f"{type(module).__mro__[1].__name__} ({owner.__module__}.{owner.__qualname__}.forward), "
        "so its output cannot be read from its weights and settings: export_nir would write "
        "a different layer. Replace it with a plain PyTorch layer that computes the same "
        "(for a weight standardisation: an nn.Conv2d holding the standardised weight) first"
    )


def _walk(b: _Builder, path: str, module: nn.Module, v: _Value) -> _Value:
    if neuron_params(module, path or "the model") is not None:
        return _neuron(b, path, module, v)
    for kinds, handler in _handlers():
        if isinstance(module, kinds):
            _check_forward(path, module, kinds)
            if isinstance(module, nn.Flatten) and module.start_dim != 1:
                raise NIRExportError(
                    f"{path} (Flatten) starts at dim {module.start_dim}; a per-step flatten "
                    "must keep the batch axis (start_dim=1)"
                )
            return handler(b, path, module, v)
    raise _refuse(path, module)


def build_graph(
    model: nn.Module, sample_shape: tuple[int, ...], spec: GraphSpec
) -> tuple[Any, dict[str, int]]:
    """The NIR graph of one time step of ``model`` (dense, in eval mode) for one sample.

    Args:
        model: A dense model (no score masks; see :func:`~spikelottery.densify`).
        sample_shape: One sample's input shape at one step, e.g. ``(1, 8, 8)``.
        spec: The time step and the neuron node kind.

    Returns:
        ``(graph, counts)``: a ``nir.NIRGraph`` with nodes ``input`` and ``output``, and the
        number of conv, affine, neuron and pool nodes.

    Raises:
        NIRExportError: A module NIR cannot express (named).
    """
    nir = nir_package()

    b = _Builder(spec)
    b.nodes["input"] = nir.Input(input_type={"input": np.array(sample_shape)})
    v = _walk(b, "", model, _Value(("input",), tuple(sample_shape)))
    v = b.settle(v)
    b.nodes["output"] = nir.Output(output_type={"output": np.array(v.shape)})
    b.edges.extend((src, "output") for src in v.sources)
    return nir.NIRGraph(nodes=b.nodes, edges=b.edges, type_check=False), dict(b.count)
