"""Where the energy modules import the hardware presets from (:mod:`spikelottery.energy.hardware`)."""

from __future__ import annotations

from typing import Any

from .hardware import (
    ANN_BASELINES,
    E_SRAM_BIT_PJ,
    HARDWARE_PRESETS,
    HardwarePreset,
    find_preset,
    register_hardware_preset,
    resolve_preset,
)

__all__ = [
    "ANN_BASELINES",
    "E_SRAM_BIT_PJ",
    "HARDWARE_PRESETS",
    "PRESETS",
    "HardwarePreset",
    "find_preset",
    "register_hardware_preset",
    "resolve_preset",
]

#: :data:`HARDWARE_PRESETS` under its former name, for ``spikelottery.energy.PRESETS``
#: (one meaning per name: ``PRESETS`` also named the methods; it goes in 0.2).
PRESETS: Any = HARDWARE_PRESETS
