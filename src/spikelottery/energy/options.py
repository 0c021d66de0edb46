"""The pricing conventions of the energy formula, written once as :class:`PricingOptions`.

Each field carries its default, its check and its help (``field(metadata=...)``); the
class docstring's ``Attributes`` section is made from the help, and every public entry
point (:func:`~spikelottery.energy.estimate_energy`,
:func:`~spikelottery.energy.energy_from_counts`, :meth:`~spikelottery.energy.EnergyReport.reprice`)
takes the fields as keywords through :func:`merge_options`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .hardware import E_SRAM_BIT_PJ, HardwarePreset, find_preset, resolve_preset

__all__ = [
    "ATTENTION_ORDERS",
    "E_AC_PJ",
    "E_MAC_PJ",
    "POOLED_INPUTS",
    "PricingOptions",
    "merge_options",
]

# Documented where the package re-exports them (energy/__init__.py), the page Sphinx reads.
E_MAC_PJ = 4.6
E_AC_PJ = 0.9
ATTENTION_ORDERS: tuple[str, ...] = ("as_run", "qk_first", "kv_first")
#: Values of ``pooled_inputs``: how the exact view prices average-pooled spikes.
POOLED_INPUTS: tuple[str, ...] = ("spikes", "values")


def _check_energy(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of pJ per operation, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(
            f"{name} must be a finite energy >= 0 (pJ per operation), got {name}={value!r}"
        )
    return float(value)


def _check_flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {name}={value!r}")
    return value


def _check_bits(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 64:
        raise ValueError(f"{name} must be a whole number of bits in [1, 64], got {name}={value!r}")
    return value


def _check_optional_flag(name: str, value: Any) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"{name} must be True, False or None, got {name}={value!r}")
    return value


def _check_pooled(name: str, value: Any) -> str:
    if value not in POOLED_INPUTS:
        raise ValueError(f"{name} must be one of {POOLED_INPUTS}, got {name}={value!r}")
    return str(value)


def _check_order(name: str, value: Any) -> str:
    if value not in ATTENTION_ORDERS:
        raise ValueError(f"{name} must be one of {ATTENTION_ORDERS}, got {name}={value!r}")
    return str(value)


def _check_hardware(name: str, value: Any) -> str | None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise TypeError(f"{name} must be a preset name or None, got {name}={value!r}")
    return value


def _option(default: Any, check: Callable[[str, Any], Any], help: str) -> Any:
    return field(default=default, metadata={"check": check, "help": help})


@dataclass(frozen=True)
class PricingOptions:
    """How measured op counts are priced (paper Eq. 3-4); the defaults are the paper's.

    Pass one as ``options=`` to :func:`~spikelottery.energy.estimate_energy` or
    :func:`~spikelottery.energy.energy_from_counts`, or give its fields as keywords
    (``estimate_energy(net, x, nonbinary_as_mac=True)``); a bad value raises a
    ``TypeError`` or ``ValueError`` naming the field.

    >>> PricingOptions(e_ac=0.03).e_ac
    0.03
    """

    e_mac: float = _option(E_MAC_PJ, _check_energy, "pJ per multiply-accumulate (4.6, 45 nm).")
    e_ac: float = _option(E_AC_PJ, _check_energy, "pJ per accumulate (0.9, 45 nm).")
    first_layer_times_t: bool = _option(
        False,
        _check_flag,
        "Charge a first layer fed an image as a MAC on every time step (default: once per "
        "distinct input frame: once for a static image, as the paper). A first layer fed "
        "binary event frames is priced as any spiking layer, in accumulates on every step.",
    )
    nonbinary_as_mac: bool = _option(
        False,
        _check_flag,
        "Charge layers whose input is not binary (integer residual sums, average-pooled "
        "spikes) as a MAC per weight and step, instead of the paper's SOPs at the input's "
        "mean absolute value.",
    )
    attention_order: str = _option(
        "as_run",
        _check_order,
        '``"as_run"``, ``"qk_first"`` (``(Q K^T) V``) or ``"kv_first"`` (``Q (K^T V)``) '
        "for a spiking attention's two matmuls.",
    )
    density_scaling: bool = _option(
        False,
        _check_flag,
        "Multiply every layer's FLOPs by its weight density (pruned weights do no work), "
        "in the ANN and the SNN alike.",
    )
    ann_every_step: bool | None = _option(
        None,
        _check_optional_flag,
        "The ANN reference: ``None`` (default) runs one ANN pass per distinct input frame, "
        "once for a static input (the paper's ANN) and every time step for event frames "
        "(an ANN must see every frame); ``True`` charges every time step each layer ran, "
        "``False`` one pass whatever the input.",
    )
    pooled_inputs: str = _option(
        "spikes",
        _check_pooled,
        'How the exact view prices average-pooled spikes: ``"spikes"`` (default) charges '
        "one accumulate per pre-pool spike and reached weight, as an event-driven chip "
        'that pushes each spike through the pool does; ``"values"`` charges the pooled '
        "value (``k / area`` of an accumulate), the paper's SOPs at the input's mean value.",
    )
    weight_bits: int = _option(
        32,
        _check_bits,
        "Bits of a stored weight in the memory-aware view (a binarised ticket is read at "
        "1 bit, bit-packed, whatever this says).",
    )
    state_bits: int = _option(
        32, _check_bits, "Bits of a membrane potential, read and written once per update."
    )
    e_mem_bit: float = _option(
        E_SRAM_BIT_PJ,
        _check_energy,
        "pJ per bit read or written in memory (0.156: an 8 KB SRAM at 45 nm, 10 pJ per "
        "64-bit read, Horowitz 2014).",
    )

    sram_kib: float = _option(
        8.0,
        _check_energy,
        "Size in KiB of the SRAM whose per-bit cost ``e_mem_bit`` is (8: Horowitz's 8 KB "
        "SRAM); a report says when the model does not fit it.",
    )
    hardware: str | None = field(  # a label, not a price: equal options price alike
        default=None,
        compare=False,
        metadata={
            "check": _check_hardware,
            "help": "Name of the hardware preset the costs came from (set by ``preset=``), "
            "reported while the costs are still that preset's; None: the first preset "
            "with these costs.",
        },
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, f.metadata["check"](f.name, getattr(self, f.name)))

    @classmethod
    def from_preset(cls, preset: str, **changes: Any) -> PricingOptions:
        """The options of a named hardware preset (``"fp32"``, ``"fp16"``, ``"int8"``, ...).

        >>> PricingOptions.from_preset("int8").e_ac, PricingOptions.from_preset("int8").weight_bits
        (0.03, 8)
        """
        p = resolve_preset(preset)
        base = {
            "e_mac": p.e_mac,
            "e_ac": p.e_ac,
            "weight_bits": p.bits,
            "state_bits": p.bits,
            "hardware": p.name,
        }
        return cls(**{**base, **changes})

    def _preset(self) -> HardwarePreset | None:
        """The preset these costs are: the named one while they match it, else the first
        with these costs (two presets may share figures and differ in source)."""
        named = None
        if self.hardware is not None:
            with contextlib.suppress(ValueError, TypeError):
                named = resolve_preset(self.hardware)
        costs = (self.e_mac, self.e_ac, self.weight_bits)
        if named is not None and (named.e_mac, named.e_ac, named.bits) == costs:
            p: HardwarePreset | None = named
        else:
            p = find_preset(*costs)
        return None if p is None or self.state_bits != p.bits else p

    def preset_name(self) -> str:
        """The name of the preset these costs match, or ``"custom"``.

        >>> PricingOptions().preset_name(), PricingOptions(e_ac=0.5).preset_name()
        ('fp32-45nm', 'custom')
        """
        p = self._preset()
        return "custom" if p is None else p.name

    def disclosure(self) -> str:
        """The preset, its source and the memory cost: the head of :meth:`conventions`."""
        p = self._preset()
        hw = "custom costs" if p is None else p.describe()
        return (
            f"preset {hw}; memory {self.e_mem_bit:.3g} pJ/bit, {self.weight_bits}-bit weights "
            f"(1-bit if binarised), {self.state_bits}-bit membranes"
        )

    def to_dict(self) -> dict[str, Any]:
        """The options by name (what :attr:`EnergyReport.options` holds)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def conventions(self) -> str:
        """One disclosure line: the preset and every convention the numbers follow."""
        first = "every step" if self.first_layer_times_t else "once per distinct input frame"
        ann = {
            None: "one pass per distinct input frame",
            True: "every time step it ran",
            False: "once (T = 1)",
        }[self.ann_every_step]
        pooled = (
            "each pre-pool spike reaching a weight is an AC"
            if self.pooled_inputs == "spikes"
            else "at their pooled value"
        )
        nonbin = "as MAC every step" if self.nonbinary_as_mac else "as AC at their mean |value|"
        density = (
            "scaled by weight density"
            if self.density_scaling
            else "dense (not scaled by weight density)"
        )
        return (
            f"{self.disclosure()}; "
            f"paper Eq. 3-4: e_MAC={self.e_mac:g} pJ, e_AC={self.e_ac:g} pJ; first layer: "
            f"an image as MAC counted {first}, binary event frames as AC every step; "
            f"non-binary inputs {nonbin}; attention order {self.attention_order}; "
            f"FLOPs {density}; ANN reference counted {ann}; BN folded, pooling/residual "
            "adds/neurons free; exact view: non-zero input x kept non-zero weight pairs as "
            f"run, pooled spikes {pooled}; memory view: one weight read per synaptic op, "
            "membrane read + write per neuron update, spikes written and read at 1 bit; "
            "ANN baselines dense fp32 and int8; per sample"
        )


