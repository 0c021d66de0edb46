"""Putting a :class:`~spikelottery.patch.PatchSelector` into a model, and finding it again.

* :func:`plan_patch_selector` is a pure query: where patches would be pruned (the patch
  embedding, prefix tokens, layout), or an error saying why nowhere;
* :func:`attach_patch_selector` carries the plan out (``sparsify(model, pa, pb)`` calls
  it) without changing the ``state_dict``, and removes the selector again for ``pb = 0``;
* :func:`find_patch_selectors` lists the attached selectors.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

from torch import Tensor, nn

from .._validation import check_ratio
from ..errors import SpikeLotteryError
from .select import PatchSelector, check_options

__all__ = ["PatchPlan", "attach_patch_selector", "find_patch_selectors", "plan_patch_selector"]


def _spatial_reason(module: nn.Module) -> str | None:
    """Why ``module`` depends on neighbouring patches, or ``None`` if it is token-wise."""
    if isinstance(module, nn.modules.conv._ConvNd):
        ks, st = tuple(module.kernel_size), tuple(module.stride)
        if any(k != 1 for k in ks) or any(s != 1 for s in st):
            return f"{type(module).__name__} with kernel_size={ks}, stride={st}"
        return None
    pools = (
        nn.MaxPool1d,
        nn.MaxPool2d,
        nn.MaxPool3d,
        nn.AvgPool1d,
        nn.AvgPool2d,
        nn.AvgPool3d,
        nn.LPPool1d,
        nn.LPPool2d,
        nn.FractionalMaxPool2d,
        nn.FractionalMaxPool3d,
    )
    if isinstance(module, pools):
        return f"{type(module).__name__} pooling over neighbouring positions"
    adaptive = (
        nn.AdaptiveAvgPool1d,
        nn.AdaptiveAvgPool2d,
        nn.AdaptiveAvgPool3d,
        nn.AdaptiveMaxPool1d,
        nn.AdaptiveMaxPool2d,
        nn.AdaptiveMaxPool3d,
    )
    if isinstance(module, adaptive):
        size = module.output_size
        sizes = size if isinstance(size, tuple) else (size,)
        if any(s != 1 for s in sizes):
            return f"{type(module).__name__}(output_size={size}) pooling over regions"
        return None
    if isinstance(module, (nn.Upsample, nn.PixelShuffle, nn.PixelUnshuffle, nn.Fold, nn.Unfold)):
        return f"{type(module).__name__} rearranging the spatial grid"
    return None


def _spikformer_stem_type() -> type | None:
    # Only look if SpikingJelly is already imported: a model built from it implies so.
    if "spikingjelly" not in sys.modules:
        return None
    try:
        from spikingjelly.activation_based.model.spikformer import SpikformerPatchStem
    except Exception:  # an optional dependency of another version: just do not match it
        return None
    return SpikformerPatchStem


def _find_patch_embed(model: nn.Module, patch_embed: str | None) -> str:
    names = dict(model.named_modules())
    if patch_embed is not None:
        if not isinstance(patch_embed, str):
            raise TypeError(
                f"patch_embed must be a module's qualified name (str), got {patch_embed!r}"
            )
        if patch_embed not in names or patch_embed == "":
            close = [n for n in names if n and n.rsplit(".", 1)[-1] in ("patch_embed", "stem")]
            raise SpikeLotteryError(
                f"patch_embed={patch_embed!r} is not a submodule of {type(model).__name__}"
                + (f"; candidates: {close}" if close else "")
                + ". List the names with [n for n, _ in model.named_modules()]."
            )
        return patch_embed
    stem_type = _spikformer_stem_type()
    found = [
        name
        for name, module in names.items()
        if name
        and (
            name.rsplit(".", 1)[-1] == "patch_embed"
            or (stem_type is not None and isinstance(module, stem_type))
        )
    ]
    if not found:
        raise SpikeLotteryError(
            f"could not find the patch embedding of {type(model).__name__}: no submodule is "
            "named 'patch_embed' (nor is a SpikingJelly SpikformerPatchStem). Name the "
            "module whose output are the patch embeddings, e.g. "
            'sparsify(model, pa, pb, patch_embed="features.stem").'
        )
    if len(found) > 1:
        raise SpikeLotteryError(
            f"found several patch embeddings in {type(model).__name__}: {found}; choose one "
            f"with sparsify(model, pa, pb, patch_embed={found[0]!r})"
        )
    return found[0]


def _known_transformer(model: nn.Module) -> tuple[str, int] | None:
    """``(where, prefix tokens)`` for vision transformers whose layout is known.

    ``where`` is the module whose output is the token sequence WITH its prefix tokens and
    the position embedding added: timm's ``patch_drop`` (``[B, P + N, D]``, ``P =
    model.num_prefix_tokens``) and torchvision's ``encoder.dropout`` (``[B, 1 + N, D]``).
    Pruning there keeps the position embedding consistent with the kept tokens.
    """
    prefix = getattr(model, "num_prefix_tokens", None)
    if isinstance(prefix, int) and "patch_drop" in model._modules and hasattr(model, "pos_embed"):
        return "patch_drop", prefix
    encoder = model._modules.get("encoder")
    if (
        type(model).__module__.startswith("torchvision.models.vision_transformer")
        and encoder is not None
        and "dropout" in encoder._modules
        and isinstance(getattr(model, "class_token", None), Tensor)
    ):
        return "encoder.dropout", 1
    return None


def _grid_output(target: nn.Module) -> str | None:
    """Why ``target`` outputs a spatial grid (not tokens) that a selector cannot read, else None."""
    fmt = getattr(target, "output_fmt", None)
    if getattr(target, "flatten", True) is False and fmt is not None:
        layout = str(getattr(fmt, "value", fmt))
        return f"it outputs a {layout} grid (timm PatchEmbed with flatten=False)"
    for name, module in target.named_modules():
        dims = getattr(module, "dims", None)
        if type(module).__name__ == "Permute" and list(dims or []) == [0, 2, 3, 1]:
            where = f" ({name!r})" if name else ""
            return f"it permutes its output to channels-last [B, H, W, D]{where}"
    return None


def _conv_channels(target: nn.Module, is_spikformer_stem: bool) -> int | None:
    """The output channels of the last conv in a patch embedding (see PatchSelector.channels).

    The spikelottery zoo's and SpikingJelly's stems have known layouts: ``None`` for them.
    """
    if is_spikformer_stem or type(target).__module__.startswith("spikelottery.models"):
        return None
    layers = [m for m in target.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]
    if not layers or isinstance(layers[-1], nn.Linear):
        return None  # no conv, or a linear layer last: tokens, whatever the number of dims
    return int(layers[-1].out_channels)


def _attached_selectors(model: nn.Module) -> Iterator[tuple[str, nn.Module, PatchSelector]]:
    for name, module in model.named_modules():
        child = module._modules.get("patch_selector")
        if isinstance(child, PatchSelector) and child._attached_to is not None:
            yield name, module, child


def find_patch_selectors(model: nn.Module) -> list[tuple[str, PatchSelector]]:
    """The patch selectors that :func:`attach_patch_selector` put into ``model``.

    Args:
        model: Any model.

    Returns:
        ``(name, selector)`` pairs, where ``name`` is the qualified name of the module
        that owns the selector (the patch embedding); empty when none is attached. A
        selector with ``pb = 0`` is still listed.

    >>> from spikelottery.models import Spikformer
    >>> net = Spikformer(embed_dim=32, depth=1, num_heads=2, timesteps=2)
    >>> find_patch_selectors(net)
    []
    >>> _ = attach_patch_selector(net, 0.3)
    >>> [(name, sel.pb) for name, sel in find_patch_selectors(net)]
    [('patch_embed', 0.3)]
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    return [(name, selector) for name, _owner, selector in _attached_selectors(model)]


