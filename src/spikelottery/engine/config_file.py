"""Reading a run's settings from a TOML or JSON config file (:func:`load_config_file`)."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

from ..errors import SpikeLotteryError

__all__ = ["load_config_file"]


def load_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a TOML or JSON config file into a dict of fields (not yet validated).

    Raises:
        SpikeLotteryError: The file is missing, a folder, unreadable, not UTF-8, not
            TOML/JSON, or not a table.
    """
    p = Path(path)
    if p.is_dir():
        raise SpikeLotteryError(
            f"config file {str(p)!r} is a folder; pass the .toml or .json file in it"
        )
    if not p.is_file():
        raise SpikeLotteryError(f"config file {str(p)!r} does not exist")
    suffix = p.suffix.lower()
    try:
        content = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpikeLotteryError(f"cannot read config file {str(p)!r}: {exc}") from None
    except UnicodeDecodeError as exc:
        raise SpikeLotteryError(
            f"config file {str(p)!r} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at "
            f"position {exc.start}); save it as UTF-8"
        ) from None
    try:
        if suffix == ".toml":
            data: Any = tomllib.loads(content)
        elif suffix == ".json":
            data = json.loads(content)
        else:
            raise SpikeLotteryError(
                f"config file {str(p)!r}: unknown extension {suffix!r}; use .toml or .json"
            )
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise SpikeLotteryError(
            f"config file {str(p)!r} is not valid {suffix[1:].upper()}: {exc}"
        ) from None
    if not isinstance(data, dict):
        raise SpikeLotteryError(
            f"config file {str(p)!r} must hold a table of fields, got {type(data).__name__}"
        )
    if set(data) == {"train"} and isinstance(data["train"], dict):
        data = data["train"]
    return dict(data)