def merge_options(
    options: PricingOptions | Mapping[str, Any] | None, changes: Mapping[str, Any], *, caller: str
) -> PricingOptions:
    """``options`` (default: the paper's) with the keyword ``changes`` of ``caller()`` applied.

    Raises:
        TypeError: A name in ``changes`` is not a :class:`PricingOptions` field, or a
            value has the wrong type.
        ValueError: A value is out of range.

    >>> merge_options(None, {"e_ac": 0.5}, caller="f").e_ac
    0.5
    """
    if "preset" in changes:
        # A preset sets the costs and bit widths; explicit keywords still win.
        rest = {k: v for k, v in changes.items() if k != "preset"}
        preset = PricingOptions.from_preset(changes["preset"])
        costs = {
            k: getattr(preset, k)
            for k in ("e_mac", "e_ac", "weight_bits", "state_bits", "hardware")
        }
        return merge_options(options, {**costs, **rest}, caller=caller)
    names = [f.name for f in dataclasses.fields(PricingOptions)]
    unknown = set(changes) - set(names)
    if unknown:
        raise TypeError(
            f"{caller}() got unknown option(s) {sorted(unknown)}; valid: {sorted([*names, 'preset'])}"
        )
    if options is None:
        return PricingOptions(**changes)
    if isinstance(options, PricingOptions):
        return dataclasses.replace(options, **changes)
    if isinstance(options, Mapping):  # EnergyReport.options
        return merge_options(None, {**options, **changes}, caller=caller)
    raise TypeError(f"options must be a PricingOptions or None, got {type(options).__name__}")


def _attributes_section() -> str:
    # The docstring's ``Attributes`` section, made from each field's help.
    lines = ["Attributes:"]
    for f in dataclasses.fields(PricingOptions):
        text = f"{f.name}: {f.metadata['help']}"
        lines += textwrap.wrap(text, 88, initial_indent="    ", subsequent_indent="        ")
    return "\n".join(lines)


if PricingOptions.__doc__ is not None:  # None under python -OO
    PricingOptions.__doc__ = (
        f"{inspect.cleandoc(PricingOptions.__doc__)}\n\n{_attributes_section()}\n"
    )
