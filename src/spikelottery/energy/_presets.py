"""Where the energy modules import the hardware presets from (:mod:`spikelottery.energy.hardware`)."""

from __future__ import annotations

from .hardware import (
    ANN_BASELINES,
    E_SRAM_BIT_PJ,
    HARDWARE_PRESETS,
    PRESETS,
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
