"""Score-mask layers, and the one list of the layer types spikelottery masks.

:data:`LAYER_KINDS` lists every PyTorch layer type that :func:`~spikelottery.sparsify`
masks and which of its parameters: ``weight`` of the convolutions (1-3-D, transposed
too), ``nn.Linear`` and ``nn.Bilinear``; ``in_proj_weight`` (or ``q_proj_weight``,
``k_proj_weight``, ``v_proj_weight`` when the key and value sizes differ) of
``nn.MultiheadAttention``, whose ``out_proj`` is an ``nn.Linear`` masked on its own; and
every ``weight_ih_l{k}``, ``weight_hh_l{k}`` (and ``weight_hr_l{k}``, ``_reverse``
included) of ``nn.RNN``, ``nn.LSTM`` and ``nn.GRU``. Every masked parameter is masked
through :class:`~spikelottery.subnet.SubnetLayer`, with its own top-k: edge-popup keeps
the top ``k%`` of each layer's scores, and a fused parameter (the Q, K, V projections
stacked in ``in_proj_weight``, the four LSTM gates stacked in ``weight_ih_l0``) is one
weight tensor, so it is one unit here, as in PyTorch's own ``torch.nn.utils.prune``.

``SubnetConv`` (``nn.Conv2d``), ``SubnetConv1d`` and ``SubnetLinear`` are the classes to
construct directly; :func:`subnet_class_for` gives the class for any other supported type
(``SubnetConv3d``, ``SubnetLSTM``, ...) and for subclasses (SpikingJelly's
``layer.Conv2d``): each subclasses the dense layer, so ``isinstance(layer, nn.Conv2d)``
keeps working.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._fuse import register_fuse_refusals
from ._layer_errors import input_error
from ._transforms import fx_refusal, multistep_conv
from .binary import BinaryActivation
from .masks import INITS, init_weight_
from .subnet import MODES, SubnetLayer, check_mode
from .weight_reads import record_weight_reads

__all__ = [
    "INITS",
    "LAYER_KINDS",
    "MODES",
    "BinaryActivation",
    "LayerKind",
    "SubnetConv",
    "SubnetConv1d",
    "SubnetLayer",
    "SubnetLinear",
    "check_mode",
    "convertible_types",
    "has_own_children",
    "init_weight_",
    "is_subnet",
    "kind_of",
    "masked_names",
    "record_weight_reads",
    "subnet_class_for",
]


class _SubnetInit(SubnetLayer):
    """The constructor shared by the classes users build directly."""

    _dense_class: type[nn.Module]

    def __init__(
        self,
        *args: Any,
        pa: float = 0.5,
        mode: str = "mp",
        init: str = "kaiming_normal",
        **kwargs: Any,
    ) -> None:
        self._dense_class.__init__(self, *args, **kwargs)
        self._init_subnet(pa, mode, init, masked_names(self))


class SubnetConv(_SubnetInit, nn.Conv2d):
    """``nn.Conv2d`` whose weight is a sub-network of a frozen random weight.

    Accepts the arguments of :class:`torch.nn.Conv2d` (grouped and depthwise included)
    plus ``pa``, ``mode`` and ``init``. Input may be ``[B, C, H, W]``, unbatched
    ``[C, H, W]`` or multi-step ``[T, B, C, H, W]``.

    >>> conv = SubnetConv(3, 16, 3, padding=1, pa=0.4, mode="mp")
    >>> conv(torch.randn(4, 2, 3, 8, 8)).shape  # [T, B, C, H, W]
    torch.Size([4, 2, 16, 8, 8])
    """

    _dense_class = nn.Conv2d
    _layouts = "[B, C, H, W], [C, H, W] or [T, B, C, H, W]"

    def forward(self, x: Tensor) -> Tensor:
        return multistep_conv(self, x, 2)


class SubnetConv1d(_SubnetInit, nn.Conv1d):
    """``nn.Conv1d`` counterpart of :class:`SubnetConv` (token-wise 1x1 convs in transformers).

    Input ``[B, C, L]``, unbatched ``[C, L]`` or multi-step ``[T, B, C, L]``.
    """

    _dense_class = nn.Conv1d
    _layouts = "[B, C, L], [C, L] or [T, B, C, L]"

    def forward(self, x: Tensor) -> Tensor:
        return multistep_conv(self, x, 1)


class SubnetLinear(_SubnetInit, nn.Linear):  # type: ignore[misc]  # bias: Tensor | None in both
    """``nn.Linear`` whose weight is a sub-network of a frozen random weight.

    Works on any leading dimensions, so ``[T, B, N, D]`` needs no reshaping.

    >>> fc = SubnetLinear(64, 10, pa=0.4)
    >>> fc.kept, fc(torch.randn(4, 2, 64)).shape
    (384, torch.Size([4, 2, 10]))
    """

    _dense_class = nn.Linear

    def forward(self, x: Tensor) -> Tensor:
        try:
            return F.linear(x, self.effective_weight(), self.bias)
        except RuntimeError as exc:
            raise input_error(self, x, exc, "in_features", -1, "[..., in_features]") from None


class _NamedMasks(SubnetLayer):
    """A kind whose masked parameters are not (only) ``weight``: the dense forward reads
    them as attributes, so each read of a masked name returns its effective weight."""

    def __getattr__(self, name: str) -> Any:
        caches = self.__dict__.get("_caches")
        if caches is not None and name in caches:
            return self._masked_read(name)
        return super().__getattr__(name)

    def __setattr__(self, name: str, value: Any) -> None:
        # A DataParallel replica gets its tensors as plain attributes: one stored in the
        # instance dict would shadow __getattr__ and bypass the mask; keep it aside.
        caches = self.__dict__.get("_caches")
        if (
            caches is not None
            and name in caches
            and type(value) is Tensor
            and name not in self.__dict__["_parameters"]
        ):
            self.__dict__[f"_held_{name}"] = value
            return
        super().__setattr__(name, value)

    @property
    def scores(self) -> nn.Parameter:  # type: ignore[override]
        """The scores of the first masked parameter (all of them: :meth:`scores_of`)."""
        return self.scores_of()  # type: ignore[return-value]


class _SubnetDense(SubnetLayer):
    """A kind whose dense forward reads ``self.weight`` and needs nothing more."""


class _FxLeaf(_NamedMasks):
    """A kind whose PyTorch forward ``torch.fx`` cannot trace: refused by name while
    tracing (the layer works as an fx leaf module)."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if isinstance(args[0] if args else None, torch.fx.Proxy):
            raise fx_refusal(self)
        return super().forward(*args, **kwargs)


