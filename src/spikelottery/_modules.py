"""How spikelottery finds and edits layers inside a user's network (not public API).

* :data:`CONVERTIBLE`: the dense layer types a score-mask layer can replace;
* :func:`walk`: every place a child module is registered, top-down (a module registered
  twice is yielded twice, so every reference can be rewritten);
* :func:`names_of`: every name a module is registered under;
* :func:`weight_holders`: who else holds a layer's weight tensor (tied weights);
* :func:`refusal`: why a layer cannot be made a score-mask layer safely, if it cannot;
* :func:`skip_reason`: why a layer has nothing to mask (left dense), if so;
* :func:`freeze_batchnorm_affine` and :func:`invalidate_spikingjelly_cache`: the two
  model-wide edits that go with a swap.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils import parametrize

from ._compat import spikingjelly_functional
from .layers import convertible_types, has_own_children, masked_names

__all__ = [
    "CONVERTIBLE",
    "Reference",
    "freeze_batchnorm_affine",
    "invalidate_spikingjelly_cache",
    "names_of",
    "refusal",
    "skip_reason",
    "walk",
    "weight_holders",
]

#: The dense layer types a score-mask layer can replace (read from ``layers.LAYER_KINDS``).
CONVERTIBLE: tuple[type[nn.Module], ...] = convertible_types()


@dataclass(frozen=True)
class Reference:
    """One place where ``module`` is registered: ``getattr(parent, attr) is module``."""

    parent: nn.Module
    attr: str
    name: str
    module: nn.Module


def walk(model: nn.Module) -> Iterator[Reference]:
    """Yield every registered child of ``model`` top-down, as :class:`Reference` objects.

    Unlike ``named_modules()`` it does not drop the second reference to a module that is
    registered twice (weight sharing by module reuse), so a caller can rewrite both. It
    never descends into a convertible layer (except one whose children are layers of their
    own, as ``nn.MultiheadAttention``'s ``out_proj``), nor twice into the same module.

    >>> lin = nn.Linear(2, 2)
    >>> [r.name for r in walk(nn.Sequential(lin, nn.ReLU(), lin))]
    ['0', '1', '2']
    """
    seen: set[int] = set()

    def visit(module: nn.Module, prefix: str) -> Iterator[Reference]:
        for attr, child in module._modules.items():
            if child is None:
                continue
            name = f"{prefix}.{attr}" if prefix else attr
            yield Reference(module, attr, name, child)
            if (isinstance(child, CONVERTIBLE) and not has_own_children(child)) or id(
                child
            ) in seen:
                continue
            seen.add(id(child))
            yield from visit(child, name)

    seen.add(id(model))
    yield from visit(model, "")


def names_of(model: nn.Module) -> dict[int, list[str]]:
    """``id(module) -> every qualified name it is registered under`` (``state_dict`` prefixes).

    >>> lin = nn.Linear(2, 2)
    >>> net = nn.Sequential(lin, lin)
    >>> names_of(net)[id(lin)]
    ['0', '1']
    """
    out: dict[int, list[str]] = {}
    for ref in walk(model):
        out.setdefault(id(ref.module), []).append(ref.name)
    return out


def weight_holders(model: nn.Module) -> dict[int, list[str]]:
    """``id(tensor) -> ["module.param", ...]`` for every parameter held in two or more places.

    Only shared tensors are listed; a module registered twice counts once.
    """
    holders: dict[int, list[str]] = {}
    for mod_name, module in model.named_modules():
        for p_name, p in module._parameters.items():
            if p is not None:
                key = f"{mod_name}.{p_name}" if mod_name else p_name
                holders.setdefault(id(p), []).append(key)
    return {k: v for k, v in holders.items() if len(v) > 1}


def refusal(module: nn.Module, name: str) -> str | None:
    """Why ``module`` (at ``name``) cannot become a score-mask layer faithfully, else ``None``.

    A layer whose weight is computed rather than stored (``torch.nn.utils.parametrize``,
    the hook-based ``weight_norm`` / ``spectral_norm``, ``torch.nn.utils.prune``) would
    keep computing from its own parameters: it is refused, never swapped half-way.
    """
    names = masked_names(module) or ("weight",)
    for attr in names:
        if parametrize.is_parametrized(module, attr):
            plist: Any = getattr(module, "parametrizations")[attr]  # noqa: B009
            kinds = ", ".join(type(p).__name__ for p in plist)
            return (
                f"layer {name!r} has a parametrization on its {attr} ({kinds}), so its forward "
                "computes the weight from other parameters and would ignore the mask. Remove it "
                f"first (torch.nn.utils.parametrize.remove_parametrizations(model.{name}, "
                f"{attr!r})) or exclude the layer with sparsify(..., filter=...)"
            )
    if parametrize.is_parametrized(module, "bias") or (
        "bias" not in module._parameters and isinstance(getattr(module, "bias", None), Tensor)
    ):
        return (
            f"layer {name!r} computes its bias (a parametrization or torch.nn.utils.prune on "
            "'bias'); remove that first (parametrize.remove_parametrizations, prune.remove) "
            "or exclude the layer with sparsify(..., filter=...)"
        )
    missing = [attr for attr in names if attr not in module._parameters]
    if missing:
        hooks = [type(h).__name__ for h in module._forward_pre_hooks.values()]
        how = f" (forward pre-hooks: {', '.join(hooks)})" if hooks else ""
        return (
            f"layer {name!r} has no {missing[0]} parameter of its own{how}: its weight is "
            "computed (e.g. the hook-based torch.nn.utils.weight_norm, spectral_norm or prune) "
            "and would ignore the mask. Remove that wrapper first (torch.nn.utils."
            "remove_weight_norm, remove_spectral_norm, prune.remove) or exclude the layer with "
            "sparsify(..., filter=...)"
        )
    if skip_reason(module) is not None:
        return None  # not a refusal: there is simply nothing to mask (see skip reasons)
    for klass in type(module).__mro__:
        if klass in CONVERTIBLE:
            break
        own = [attr for attr in names if attr in vars(klass)]
        if own:
            return (
                f"layer {name!r} is a {type(module).__name__}, whose class defines its own "
                f"{own[0]!r} attribute ({klass.__qualname__}.{own[0]}); spikelottery cannot be "
                "sure every read of it sees the mask. Exclude it with sparsify(..., filter=...)"
            )
    return None


def skip_reason(module: nn.Module) -> str | None:
    """Why a convertible ``module`` has nothing to mask (left dense), else ``None``."""
    if isinstance(module, nn.modules.lazy.LazyModuleMixin) and module.has_uninitialized_params():
        return "lazy layer not initialised yet: run one forward pass before sparsify"
    names = masked_names(module)
    weights = [module._parameters.get(attr) for attr in names]
    if not weights or not all(
        isinstance(w, torch.Tensor) and w.is_floating_point() for w in weights
    ):
        return "has no floating-point weight"
    return None


def invalidate_spikingjelly_cache(model: nn.Module) -> None:
    """Drop SpikingJelly's per-net cache of resettable modules (a swap changes them)."""
    sj_functional = spikingjelly_functional()
    invalidate = getattr(sj_functional, "invalidate_reset_cache", None)
    if invalidate is not None:
        invalidate(model)


def freeze_batchnorm_affine(model: nn.Module) -> None:
    """Fix every BatchNorm's affine parameters at weight 1, bias 0 and freeze them."""
    for module in model.modules():
        if isinstance(module, _BatchNorm) and module.affine:
            with torch.no_grad():
                module.weight.fill_(1.0)
                module.bias.zero_()
            module.weight.requires_grad_(False)
            module.bias.requires_grad_(False)
