"""Methods: the paper's vocabulary (``mpslt``, ``multisp-lt``, ...) as named run settings.

A preset names a method; it fixes the settings that define the method (``spiking``,
``mode``, ``filter``) and gives defaults for the ones a sweep may still vary (``pb`` of
the MultiSp methods). Methods live in :data:`METHODS`, an open registry
(:func:`register_method` adds one; a method that needs a new way of finding the mask
names a registered search method, :func:`~spikelottery.engine.methods.register_search`).
:func:`resolve_method` turns ``{"method": "mpslt", ...}`` into the
full settings, refusing a setting that contradicts the method;
:class:`~spikelottery.engine.TrainConfig` records the method and checks it again.

>>> resolve_method({"method": "mpslt", "pa": 0.5})["mode"]
'mp'
>>> resolve_method({"method": "multisp-slt"})["pb"]
0.3
>>> resolve_method({"method": "lt", "mode": "mp"})
Traceback (most recent call last):
...
spikelottery.engine.settings.ConfigError: method 'lt' sets mode='lt', got mode='mp'; \
leave mode out or choose another method
"""

from __future__ import annotations

import dataclasses
import difflib
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from ..registry import Registry
from .settings import ConfigError

__all__ = [
    "METHODS",
    "RENAMED_METHODS",
    "MethodPreset",
    "check_method",
    "preset_problem",
    "preset_table",
    "register_method",
    "resolve_method",
]

#: The regex of the paper's ConvPEP patch embedding (the zoo's Spikformers).
PATCH_EMBED = "patch_embed"


@dataclass(frozen=True)
class MethodPreset:
    """One method: the settings it fixes, the defaults it brings, and its paper column.

    Attributes:
        fixed: Settings that define the method; a run of the method cannot change them.
        defaults: Settings the method starts from; a run or a sweep may change them.
        column: Where the method appears in the paper (table column or figure legend).
        description: One line: what trains and what is sparse.
        requires: Optional check of the resolved settings (of ``pb``); returns an error
            message or ``None``.
        early_time: Whether the method searches at ``search_timesteps`` (an Early-Time
            ticket): ``True`` needs it set, ``False`` needs it unset.
    """

    fixed: Mapping[str, Any]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    column: str = ""
    description: str = ""
    requires: Callable[[Mapping[str, Any]], str | None] | None = None
    early_time: bool = False


def _no_patches(values: Mapping[str, Any]) -> str | None:
    if values.get("pb", 0.0):
        return f"prunes no patches: pb must be 0, got pb={values['pb']}"
    return None


def _some_patches(values: Mapping[str, Any]) -> str | None:
    if not values.get("pb", 0.0):
        return "prunes patches: pb must be > 0 (the paper's Table II uses pb=0.3), got pb=0"
    return None


#: A score search (edge-popup) with one threshold per layer: what the paper's columns use;
#: ``imp``, ``random-*`` and ``scope="global"`` are other methods with presets of their own.
_SCORES = {"search": "scores", "scope": "layer"}
#: The model's own activations (ReLU in an ANN, spikes in an SNN).
_KEEP = {"activations": "keep"}
#: Binary activations in the sparsified part (the multi-prize tickets' "1/1" networks).
_BINARY = {"activations": "binary"}
_MP_EMBED = {"mode": "mp", "filter": PATCH_EMBED, **_SCORES}

#: The paper's multi-prize tickets binarise activations: "MPTs introduce the added benefit
#: of binary weight and activation representations" and MultiSp includes "ConvPEP
#: activation binarization". biprop's 1/1 networks (``models/resnet_BinAct_v2.py``) put a
#: sign activation with the ApproxSign gradient where the ReLUs were.
_MP_PAPER = "binary weights and binary activations (the paper; biprop's 1/1)"

#: The paper's binarised ANN tickets: binary weights and binary activations.
_PAPER_ANN: dict[str, MethodPreset] = {
    "mplt": MethodPreset(
        {"spiking": False, "mode": "mp", "filter": None, **_SCORES, **_BINARY},
        column="Table I 'MPLTs'",
        description=f"binarised ANN ticket alpha*sign(W)*M: {_MP_PAPER}",
        requires=_no_patches,
    ),
    "pepsp-lt": MethodPreset(
        {"spiking": False, **_MP_EMBED, **_BINARY},
        {"pb": 0.0},
        column="Table II 'PEPSp-LTs'",
        description="ANN transformer, binarised ticket of the patch embedding only, its "
        "activations binary",
        requires=_no_patches,
    ),
    "multisp-lt": MethodPreset(
        {"spiking": False, **_MP_EMBED, **_BINARY},
        {"pb": 0.3},
        column="Table II 'MultiSp-LTs'",
        description="ANN transformer, PEPSp (binary ConvPEP activations) plus patch pruning (pb)",
        requires=_some_patches,
    ),
}