def _detach(owner: nn.Module, selector: PatchSelector) -> None:
    for handle in selector._handles:
        handle.remove()
    selector._handles.clear()
    selector._attached_to = None
    del owner._modules["patch_selector"]


def _runs_children_in_order(module: nn.Module) -> bool:
    # An nn.Sequential runs every child, so the selector child needs no hook there.
    return isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward


def _check_token_wise_spikformer(model: nn.Module, stem_name: str) -> None:
    """For SpikingJelly's Spikformer: everything after the stem must be token-wise."""
    for name, module in model.named_modules():
        if name == stem_name or name.startswith(stem_name + "."):
            continue
        reason = _spatial_reason(module)
        if reason is not None:
            raise SpikeLotteryError(
                f"{type(model).__name__} has layer {name!r} ({reason}) outside its patch stem "
                f"{stem_name!r}; patch pruning leaves the kept patches without an H x W grid, "
                "so only token-wise layers may follow the stem."
            )


@dataclass(frozen=True)
class PatchPlan:
    """Where and how :func:`attach_patch_selector` would prune patches in a model.

    Attributes:
        patch_embed: Qualified name of the module whose output is pruned.
        num_prefix_tokens: Leading tokens kept unconditionally.
        layout: The layout of that output (``"auto"`` picks by its number of dimensions).
        channels: Output channels of the patch embedding's last conv, which tells 4-D
            tokens from a 4-D feature map (see :class:`PatchSelector`); ``None`` if none.
    """

    patch_embed: str
    num_prefix_tokens: int
    layout: str
    channels: int | None = None


