"""The ``nir`` package, imported when first needed, with the install hint when it is missing."""

from __future__ import annotations

from types import ModuleType

__all__ = ["nir_package"]


def nir_package() -> ModuleType:
    """``import nir``, or an :class:`ImportError` that says how to install it."""
    try:
        import nir
    except ImportError as exc:
        raise ImportError(
            f"spikelottery.nir needs the nir package ({exc}); install it with "
            "pip install 'spikelottery[nir]'"
        ) from exc
    return nir
