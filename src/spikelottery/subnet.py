"""The one mechanism by which spikelottery masks a weight: :class:`SubnetLayer`.

A score-mask layer is a PyTorch layer one or more of whose weight parameters are masked.
Each masked parameter (``weight`` of a conv, ``in_proj_weight`` of an attention,
``weight_ih_l0`` of an LSTM, ...) keeps its frozen random value under its own
``state_dict`` key and gets one score per entry (key ``scores`` for ``weight``,
``<name>_scores`` for any other name). Every read of the masked attribute returns the
effective weight ``W * M`` (``"lt"``, edge-popup) or ``alpha * sign(W) * M`` (``"mp"``,
multi-prize), ``M`` keeping the ``n - floor(pa * n)`` largest ``|scores|`` of that
parameter (edge-popup's per-layer rule applied per weight tensor), computed once per
change of its scores or its weight and cached: a spiking layer runs ``T`` times per step.

Which layer types are masked, and which of their parameters, is listed once, in
:data:`spikelottery.layers.LAYER_KINDS`.
"""

from __future__ import annotations

import copy
import functools
import math
from typing import Any

import torch
from torch import Tensor, nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing as _is_fx_tracing

from ._transforms import functional_subnet_weight, fx_masked_read
from ._validation import check_ratio, kept_count, ratio_for_count
from .errors import SpikeLotteryError
from .masks import (
    float_mask,
    init_weight_,
    layer_subnet_weight,
    mask_scores,
    mp_alpha,
    precompute_subnet,
    topk_mask,
    topk_mask_sorted,
)
from .native import native_subnet_weight
from .weight_reads import note_read

__all__ = [
    "MODES",
    "SubnetLayer",
    "check_mode",
    "scores_name",
]

MODES: tuple[str, ...] = ("lt", "mp")


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(
            f"mode must be one of {MODES} ('lt': W * mask, 'mp': alpha * sign(W) * mask), got {mode!r}"
        )
    return mode


def scores_name(name: str) -> str:
    """The ``state_dict`` key of the scores of the masked parameter ``name``.

    >>> scores_name("weight"), scores_name("in_proj_weight")
    ('scores', 'in_proj_weight_scores')
    """
    return "scores" if name == "weight" else f"{name}_scores"


@functools.lru_cache(maxsize=4096)
def _kept(n: int, pa: float) -> int:  # a Fraction product, asked by every layer every step
    return kept_count(n, pa)


class _Cache:
    """What one masked parameter keeps between calls (never saved, never copied)."""

    __slots__ = ("alpha", "hint", "mask", "mask_key", "pre", "pre_key", "pre_version")

    def __init__(self) -> None:
        self.mask_key: tuple[Any, ...] | None = None
        self.pre_key: tuple[Any, ...] | None = None
        self.mask: Tensor | None = None
        self.alpha: Tensor | None = None
        self.pre: tuple[Tensor, Tensor | None] | None = None
        self.pre_version: int | None = None
        self.hint: tuple[int, int] | None = None  # where the native selection looks first