def _relu_variant(name: str) -> MethodPreset:
    """The paper's binarised ANN ticket ``name`` with ReLU activations (biprop's "1/32").

    What ``mplt``, ``pepsp-lt`` and ``multisp-lt`` were before binary activations were
    added, kept so that earlier results can be rerun.
    """
    paper = _PAPER_ANN[name]
    return dataclasses.replace(
        paper,
        fixed={**paper.fixed, **_KEEP},
        column=f"variant of {paper.column}",
        description=f"as {name!r}, with ReLU activations (biprop's 1/32, not the paper's MPT)",
    )


#: Every method by name (a :class:`~spikelottery.registry.Registry` of
#: :class:`MethodPreset`). The first ten are the paper's columns (DESIGN "Method names"),
#: then the ``-relu`` variants of its binarised ANN tickets, then the baselines of
#: ``search`` and ``scope`` (docs/methods.md), then a user's (:func:`register_method`).
METHODS: Registry[MethodPreset] = Registry("method")


def register_method(name: str, preset: MethodPreset, *, overwrite: bool = False) -> MethodPreset:
    """Register ``preset`` as the method ``name`` (``TrainConfig(method=name)``, ``--method``).

    Raises:
        TypeError: ``preset`` is not a :class:`MethodPreset`.
        ~spikelottery.engine.ConfigError: ``preset`` sets a name that is not a ``TrainConfig`` setting.
        ~spikelottery.registry.DuplicateNameError: ``name`` is taken and not ``overwrite``.
    """
    if not isinstance(preset, MethodPreset):
        raise TypeError(f"register_method({name!r}): expected a MethodPreset, got {preset!r}")
    from .config import TrainConfig  # config reads METHODS: imported here, not at the top

    known = {f.name for f in dataclasses.fields(TrainConfig)}
    for part in ("fixed", "defaults"):
        unknown = sorted(set(getattr(preset, part)) - known)
        if unknown:
            raise ConfigError(
                "method",
                f"register_method({name!r}): {part} names {', '.join(map(repr, unknown))}, "
                f"which {'is' if len(unknown) == 1 else 'are'} not TrainConfig settings"
                + _closest(unknown[0], known),
            )
    return METHODS.register(name, preset, overwrite=overwrite)


