"""Binary activations in place of a network's activation modules, and back.

Multi-prize tickets are binary in their weights AND their activations. The paper
(Section II): multi-prize tickets "introduce the added benefit of binary weight and
activation representations", and its MultiSp includes "ConvPEP activation binarization".
biprop, the multi-prize reference code (Diffenderfer & Kailkhura, ICLR 2021;
``models/resnet_BinAct_v2.py``), builds its "1/1" networks by putting ``BiRealAct`` (a
sign with the quadratic-spline gradient) where the ReLUs were: after every BatchNorm,
with the network's input and its logits left real. :func:`binarize_activations` does the
same to any network: every activation MODULE that ``filter`` accepts becomes a
:class:`~spikelottery.BinaryActivation` (``sign``, ``+1`` at 0, ApproxSign gradient).

What it cannot see: an activation called as a function inside another module's
``forward`` (``F.relu(x)``, ``x.relu()``, ``torch.tanh``). :func:`functional_activations`
runs one forward on an example input and names each module that calls one.

>>> from torch import nn
>>> net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
>>> binarize_activations(net)
['2']
>>> net[2]
BinaryActivation(replaces=ReLU())
>>> restore_activations(net)
['2']
>>> net[2]
ReLU()
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ._modules import Reference, walk
from ._selection import Filter, as_filter
from .binary import BinaryActivation
from .errors import SpikeLotteryError

__all__ = [
    "ACTIVATION_TYPES",
    "binarize_activations",
    "binary_activation_names",
    "check_binarized",
    "functional_activations",
    "restore_activations",
]

#: The activation modules that :func:`binarize_activations` replaces (subclasses too).
#: Gates and normalisers (``Sigmoid`` in squeeze-excitation, ``Softmax`` in attention)
#: are not hidden activations and stay; ``PReLU`` holds a parameter and stays (its
#: state_dict key would vanish).
ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.RReLU,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardtanh,
    nn.Tanh,
    nn.Softplus,
)

#: The names (``__name__``) of the functions and tensor methods that compute an
#: activation: a call of one outside an activation module is one that
#: :func:`binarize_activations` cannot replace.
_FUNCTIONAL_NAMES = frozenset(
    {
        "relu",
        "relu_",
        "relu6",
        "leaky_relu",
        "leaky_relu_",
        "rrelu",
        "rrelu_",
        "elu",
        "elu_",
        "celu",
        "celu_",
        "selu",
        "selu_",
        "gelu",
        "silu",
        "mish",
        "hardswish",
        "hardtanh",
        "hardtanh_",
        "tanh",
        "tanh_",
        "softplus",
    }
)


#: What the module stack holds while an activation module runs (its own ``F.relu`` is
#: what it is): no module name can be this.
_ACTIVATION = "\0"


def _activations(model: nn.Module, types: tuple[type[nn.Module], ...]) -> Iterator[Reference]:
    """Every place an activation module of ``types`` is registered."""
    for ref in walk(model):
        if isinstance(ref.module, types) and not isinstance(ref.module, BinaryActivation):
            yield ref


def binarize_activations(
    model: nn.Module,
    filter: Filter = None,
    *,
    types: Sequence[type[nn.Module]] = ACTIVATION_TYPES,
) -> list[str]:
    """Replace each activation module that ``filter`` accepts by a :class:`BinaryActivation`.

    In place. The modules of :data:`ACTIVATION_TYPES` (ReLU, GELU, SiLU, Tanh, ... and
    their subclasses) are replaced; a module registered at several places is replaced
    everywhere by one :class:`BinaryActivation`, which remembers it
    (:func:`restore_activations` puts it back). Already binary activations are left as
    they are, so a second call changes nothing. Spiking neurons are not activations
    here: their spikes are binary already.

    Args:
        model: Any ``nn.Module``.
        filter: Which activations: a regex searched in the qualified name
            (``"patch_embed"``: the ConvPEP's), a module type or tuple of types, a
            callable ``(module, qualified_name) -> bool``, or ``None`` for all. It is the
            same kind of filter as :func:`~spikelottery.sparsify`'s, applied to the
            activation modules.
        types: The activation classes to replace (subclasses too). Add a library's own
            (timm's ``timm.layers.GELU`` is not an ``nn.GELU``):
            ``types=(*ACTIVATION_TYPES, timm.layers.GELU)``.
            :func:`functional_activations` names the modules that it misses.

    Returns:
        The qualified names of the replaced activations (each module once, under its first
        name), in module order.

    Raises:
        TypeError: ``model`` is not an ``nn.Module`` or ``filter`` has a wrong type.

    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    >>> binarize_activations(net, filter=r"^1$")
    ['1']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    classes = tuple(types)
    if not classes or not all(isinstance(t, type) and issubclass(t, nn.Module) for t in classes):
        raise TypeError(f"types must be nn.Module classes, got types={types!r}")
    accept = as_filter(filter)
    made: dict[int, BinaryActivation] = {}
    names: list[str] = []
    for ref in list(_activations(model, classes)):
        binary = made.get(id(ref.module))
        if binary is None:
            if not accept(ref.module, ref.name):
                continue
            binary = made[id(ref.module)] = BinaryActivation(replaces=ref.module)
            names.append(ref.name)
        setattr(ref.parent, ref.attr, binary)
    return names


def restore_activations(model: nn.Module, names: Sequence[str] | None = None) -> list[str]:
    """Put back the activation modules that :func:`binarize_activations` replaced, in place.

    A :class:`BinaryActivation` made by hand (that replaced nothing) stays.

    Args:
        model: The network.
        names: Restore only the binary activations registered under these names (each
            everywhere it is registered); ``None`` restores all.

    Returns:
        The qualified names of the restored activations, in module order.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    chosen = None if names is None else {id(model.get_submodule(n)) for n in names}
    restored: list[str] = []
    seen: set[int] = set()
    for ref in list(walk(model)):
        module = ref.module
        if not isinstance(module, BinaryActivation) or module.replaces is None:
            continue
        if chosen is not None and id(module) not in chosen:
            continue
        setattr(ref.parent, ref.attr, module.replaces)
        if id(module) not in seen:
            seen.add(id(module))
            restored.append(ref.name)
    return restored


def binary_activation_names(model: nn.Module) -> list[str]:
    """The qualified names of ``model``'s :class:`BinaryActivation` modules (first names).

    >>> binary_activation_names(nn.Sequential(nn.Linear(2, 2), BinaryActivation()))
    ['1']
    """
    return [name for name, module in model.named_modules() if isinstance(module, BinaryActivation)]


class _CallRecorder(TorchFunctionMode):
    """Records activation functions called while no activation module is running."""

    def __init__(self, stack: list[str]) -> None:
        super().__init__()
        self.stack = stack
        self.found: dict[str, set[str]] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        name = getattr(func, "__name__", "")
        if name in _FUNCTIONAL_NAMES and self.stack and self.stack[-1] != _ACTIVATION:
            self.found.setdefault(self.stack[-1], set()).add(name)
        return func(*args, **(kwargs or {}))


def functional_activations(model: nn.Module, *example_inputs: Any) -> dict[str, list[str]]:
    """The modules whose ``forward`` calls an activation as a function, on one forward.

    :func:`binarize_activations` replaces activation modules; ``F.relu(x)``,
    ``x.relu()`` or ``torch.tanh(x)`` inside another module's ``forward`` stay real.
    This runs ``model(*example_inputs)`` once under ``torch.no_grad`` (in eval mode, which
    is restored, so BatchNorm statistics do not move) and names each module that made such a call,
    with the functions it called. Activation modules' own calls (``nn.ReLU`` calls
    ``F.relu``) and calls inside :class:`BinaryActivation` are not counted.

    Args:
        model: The network.
        *example_inputs: The positional arguments of one forward.

    Returns:
        ``{qualified module name: sorted function names}`` (``""`` is the model itself);
        empty when every activation is a module.

    >>> class Net(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.fc = nn.Linear(3, 3)
    ...     def forward(self, x):
    ...         return torch.relu(self.fc(x))
    >>> functional_activations(Net(), torch.zeros(1, 3))
    {'': ['relu']}
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    module_names = {id(m): n for n, m in model.named_modules(remove_duplicate=False)}
    stack: list[str] = []
    silent = (*ACTIVATION_TYPES, BinaryActivation)

    def enter(module: nn.Module, args: Any) -> None:
        if id(module) in module_names:
            stack.append(
                _ACTIVATION if isinstance(module, silent) else module_names[id(module)] or "<model>"
            )

    def leave(module: nn.Module, args: Any, output: Any) -> None:
        if id(module) in module_names and stack:
            stack.pop()

    recorder = _CallRecorder(stack)
    was_training = {id(m): m.training for m in model.modules()}
    handles = [
        nn.modules.module.register_module_forward_pre_hook(enter),
        nn.modules.module.register_module_forward_hook(leave, always_call=True),
    ]
    try:
        model.eval()
        with torch.no_grad(), recorder:
            model(*example_inputs)
    finally:
        for handle in handles:
            handle.remove()
        for module in model.modules():
            module.training = was_training.get(id(module), module.training)
    found = {
        ("" if name == "<model>" else name): sorted(funcs)
        for name, funcs in recorder.found.items()
        if name != _ACTIVATION
    }
    return dict(sorted(found.items()))


def check_binarized(model: nn.Module, names: list[str]) -> None:
    """Raise unless each of ``names`` is an activation module or a :class:`BinaryActivation`.

    Used before a ticket's recorded binary activations are applied to a model.

    Raises:
        SpikeLotteryError: Naming the first missing or unfit module.
    """
    for name in names:
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise SpikeLotteryError(
                f"the model has no module {name!r}, where the ticket has a binary activation; "
                "load the ticket into the architecture it was saved from"
            ) from None
        if not isinstance(module, (*ACTIVATION_TYPES, BinaryActivation)):
            raise SpikeLotteryError(
                f"module {name!r} is a {type(module).__name__}, where the ticket has a binary "
                "activation (in place of an activation module such as nn.ReLU); load the "
                "ticket into the architecture it was saved from"
            )