def plan_patch_selector(
    model: nn.Module,
    *,
    patch_embed: str | None = None,
    num_prefix_tokens: int | None = None,
    layout: str = "auto",
) -> PatchPlan:
    """Check, without changing ``model``, where patches would be pruned; raise if nowhere.

    A pure query: :func:`attach_patch_selector` uses it, and so does the training engine
    to fail before training when stage 2 could not prune patches.

    Raises:
        SpikeLotteryError: No (or more than one) patch embedding was found, its output is
            a spatial grid rather than tokens, spatial layers follow a SpikingJelly
            Spikformer stem, or the module already has a foreign ``patch_selector`` child.

    >>> from spikelottery.models import Spikformer
    >>> plan_patch_selector(Spikformer(embed_dim=32, depth=1, num_heads=2, timesteps=2))
    PatchPlan(patch_embed='patch_embed', num_prefix_tokens=0, layout='auto', channels=None)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    known = _known_transformer(model)
    if patch_embed is None and known is not None:
        patch_embed = known[0]
    elif known is not None and patch_embed == "patch_embed" != known[0]:
        raise SpikeLotteryError(
            f"{type(model).__name__} adds its prefix tokens and position embedding after "
            f"'patch_embed'; prune after them, where the selector keeps the position "
            f"embedding consistent: patch_embed={known[0]!r} (or leave patch_embed=None)"
        )
    if num_prefix_tokens is None:
        num_prefix_tokens = known[1] if known is not None and patch_embed == known[0] else 0
    name = _find_patch_embed(model, patch_embed)
    target = model.get_submodule(name)
    if (
        patch_embed is None
        and known is None
        and isinstance(getattr(model, "pos_embed", None), Tensor)
    ):
        raise SpikeLotteryError(
            f"{type(model).__name__} adds a position embedding (model.pos_embed) after "
            f"{name!r}; pruning there would leave it one per patch for fewer patches. Name the "
            "module whose output already carries it (and its class tokens, with "
            "num_prefix_tokens=...), e.g. sparsify(model, pa, pb, patch_embed='pos_drop')."
        )
    stem_type = _spikformer_stem_type()
    is_stem = stem_type is not None and isinstance(target, stem_type)
    if is_stem and layout == "auto":
        layout = "tbdhw"
    check_options(num_prefix_tokens, layout)
    grid = None if is_stem or layout != "auto" else _grid_output(target)
    if grid is not None:
        raise SpikeLotteryError(
            f"cannot prune patches after {name!r}: {grid}, and patch pruning needs tokens "
            "([B, N, D], [T, B, N, D]) or a multi-step feature map [T, B, D, H, W]. Name a "
            "module whose output is the token sequence with patch_embed=..., or declare the "
            "layout with attach_patch_selector(..., layout=...)."
        )
    if is_stem:
        _check_token_wise_spikformer(model, name)
    child = target._modules.get("patch_selector")
    if child is not None and not (isinstance(child, PatchSelector) and child._attached_to):
        raise SpikeLotteryError(
            f"{name!r} already has a child named 'patch_selector' that spikelottery did not "
            "attach; rename it or choose another patch_embed"
        )
    return PatchPlan(name, num_prefix_tokens, layout, _conv_channels(target, is_stem))


def attach_patch_selector(
    model: nn.Module,
    pb: float,
    *,
    patch_embed: str | None = None,
    num_prefix_tokens: int | None = None,
    layout: str = "auto",
) -> str | None:
    """Prune patches right after the patch embedding of ``model``, in place.

    The selector becomes a child ``patch_selector`` of the patch-embedding module (so
    ``print(model)`` shows it) and a forward hook applies it to that module's output; no
    ``state_dict`` key changes. Calling again updates ``pb``. The patch embedding is the
    submodule named ``patch_embed`` or SpikingJelly's ``SpikformerPatchStem``, unless
    named explicitly.

    ``pb = 0`` is the way to turn patch pruning off: it removes an attached selector and
    all its hooks, and does nothing on a model without one (it does not look for the
    patch embedding, so ``patch_embed`` is ignored and a model without one is fine).

    Its output layouts: ``[B, N, D]`` or ``[T, B, N, D]`` tokens (the position embedding
    already added, as in :mod:`spikelottery.models`) or a conv feature map ``[T, B, D, H,
    W]``, which becomes ``[T, B, D, 1, k]``. For timm and torchvision vision transformers
    the selector goes where the tokens carry their class (and other prefix) tokens and the
    position embedding (timm's ``patch_drop``, torchvision's ``encoder.dropout``), and the
    prefix tokens are never pruned. A patch embedding whose output is a spatial grid
    (channels-last ``[B, H, W, D]`` as in Swin, or a timm ``PatchEmbed(flatten=False)``) is
    refused here, not at the first forward. Every layer after the patch embedding must then be
    token-wise: a spatial layer (a 3x3 conv, pooling) that runs after the selector raises
    :class:`~spikelottery.SpikeLotteryError` naming it, and any other error raised
    downstream gets a note explaining that patches were removed.

    Args:
        model: The model, modified in place.
        pb: Fraction of patches REMOVED, in ``[0, 1)``.
        patch_embed: Qualified name of the patch-embedding module (e.g. ``"features.stem"``),
            or ``None`` to find it.
        num_prefix_tokens: Leading tokens never pruned (class, distillation, register
            tokens); ``None`` detects them (timm's ``model.num_prefix_tokens``, 1 for
            torchvision's ViT, else 0).
        layout: The patch embedding's output layout (see :func:`select_patches`);
            ``"auto"`` picks by the number of dimensions.

    Returns:
        The qualified name of the patch-embedding module that now carries the selector;
        ``None`` for ``pb = 0`` (no selector is attached after the call).

    Raises:
        SpikeLotteryError: ``pb > 0`` and no (or more than one) patch embedding was found,
            the patch embedding outputs a spatial grid rather than tokens, or the model is a
            SpikingJelly Spikformer with spatial layers after its stem.

    >>> import torch
    >>> from spikelottery.models import Spikformer
    >>> net = Spikformer(embed_dim=32, depth=1, num_heads=2, timesteps=2)
    >>> attach_patch_selector(net, 0.3)
    'patch_embed'
    >>> net(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """
    pb = check_ratio("pb", pb)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if num_prefix_tokens is not None:
        check_options(num_prefix_tokens, layout)
    existing = list(_attached_selectors(model))
    if pb == 0.0:
        for _, owner, selector in existing:
            _detach(owner, selector)
        return None
    plan = plan_patch_selector(
        model, patch_embed=patch_embed, num_prefix_tokens=num_prefix_tokens, layout=layout
    )
    name = plan.patch_embed
    for owner_name, _owner, selector in existing:
        if owner_name == name:
            selector.pb = pb  # a second call updates the ratio and the options
            selector.num_prefix_tokens = plan.num_prefix_tokens
            selector.layout = plan.layout
            selector.channels = plan.channels
            selector._resolved = None
            return name
    target = model.get_submodule(name)
    for _, owner, selector in existing:  # one selector per model
        _detach(owner, selector)

    selector = PatchSelector(
        pb, num_prefix_tokens=plan.num_prefix_tokens, layout=plan.layout, channels=plan.channels
    )
    selector._attached_to = name
    target.add_module("patch_selector", selector)
    handles = selector._handles
    if not _runs_children_in_order(target):
        handles.append(target.register_forward_hook(selector._after_patch_embed))
    handles.append(model.register_forward_pre_hook(selector._start_forward))
    handles.append(model.register_forward_hook(selector._end_forward, always_call=True))
    for other_name, module in model.named_modules():
        if other_name == name or other_name.startswith(name + ".") or module is model:
            continue
        reason = _spatial_reason(module)
        if reason is not None:
            hook = partial(selector._check_spatial, other_name, reason)
            handles.append(module.register_forward_pre_hook(hook))
    return name
