"""What a score-mask layer computes under PyTorch's program transforms (not public API).

``torch.func`` (``vmap``, ``grad``), ``torch.compile`` and ``torch.export`` see tensors
without storage or version counters: the layer then computes its effective weight with
:func:`functional_subnet_weight`, plain tensor operations that every transform can run.

``torch.fx.symbolic_trace`` (and torchvision's ``create_feature_extractor``) run a
module's forward with proxies. A score-mask layer then records two calls that stay in
the graph: :func:`traced_subnet_weight` computes the effective weight from the traced
module's own scores and frozen weight (so the traced module trains and follows score
changes like the original), and :func:`conv_steps` runs a convolution on any of the
input layouts the layer accepts (the dimension test happens when the graph runs).
Both are registered with ``torch.fx.wrap``, which patches the names in this module's
globals while tracing: callers must reach them through the functions below.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._layer_errors import input_error
from .masks import float_mask, mp_alpha, topk_mask_sorted

__all__ = [
    "conv_steps",
    "functional_subnet_weight",
    "fx_masked_read",
    "multistep_conv",
    "traced_subnet_weight",
]


def functional_subnet_weight(
    scores: Tensor, weight: Tensor, pa: float, mode: str, *, weight_grad: bool = True
) -> Tensor:
    """The effective weight as plain tensor operations, for transforms that trace the call.

    The same value as the cached path and the same gradients (``dL/ds = dL/dw_eff * W *
    sign(s)``; ``dL/dW = dL/dw_eff * M``, or ``* alpha * M``), written without a custom
    autograd function, so ``torch.func.vmap`` (ensembles, per-sample gradients),
    ``torch.func.grad``, ``torch.compile`` and ``torch.fx`` can run it. The mask uses the
    data-independent sort-based top-k (the library's tie rule).

    >>> s, w = torch.randn(4, 3), torch.randn(4, 3)
    >>> int((functional_subnet_weight(s, w, 0.5, "lt") != 0).sum())
    6
    """
    with torch.no_grad():
        mask = topk_mask_sorted(scores, pa)
        maskf = float_mask(mask, weight.dtype)
        if mode == "mp":
            alpha = mp_alpha(weight, maskf)
            # the cached path's products, out of place: sign(+0.0) = +1 as in binary_sign
            weff = torch.copysign(alpha.to(weight.dtype), weight + 0.0) * maskf
            wgrad = maskf * alpha if weight_grad else None
        else:
            weff, wgrad = weight * maskf, (maskf if weight_grad else None)
    # Straight-through: d(|s|)/ds = sign(s), scaled by W; the added terms are exactly zero.
    magnitude = scores.abs()
    out = weff + (magnitude - magnitude.detach()) * weight.detach()
    if wgrad is not None:
        out = out + (weight - weight.detach()) * wgrad
    return out


def traced_subnet_weight(scores: Tensor, weight: Tensor, pa: float, mode: str) -> Tensor:
    """The effective weight, as one call in a traced graph."""
    return functional_subnet_weight(scores, weight, pa, mode, weight_grad=weight.requires_grad)


def conv_steps(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    spatial: int,
    stride: Any,
    padding: Any,
    dilation: Any,
    groups: int,
    padding_mode: str,
    reversed_padding: Any,
) -> Tensor:
    """A 1-D or 2-D convolution of a single-step, unbatched or multi-step input."""
    if x.dim() == spatial + 3:  # multi-step [T, B, C, ...]
        out = conv_steps(
            x.flatten(0, 1),
            weight,
            bias,
            spatial,
            stride,
            padding,
            dilation,
            groups,
            padding_mode,
            reversed_padding,
        )
        return out.unflatten(0, x.shape[:2])
    conv = F.conv1d if spatial == 1 else F.conv2d
    if padding_mode != "zeros":
        x = F.pad(x, reversed_padding, mode=padding_mode)
        padding = 0
    return conv(x, weight, bias, stride, padding, dilation, groups)


torch.fx.wrap("traced_subnet_weight")
torch.fx.wrap("conv_steps")


def fx_masked_read(layer: Any, name: str) -> Tensor:
    """The effective weight of ``layer.weight`` while ``torch.fx`` traces ``layer``.

    The graph reads the frozen weight as ``<layer>.frozen_weight``: the traced module then
    copies the frozen parameter (reading ``<layer>.weight`` would copy the effective
    weight of the moment, which a later mask would mask again).
    """
    from .errors import SpikeLotteryError
    from .subnet import scores_name

    if name != "weight":
        raise fx_refusal(layer)
    getattr_ = nn.Module.__getattr__  # fx patches it to hand out parameter proxies
    scores: Any = getattr_(layer, scores_name(name))
    if not isinstance(scores, torch.fx.Proxy):
        raise SpikeLotteryError(
            f"torch.fx traces {type(layer).__name__} but its scores are not a graph input; "
            "trace the model that holds the layer"
        )
    tracer: Any = scores.tracer
    path = tracer.path_of_module(layer)
    target = f"{path}.frozen_weight" if path else "frozen_weight"
    weight = tracer.create_proxy("get_attr", target, (), {})
    return traced_subnet_weight(scores, weight, layer.pa, layer.mask_mode)  # type: ignore[arg-type]


def fx_refusal(layer: Any) -> Exception:
    """The error for ``torch.fx`` tracing into a layer whose dense forward it cannot trace."""
    from .errors import SpikeLotteryError

    kind = type(layer).__name__
    return SpikeLotteryError(
        f"torch.fx cannot trace into {kind} (its PyTorch forward branches on the input's "
        "shape, which fx does not allow once the layer is no longer a torch.nn leaf). Keep it "
        "a leaf: torchvision's create_feature_extractor(model, nodes, tracer_kwargs="
        f"{{'leaf_modules': [{kind}]}}), or a torch.fx.Tracer whose is_leaf_module returns "
        "True for it; the traced graph then calls the layer itself"
    )


def multistep_conv(layer: Any, x: Tensor, spatial: int) -> Tensor:
    """The forward of ``SubnetConv`` (``spatial=2``) and ``SubnetConv1d`` (``spatial=1``)."""
    if isinstance(x, torch.fx.Proxy):
        return conv_steps(
            x,
            layer.effective_weight(),
            layer.bias,
            spatial,
            layer.stride,
            layer.padding,
            layer.dilation,
            layer.groups,
            layer.padding_mode,
            layer._reversed_padding_repeated_twice,
        )
    if x.dim() == spatial + 3:  # multi-step [T, B, C, ...]
        return multistep_conv(layer, x.flatten(0, 1), spatial).unflatten(0, x.shape[:2])
    try:
        return layer._conv_forward(x, layer.effective_weight(), layer.bias)
    except RuntimeError as exc:
        raise input_error(layer, x, exc, "in_channels", -spatial - 1, layer._layouts) from None
