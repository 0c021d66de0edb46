"""Score-mask layers: ``SubnetConv``, ``SubnetConv1d``, ``SubnetLinear`` and ``BinaryActivation``.

A subnet layer keeps its frozen random weight under the key ``weight`` and learns one
``scores`` entry per weight; its effective weight is ``W * M`` (``"lt"``, edge-popup) or
``alpha * sign(W) * M`` (``"mp"``, multi-prize), ``M`` keeping the ``n - floor(pa * n)``
largest ``|scores|``, computed once per change of the scores or the weight (a spiking
layer runs ``T`` times per step). The classes subclass the dense layers, so
``isinstance(layer, nn.Conv2d)`` (and SpikingJelly's ``layer.Conv2d``, see
:func:`subnet_class_for`) keeps working.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Iterator
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._layer_errors import input_error
from ._validation import check_ratio, kept_count, ratio_for_count
from .binary import BinaryActivation
from .errors import SpikeLotteryError
from .masks import (
    INITS,
    float_mask,
    init_weight_,
    mask_scores,
    mp_alpha,
    precompute_subnet,
    subnet_weight_precomputed,
    topk_mask,
    topk_mask_sorted,
)

__all__ = [
    "INITS",
    "MODES",
    "BinaryActivation",
    "SubnetConv",
    "SubnetConv1d",
    "SubnetLayer",
    "SubnetLinear",
    "check_mode",
    "init_weight_",
    "is_subnet",
    "record_weight_reads",
    "subnet_class_for",
]

Mode = Literal["lt", "mp"]
MODES: tuple[str, ...] = ("lt", "mp")
_CACHE_ATTRS = ("_mask_key", "_pre_key", "_mask", "_alpha", "_pre", "_pre_version")


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(
            f"mode must be one of {MODES} ('lt': W * mask, 'mp': alpha * sign(W) * mask), got {mode!r}"
        )
    return mode


# The ids of the score-mask layers whose `weight` was read, while record_weight_reads runs.
_READS: set[int] | None = None


@contextlib.contextmanager
def record_weight_reads() -> Iterator[set[int]]:
    """Collect ``id(layer)`` of every score-mask layer whose ``.weight`` is read meanwhile.

    :func:`~spikelottery.check_ticket` uses it to tell a layer that nobody used from one
    whose weight was read but bypassed on the way to the output.

    >>> layer = SubnetLinear(4, 2, pa=0.5)
    >>> with record_weight_reads() as reads:
    ...     _ = layer.weight
    >>> id(layer) in reads
    True
    """
    global _READS
    previous, _READS = _READS, set()
    try:
        yield _READS
    finally:
        _READS = previous


class SubnetLayer(nn.Module):
    """Mixin holding the score-mask logic shared by every subnet layer.

    Not used on its own: :class:`SubnetConv`, :class:`SubnetConv1d` and
    :class:`SubnetLinear` combine it with a dense PyTorch layer.
    """

    bias: Tensor | None
    scores: nn.Parameter
    pa: float
    mode: str
    _dense_class: type[nn.Module]
    _mask_key: tuple[Any, ...] | None
    _pre_key: tuple[Any, ...] | None
    _mask: Tensor | None
    _alpha: Tensor | None
    _pre: tuple[Tensor, Tensor | None] | None
    _scope: Any  # a spikelottery.scope.GlobalScope that sets pa, or None

    def _init_subnet(self, pa: float, mode: str, init: str) -> None:
        self.pa = check_ratio("pa", pa)
        self.mode = check_mode(mode)
        weight = self.frozen_weight
        init_weight_(weight, init)
        weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        scores = torch.empty_like(weight, requires_grad=True)
        nn.init.kaiming_uniform_(scores, a=math.sqrt(5))
        self.scores = nn.Parameter(scores)
        self._clear_cache()

    def _clear_cache(self) -> None:
        for name in _CACHE_ATTRS:
            setattr(self, name, None)

    def _refresh(self, keep_mask: bool = False) -> None:
        # Tensor._version counts in-place updates (optimizer steps, load_state_dict);
        # data_ptr catches .to(device) and `.data =` swaps. The effective weight depends on
        # the scores, the weight, the mode, inference mode (inference tensors cannot be saved
        # for a backward) and whether the weight trains (then the straight-through factor is
        # kept too). A search keeps only the effective weight: `mask()` recomputes the bool
        # mask on demand (kept until the scores change), never on the training path.
        self._check_cache_untouched()  # before any recompute, which would hide the write
        self._sync_scope()
        s, w = self.scores, self.frozen_weight
        mask_key = (s._version, s.data_ptr(), s.device, self.pa)
        inference = torch.is_inference_mode_enabled()
        pre_key = (w._version, w.data_ptr(), self.mode, inference, w.requires_grad)
        if mask_key == self._mask_key and pre_key == self._pre_key and self._pre is not None:
            if keep_mask and self._mask is None:
                self._mask = self._current_mask()
            return
        with torch.no_grad():
            if mask_key == self._mask_key:
                mask = self._current_mask()
            else:
                try:
                    mask = topk_mask(s, self.pa)
                except ValueError as exc:
                    raise SpikeLotteryError(
                        f"{type(self).__name__}({self.extra_repr()}): {exc}"
                    ) from None
            # "mp": one float mask for alpha and W * M (float x bool is PyTorch's slow
            # mixed-dtype path); "lt": precompute_subnet builds W * M in its own float mask.
            mp = self.mode == "mp"
            m = float_mask(mask, w.dtype) if mp else mask
            alpha = mp_alpha(w, m, self.kept) if mp else None
            self._pre = precompute_subnet(s, w, m, alpha)
        self._alpha = alpha
        self._mask = mask if keep_mask else None  # kept only for mask(), until the next change
        weff = self._pre[0]
        self._pre_version = None if weff.is_inference() else weff._version
        self._mask_key, self._pre_key = mask_key, pre_key

    def _sync_scope(self) -> None:  # a global threshold sets pa after any score change
        if self.__dict__.get("_scope") is not None:
            self._scope.sync()

    def _current_mask(self) -> Tensor:
        """The mask for the scores of ``_mask_key``, without a top-k where it is known."""
        if self._mask is not None:
            return self._mask
        wgrad = self._pre[1] if self._pre is not None else None
        if wgrad is not None and (self._alpha is None or bool(self._alpha > 0)):
            return wgrad != 0  # M, or alpha * M with alpha > 0: exactly the mask
        return topk_mask(self.scores, self.pa)

    def _check_cache_untouched(self) -> None:
        """Refuse writes to the handed-out effective weight: they would be lost silently."""
        weff = self._pre[0] if self._pre is not None else None
        if weff is None or self._pre_version is None:
            return
        if weff._version != self._pre_version:
            what = (
                "was modified in place (e.g. nn.init.*_(layer.weight) or "
                "layer.weight.data.copy_(...))"
            )
        elif weff.requires_grad:
            what = "was given requires_grad=True (layer.weight.requires_grad_(True))"
        else:
            return
        self._clear_cache()  # the next read recomputes it correctly
        raise SpikeLotteryError(
            f"the effective weight of {type(self).__name__}({self.extra_repr()}) {what}. "
            "After sparsify, `layer.weight` is computed from the frozen random weight and the "
            "mask on every change, so this would be lost without a word. Use the frozen "
            "weight instead: `layer.frozen_weight.requires_grad_(True)` to fine-tune the kept "
            "weights, `with torch.no_grad(): layer.frozen_weight.copy_(w)` to write it, or "
            "load_state_dict."
        )

    def _tracing(self) -> bool:
        # torch.compile, torch.func and torch.export see tensors without version counters
        # or storage: compute the mask in the traced graph instead of caching it.
        if torch.compiler.is_compiling():
            return True
        try:
            self.scores.data_ptr()
            self.frozen_weight.data_ptr()
        except RuntimeError:
            return True
        return False

    def __getstate__(self) -> dict[str, Any]:
        # Pickles and deep copies carry the parameters, not the derived cache (3 weight-sized
        # tensors); the copy recomputes it on first use.
        state = dict(super().__getstate__())
        for name in _CACHE_ATTRS:
            state[name] = None
        return state

    # -- public API ---------------------------------------------------------------
    @property  # type: ignore[override]
    def weight(self) -> Tensor:
        """The effective weight: what every reader of ``layer.weight`` gets after ``sparsify``.

        ``W * M`` (``"lt"``) or ``alpha * sign(W) * M`` (``"mp"``), differentiable to the
        scores: the layer's own forward, a subclass's forward, a parent that passes
        ``child.weight`` to a functional op and PyTorch's fused inference paths all read
        it here. The frozen random weight (``state_dict`` key ``weight``) is
        :attr:`frozen_weight`. An in-place write to the returned tensor is refused (see
        :meth:`effective_weight`).
        """
        params = self.__dict__["_parameters"]
        if "scores" not in params and "scores" not in self.__dict__:
            # inside the dense class's __init__, before the scores exist
            if "weight" not in params:
                raise AttributeError("weight")
            return params["weight"]
        if _READS is not None:
            _READS.add(id(self))
        return self.effective_weight()

    @weight.setter
    def weight(self, value: Tensor) -> None:
        # Reached only through object.__setattr__, i.e. for a plain tensor that is not a
        # registered parameter: DataParallel's replicas hold their weights like that.
        self.__dict__["weight"] = value

    def __setattr__(self, name: str, value: Any) -> None:
        # `layer.weight = p` would silently replace the FROZEN weight, and reading it back
        # would give p * M (torch.nn.utils.fusion.fuse_conv_bn_eval does exactly this).
        if (
            name == "weight"
            and "scores" in self.__dict__.get("_parameters", {})
            and not self.__dict__.get("_loading", False)
        ):
            raise SpikeLotteryError(
                f"cannot assign `weight` of {type(self).__name__}({self.extra_repr()}): after "
                "sparsify, `layer.weight` is the effective weight, computed from the frozen "
                "weight and the mask, so an assigned tensor would be masked again on the next "
                "read. Assign the frozen random weight with `layer.frozen_weight = "
                "nn.Parameter(w, requires_grad=False)`, or bake the ticket first "
                "(spikelottery.densify / export_dense) before rewriting weights (e.g. to fuse "
                "BatchNorm)."
            )
        if name == "frozen_weight":  # nn.Module.__setattr__ would register a new parameter
            object.__setattr__(self, name, value)
            return
        super().__setattr__(name, value)

    def _apply(self, fn: Any, recurse: bool = True) -> Any:
        # .to() / .half() keep the version counter and may reuse the address: forget the cache.
        out = super()._apply(fn, recurse)
        self._clear_cache()
        return out

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        # load_state_dict(assign=True) assigns the stored (frozen) weight: that is allowed.
        self.__dict__["_loading"] = True
        try:
            super()._load_from_state_dict(*args, **kwargs)
        finally:
            del self.__dict__["_loading"]

    @property
    def frozen_weight(self) -> Tensor:
        """The frozen random weight ``W`` (the parameter stored under the key ``weight``).

        Write it (under ``torch.no_grad()``) to change the random weight; the cached mask
        products follow automatically. Set ``frozen_weight.requires_grad_(True)`` to
        fine-tune the kept weights of a found ticket.
        """
        weight = self.__dict__["_parameters"].get("weight")
        # A DataParallel replica holds its tensors as plain attributes.
        return weight if weight is not None else self.__dict__["weight"]

    @frozen_weight.setter
    def frozen_weight(self, value: nn.Parameter) -> None:
        if not isinstance(value, nn.Parameter):
            raise TypeError(
                f"frozen_weight must be an nn.Parameter, got {type(value).__name__}; wrap it: "
                "nn.Parameter(w, requires_grad=False)"
            )
        old = self.__dict__["_parameters"]["weight"]
        if value.shape != old.shape:
            raise ValueError(
                f"frozen_weight must keep the shape {tuple(old.shape)}, got {tuple(value.shape)}"
            )
        self.__dict__["_parameters"]["weight"] = value
        self._clear_cache()

    def set_pa(self, pa: float) -> None:
        """Change the fraction of weights removed; the mask follows on the next call."""
        self.pa = check_ratio("pa", pa)

    def set_mask(self, mask: Tensor) -> None:
        """Fix the mask: scores 1 on ``mask``, 0 elsewhere, and a ``pa`` that keeps its count.

        Freeze the scores to keep it while the kept weights train (magnitude pruning).

        >>> fc = SubnetLinear(3, 1, pa=0.5)
        >>> fc.set_mask(torch.tensor([[True, False, True]]))
        >>> fc.mask().tolist(), fc.kept
        ([[True, False, True]], 2)
        """
        if mask.shape != self.scores.shape or mask.dtype != torch.bool:
            what = f"{mask.dtype} {tuple(mask.shape)}"
            raise ValueError(f"set_mask needs a bool mask like the scores, got {what}")
        with torch.no_grad():
            self.scores.copy_(mask_scores(mask, self.scores.dtype))
        self.pa = ratio_for_count(mask.numel(), int(mask.sum()))

    def set_mode(self, mode: str) -> None:
        """Switch between ``"lt"`` (``W * M``) and ``"mp"`` (``alpha * sign(W) * M``)."""
        self.mode = check_mode(mode)

    def invalidate(self) -> None:
        """Forget the cached mask, alpha and effective weight.

        Needed only after writing the scores or the weight through ``.data`` (which
        bypasses the version counter that normally triggers the recomputation); optimizer
        steps, in-place ops under ``torch.no_grad()``, ``load_state_dict`` and ``.to()``
        are all detected automatically.
        """
        self._clear_cache()

    def mask(self) -> Tensor:
        """Boolean mask of the kept weights (exactly :attr:`kept` of them), a fresh copy."""
        if self._tracing():
            return topk_mask_sorted(self.scores, self.pa)
        self._refresh(keep_mask=True)
        assert self._mask is not None
        return self._mask.clone()  # the cache stays the layer's own: a write cannot leak back

    def alpha(self) -> Tensor | None:
        """The per-layer gain ``sum(|W| * M) / sum(M)`` in mode ``"mp"``, else ``None``."""
        if self._tracing():
            return mp_alpha(self.frozen_weight, self.mask()) if self.mode == "mp" else None
        self._refresh()
        return self._alpha

    def effective_weight(self) -> Tensor:
        """``W * M`` (``"lt"``) or ``alpha * sign(W) * M`` (``"mp"``), differentiable to ``scores``.

        The same tensor as :attr:`weight`. It is (a view of) a cache that is recomputed
        once per change of the scores or the frozen weight, so changing it is an error:
        an in-place write with gradients on is refused by PyTorch at once; an in-place
        write under ``torch.no_grad()``, or ``requires_grad_(True)`` on it, makes the next
        read raise :class:`~spikelottery.SpikeLotteryError`. Use :attr:`frozen_weight`
        instead.
        """
        w = self.frozen_weight
        if self._tracing():
            # Under torch.func the weight may be differentiated without requires_grad.
            pre = precompute_subnet(self.scores, w, self.mask(), self.alpha(), weight_grad=True)
            return subnet_weight_precomputed(self.scores, w, pre)
        self._refresh()
        assert self._pre is not None
        if not torch.is_grad_enabled() or not (self.scores.requires_grad or w.requires_grad):
            # No graph to build: hand out the cache itself, so that a write to it or a
            # requires_grad_ on it is seen by the next read (and refused) instead of lost.
            return self._pre[0]
        return subnet_weight_precomputed(self.scores, w, self._pre)

    @property
    def kept(self) -> int:
        """Number of weights kept: ``n - floor(pa * n)``."""
        self._sync_scope()
        return kept_count(self.frozen_weight.numel(), self.pa)

    def extra_repr(self) -> str:
        base = super().extra_repr()
        n = self.frozen_weight.numel()
        return f"{base}, pa={self.pa:g}, mode={self.mode!r}, kept={self.kept}/{n}"

    def to_dense(self) -> nn.Module:
        """A plain dense layer (the class this one was made from) holding the effective weight.

        Its ``state_dict`` has the dense layer's keys (``weight``, ``bias``) and loads with
        ``strict=True`` into the user's original architecture.
        """
        dense_cls = self._dense_class
        dense = dense_cls.__new__(dense_cls)
        state = {k: (v.copy() if isinstance(v, dict) else v) for k, v in self.__dict__.items()}
        for k in (*_CACHE_ATTRS, "pa", "mode", "_scope"):
            state.pop(k, None)
        dense.__dict__.update(state)
        params = dense.__dict__["_parameters"]
        params.pop("scores", None)
        params["weight"] = nn.Parameter(self.effective_weight().detach().clone())
        if self.bias is not None:
            params["bias"] = nn.Parameter(self.bias.detach().clone())
        return dense

    @classmethod
    def from_dense(
        cls,
        module: nn.Module,
        pa: float,
        mode: str = "lt",
        *,
        init: str = "kaiming_normal",
        share: bool = False,
    ) -> SubnetLayer:
        """Build a subnet layer from a dense ``nn.Conv*`` / ``nn.Linear`` (or a subclass).

        Args:
            module: The dense layer. Subclasses (e.g. SpikingJelly's multi-step
                ``layer.Conv2d``) give a subnet subclass of *their* class, so their
                forward (and ``step_mode``) keeps working.
            pa: Fraction of weights REMOVED.
            mode: ``"lt"`` or ``"mp"``.
            init: How to (re)initialise the frozen weight; ``"keep"`` keeps ``module``'s.
            share: Reuse ``module``'s parameter tensors instead of copying them (what
                :func:`~spikelottery.sparsify` does, in place).

        >>> SubnetConv.from_dense(nn.Conv2d(3, 8, 3), pa=0.5).kept
        108
        """
        target = subnet_class_for(type(module))
        if not issubclass(target, cls):
            raise TypeError(f"{cls.__name__}.from_dense cannot convert a {type(module).__name__}")
        layer = target.__new__(target)
        state = {k: (v.copy() if isinstance(v, dict) else v) for k, v in module.__dict__.items()}
        layer.__dict__.update(state)
        if not share:
            params = layer.__dict__["_parameters"]
            for name, p in list(params.items()):
                if p is not None:
                    params[name] = nn.Parameter(p.detach().clone(), requires_grad=p.requires_grad)
        layer._init_subnet(pa, mode, init)
        return layer


class SubnetConv(SubnetLayer, nn.Conv2d):
    """``nn.Conv2d`` whose weight is a sub-network of a frozen random weight.

    Accepts the arguments of :class:`torch.nn.Conv2d` (grouped and depthwise included)
    plus ``pa``, ``mode`` and ``init``. Input may be ``[B, C, H, W]`` or multi-step
    ``[T, B, C, H, W]``.

    >>> conv = SubnetConv(3, 16, 3, padding=1, pa=0.4, mode="mp")
    >>> conv(torch.randn(4, 2, 3, 8, 8)).shape  # [T, B, C, H, W]
    torch.Size([4, 2, 16, 8, 8])
    """

    _dense_class = nn.Conv2d

    def __init__(
        self,
        *args: Any,
        pa: float = 0.5,
        mode: str = "lt",
        init: str = "kaiming_normal",
        **kwargs: Any,
    ) -> None:
        nn.Conv2d.__init__(self, *args, **kwargs)
        self._init_subnet(pa, mode, init)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 5:  # multi-step [T, B, C, H, W]
            return self.forward(x.flatten(0, 1)).unflatten(0, x.shape[:2])
        try:
            return self._conv_forward(x, self.effective_weight(), self.bias)
        except RuntimeError as exc:
            raise input_error(
                self, x, exc, "in_channels", -3, "[B, C, H, W] or [T, B, C, H, W]"
            ) from None


class SubnetConv1d(SubnetLayer, nn.Conv1d):
    """``nn.Conv1d`` counterpart of :class:`SubnetConv` (token-wise 1x1 convs in transformers).

    Input ``[B, C, L]`` or multi-step ``[T, B, C, L]``.
    """

    _dense_class = nn.Conv1d

    def __init__(
        self,
        *args: Any,
        pa: float = 0.5,
        mode: str = "lt",
        init: str = "kaiming_normal",
        **kwargs: Any,
    ) -> None:
        nn.Conv1d.__init__(self, *args, **kwargs)
        self._init_subnet(pa, mode, init)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 4:  # multi-step [T, B, C, L]
            return self.forward(x.flatten(0, 1)).unflatten(0, x.shape[:2])
        try:
            return self._conv_forward(x, self.effective_weight(), self.bias)
        except RuntimeError as exc:
            raise input_error(
                self, x, exc, "in_channels", -2, "[B, C, L] or [T, B, C, L]"
            ) from None


class SubnetLinear(SubnetLayer, nn.Linear):  # type: ignore[misc]  # bias: Tensor | None in both
    """``nn.Linear`` whose weight is a sub-network of a frozen random weight.

    Works on any leading dimensions, so ``[T, B, N, D]`` needs no reshaping.

    >>> fc = SubnetLinear(64, 10, pa=0.4)
    >>> fc.kept, fc(torch.randn(4, 2, 64)).shape
    (384, torch.Size([4, 2, 10]))
    """

    _dense_class = nn.Linear

    def __init__(
        self,
        *args: Any,
        pa: float = 0.5,
        mode: str = "lt",
        init: str = "kaiming_normal",
        **kwargs: Any,
    ) -> None:
        nn.Linear.__init__(self, *args, **kwargs)
        self._init_subnet(pa, mode, init)

    def forward(self, x: Tensor) -> Tensor:
        try:
            return F.linear(x, self.effective_weight(), self.bias)
        except RuntimeError as exc:
            raise input_error(self, x, exc, "in_features", -1, "[..., in_features]") from None


_BASES: tuple[tuple[type[nn.Module], type[SubnetLayer]], ...] = (
    (nn.Conv2d, SubnetConv),
    (nn.Conv1d, SubnetConv1d),
    (nn.Linear, SubnetLinear),
)
_DYNAMIC: dict[type[nn.Module], type[SubnetLayer]] = {}


def subnet_class_for(dense_cls: type[nn.Module]) -> type[SubnetLayer]:
    """The subnet class that replaces layers of class ``dense_cls``.

    ``nn.Conv2d`` maps to :class:`SubnetConv`, ``nn.Linear`` to :class:`SubnetLinear`.
    A subclass ``C`` of those (SpikingJelly's ``layer.Conv2d``, a user's own conv) maps to a
    class deriving from both ``C`` and the subnet class, created once and cached: ``C``'s
    ``forward`` still runs and reaches our effective weight through ``super().forward``.

    Raises:
        TypeError: ``dense_cls`` is not a conv or linear layer.
    """
    if isinstance(dense_cls, type) and issubclass(dense_cls, SubnetLayer):
        return dense_cls
    for base, sub in _BASES:
        if dense_cls is base:
            return sub
    for base, sub in _BASES:
        if isinstance(dense_cls, type) and issubclass(dense_cls, base):
            cached = _DYNAMIC.get(dense_cls)
            if cached is None:
                name = f"Subnet{dense_cls.__name__}"
                qual = f"_Subnet_{dense_cls.__module__.replace('.', '_')}_{dense_cls.__qualname__.replace('.', '_')}"
                cached = type(
                    name, (dense_cls, sub), {"_dense_class": dense_cls, "__module__": __name__}
                )
                cached.__qualname__ = qual
                setattr(sys.modules[__name__], qual, cached)  # so pickle finds it in this process
                _DYNAMIC[dense_cls] = cached
            return cached
    raise TypeError(
        f"no subnet layer for {dense_cls!r}: spikelottery converts nn.Conv1d, nn.Conv2d, nn.Linear "
        "and their subclasses"
    )


def is_subnet(module: nn.Module) -> bool:
    """True if ``module`` is a score-mask layer."""
    return isinstance(module, SubnetLayer)