class _SubnetAttention(_FxLeaf):
    """``nn.MultiheadAttention``: the native fast path and the slow path both read
    ``self.in_proj_weight`` (or ``q/k/v_proj_weight``), so both see the ticket; its
    ``out_proj`` is an ``nn.Linear`` child, masked as a layer of its own."""

    _share_children = True


class _SubnetRecurrent(_FxLeaf):
    """``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU``: the recurrent kernels (cuDNN included) take
    the list ``_flat_weights``, which is built from the effective weights on every call;
    ``flatten_parameters`` (a fused copy of the frozen weights) is switched off."""

    _flat_weights_names: list[str]

    @property  # type: ignore[override]
    def mode(self) -> str:
        """PyTorch's recurrent mode (``"LSTM"``); the mask's mode is :attr:`mask_mode`."""
        return self.__dict__["mode"]

    @mode.setter
    def mode(self, value: str) -> None:
        self.__dict__["mode"] = value

    @property
    def _flat_weights(self) -> list[Tensor | None]:
        caches = self.__dict__.get("_caches", {})
        params = self.__dict__["_parameters"]
        try:
            return [
                self._masked_read(n) if n in caches else params.get(n, self.__dict__.get(n))
                for n in self._flat_weights_names
            ]
        except AttributeError:  # a DataParallel replica before its tensors are set
            return [None] * len(self._flat_weights_names)

    @_flat_weights.setter
    def _flat_weights(self, value: Any) -> None:
        pass  # derived from the parameters on every read

    def flatten_parameters(self) -> None:
        """A no-op: a flat copy of the frozen weights would bypass the mask."""

    def _update_flat_weights(self) -> None:
        pass  # _flat_weights is always current

    def _init_flat_weights(self) -> None:
        self.__dict__["_flat_weight_refs"] = []  # nothing to cache: read on every call

    def _adopted(self) -> None:
        self.__dict__.pop("_flat_weights", None)
        self.__dict__["_flat_weight_refs"] = []

    def _dense_done(self, dense: nn.Module) -> None:
        dense._init_flat_weights()  # type: ignore[operator]


