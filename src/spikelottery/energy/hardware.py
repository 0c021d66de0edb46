"""Named hardware presets: the energy of one operation and one memory bit, with sources.

Compute figures are Horowitz, "Computing's energy problem (and what we can do about it)",
ISSCC 2014, 45 nm, 0.9 V: a MAC is one multiply plus one add, an AC one add. The memory
figure is the same source's 8 KB SRAM: 10 pJ per 64-bit read, 0.156 pJ per bit.

Presets live in :data:`HARDWARE_PRESETS`, an open registry: a name says the number format
and the process node (``"fp32-45nm"``), and a short name (``"fp32"``) is an explicit alias
of one preset. Registering a preset for another node adds a name and never re-points an
existing one:

>>> p = register_hardware_preset(HardwarePreset("fp32-7nm", 1.31, 0.38, 32, "example"))
>>> resolve_preset("fp32").name, resolve_preset("fp32-7nm").e_mac
('fp32-45nm', 1.31)
>>> _ = HARDWARE_PRESETS.unregister("fp32-7nm")
"""

from __future__ import annotations

from dataclasses import dataclass

from ..registry import Registry, UnknownNameError

__all__ = [
    "ANN_BASELINES",
    "E_SRAM_BIT_PJ",
    "HARDWARE_PRESETS",
    "HardwarePreset",
    "find_preset",
    "register_hardware_preset",
    "resolve_preset",
]

#: pJ per bit read or written in an 8 KB SRAM at 45 nm (Horowitz 2014: 10 pJ per 64 bits).
E_SRAM_BIT_PJ = 10.0 / 64.0
_SOURCE = "Horowitz, ISSCC 2014, 45 nm"


@dataclass(frozen=True)
class HardwarePreset:
    """The energy of one operation at a number format, and where the figures come from.

    Attributes:
        name: Preset name (``"fp32-45nm"``).
        e_mac: pJ per multiply-accumulate (multiply plus add).
        e_ac: pJ per accumulate (add).
        bits: Bits of a stored weight and of a membrane potential in this format.
        source: Where the figures come from.

    >>> HARDWARE_PRESETS["int8-45nm"].e_mac
    0.23
    """

    name: str
    e_mac: float
    e_ac: float
    bits: int
    source: str

    def describe(self) -> str:
        """``"fp32-45nm (Horowitz, ISSCC 2014, 45 nm: mult 3.7 + add 0.9 pJ)"``."""
        return f"{self.name} ({self.source})"


#: Every hardware preset by name, with the short names of the 45 nm ones as aliases
#: (``"fp32"`` is ``"fp32-45nm"``; a preset registered later gets no short name unless it
#: asks for a free one).
HARDWARE_PRESETS: Registry[HardwarePreset] = Registry("hardware preset")


def register_hardware_preset(
    preset: HardwarePreset, *, aliases: tuple[str, ...] = (), overwrite: bool = False
) -> HardwarePreset:
    """Register ``preset`` under ``preset.name`` (and ``aliases``).

    Name a preset for its format and process node (``"int8-7nm"``): a name or an alias
    that is taken is an error unless ``overwrite=True``, so ``preset="fp32"`` keeps
    meaning what it meant.

    Raises:
        ~spikelottery.registry.DuplicateNameError: A name or alias is taken.
        TypeError: ``preset`` is not a :class:`HardwarePreset`.
    """
    if not isinstance(preset, HardwarePreset):
        raise TypeError(f"preset must be a HardwarePreset, got {type(preset).__name__}")
    return HARDWARE_PRESETS.register(preset.name, preset, aliases=aliases, overwrite=overwrite)


for _p in (
    HardwarePreset("fp32-45nm", 4.6, 0.9, 32, f"{_SOURCE}: fp32 mult 3.7 + add 0.9 pJ"),
    HardwarePreset("fp16-45nm", 1.5, 0.4, 16, f"{_SOURCE}: fp16 mult 1.1 + add 0.4 pJ"),
    HardwarePreset("int8-45nm", 0.23, 0.03, 8, f"{_SOURCE}: int8 mult 0.2 + add 0.03 pJ"),
    HardwarePreset("int32-45nm", 3.2, 0.1, 32, f"{_SOURCE}: int32 mult 3.1 + add 0.1 pJ"),
):
    register_hardware_preset(_p, aliases=(_p.name.split("-")[0],))

#: The two ANN references of every report: dense fp32 and a quantised int8 equivalent.
ANN_BASELINES: tuple[str, ...] = ("fp32-45nm", "int8-45nm")


def resolve_preset(name: str) -> HardwarePreset:
    """The preset called ``name`` (``"int8"`` is short for ``"int8-45nm"``).

    Raises:
        ValueError: No such preset (the message lists them).

    >>> resolve_preset("fp16").e_ac
    0.4
    """
    try:
        return HARDWARE_PRESETS[name]
    except (UnknownNameError, TypeError):
        close = HARDWARE_PRESETS.unknown_message(name).partition(" (did you mean")[1:]
        raise UnknownNameError(
            f"preset must be one of {HARDWARE_PRESETS.names(sort=True)} (or "
            f"{sorted(HARDWARE_PRESETS.aliases())}), got preset={name!r}" + "".join(close)
        ) from None


def find_preset(e_mac: float, e_ac: float, bits: int) -> HardwarePreset | None:
    """The preset with these costs and bit width, or ``None`` (custom costs).

    >>> find_preset(4.6, 0.9, 32).name, find_preset(1.0, 0.5, 32)
    ('fp32-45nm', None)
    """
    for p in HARDWARE_PRESETS.values():
        if (p.e_mac, p.e_ac, p.bits) == (e_mac, e_ac, bits):
            return p
    return None