class SubnetLayer(nn.Module):
    """Mixin holding the score-mask logic of every score-mask layer.

    Not used on its own: combined with a dense PyTorch layer (:class:`SubnetConv`,
    :class:`SubnetLinear`, and the classes :func:`~spikelottery.layers.subnet_class_for`
    makes for the other kinds). ``masked_names`` lists the masked parameters; the methods
    that take ``name`` default to the first of them (``weight`` for convs and linears).
    """

    bias: Tensor | None
    scores: nn.Parameter  # of the first masked parameter (all of them: scores_of)
    pa: float
    _mask_mode: str
    _masked: tuple[str, ...]
    _caches: dict[str, _Cache]
    _dense_class: type[nn.Module]
    _scope: Any  # a spikelottery.scope.GlobalScope that sets pa, or None
    _share_children = False  # True: from_dense shares the children (MHA's out_proj)

    def _init_subnet(
        self, pa: float, mode: str, init: str, names: tuple[str, ...] = ("weight",)
    ) -> None:
        self.pa = check_ratio("pa", pa)
        self._mask_mode = check_mode(mode)
        self.__dict__["_masked"] = tuple(names)
        for p in self._parameters.values():  # biases and other own parameters: frozen
            if p is not None:
                p.requires_grad_(False)
        for name in names:
            weight = self._parameters[name]
            assert weight is not None
            init_weight_(weight, init)
            scores = torch.empty_like(weight, requires_grad=True)
            nn.init.kaiming_uniform_(scores, a=math.sqrt(5))
            self._parameters[scores_name(name)] = nn.Parameter(scores)
        self._clear_cache()

    def _clear_cache(self) -> None:
        self.__dict__["_caches"] = {name: _Cache() for name in self.__dict__.get("_masked", ())}

    @property
    def mask_mode(self) -> str:
        """``"lt"`` (``W * M``) or ``"mp"`` (``alpha * sign(W) * M``); also :attr:`mode`
        except on recurrent layers, whose ``mode`` is PyTorch's (``"LSTM"``)."""
        return self._mask_mode

    @property
    def mode(self) -> str:
        """``"lt"`` or ``"mp"`` (see :attr:`mask_mode`)."""
        return self._mask_mode

    @mode.setter
    def mode(self, value: str) -> None:
        self._mask_mode = check_mode(value)

    @property
    def masked_names(self) -> tuple[str, ...]:
        """The names of the masked parameters, e.g. ``("weight",)`` or ``("in_proj_weight",)``."""
        return self._masked

    def scores_of(self, name: str | None = None) -> Tensor:
        """The scores of the masked parameter ``name`` (default: the first)."""
        return self._held(scores_name(name or self._masked[0]))

    def frozen_of(self, name: str | None = None) -> Tensor:
        """The frozen random value of the masked parameter ``name`` (default: the first)."""
        return self._held(name or self._masked[0])

    def _held(self, key: str) -> Tensor:
        # A DataParallel replica holds its tensors as plain attributes.
        found = self.__dict__["_parameters"].get(key)
        if found is None:
            found = self.__dict__.get(key, self.__dict__.get(f"_held_{key}"))
            if found is None:
                raise AttributeError(key)
        return found

    def _refresh(self, name: str, keep_mask: bool = False) -> _Cache:
        # Tensor._version counts in-place updates (optimizer steps, load_state_dict);
        # data_ptr catches .to(device) and `.data =` swaps. The effective weight depends on
        # the scores, the weight, the mode, inference mode (inference tensors cannot be saved
        # for a backward) and whether the weight trains (then the straight-through factor is
        # kept too). A search keeps only the effective weight: `mask()` recomputes the bool
        # mask on demand (kept until the scores change), never on the training path.
        c = self._caches[name]
        self._check_cache_untouched(name, c)  # before any recompute, which would hide the write
        self._sync_scope()
        s, w = self.scores_of(name), self.frozen_of(name)
        mask_key = (s._version, s.data_ptr(), s.device, self.pa)
        inference = torch.is_inference_mode_enabled()
        pre_key = (w._version, w.data_ptr(), self._mask_mode, inference, w.requires_grad)
        if mask_key == c.mask_key and pre_key == c.pre_key and c.pre is not None:
            if keep_mask and c.mask is None:
                c.mask = self._current_mask(name, c)
            return c
        with torch.no_grad():
            keep, mp = _kept(w.numel(), self.pa), self._mask_mode == "mp"
            try:
                fast = None  # the native kernels, for a frozen weight (the selection is cheap)
                if not w.requires_grad:
                    mode, hint = self._mask_mode, c.hint
                    fast = native_subnet_weight(s, w, keep, mode, with_mask=keep_mask, hint=hint)
                if fast is not None:
                    mask, alpha, c.pre, c.hint = (
                        fast.mask,
                        fast.alpha,
                        (fast.weight, None),
                        fast.hint,
                    )
                else:
                    # On the training path (no mask() asked for) the selection writes the
                    # float mask itself: one pass fewer than converting a bool mask.
                    mask = (
                        self._current_mask(name, c)
                        if mask_key == c.mask_key
                        else topk_mask(s, self.pa, dtype=torch.bool if keep_mask else w.dtype)
                    )
                    # "mp": one float mask for alpha and W * M (float x bool is PyTorch's slow
                    # mixed-dtype path); "lt": precompute_subnet builds W * M from the mask.
                    m = float_mask(mask, w.dtype) if mp else mask
                    alpha = mp_alpha(w, m, keep) if mp else None
                    c.pre = precompute_subnet(s, w, m, alpha)
            except ValueError as exc:  # NaN or inf scores
                raise SpikeLotteryError(f"{self._describe(name)}: {exc}") from None
        c.alpha = alpha
        c.mask = mask if keep_mask else None  # kept only for mask(), until the next change
        weff = c.pre[0]
        c.pre_version = None if weff.is_inference() else weff._version
        c.mask_key, c.pre_key = mask_key, pre_key
        return c

    def _describe(self, name: str) -> str:
        return f"{type(self).__name__}({self.extra_repr()}){'' if name == 'weight' else '.' + name}"

    def _sync_scope(self) -> None:  # a global threshold sets pa after any score change
        if self.__dict__.get("_scope") is not None:
            self._scope.sync()

    def _current_mask(self, name: str, c: _Cache) -> Tensor:
        """The mask for the scores of ``mask_key``, without a top-k where it is known."""
        if c.mask is not None:
            return c.mask
        wgrad = c.pre[1] if c.pre is not None else None
        if wgrad is not None and (c.alpha is None or bool(c.alpha > 0)):
            return wgrad != 0  # M, or alpha * M with alpha > 0: exactly the mask
        return topk_mask(self.scores_of(name), self.pa)

    def _check_cache_untouched(self, name: str, c: _Cache) -> None:
        """Refuse writes to the handed-out effective weight: they would be lost silently."""
        weff = c.pre[0] if c.pre is not None else None
        if weff is None or c.pre_version is None:
            return
        if weff._version != c.pre_version:
            what = (
                f"was modified in place (e.g. nn.init.*_(layer.{name}) or "
                f"layer.{name}.data.copy_(...))"
            )
        elif weff.requires_grad:
            what = f"was given requires_grad=True (layer.{name}.requires_grad_(True))"
        else:
            return
        self._clear_cache()  # the next read recomputes it correctly
        frozen = "frozen_weight" if name == "weight" else f"frozen_of({name!r})"
        raise SpikeLotteryError(
            f"the effective weight of {self._describe(name)} {what}. After sparsify, "
            f"`layer.{name}` is computed from the frozen random weight and the mask on every "
            "change, so this would be lost without a word. Use the frozen weight instead: "
            f"`layer.{frozen}.requires_grad_(True)` to fine-tune the kept weights, "
            f"`with torch.no_grad(): layer.{frozen}.copy_(w)` to write it, or "
            "load_state_dict."
        )

    def _tracing(self, name: str) -> bool:
        # torch.compile, torch.func, torch.fx and torch.export see tensors without version
        # counters or storage: compute the mask in the traced graph instead of caching it.
        if torch.compiler.is_compiling():
            return True
        try:
            self.scores_of(name).data_ptr()
            self.frozen_of(name).data_ptr()
        except RuntimeError:
            return True
        return False

    def __getstate__(self) -> dict[str, Any]:
        # Pickles and deep copies carry the parameters, not the derived cache (3 weight-sized
        # tensors); the copy recomputes it on first use.
        state = dict(super().__getstate__())
        state["_caches"] = {name: _Cache() for name in state.get("_masked", ())}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A layer pickled by spikelottery before the generic mechanism: one `weight`,
        # its mode under `mode`, its cache in attributes of its own.
        if "_masked" not in state:
            state["_masked"] = ("weight",)
            if "mode" in state and "_mask_mode" not in state:
                state["_mask_mode"] = state.pop("mode")
            for old in ("_mask_key", "_pre_key", "_mask", "_alpha", "_pre", "_pre_version"):
                state.pop(old, None)
        state["_caches"] = {name: _Cache() for name in state["_masked"]}
        super().__setstate__(state)

    # -- reads and writes of the masked attributes --------------------------------
    def _masked_read(self, name: str) -> Tensor:
        note_read(self)
        return self.effective_weight(name)

    @property  # type: ignore[override]
    def weight(self) -> Tensor:
        """The effective weight: what every reader of ``layer.weight`` gets after ``sparsify``.

        ``W * M`` (``"lt"``) or ``alpha * sign(W) * M`` (``"mp"``), differentiable to the
        scores, for every reader (own or subclass forward, a parent's functional op, fused
        inference paths). The frozen weight (key ``weight``) is :attr:`frozen_weight`.
        """
        params = self.__dict__["_parameters"]
        if "weight" not in self.__dict__.get("_masked", ()) or (
            "scores" not in params and "scores" not in self.__dict__
        ):
            # inside the dense class's __init__, before the scores exist; or a kind whose
            # masked parameters have other names
            if "weight" not in params:
                if "weight" in self.__dict__:
                    return self.__dict__["weight"]
                raise AttributeError("weight")
            return params["weight"]
        return self._masked_read("weight")

    @weight.setter
    def weight(self, value: Tensor) -> None:
        # Reached only through object.__setattr__, i.e. for a plain tensor that is not a
        # registered parameter: DataParallel's replicas hold their weights like that.
        self.__dict__["weight"] = value

    def __setattr__(self, name: str, value: Any) -> None:
        # `layer.weight = p` would silently replace the FROZEN weight, and reading it back
        # would give p * M (torch.nn.utils.fusion.fuse_conv_bn_eval does exactly this).
        if (
            name in self.__dict__.get("_masked", ())
            and scores_name(name) in self.__dict__.get("_parameters", {})
            and not self.__dict__.get("_loading", False)
        ):
            raise SpikeLotteryError(
                f"cannot assign `{name}` of {self._describe(name)}: after sparsify, "
                f"`layer.{name}` is the effective weight, computed from the frozen weight and "
                "the mask, so an assigned tensor would be masked again on the next read. "
                "Assign the frozen random weight with `layer.frozen_weight = "
                "nn.Parameter(w, requires_grad=False)` (or load_state_dict), or bake the ticket "
                "first (spikelottery.densify) before rewriting weights (e.g. to "
                "fuse BatchNorm with torch.ao.quantization.fuse_modules)."
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
        """The frozen random weight ``W`` of the first masked parameter (key ``weight``).

        Write it (under ``torch.no_grad()``) to change the random weight; the cached mask
        products follow automatically. Set ``frozen_weight.requires_grad_(True)`` to
        fine-tune the kept weights of a found ticket. Layers with several masked
        parameters: :meth:`frozen_of`.
        """
        return self.frozen_of()

    @frozen_weight.setter
    def frozen_weight(self, value: nn.Parameter) -> None:
        self.set_frozen(value)

    def set_frozen(self, value: nn.Parameter, name: str | None = None) -> None:
        """Replace the frozen random value of the masked parameter ``name`` (same shape)."""
        if not isinstance(value, nn.Parameter):
            raise TypeError(
                f"frozen_weight must be an nn.Parameter, got {type(value).__name__}; wrap it: "
                "nn.Parameter(w, requires_grad=False)"
            )
        name = name or self._masked[0]
        old = self.__dict__["_parameters"][name]
        if value.shape != old.shape:
            raise ValueError(
                f"the frozen {name} must keep the shape {tuple(old.shape)}, got "
                f"{tuple(value.shape)}"
            )
        self.__dict__["_parameters"][name] = value
        self._clear_cache()

    def set_pa(self, pa: float) -> None:
        """Change the fraction of weights removed; the mask follows on the next call."""
        self.pa = check_ratio("pa", pa)

    def set_mask(self, mask: Tensor, name: str | None = None) -> None:
        """Fix the mask: scores 1 on ``mask``, 0 elsewhere, and a ``pa`` that keeps its count.

        Freeze the scores to keep it while the kept weights train (magnitude pruning).
        A layer with several masked tensors has one ``pa``: set it first
        (:meth:`set_pa`), then each mask with the count it gives.

        >>> from spikelottery import SubnetLinear
        >>> fc = SubnetLinear(3, 1, pa=0.5)
        >>> fc.set_mask(torch.tensor([[True, False, True]]))
        >>> fc.mask().tolist(), fc.kept
        ([[True, False, True]], 2)
        """
        name = name or self._masked[0]
        scores = self.scores_of(name)
        if mask.shape != scores.shape or mask.dtype != torch.bool:
            what = f"{mask.dtype} {tuple(mask.shape)}"
            raise ValueError(f"set_mask needs a bool mask like the scores, got {what}")
        pa = ratio_for_count(mask.numel(), int(mask.sum()))
        if len(self._masked) > 1 and int(mask.sum()) != self.kept_of(name):
            raise ValueError(
                f"set_mask({name!r}): {self._describe(name)} has one pa={self.pa:g} for "
                f"{', '.join(self._masked)}, which keeps {self.kept_of(name)} of {mask.numel()} "
                f"here, not {int(mask.sum())}: call set_pa first"
            )
        pa = pa if len(self._masked) == 1 else self.pa
        with torch.no_grad():
            scores.copy_(mask_scores(mask, scores.dtype))
        self.pa = pa

    def set_mode(self, mode: str) -> None:
        """Switch between ``"lt"`` (``W * M``) and ``"mp"`` (``alpha * sign(W) * M``)."""
        self._mask_mode = check_mode(mode)

    def invalidate(self) -> None:
        """Forget the cached mask, alpha and effective weight.

        Needed only after writing the scores or the weight through ``.data`` (which
        bypasses the version counter that normally triggers the recomputation); optimizer
        steps, in-place ops under ``torch.no_grad()``, ``load_state_dict`` and ``.to()``
        are all detected automatically.
        """
        self._clear_cache()

    def mask(self, name: str | None = None) -> Tensor:
        """Boolean mask of the kept entries of ``name`` (default: the first), a fresh copy."""
        name = name or self._masked[0]
        if self._tracing(name):
            return topk_mask_sorted(self.scores_of(name), self.pa)
        c = self._refresh(name, keep_mask=True)
        assert c.mask is not None
        return c.mask.clone()  # the cache stays the layer's own: a write cannot leak back

    def alpha(self, name: str | None = None) -> Tensor | None:
        """The gain ``sum(|W| * M) / sum(M)`` of ``name`` in mode ``"mp"``, else ``None``."""
        name = name or self._masked[0]
        if self._tracing(name):
            if self._mask_mode != "mp":
                return None
            return mp_alpha(self.frozen_of(name), self.mask(name))
        return self._refresh(name).alpha

    def effective_weight(self, name: str | None = None) -> Tensor:
        """``W * M`` (``"lt"``) or ``alpha * sign(W) * M`` (``"mp"``), differentiable to ``scores``.

        The same tensor as :attr:`weight` (or the other masked attribute ``name``). It is
        (a view of) a cache that is recomputed once per change of the scores or the frozen
        weight, so changing it is an error: an in-place write with gradients on is refused
        by PyTorch at once; an in-place write under ``torch.no_grad()``, or
        ``requires_grad_(True)`` on it, makes the next read raise
        :class:`~spikelottery.SpikeLotteryError`. Use :attr:`frozen_weight` instead.
        """
        name = name or self._masked[0]
        if _is_fx_tracing():
            # torch.fx: the scores and the weight as graph inputs, the weight computed in the
            # graph, so that the traced module computes with its own (trainable) scores.
            return fx_masked_read(self, name)
        w, s = self.frozen_of(name), self.scores_of(name)
        if self._tracing(name):
            # torch.func / torch.compile: plain tensor ops (vmap has no rule for the cached
            # path's autograd function); the weight may be differentiated without requires_grad.
            return functional_subnet_weight(s, w, self.pa, self._mask_mode)
        c = self._refresh(name)
        assert c.pre is not None
        if not torch.is_grad_enabled() or not (s.requires_grad or w.requires_grad):
            # No graph to build: hand out the cache itself, so that a write to it or a
            # requires_grad_ on it is seen by the next read (and refused) instead of lost.
            return c.pre[0]
        return layer_subnet_weight(s, w, c.pre)

    def kept_of(self, name: str | None = None) -> int:
        """Number of entries of ``name`` kept: ``n - floor(pa * n)``."""
        self._sync_scope()
        return kept_count(self.frozen_of(name).numel(), self.pa)

    @property
    def kept(self) -> int:
        """Number of weights kept, over all masked parameters: ``n - floor(pa * n)`` each."""
        self._sync_scope()
        return sum(kept_count(self.frozen_of(n).numel(), self.pa) for n in self._masked)

    @property
    def masked_numel(self) -> int:
        """Number of masked weights, over all masked parameters."""
        return sum(self.frozen_of(n).numel() for n in self._masked)

    def extra_repr(self) -> str:
        base = super().extra_repr()
        sep = ", " if base else ""
        return f"{base}{sep}pa={self.pa:g}, mode={self._mask_mode!r}, kept={self.kept}/{self.masked_numel}"

    def to_dense(self) -> nn.Module:
        """A plain dense layer (the class this one was made from) holding the effective weights.

        Its ``state_dict`` has the dense layer's keys (``weight``, ``bias``, ...; an
        attention's masked ``out_proj`` is baked too) and loads strictly into the original.
        """
        dense_cls = self._dense_class
        dense = dense_cls.__new__(dense_cls)
        state = {k: (v.copy() if isinstance(v, dict) else v) for k, v in self.__dict__.items()}
        for k in ("_caches", "_masked", "pa", "_mask_mode", "_scope"):
            state.pop(k, None)
        dense.__dict__.update(state)
        for k, c in self._modules.items() if self._share_children else ():
            dense._modules[k] = c.to_dense() if isinstance(c, SubnetLayer) else copy.deepcopy(c)
        params = dense.__dict__["_parameters"]
        for name in self._masked:
            params.pop(scores_name(name), None)
            params[name] = nn.Parameter(self.effective_weight(name).detach().clone())
        for p_name, p in list(params.items()):
            if p is not None and p_name not in self._masked:
                params[p_name] = nn.Parameter(p.detach().clone())
        self._dense_done(dense)
        return dense

    def _dense_done(self, dense: nn.Module) -> None:  # hook: the dense layer's derived state
        pass

    def _adopted(self) -> None:  # hook: from_dense copied the dense layer's state in
        pass

    @classmethod
    def from_dense(
        cls,
        module: nn.Module,
        pa: float,
        mode: str = "mp",
        *,
        init: str = "kaiming_normal",
        share: bool = False,
    ) -> SubnetLayer:
        """Build a score-mask layer from a dense layer of any supported type (or a subclass).

        Args:
            module: The dense layer; a subclass (SpikingJelly's ``layer.Conv2d``) gives a
                score-mask subclass of *its* class, whose forward keeps working.
            pa: Fraction of weights REMOVED (of each masked parameter).
            mode: ``"lt"`` or ``"mp"``.
            init: How to (re)initialise the frozen weights; ``"keep"`` keeps ``module``'s.
            share: Reuse ``module``'s parameter tensors (and the children of a kind that
                has layers of its own, MHA's ``out_proj``) instead of copying them.

        >>> from spikelottery import SubnetConv
        >>> SubnetConv.from_dense(nn.Conv2d(3, 8, 3), pa=0.5).kept
        108
        >>> SubnetLayer.from_dense(nn.LSTM(4, 8), pa=0.5).kept
        192
        """
        from .layers import masked_names, subnet_class_for  # layers imports this module

        target = subnet_class_for(type(module))
        if not issubclass(target, cls):
            raise TypeError(f"{cls.__name__}.from_dense cannot convert a {type(module).__name__}")
        layer = target.__new__(target)
        keep = ("_modules",) if target._share_children and share else ()
        state = {
            k: (v.copy() if isinstance(v, dict) and k not in keep else v)
            for k, v in module.__dict__.items()
        }
        layer.__dict__.update(state)
        if not share:
            if target._share_children:  # a copy's out_proj is not the original's
                layer.__dict__["_modules"] = copy.deepcopy(module._modules)
            params = layer.__dict__["_parameters"]
            for name, p in list(params.items()):
                if p is not None:
                    params[name] = nn.Parameter(p.detach().clone(), requires_grad=p.requires_grad)
        layer._adopted()
        layer._init_subnet(pa, mode, init, masked_names(module))
        return layer