def _conv_names(module: nn.Module) -> tuple[str, ...]:
    return ("weight",)


def _attention_names(module: nn.Module) -> tuple[str, ...]:
    # From the layer's configuration, not from which parameters are present: a projection
    # computed by torch.nn.utils.prune or a parametrization is named (and refused), never
    # silently left out of the mask.
    if getattr(module, "_qkv_same_embed_dim", True):
        return ("in_proj_weight",)
    return ("q_proj_weight", "k_proj_weight", "v_proj_weight")


def _recurrent_names(module: nn.Module) -> tuple[str, ...]:
    flat: list[str] = getattr(module, "_flat_weights_names", [])
    return tuple(n for n in flat if n.startswith("weight_"))


@dataclass(frozen=True)
class LayerKind:
    """One PyTorch layer type that spikelottery masks.

    Args:
        dense: The PyTorch class (its subclasses are masked too).
        names: Which of a layer's parameters are masked.
        mixin: The score-mask behaviour combined with ``dense``.
        public: The class users construct, if there is one (``SubnetConv``).
    """

    dense: type[nn.Module]
    names: Callable[[nn.Module], tuple[str, ...]]
    mixin: type[SubnetLayer]
    public: type[SubnetLayer] | None = None


#: Every layer type that sparsify masks: the one list that the rest of the library reads.
LAYER_KINDS: tuple[LayerKind, ...] = (
    LayerKind(nn.Conv1d, _conv_names, _SubnetDense, SubnetConv1d),
    LayerKind(nn.Conv2d, _conv_names, _SubnetDense, SubnetConv),
    LayerKind(nn.Conv3d, _conv_names, _SubnetDense),
    LayerKind(nn.ConvTranspose1d, _conv_names, _SubnetDense),
    LayerKind(nn.ConvTranspose2d, _conv_names, _SubnetDense),
    LayerKind(nn.ConvTranspose3d, _conv_names, _SubnetDense),
    LayerKind(nn.Linear, _conv_names, _SubnetDense, SubnetLinear),
    LayerKind(nn.Bilinear, _conv_names, _SubnetDense),
    LayerKind(nn.MultiheadAttention, _attention_names, _SubnetAttention),
    LayerKind(nn.RNN, _recurrent_names, _SubnetRecurrent),
    LayerKind(nn.LSTM, _recurrent_names, _SubnetRecurrent),
    LayerKind(nn.GRU, _recurrent_names, _SubnetRecurrent),
)


def convertible_types() -> tuple[type[nn.Module], ...]:
    """The dense PyTorch classes of :data:`LAYER_KINDS`."""
    return tuple(k.dense for k in LAYER_KINDS)


def has_own_children(module: nn.Module) -> bool:
    """True for a kind whose children are layers of their own (MHA's ``out_proj``)."""
    kind = kind_of(module)
    return kind is not None and kind.mixin._share_children