def _closest(name: str, known: set[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


_BUILTIN: Mapping[str, MethodPreset] = MappingProxyType(
    {
        "ann": MethodPreset(
            {"spiking": False, "mode": "dense", **_KEEP},
            column="Table I 'ANN', Table II 'ViT'",
            description="the ReLU twin, dense weights trained",
        ),
        "snn": MethodPreset(
            {"spiking": True, "mode": "dense", **_KEEP},
            column="Table I 'SNN', Table II 'Spiking-ViT'",
            description="the spiking network, dense weights trained",
        ),
        "lt": MethodPreset(
            {"spiking": False, "mode": "lt", "filter": None, **_SCORES, **_KEEP},
            column="Table I 'LTs'",
            description="ANN ticket: scores train, frozen random weights W*M (edge-popup), ReLU",
            requires=_no_patches,
        ),
        "slt": MethodPreset(
            {"spiking": True, "mode": "lt", "filter": None, **_SCORES, **_KEEP},
            column="Table I 'SLTs'",
            description="spiking ticket: scores train, frozen random weights W*M",
            requires=_no_patches,
        ),
        "mplt": _PAPER_ANN["mplt"],
        "mpslt": MethodPreset(
            {"spiking": True, "mode": "mp", "filter": None, **_SCORES, **_KEEP},
            column="Table I 'MPSLTs'",
            description="binarised spiking ticket: alpha*sign(W)*M, spikes (binary already)",
            requires=_no_patches,
        ),
        "pepsp-lt": _PAPER_ANN["pepsp-lt"],
        "pepsp-slt": MethodPreset(
            {"spiking": True, **_MP_EMBED, **_KEEP},
            {"pb": 0.0},
            column="Table II 'PEPSp-SLTs'",
            description="spiking transformer, binarised ticket of the patch embedding only",
            requires=_no_patches,
        ),
        "multisp-lt": _PAPER_ANN["multisp-lt"],
        "multisp-slt": MethodPreset(
            {"spiking": True, **_MP_EMBED, **_KEEP},
            {"pb": 0.3},
            column="Table II 'MultiSp-SLTs'",
            description="spiking transformer, PEPSp plus patch pruning (pb)",
            requires=_some_patches,
        ),
        **{f"{name}-relu": _relu_variant(name) for name in ("mplt", "pepsp-lt", "multisp-lt")},
        # The baselines of the SNN lottery-ticket literature (docs/methods.md).
        "imp": MethodPreset(
            {"spiking": False, "mode": "lt", "search": "imp", **_KEEP},
            column="baseline (Frankle & Carbin; Kim et al. ECCV 2022)",
            description="ANN, iterative magnitude pruning with rewinding: weights train, "
            "mask by |W|",
            requires=_no_patches,
        ),
        "imp-snn": MethodPreset(
            {"spiking": True, "mode": "lt", "search": "imp", **_KEEP},
            column="baseline (Kim et al. ECCV 2022)",
            description="spiking, iterative magnitude pruning with rewinding",
            requires=_no_patches,
        ),
        "et-imp-snn": MethodPreset(
            {"spiking": True, "mode": "lt", "search": "imp", **_KEEP},
            {"search_timesteps": 2},
            column="baseline (Kim et al. ECCV 2022, Early-Time)",
            description="spiking IMP whose pruning rounds run at search_timesteps",
            requires=_no_patches,
            early_time=True,
        ),
        "et-slt": MethodPreset(
            {"spiking": True, "mode": "lt", "search": "scores", **_KEEP},
            {"search_timesteps": 2},
            column="Early-Time (Kim et al.) for SLTs",
            description="spiking ticket whose scores are searched at search_timesteps",
            requires=_no_patches,
            early_time=True,
        ),
        "random-frozen": MethodPreset(
            {"spiking": True, "mode": "lt", "search": "random-frozen", **_KEEP},
            column="control of the score search (edge-popup's random subnetwork)",
            description="spiking, a random mask of the same frozen weights at the per-layer "
            "counts of pa; nothing trains that slt does not train (BatchNorm)",
            requires=_no_patches,
        ),
        "random-trained": MethodPreset(
            {"spiking": True, "mode": "lt", "search": "random", **_KEEP},
            column="random pruning baseline (not a control of the search)",
            description="spiking, a random mask at the per-layer counts of pa whose kept "
            "weights TRAIN",
            requires=_no_patches,
        ),
        "global-slt": MethodPreset(
            {"spiking": True, "mode": "lt", "search": "scores", "scope": "global", **_KEEP},
            column="global threshold (normalised scores; not biprop's)",
            description="spiking ticket, one threshold over all layers on abs(scores) / std per "
            "layer (W*M)",
            requires=_no_patches,
        ),
        "global-mpslt": MethodPreset(
            {"spiking": True, "mode": "mp", "search": "scores", "scope": "global", **_KEEP},
            column="global threshold (normalised scores; not biprop's)",
            description="binarised spiking ticket, one threshold over all layers on "
            "abs(scores) / std per layer",
            requires=_no_patches,
        ),
    }
)
for _name, _preset_entry in _BUILTIN.items():
    METHODS.register(_name, _preset_entry)  # checked by the tests; TrainConfig is not built yet

#: Old method names and the preset that now computes what they computed. Before binary
#: activations were added, ``mplt``, ``pepsp-lt`` and ``multisp-lt`` kept ReLU
#: activations (a run recorded then is read as its ``-relu`` variant); ``random`` is
#: ``random-trained`` (a ``FutureWarning`` says so; the old name goes in 0.2).
RENAMED_METHODS: Mapping[str, str] = MappingProxyType(
    {
        "random": "random-trained",
        "mplt": "mplt-relu",
        "pepsp-lt": "pepsp-lt-relu",
        "multisp-lt": "multisp-lt-relu",
    }
)
#: Of :data:`RENAMED_METHODS`, the names that are gone (the others are presets again,
#: with other settings).
_DEPRECATED = {"random": "random-trained"}


def _preset(name: Any) -> MethodPreset:
    if isinstance(name, str) and name in _DEPRECATED:
        return METHODS[_DEPRECATED[name]]
    if not isinstance(name, str) or name not in METHODS:
        raise ConfigError("method", METHODS.unknown_message(name))
    return METHODS[name]


def resolve_method(values: Mapping[str, Any]) -> dict[str, Any]:
    """Fill in the settings of ``values["method"]``; settings given explicitly must agree.

    Args:
        values: Run settings, possibly with ``method`` (``None`` or absent: no preset).

    Returns:
        A new dict: ``values`` plus the preset's fixed settings and its defaults for the
        settings ``values`` leaves out.

    Raises:
        ~spikelottery.engine.ConfigError: An unknown method, or a setting that contradicts it (naming both).
    """
    out = dict(values)
    name = out.get("method")
    if name is None:
        return out
    if isinstance(name, str):
        name = out["method"] = name.strip().lower()
        if name in _DEPRECATED:
            warnings.warn(
                f"method {name!r} is now {_DEPRECATED[name]!r} (its kept weights train, so it "
                "is no control of the score search: that is 'random-frozen'); the old name "
                "goes in spikelottery 0.2",
                FutureWarning,
                stacklevel=3,
            )
            name = out["method"] = _DEPRECATED[name]
    preset = _preset(name)
    for key, value in preset.fixed.items():
        if key in out and out[key] != value:
            raise ConfigError(
                key,
                f"method {name!r} sets {key}={value!r}, got {key}={out[key]!r}; "
                f"leave {key} out or choose another method",
            )
        out[key] = value
    for key, value in preset.defaults.items():
        out.setdefault(key, value)
    return out


def preset_problem(name: str, values: Mapping[str, Any]) -> tuple[str, str] | None:
    """The first setting of complete ``values`` that contradicts the method ``name``.

    Args:
        name: A preset name.
        values: Complete run settings (missing keys count as ``None``).

    Returns:
        ``(setting, message)``, or ``None`` when the settings are a run of the method.

    >>> preset_problem("slt", {"spiking": True, "mode": "lt", "filter": None, "search": "scores",
    ...                        "scope": "layer", "activations": "keep", "search_timesteps": 2})[0]
    'search_timesteps'
    """
    preset = _preset(name)
    for key, value in preset.fixed.items():
        if values.get(key) != value:
            return key, (
                f"method {name!r} sets {key}={value!r}, got {key}={values.get(key)!r}; build "
                f"the config with TrainConfig.for_method({name!r}, ...) or leave {key} out"
            )
    steps = values.get("search_timesteps")
    if preset.early_time and steps is None:
        return "search_timesteps", (
            f"method {name!r} is an Early-Time ticket: it searches at search_timesteps, "
            "got search_timesteps=None; set it (e.g. 2) or choose the method without 'et-'"
        )
    if not preset.early_time and steps is not None:
        early = [
            n
            for n, p in METHODS.items()
            if p.early_time and p.fixed.items() <= preset.fixed.items()
        ]
        instead = f"use method {early[0]!r}" if early else "leave it out"
        return "search_timesteps", (
            f"method {name!r} searches at timesteps, got search_timesteps={steps!r} (an "
            f"Early-Time ticket); {instead}"
        )
    if preset.requires is not None:
        problem = preset.requires(values)
        if problem is not None:
            return "pb", f"method {name!r} {problem}"
    return None


def check_method(values: Mapping[str, Any]) -> None:
    """Check that complete settings agree with their ``method`` (if any).

    Raises:
        ~spikelottery.engine.ConfigError: Naming the first setting the method contradicts.
    """
    name = values.get("method")
    if name is None:
        return
    problem = preset_problem(name, values)
    if problem is not None:
        raise ConfigError(*problem)


def preset_table() -> str:
    """The presets as a Markdown table: name, fixed settings, defaults, paper column.

    >>> preset_table().splitlines()[0]
    '| method | settings | defaults | paper | what it is |'
    """
    lines = ["| method | settings | defaults | paper | what it is |", "|---|---|---|---|---|"]
    for name, p in METHODS.items():
        fixed = ", ".join(f"{k}={v!r}" for k, v in p.fixed.items())
        defaults = ", ".join(f"{k}={v!r}" for k, v in p.defaults.items()) or "-"
        lines.append(f"| `{name}` | {fixed} | {defaults} | {p.column or '-'} | {p.description} |")
    return "\n".join(lines)


_RENAMED = {"PRESETS": "METHODS", "Preset": "MethodPreset"}


def __getattr__(name: str) -> Any:
    # One meaning per name: PRESETS also named the hardware presets and the model zoo.
    if name in _RENAMED:
        new = _RENAMED[name]
        warnings.warn(
            f"spikelottery.engine.presets.{name} is now {new} (the same object); the old "
            "name goes in spikelottery 0.2",
            FutureWarning,
            stacklevel=2,
        )
        return globals()[new]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
