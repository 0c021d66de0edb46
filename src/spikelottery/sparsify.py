"""Rewrite any network in place into a lottery-ticket search, and back.

:func:`sparsify` swaps every matching layer of a supported type (convolutions 1-3-D and
transposed, ``nn.Linear``, ``nn.Bilinear``, ``nn.MultiheadAttention``, ``nn.RNN`` /
``nn.LSTM`` / ``nn.GRU``, their subclasses included; the list is
:data:`spikelottery.layers.LAYER_KINDS`) for a score-mask layer, freezes the weights, and with ``pb > 0``
attaches a patch selector after the patch embedding. :func:`densify` bakes the found
ticket back into plain dense layers.

The swap follows torchao's pattern: walk the children top-down, replace with ``setattr``,
never descend into what was just replaced. What ``sparsify`` guarantees (see the docs,
"What sparsify guarantees"):

* every read of a swapped layer's ``weight`` sees the ticket (its own forward, a
  subclass's forward, a parent passing ``child.weight`` to a functional op, PyTorch's
  fused inference paths): :attr:`SubnetLayer.weight` is the effective weight;
* a module registered at several places is swapped once, everywhere;
* weights tied between swapped layers stay tied (one frozen weight, one set of scores);
  a layer whose weight is tied to anything else is skipped, with the reason;
* a layer whose weight is computed (parametrizations, ``weight_norm``, ``prune``) is
  refused with :class:`~spikelottery.SpikeLotteryError`, never swapped half-way;
* on any failure every swap is rolled back: new layers hold copies of the weights.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, overload

import torch
from torch import Tensor, nn

from ._modules import (
    CONVERTIBLE,
    freeze_batchnorm_affine,
    invalidate_spikingjelly_cache,
    walk,
)
from ._selection import (
    Filter,
    as_filter,
    check_layer_mode,
    check_tied_updates,
    resolve_overrides,
    select_layers,
    weights_left_dense,
)
from ._validation import check_ratio
from .activations import (
    ACTIVATION_TYPES,
    binarize_activations,
    binary_activation_names,
    functional_activations,
    restore_activations,
)
from .check import check_ticket
from .errors import SpikeLotteryError
from .layers import (
    INITS,
    LAYER_KINDS,
    SubnetLayer,
    check_mode,
    has_own_children,
    masked_names,
    subnet_class_for,
)
from .scope import SCOPES, attach_scope
from .sparsify_report import SparsifyReport
from .subnet import scores_name
from .summary import TicketSummary, kept_fraction, summary

__all__ = ["SparsifyReport", "TicketSummary", "densify", "kept_fraction", "sparsify", "summary"]

logger = logging.getLogger("spikelottery")

M = TypeVar("M", bound=nn.Module)

#: The values of ``sparsify``'s ``activations``: leave them, or make them binary.
ACTIVATION_CHOICES: tuple[str, ...] = ("keep", "binary")


def _selector_settings(model: nn.Module) -> list[tuple[str, float, int, str]]:
    """``(owner, pb, num_prefix_tokens, layout)`` of every attached patch selector."""
    from .patch import find_patch_selectors  # patch imports this module

    return [
        (name, sel.pb, sel.num_prefix_tokens, sel.layout)
        for name, sel in find_patch_selectors(model)
    ]


def _restore_selectors(model: nn.Module, settings: list[tuple[str, float, int, str]]) -> None:
    """Put the patch selectors back as :func:`_selector_settings` found them."""
    from .patch import attach_patch_selector  # patch imports this module

    attach_patch_selector(model, 0.0)
    for name, pb, prefix, layout in settings:
        if pb > 0:
            attach_patch_selector(
                model, pb, patch_embed=name, num_prefix_tokens=prefix, layout=layout
            )


def _supported() -> str:
    return "/".join(f"nn.{k.dense.__name__}" for k in LAYER_KINDS)


@overload
def sparsify(
    model: M,
    pa: float,
    pb: float | None = ...,
    *,
    mode: str = ...,
    filter: Filter = ...,
    layer_pa: Mapping[str, float] | None = ...,
    layer_mode: Mapping[str, str] | None = ...,
    init: str = ...,
    batchnorm: str = ...,
    patch_embed: str | None = ...,
    num_prefix_tokens: int | None = ...,
    patch_layout: str = ...,
    example_inputs: Any = ...,
    return_report: Literal[False] = ...,
    verbose: bool = ...,
    scope: str = ...,
    activations: str = ...,
) -> M: ...
@overload
def sparsify(
    model: M,
    pa: float,
    pb: float | None = ...,
    *,
    mode: str = ...,
    filter: Filter = ...,
    layer_pa: Mapping[str, float] | None = ...,
    layer_mode: Mapping[str, str] | None = ...,
    init: str = ...,
    batchnorm: str = ...,
    patch_embed: str | None = ...,
    num_prefix_tokens: int | None = ...,
    patch_layout: str = ...,
    example_inputs: Any = ...,
    return_report: Literal[True],
    verbose: bool = ...,
    scope: str = ...,
    activations: str = ...,
) -> tuple[M, SparsifyReport]: ...
def sparsify(
    model: M,
    pa: float,
    pb: float | None = None,
    *,
    mode: str = "mp",
    filter: Filter = None,
    layer_pa: Mapping[str, float] | None = None,
    layer_mode: Mapping[str, str] | None = None,
    init: str = "kaiming_normal",
    batchnorm: str = "keep",
    patch_embed: str | None = None,
    num_prefix_tokens: int | None = None,
    patch_layout: str = "auto",
    example_inputs: Any = None,
    return_report: bool = False,
    verbose: bool = False,
    scope: str = "layer",
    activations: str = "keep",
) -> M | tuple[M, SparsifyReport]:
    """Turn ``model`` into a lottery-ticket search, in place, and return it.

    Every layer of a supported type (``nn.Conv1d/2d/3d``, ``nn.ConvTranspose1d/2d/3d``,
    ``nn.Linear``, ``nn.Bilinear``, ``nn.MultiheadAttention``'s input projections,
    ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU``'s ``weight_ih`` and ``weight_hh``, and their
    subclasses, e.g. SpikingJelly's multi-step ``layer.Conv2d``; the list is
    :data:`spikelottery.layers.LAYER_KINDS`) that ``filter`` accepts becomes a score-mask
    layer with its weights frozen, each masked weight tensor with its own top-k; only the scores (and any parameter outside the swapped layers) train.
    After the call, every read of a swapped layer's ``.weight`` (by its own forward, a
    subclass's forward, a parent module, ``torch.func``, ``torch.compile``, PyTorch's fused
    inference paths) returns the effective weight; the frozen random weight is
    ``layer.frozen_weight``. Layers that are already score-mask layers are updated (``pa``,
    ``mode``), never wrapped twice. A module registered at several places is swapped once,
    everywhere. With ``pb > 0`` a :class:`~spikelottery.PatchSelector` is attached after the
    patch embedding.

    Args:
        model: Any ``nn.Module``: plain PyTorch, SpikingJelly, torchvision, timm, or the
            spikelottery zoo.
        pa: Fraction of weights REMOVED per layer, in ``[0, 1)``.
        pb: Fraction of patches REMOVED after the patch embedding, in ``[0, 1)``. ``None``
            (the default) leaves patch selection as it is; ``0`` removes an attached
            selector.
        mode: ``"mp"`` (``alpha * sign(W) * M``, the paper's multi-prize ticket; the
            default, as in :class:`~spikelottery.engine.TrainConfig`) or ``"lt"``
            (``W * M``, edge-popup's lottery ticket).
        filter: Which layers to convert: a regex searched in the qualified name
            (``"patch_embed"``), a module type or tuple of types, or a callable
            ``(module, qualified_name) -> bool``. ``None`` converts all.
        layer_pa: Per-layer overrides of ``pa``: ``{qualified name or regex: pa}``.
        layer_mode: Per-layer overrides of ``mode``: ``{qualified name or regex: mode}``.
        init: Frozen-weight initialisation: ``"kaiming_normal"`` (default),
            ``"signed_constant"``, or ``"keep"`` to keep the current (e.g. pretrained) values.
        batchnorm: ``"keep"``, or ``"nonaffine"`` to fix every BatchNorm's affine
            parameters at weight 1, bias 0 and freeze them (a score-only search, as in
            edge-popup); the keys stay, so :func:`densify` still loads strictly.
        patch_embed: Qualified name of the module after which patches are pruned (only with
            ``pb > 0``); found automatically for Spikformer-style, timm and torchvision
            vision transformers.
        num_prefix_tokens: Leading tokens never pruned (class, distillation, register
            tokens); detected for timm and torchvision vision transformers.
        patch_layout: The patch embedding's output layout (see
            :func:`~spikelottery.select_patches`); ``"auto"`` detects it.
        example_inputs: An input (or a tuple of forward arguments). If given, the ticket is
            verified on it with :func:`~spikelottery.check_ticket` (one forward and
            backward, one forward per swapped layer): a swapped layer whose scores get no
            gradient, or whose mask the output ignores, raises and rolls the swap back.
        return_report: Return ``(model, report)`` with the :class:`SparsifyReport`.
        verbose: Print the report (it is always logged at INFO).
        scope: ``"layer"`` (each layer keeps ``n - floor(pa * n)`` of its weights) or
            ``"global"`` (the converted layers together keep ``N - floor(pa * N)``: the
            top scores over all of them, each layer's ``|scores|`` divided by their
            standard deviation, and at least one weight per layer; see
            :mod:`spikelottery.scope`). The per-layer counts follow the scores;
            :func:`summary` shows them.
        activations: ``"keep"`` (the default: activations stay as they are) or ``"binary"``:
            each activation module (``nn.ReLU``, ``nn.GELU``, ...; see
            :func:`~spikelottery.binarize_activations`) that ``filter`` accepts becomes a
            :class:`~spikelottery.BinaryActivation`, as in the multi-prize tickets'
            binary-weight-and-activation networks (biprop's "1/1"). With ``mode="mp"`` the
            part being sparsified is then binary in its weights and its activations. The
            report lists each swap; activations called as functions (``F.relu``) stay real
            and, with ``example_inputs``, are named in the report and in a warning.
            :func:`densify` keeps the binary activations (the dense copy computes the
            ticket); :func:`~spikelottery.restore_activations` puts the originals back.

    Returns:
        ``model`` itself, or ``(model, report)`` with ``return_report=True``.

    Raises:
        ValueError: ``pa``, ``pb``, ``mode``, ``init``, ``batchnorm``, ``scope`` or
            ``activations`` is invalid, or ``layer_pa`` is given with ``scope="global"``.
        SpikeLotteryError: ``filter`` or a ``layer_pa`` key matches no layer; a matched
            layer computes its weight (parametrization, ``weight_norm``) and cannot be
            masked faithfully; no patch embedding is found for ``pb > 0``;
            ``activations="binary"`` finds no activation module that ``filter`` accepts; or
            the check on ``example_inputs`` fails.

    >>> net = sparsify(nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8, 2)), pa=0.4)
    >>> net[0].kept
    130
    """
    from .patch import attach_patch_selector  # patch.py imports this module

    pa = check_ratio("pa", pa)
    pb = None if pb is None else check_ratio("pb", pb)
    mode = check_mode(mode)
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    if scope == "global" and layer_pa:
        raise ValueError(
            "layer_pa sets each layer's ratio, and scope='global' derives them from the "
            "scores: pass one or the other"
        )
    if batchnorm not in ("keep", "nonaffine"):
        raise ValueError(f"batchnorm must be 'keep' or 'nonaffine', got {batchnorm!r}")
    if activations not in ACTIVATION_CHOICES:
        raise ValueError(
            f"activations must be one of {ACTIVATION_CHOICES}, got activations={activations!r}"
        )
    if (patch_embed is not None or num_prefix_tokens is not None or patch_layout != "auto") and (
        not pb
    ):
        raise ValueError(
            "patch_embed, num_prefix_tokens and patch_layout are only used with pb > 0; pass pb "
            "(the fraction of patches removed)"
        )
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if isinstance(model, CONVERTIBLE):
        raise TypeError(
            f"sparsify(model) rewrites the layers inside a model, and {type(model).__name__} is "
            "itself a layer: wrap it (nn.Sequential(layer)) or use SubnetConv/SubnetLinear."
            "from_dense(layer, pa) (SubnetLayer.from_dense for any supported type)"
        )
    accept = as_filter(filter)

    report = SparsifyReport(pa=pa, pb=pb, mode=mode, scope=scope)
    binarized: list[str] = []
    candidates, first_holder = select_layers(model, accept, report)
    if not candidates and (filter is not None or not pb):
        where = f"filter={filter!r}" if filter is not None else "the model"
        raise SpikeLotteryError(
            f"{where} matched no layer to sparsify ({_supported()})"
            + (f" (skipped: {report.skipped})" if report.skipped else "")
            + ". Check the qualified names with [n for n, _ in model.named_modules()]."
        )
    names = [c.name for c in candidates]
    overrides = resolve_overrides("layer_pa", layer_pa, names, check_ratio)
    modes = resolve_overrides("layer_mode", layer_mode, names, check_layer_mode)
    check_tied_updates(model, candidates, lambda n: (overrides.get(n, pa), modes.get(n, mode)))

    selectors_before = _selector_settings(model) if pb is not None else []
    done: list[tuple[nn.Module, str, nn.Module]] = []
    updated: list[tuple[SubnetLayer, float, str, Any]] = []
    members: list[SubnetLayer] = []  # the layers that the scope applies to
    made: dict[int, SubnetLayer] = {}  # id(original weight) -> first new layer holding it
    copies: dict[int, Tensor] = {}  # id(original bias, ...) -> its copy, shared by all holders
    try:
        for cand in candidates:
            layer_ratio = overrides.get(cand.name, pa)
            layer_mode_ = modes.get(cand.name, mode)
            child = cand.module
            if isinstance(child, SubnetLayer):
                updated.append((child, child.pa, child.mask_mode, child.__dict__.get("_scope")))
                child.set_pa(layer_ratio)
                child.set_mode(layer_mode_)
                members.append(child)
                report.updated.append(cand.name)
                continue
            masked = masked_names(child)
            original_weight = child._parameters[masked[0]]
            with torch.no_grad():
                subnet = subnet_class_for(type(child)).from_dense(
                    child, layer_ratio, layer_mode_, init=init
                )
            if has_own_children(child):  # its children (MHA's out_proj) are swapped in place
                subnet.__dict__["_modules"] = child._modules
            first = made.get(id(original_weight))
            if first is not None:  # tied to a layer swapped before: share weight and scores
                if (first.pa, first.mask_mode) != (layer_ratio, layer_mode_):
                    raise SpikeLotteryError(
                        f"layers {first_holder[id(original_weight)]!r} and "
                        f"{cand.name!r} share one weight but were given different settings "
                        f"(pa={first.pa:g}, mode={first.mask_mode!r} and pa={layer_ratio:g}, "
                        f"mode={layer_mode_!r}); give them the same pa and mode"
                    )
                for attr in masked:
                    subnet._parameters[attr] = first.frozen_of(attr)  # type: ignore[assignment]
                    key = scores_name(attr)
                    subnet._parameters[key] = first._parameters[key]
                subnet.invalidate()
                report.tied.setdefault(first_holder[id(original_weight)], []).append(cand.name)
            elif id(original_weight) in first_holder:
                made[id(original_weight)] = subnet
            for p_name, p in child._parameters.items():  # a tied bias stays tied
                if p is not None and p_name not in masked:
                    kept = copies.setdefault(id(p), subnet._parameters[p_name])  # type: ignore[arg-type]
                    subnet._parameters[p_name] = kept  # type: ignore[assignment]
            for ref in cand.refs:
                setattr(ref.parent, ref.attr, subnet)
                done.append((ref.parent, ref.attr, child))
            members.append(subnet)
            report.swapped.append(cand.name)
        attach_scope(members, scope, pa)
        if pb is not None:
            report.patch_embed = attach_patch_selector(
                model,
                pb,
                patch_embed=patch_embed,
                num_prefix_tokens=num_prefix_tokens,
                layout=patch_layout,
            )
        if activations == "binary":
            binarized = binarize_activations(model, filter)
            accept_ = as_filter(filter)
            already = [n for n in binary_activation_names(model) if n not in binarized]
            if not binarized and not any(accept_(model.get_submodule(n), n) for n in already):
                raise SpikeLotteryError(
                    f"activations='binary' found no activation module "
                    f"({', '.join(t.__name__ for t in ACTIVATION_TYPES[:4])}, ...) that "
                    f"filter={filter!r} accepts; spiking neurons are binary already, and an "
                    "activation called as a function (F.relu) cannot be replaced"
                )
            report.binarized = binarized
        invalidate_spikingjelly_cache(model)
        if example_inputs is not None:
            if binarized:
                args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
                report.functional_activations = functional_activations(model, *args)
            check_ticket(model, example_inputs).raise_if_failed()
    except BaseException:
        if binarized:
            restore_activations(model, binarized)
        if pb is not None:
            _restore_selectors(model, selectors_before)
        for parent, attr, old in reversed(done):
            setattr(parent, attr, old)
        for layer, old_pa, old_mode, old_scope in updated:
            layer.set_pa(old_pa)
            layer.set_mode(old_mode)
            layer._scope = old_scope
        invalidate_spikingjelly_cache(model)
        raise

    report.skipped.update(weights_left_dense(model, report))
    if report.functional_activations:
        warnings.warn(
            "activations='binary': these modules call an activation as a function, which "
            "stays real: "
            + "; ".join(
                f"{name or '<model>'} ({', '.join(f)})"
                for name, f in report.functional_activations.items()
            )
            + ". Use activation modules (nn.ReLU) there to binarise them",
            stacklevel=2,
        )
    if batchnorm == "nonaffine":
        freeze_batchnorm_affine(model)
    logger.info("%s", report)
    if verbose:
        print(report)
    return (model, report) if return_report else model


def densify(model: M, *, activations: str = "keep") -> M:
    """Bake the ticket into plain dense layers, in place, and return ``model``.

    Each score-mask layer becomes the class it was made from (``nn.Conv2d``, SpikingJelly's
    ``layer.Conv2d``, ...) holding ``W * M`` or ``alpha * sign(W) * M``; the ``scores`` are
    dropped. A layer registered at several places stays one layer, and layers that
    shared a weight share the baked one. The ``state_dict`` of the result loads with
    ``strict=True`` into the user's original, unmodified architecture. A patch selector,
    having no state, stays attached.

    >>> net = sparsify(nn.Sequential(nn.Linear(4, 3)), pa=0.5)
    >>> type(densify(net)[0]).__name__
    'Linear'
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"densify(model): model must be an nn.Module, got {type(model).__name__}")
    if isinstance(model, SubnetLayer):
        raise TypeError("densify(model) needs a container; call layer.to_dense() on a single layer")
    if activations not in ("keep", "restore"):
        raise ValueError(
            f"activations must be 'keep' or 'restore', got activations={activations!r}"
        )
    dense_of: dict[int, nn.Module] = {}
    baked: dict[tuple[int, int], nn.Parameter] = {}  # (frozen weight, scores) -> dense weight
    shared: dict[int, nn.Parameter] = {}  # id(bias, ...) -> the dense layers' shared copy
    for ref in list(walk(model)):
        child = ref.module
        if not isinstance(child, SubnetLayer):
            continue
        dense = dense_of.get(id(child))
        if dense is None:
            dense = child.to_dense()
            params = dense._parameters
            for attr in child.masked_names:
                key = (id(child.frozen_of(attr)), id(child.scores_of(attr)))
                params[attr] = baked.setdefault(key, params[attr])  # type: ignore[arg-type]
            for p_name, p in child._parameters.items():  # a tied bias stays tied
                if p is not None and p_name in params and p_name not in child.masked_names:
                    params[p_name] = shared.setdefault(id(p), params[p_name])  # type: ignore[arg-type]
            child._dense_done(dense)
            if child._share_children:  # its children (MHA's out_proj) are baked in place
                dense.__dict__["_modules"] = child._modules
            dense_of[id(child)] = dense
        setattr(ref.parent, ref.attr, dense)
    if activations == "restore":
        restore_activations(model)
    if dense_of:
        invalidate_spikingjelly_cache(model)
    return model