def kind_of(cls: type[nn.Module] | nn.Module) -> LayerKind | None:
    """The :class:`LayerKind` that ``cls`` (a class or a module) belongs to, else ``None``.

    >>> kind_of(nn.LSTM).dense.__name__, kind_of(nn.Embedding)
    ('LSTM', None)
    """
    klass = cls if isinstance(cls, type) else type(cls)
    for base in klass.__mro__:  # the most specific kind (a Linear subclass is a Linear)
        for kind in LAYER_KINDS:
            if base is kind.dense:
                return kind
    return None


def masked_names(module: nn.Module) -> tuple[str, ...]:
    """The parameters of ``module`` that a score-mask layer masks (``()`` if none).

    >>> masked_names(nn.GRU(4, 8, bidirectional=True))
    ('weight_ih_l0', 'weight_hh_l0', 'weight_ih_l0_reverse', 'weight_hh_l0_reverse')
    """
    if isinstance(module, SubnetLayer) and "_masked" in module.__dict__:
        return module.masked_names
    kind = kind_of(module)
    return () if kind is None else kind.names(module)


_DYNAMIC: dict[type[nn.Module], type[SubnetLayer]] = {}


def _make_class(dense_cls: type[nn.Module], base: type[SubnetLayer] | None, mixin: type) -> type:
    if base is None:  # a supported PyTorch class itself: SubnetConv3d, SubnetLSTM, ...
        name = qual = f"Subnet{dense_cls.__name__}"
        bases: tuple[type, ...] = (mixin, dense_cls)
    else:  # a subclass: its own forward runs first and reaches ours through super()
        name = f"Subnet{dense_cls.__name__}"
        qual = f"_Subnet_{dense_cls.__module__.replace('.', '_')}_{dense_cls.__qualname__.replace('.', '_')}"
        bases = (dense_cls, base)
    made = type(name, bases, {"_dense_class": dense_cls, "__module__": __name__})
    made.__qualname__ = qual
    setattr(sys.modules[__name__], qual, made)  # so pickle finds it in this process
    return made


def subnet_class_for(dense_cls: type[nn.Module]) -> type[SubnetLayer]:
    """The score-mask class that replaces layers of class ``dense_cls``.

    ``nn.Conv2d`` maps to :class:`SubnetConv`, ``nn.Linear`` to :class:`SubnetLinear`,
    ``nn.LSTM`` to ``SubnetLSTM`` (made once, in this module). A subclass ``C`` of a
    supported type (SpikingJelly's ``layer.Conv2d``, a user's own conv) maps to a class
    deriving from both ``C`` and the score-mask class, created once and cached: ``C``'s
    ``forward`` still runs and reaches the effective weight through ``super().forward``.

    Raises:
        TypeError: ``dense_cls`` is not one of :data:`LAYER_KINDS` (nor a subclass).
    """
    if isinstance(dense_cls, type) and issubclass(dense_cls, SubnetLayer):
        return dense_cls
    kind = kind_of(dense_cls) if isinstance(dense_cls, type) else None
    if kind is None:
        supported = ", ".join(f"nn.{k.dense.__name__}" for k in LAYER_KINDS)
        raise TypeError(
            f"no score-mask layer for {dense_cls!r}: spikelottery masks {supported} and their "
            "subclasses"
        )
    if dense_cls is kind.dense and kind.public is not None:
        return kind.public
    cached = _DYNAMIC.get(dense_cls)
    if cached is None:
        base = None if dense_cls is kind.dense else subnet_class_for(kind.dense)
        cached = _make_class(dense_cls, base, kind.mixin)
        _DYNAMIC[dense_cls] = cached
    return cached


def is_subnet(module: nn.Module) -> bool:
    """True if ``module`` is a score-mask layer."""
    return isinstance(module, SubnetLayer)


# Made at import, so that pickles of them load in a new process, and so that
# torch.ao.quantization.fuse_modules refuses them by name.
register_fuse_refusals({kind.dense: subnet_class_for(kind.dense) for kind in LAYER_KINDS})
