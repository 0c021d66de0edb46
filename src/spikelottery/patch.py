"""Patch pruning (paper Algorithm 1, stage 2): keep the strongest patch embeddings.

Each patch (token) is ranked by the magnitude of its embedding: the L1 norm over
channels, summed over time steps so that one selection serves every time step, with the
position embedding added first when one is given. Per sample the top
``N - floor(pb * N)`` patches are kept, in their original order, and the rest are dropped,
so every layer after the patch embedding runs on fewer tokens.

* :func:`select_patches` is the pure function (tokens in, kept tokens and indices out);
* :class:`PatchSelector` is a thin module around it;
* :func:`attach_patch_selector` puts a selector after a model's patch embedding without
  changing its ``state_dict`` (``sparsify(model, pa, pb)`` calls it), and removes it
  again for ``pb = 0``; :func:`find_patch_selectors` lists the attached selectors.

Example:
    >>> tokens = torch.rand(4, 2, 64, 32)  # [T, B, N, D]
    >>> kept, idx = select_patches(tokens, 0.3)
    >>> kept.shape, idx.shape
    (torch.Size([4, 2, 45, 32]), torch.Size([2, 45]))
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from ._validation import check_ratio, kept_count
from .errors import SpikeLotteryError

__all__ = [
    "PatchPlan",
    "PatchSelector",
    "attach_patch_selector",
    "find_patch_selectors",
    "plan_patch_selector",
    "select_patches",
]

_LAYOUTS = ("auto", "bnd", "tbnd", "tbdhw")
_AUTO_LAYOUT = {3: "bnd", 4: "tbnd", 5: "tbdhw"}


def _check_options(num_prefix_tokens: int, layout: str) -> None:
    """Validate the options shared by :func:`select_patches` and :class:`PatchSelector`."""
    if layout not in _LAYOUTS:
        raise ValueError(f"layout must be one of {_LAYOUTS}, got layout={layout!r}")
    if isinstance(num_prefix_tokens, bool) or not isinstance(num_prefix_tokens, int):
        raise TypeError(f"num_prefix_tokens must be a non-negative int, got {num_prefix_tokens!r}")
    if num_prefix_tokens < 0:
        raise ValueError(
            "num_prefix_tokens must be a non-negative int, got "
            f"num_prefix_tokens={num_prefix_tokens}"
        )
    if num_prefix_tokens and layout == "tbdhw":
        raise ValueError("num_prefix_tokens applies to token layouts, not to layout='tbdhw'")


def _resolve_layout(x: Tensor, layout: str) -> str:
    """The concrete layout of ``x`` (``layout`` already validated by :func:`_check_options`)."""
    if layout == "auto":
        if x.ndim not in _AUTO_LAYOUT:
            raise ValueError(
                "patch selection expects tokens [B, N, D], [T, B, N, D] or a conv feature "
                f"map [T, B, D, H, W]; got shape {tuple(x.shape)}"
            )
        return _AUTO_LAYOUT[x.ndim]
    expected = {"bnd": 3, "tbnd": 4, "tbdhw": 5}[layout]
    if x.ndim != expected:
        raise ValueError(
            f"layout={layout!r} expects a {expected}-D tensor, got shape {tuple(x.shape)}"
        )
    return layout


def _token_view(x: Tensor, layout: str) -> Tensor:
    """Return ``x`` as ``[T, B, N, D]`` (a view where possible)."""
    if layout == "bnd":
        return x.unsqueeze(0)
    if layout == "tbnd":
        return x
    return x.flatten(3).transpose(2, 3)  # [T, B, D, H*W] -> [T, B, N, D]


def select_patches(
    x: Tensor,
    pb: float,
    *,
    pos_embed: Tensor | None = None,
    num_prefix_tokens: int = 0,
    layout: str = "auto",
) -> tuple[Tensor, Tensor]:
    """Keep the ``N - floor(pb * N)`` patches with the largest embeddings, per sample.

    A patch's score is ``|x + pos_embed|`` summed over channels and, for multi-step input,
    over time, so all time steps keep the same patches. Kept patches stay in their
    original order; among equal scores the earlier patches are kept. Prefix tokens (e.g.
    a class token) are always kept and are not counted in ``N``. Gradients flow to the
    kept entries only.

    Args:
        x: Patch embeddings in one of the layouts: ``"bnd"`` ``[B, N, D]``, ``"tbnd"``
            ``[T, B, N, D]`` or ``"tbdhw"`` (a conv feature map ``[T, B, D, H, W]`` whose
            ``H * W`` grid cells are the patches). ``"auto"`` picks by the number of
            dimensions (3, 4, 5).
        pb: Fraction of patches REMOVED, in ``[0, 1)``.
        pos_embed: Position embedding broadcastable to ``x``; it is added to ``x`` before
            ranking and the returned tokens include it.
        num_prefix_tokens: Leading tokens to keep unconditionally (token layouts only).
        layout: ``"auto"``, ``"bnd"``, ``"tbnd"`` or ``"tbdhw"``.

    Returns:
        ``(kept, indices)``. ``indices`` is ``[B, k]`` (int64, ascending) into the ``N``
        patches, prefix tokens excluded. ``kept`` has the layout of ``x`` with ``N``
        replaced by ``num_prefix_tokens + k``; for ``"tbdhw"`` it is ``[T, B, D, 1, k]``
        (the kept patches as a one-row grid, so models that flatten ``H * W`` into
        tokens keep working). When nothing is removed (``pb = 0``, or ``floor(pb * N) =
        0``) ``kept`` is ``x`` itself (plus ``pos_embed``) and ``indices`` is ``arange(N)``.

    >>> fmap = torch.rand(4, 2, 16, 8, 8)  # [T, B, D, H, W]
    >>> kept, idx = select_patches(fmap, 0.3)
    >>> kept.shape, idx.shape
    (torch.Size([4, 2, 16, 1, 45]), torch.Size([2, 45]))
    """
    pb = check_ratio("pb", pb)
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a tensor, got {type(x).__name__}")
    _check_options(num_prefix_tokens, layout)
    layout = _resolve_layout(x, layout)
    if num_prefix_tokens and layout == "tbdhw":  # "auto" resolved to a feature map
        raise ValueError("num_prefix_tokens applies to token layouts, not to layout='tbdhw'")
    if pos_embed is not None:
        try:
            x = x + pos_embed
        except RuntimeError:
            raise ValueError(
                f"pos_embed of shape {tuple(pos_embed.shape)} does not broadcast to x of shape "
                f"{tuple(x.shape)}"
            ) from None
    tokens = _token_view(x, layout)  # [T, B, P + N, D]
    t, b, total, d = tokens.shape
    n = total - num_prefix_tokens
    if num_prefix_tokens > total:
        raise ValueError(
            f"num_prefix_tokens={num_prefix_tokens} is out of range for {total} tokens"
        )
    k = kept_count(n, pb)
    if k == n:
        return x, torch.arange(n, device=x.device).expand(b, n)

    patches = tokens[:, :, num_prefix_tokens:]
    with torch.no_grad():  # the ranking is a choice, not a differentiable function
        scores = patches.abs().sum(dim=(0, 3))  # [B, N]: L1 over D, summed over T
        # A stable sort, not topk: ties (e.g. all-zero spike tokens) keep the earliest
        # patches on every device and backend.
        order = scores.sort(dim=1, descending=True, stable=True).indices
        indices = order[:, :k].sort(dim=1).values
    kept = patches.gather(2, indices.view(1, b, k, 1).expand(t, b, k, d))
    if num_prefix_tokens:
        kept = torch.cat([tokens[:, :, :num_prefix_tokens], kept], dim=2)
    if layout == "bnd":
        kept = kept.squeeze(0)
    elif layout == "tbdhw":
        kept = kept.transpose(2, 3).unsqueeze(3)  # [T, B, D, 1, P + k]
    return kept, indices


class PatchSelector(nn.Module):
    """Module form of :func:`select_patches`; returns the kept tokens.

    It prunes in training and in evaluation alike (the point is cheaper inference).
    The indices of the last call are kept in :attr:`last_indices` (``[B, k]``).

    Args:
        pb: Fraction of patches REMOVED, in ``[0, 1)``; can be changed later.
        num_prefix_tokens: Leading tokens kept unconditionally (e.g. a class token).
        layout: ``"auto"``, ``"bnd"``, ``"tbnd"`` or ``"tbdhw"`` (see :func:`select_patches`).
        return_indices: Return ``(kept, indices)`` instead of ``kept``.

    Example:
        >>> sel = PatchSelector(0.3)
        >>> sel(torch.rand(4, 2, 64, 32)).shape
        torch.Size([4, 2, 45, 32])
        >>> sel.last_indices.shape
        torch.Size([2, 45])
    """

    def __init__(
        self,
        pb: float,
        *,
        num_prefix_tokens: int = 0,
        layout: str = "auto",
        return_indices: bool = False,
    ) -> None:
        super().__init__()
        _check_options(num_prefix_tokens, layout)
        if not isinstance(return_indices, bool):
            raise TypeError(f"return_indices must be a bool, got return_indices={return_indices!r}")
        self.pb = pb
        self.num_prefix_tokens = num_prefix_tokens
        self.layout = layout
        self.return_indices = return_indices
        self.last_indices: Tensor | None = None
        # Set by attach_patch_selector: whether tokens were dropped in the running forward.
        self._pruned_in_forward = False
        self._attached_to: str | None = None
        self._handles: list[RemovableHandle] = []

    @property
    def pb(self) -> float:
        """Fraction of patches removed, in ``[0, 1)``."""
        return self._pb

    @pb.setter
    def pb(self, value: float) -> None:
        self._pb = check_ratio("pb", value)

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        """Select patches of ``x``; see :func:`select_patches`."""
        kept, indices = select_patches(
            x, self._pb, num_prefix_tokens=self.num_prefix_tokens, layout=self.layout
        )
        self.last_indices = indices.detach()
        if kept is not x:  # select_patches returns x itself when nothing is removed
            self._pruned_in_forward = True
        return (kept, indices) if self.return_indices else kept

    def extra_repr(self) -> str:
        parts = [f"pb={self._pb:g}"]
        if self.num_prefix_tokens:
            parts.append(f"num_prefix_tokens={self.num_prefix_tokens}")
        if self.layout != "auto":
            parts.append(f"layout={self.layout!r}")
        return ", ".join(parts)

    # -- hooks installed by attach_patch_selector (bound methods, so deepcopy and pickle
    # -- of the model carry them over to the copied selector)

    def _after_patch_embed(self, module: nn.Module, args: Any, output: Tensor) -> Tensor:
        if not isinstance(output, Tensor):
            raise SpikeLotteryError(
                f"the patch embedding {self._attached_to!r} returned "
                f"{type(output).__name__}, not one tensor; name the module whose output is "
                "the patch embeddings: sparsify(model, pa, pb, patch_embed='...')"
            )
        return self(output)

    def _start_forward(self, module: nn.Module, args: Any) -> None:
        self._pruned_in_forward = False

    def _end_forward(self, module: nn.Module, args: Any, output: Any) -> None:
        # torch calls this hook with output None while an error propagates out of forward.
        exc = sys.exc_info()[1] if output is None else None
        if exc is not None and self._pruned_in_forward and not isinstance(exc, SpikeLotteryError):
            # torch silences errors raised in forward hooks, so explain by a note instead.
            note = (
                f"spikelottery: the patch selector after {self._attached_to!r} had just "
                f"removed {self._pb:g} of the patches (kept {self._kept_repr()}); the layers "
                "after the patch embedding must work on any number of tokens (token-wise "
                "layers, attention, pooling over all tokens). Remove patch pruning with "
                "sparsify(model, pa, pb=0.0) or name another module with patch_embed=..."
            )
            if note not in getattr(exc, "__notes__", ()):
                exc.add_note(note)
        self._pruned_in_forward = False

    def _check_spatial(self, name: str, reason: str, module: nn.Module, args: Any) -> None:
        if self._pruned_in_forward:
            raise SpikeLotteryError(
                f"layer {name!r} ({reason}) runs after the patch selector on "
                f"{self._attached_to!r}. Patch pruning keeps {self._kept_repr()} patches per "
                "sample, chosen per sample, so they no longer form an H x W grid and a "
                "spatial layer would mix patches that are not neighbours. Only token-wise "
                "layers (1x1 convs, linear layers, attention, global pooling) may follow the "
                "patch embedding: attach the selector after the last spatial layer with "
                "sparsify(model, pa, pb, patch_embed='<that module>') or use pb=0.0."
            )

    def _kept_repr(self) -> str:
        return "?" if self.last_indices is None else str(self.last_indices.shape[1])


# --------------------------------------------------------------------------- attaching


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
    """

    patch_embed: str
    num_prefix_tokens: int
    layout: str


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
    PatchPlan(patch_embed='patch_embed', num_prefix_tokens=0, layout='auto')
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
    stem_type = _spikformer_stem_type()
    is_stem = stem_type is not None and isinstance(target, stem_type)
    if is_stem and layout == "auto":
        layout = "tbdhw"
    _check_options(num_prefix_tokens, layout)
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
    return PatchPlan(name, num_prefix_tokens, layout)


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
        _check_options(num_prefix_tokens, layout)
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
            return name
    target = model.get_submodule(name)
    for _, owner, selector in existing:  # one selector per model
        _detach(owner, selector)

    selector = PatchSelector(pb, num_prefix_tokens=plan.num_prefix_tokens, layout=plan.layout)
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
