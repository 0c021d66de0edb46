"""Patch selection itself: the pure :func:`select_patches` and the thin :class:`PatchSelector`.

Each patch (token) is ranked by the magnitude of its embedding: the L1 norm over
channels, summed over time steps so that one selection serves every time step, with the
position embedding added first when one is given. Per sample the top
``N - floor(pb * N)`` patches are kept, in their original order.

Example:
    >>> tokens = torch.rand(4, 2, 64, 32)  # [T, B, N, D]
    >>> kept, idx = select_patches(tokens, 0.3)
    >>> kept.shape, idx.shape
    (torch.Size([4, 2, 45, 32]), torch.Size([2, 45]))
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from .._validation import check_ratio, kept_count
from ..errors import SpikeLotteryError

__all__ = ["LAYOUTS", "PatchSelector", "check_options", "select_patches"]

LAYOUTS = ("auto", "bnd", "tbnd", "tbdhw", "grid")
_AUTO_LAYOUT = {3: "bnd", 4: "tbnd", 5: "tbdhw"}


def check_options(num_prefix_tokens: int, layout: str) -> None:
    """Validate the options shared by :func:`select_patches` and :class:`PatchSelector`."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got layout={layout!r}")
    if isinstance(num_prefix_tokens, bool) or not isinstance(num_prefix_tokens, int):
        raise TypeError(f"num_prefix_tokens must be a non-negative int, got {num_prefix_tokens!r}")
    if num_prefix_tokens < 0:
        raise ValueError(
            "num_prefix_tokens must be a non-negative int, got "
            f"num_prefix_tokens={num_prefix_tokens}"
        )
    if num_prefix_tokens and layout in ("tbdhw", "grid"):
        raise ValueError(f"num_prefix_tokens applies to token layouts, not to layout={layout!r}")


def _resolve_layout(x: Tensor, layout: str) -> str:
    """The concrete layout of ``x`` (``layout`` already validated by :func:`_check_options`)."""
    if layout == "auto":
        if x.ndim not in _AUTO_LAYOUT:
            raise ValueError(
                "patch selection expects tokens [B, N, D], [T, B, N, D] or a conv feature "
                f"map [T, B, D, H, W]; got shape {tuple(x.shape)}"
            )
        return _AUTO_LAYOUT[x.ndim]
    if layout == "grid":  # a conv feature map, with or without time steps
        if x.ndim not in (4, 5):
            raise ValueError(
                f"layout='grid' expects a conv feature map [B, D, H, W] or [T, B, D, H, W], "
                f"got shape {tuple(x.shape)}"
            )
        return "tbdhw" if x.ndim == 5 else "bdhw"
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
    if layout == "bdhw":
        x = x.unsqueeze(0)
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
        layout: ``"auto"``, ``"bnd"``, ``"tbnd"``, ``"tbdhw"`` or ``"grid"`` (a conv
            feature map ``[B, D, H, W]`` or ``[T, B, D, H, W]``, which becomes ``[B, D, 1,
            k]`` or ``[T, B, D, 1, k]``).

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
    check_options(num_prefix_tokens, layout)
    layout = _resolve_layout(x, layout)
    if num_prefix_tokens and layout in ("tbdhw", "bdhw"):  # resolved to a feature map
        raise ValueError("num_prefix_tokens applies to token layouts, not to a feature map")
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
    elif layout in ("tbdhw", "bdhw"):
        kept = kept.transpose(2, 3).unsqueeze(3)  # [T, B, D, 1, P + k]
        if layout == "bdhw":
            kept = kept.squeeze(0)  # [B, D, 1, k]
    return kept, indices


class PatchSelector(nn.Module):
    """Module form of :func:`select_patches`; returns the kept tokens.

    It prunes in training and in evaluation alike (the point is cheaper inference).
    The indices of the last call are kept in :attr:`last_indices` (``[B, k]``).

    Args:
        pb: Fraction of patches REMOVED, in ``[0, 1)``; can be changed later.
        num_prefix_tokens: Leading tokens kept unconditionally (e.g. a class token).
        layout: ``"auto"``, ``"bnd"``, ``"tbnd"``, ``"tbdhw"`` or ``"grid"`` (see
            :func:`select_patches`).
        return_indices: Return ``(kept, indices)`` instead of ``kept``.
        channels: The patch embedding's channel count ``D``, if known. With
            ``layout="auto"`` it tells a 4-D token tensor ``[T, B, N, D]`` (``D`` last) from
            a conv feature map ``[B, D, H, W]`` (``D`` second); a 4-D input where that
            cannot be told raises :class:`~spikelottery.SpikeLotteryError` instead of
            guessing. ``None`` reads every 4-D input as ``[T, B, N, D]``.

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
        channels: int | None = None,
    ) -> None:
        super().__init__()
        check_options(num_prefix_tokens, layout)
        if not isinstance(return_indices, bool):
            raise TypeError(f"return_indices must be a bool, got return_indices={return_indices!r}")
        self.pb = pb
        self.num_prefix_tokens = num_prefix_tokens
        self.layout = layout
        self.return_indices = return_indices
        self.channels = channels
        self._resolved: str | None = None  # the layout "auto" resolved to, once told
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
            x, self._pb, num_prefix_tokens=self.num_prefix_tokens, layout=self._layout_of(x)
        )
        self.last_indices = indices.detach()
        if kept is not x:  # select_patches returns x itself when nothing is removed
            self._pruned_in_forward = True
        return (kept, indices) if self.return_indices else kept

    def _layout_of(self, x: Tensor) -> str:
        if self.layout != "auto" or x.ndim != 4 or self.channels is None:
            return self.layout
        if self._resolved is not None:  # a model's layout does not change between batches
            return self._resolved
        last, second = x.shape[-1] == self.channels, x.shape[1] == self.channels
        if last != second:
            self._resolved = "tbnd" if last else "grid"
            return self._resolved
        where = f" after {self._attached_to!r}" if self._attached_to else ""
        raise SpikeLotteryError(
            f"the patch selector{where} got a 4-D tensor {tuple(x.shape)} and cannot tell "
            f"tokens [T, B, N, D] from a feature map [B, D, H, W] (D = {self.channels}); "
            "declare it: sparsify(..., pb) then attach_patch_selector(model, pb, "
            "layout='tbnd' or 'grid')"
        )

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
