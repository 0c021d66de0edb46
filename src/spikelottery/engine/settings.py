"""A run setting declared once: its default, check, help text, flag group and runtime flag.

Every :class:`~spikelottery.engine.TrainConfig` field is declared with :func:`setting`;
the validation (:func:`validate_settings`), the class docstring's attribute list
(:func:`document_settings`), the command-line flags
(:func:`spikelottery.cli.add_config_flags`) and the fields a resumed run may change
(:func:`runtime_settings`) are all generated from those declarations. Adding a setting is
one edit: one more field.

>>> from dataclasses import dataclass
>>> @document_settings
... @dataclass
... class Budget:
...     epochs: int = setting(10, help="Training epochs.", check=integer(0), group="optimisation")
...     def __post_init__(self) -> None:
...         validate_settings(self)
>>> Budget(epochs=-1)
Traceback (most recent call last):
...
spikelottery.engine.settings.ConfigError: epochs must be an int >= 0, got epochs=-1
>>> "epochs: Training epochs. Default: ``10``." in Budget.__doc__
True
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import os
import re
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from .._validation import check_int, check_ratio
from ..errors import SpikeLotteryError

__all__ = [
    "METADATA_KEY",
    "ConfigError",
    "Setting",
    "boolean",
    "choice",
    "default_of",
    "document_settings",
    "format_default",
    "integer",
    "number",
    "plain",
    "ratio",
    "runtime_settings",
    "setting",
    "setting_of",
    "table",
    "text",
    "validate_settings",
]

#: The key of a field's :class:`Setting` in ``dataclasses.Field.metadata``.
METADATA_KEY = "spikelottery"

Check = Callable[[str, Any], Any]
T = TypeVar("T")


class ConfigError(SpikeLotteryError):
    """A setting has a bad value; ``field`` names it (the CLI maps it to its flag).

    >>> ConfigError("pa", "pa must be in [0, 1), got pa=1.5").field
    'pa'
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Setting:
    """What a field declares besides its default (see :func:`setting`)."""

    help: str
    check: Check
    group: str
    runtime: bool = False
    flag: str | None = None
    metavar: str | None = None


def setting(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    check: Check,
    group: str,
    runtime: bool = False,
    flag: str | None = None,
    metavar: str | None = None,
    default_factory: Callable[[], Any] | Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field that carries everything else that is said about it.

    Args:
        default: The default value (or use ``default_factory`` for a mutable one).
        help: One or two sentences (light reStructuredText): the docstring's attribute
            entry and, with the markup removed, the flag's help text.
        check: ``check(name, value)`` returns the value, normalised, or raises
            :class:`ConfigError`; see :func:`integer`, :func:`number`, :func:`choice` ...
        group: The heading of the flag in ``--help``.
        runtime: The setting changes where or how fast a run goes, never what it
            computes: it may differ between a checkpoint and the run that resumes it.
        flag: The command-line flag, if not ``--field-name`` (``--no-field-name`` for a
            boolean whose default is true).
        metavar: The flag's value placeholder in ``--help``.
        default_factory: Builds the default (e.g. ``dict``).
    """
    meta = {METADATA_KEY: Setting(help, check, group, runtime, flag, metavar)}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def setting_of(f: dataclasses.Field[Any]) -> Setting:
    """The :class:`Setting` declared with field ``f``.

    Raises:
        TypeError: ``f`` was not declared with :func:`setting`.
    """
    declared = f.metadata.get(METADATA_KEY)
    if not isinstance(declared, Setting):
        raise TypeError(
            f"field {f.name!r} has no help, check or flag: declare it with "
            "spikelottery.engine.settings.setting(default, help=..., check=..., group=...)"
        )
    return declared


def default_of(f: dataclasses.Field[Any]) -> Any:
    """The default value of field ``f`` (a fresh one for a ``default_factory``)."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


_CHECKS: dict[type, tuple[tuple[str, Check], ...]] = {}


def _checks(cls: type) -> tuple[tuple[str, Check], ...]:
    """``(name, check)`` of every field of ``cls``, in order (looked up once per class)."""
    if cls not in _CHECKS:
        _CHECKS[cls] = tuple((f.name, setting_of(f).check) for f in dataclasses.fields(cls))
    return _CHECKS[cls]


def validate_settings(obj: Any) -> None:
    """Run every field's check on ``obj`` and store the normalised values."""
    for name, check in _checks(type(obj)):
        setattr(obj, name, check(name, getattr(obj, name)))


def runtime_settings(cls: type) -> frozenset[str]:
    """The names of ``cls``'s fields declared ``runtime=True``."""
    return frozenset(f.name for f in dataclasses.fields(cls) if setting_of(f).runtime)


_LITERAL = re.compile(r"``.+?``")
_NBSP = "\x00"


def document_settings(cls: type[T]) -> type[T]:
    """Append an ``Attributes:`` section, generated from the fields, to ``cls.__doc__``.

    Each entry is the field's help and its default. Fails at class definition if a field
    was not declared with :func:`setting`.
    """
    lines = ["", "Attributes:"]
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        # Keep each ``literal``, and "Default: ``value``", on one line: wrap with their
        # spaces made unbreakable.
        entry = f"{f.name}: {setting_of(f).help} Default: ``{default_of(f)!r}``."
        entry = _LITERAL.sub(lambda m: m.group(0).replace(" ", _NBSP), entry)
        entry = entry.replace(" Default: ``", f" Default:{_NBSP}``")
        wrapped = textwrap.wrap(
            entry,
            width=88,
            initial_indent="    ",
            subsequent_indent="        ",
            break_long_words=False,
            break_on_hyphens=False,
        )
        lines += [line.replace(_NBSP, " ") for line in wrapped]
    cls.__doc__ = inspect.cleandoc(cls.__doc__ or "") + "\n" + "\n".join(lines) + "\n"
    return cls


_ROLE = re.compile(r":[a-z]+:`(~?)([^`<]+?)`")


def plain(help: str) -> str:
    """A help text without its reStructuredText markup, for ``--help``.

    >>> plain("See :func:`~spikelottery.models.list_models`; ``None`` keeps it.")
    'See list_models; None keeps it.'
    """
    help = _ROLE.sub(lambda m: m.group(2).rsplit(".", 1)[-1] if m.group(1) else m.group(2), help)
    return help.replace("``", "")


def format_default(value: Any) -> str:
    """A default as it is written on the command line or in a TOML file.

    >>> format_default(None), format_default(True), format_default({}), format_default(0.4)
    ('none', 'true', '{}', '0.4')
    """
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return json.dumps(dict(value))
    return str(value)


# --------------------------------------------------------------------------- checks


def integer(minimum: int, *, optional: bool = False, maximum: int | None = None) -> Check:
    """A check: an int (not a bool) in ``[minimum, maximum]``; ``None`` too if ``optional``."""

    def check(name: str, value: Any) -> int | None:
        if isinstance(value, np.integer):
            value = int(value)
        try:
            out = check_int(name, value, minimum=minimum, optional=optional)
        except ValueError as exc:
            raise ConfigError(name, str(exc)) from None
        if out is not None and maximum is not None and out > maximum:
            raise ConfigError(name, f"{name} must be at most {maximum}, got {name}={out}")
        return out

    return check


def number(lo: float, hi: float, *, lo_open: bool = False) -> Check:
    """A check: a finite number in ``[lo, hi]`` (``(lo, hi]`` if ``lo_open``), as a float."""

    def check(name: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
            raise ConfigError(name, f"{name} must be a number, got {value!r}")
        value = float(value)
        bad_lo = value <= lo if lo_open else value < lo
        if not math.isfinite(value) or bad_lo or value > hi:
            interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
            raise ConfigError(name, f"{name} must be in {interval}, got {name}={value!r}")
        return value

    return check


def ratio(name: str, value: Any) -> float:
    """A check: a pruning ratio, the fraction REMOVED, in ``[0, 1)``."""
    try:
        return check_ratio(name, value)
    except ValueError as exc:
        raise ConfigError(name, str(exc)) from None


def boolean(name: str, value: Any) -> bool:
    """A check: ``True`` or ``False`` (not ``1``, not ``"yes"``)."""
    if not isinstance(value, bool):
        raise ConfigError(name, f"{name} must be true or false, got {value!r}")
    return value


def choice(options: Sequence[str]) -> Check:
    """A check: one of ``options``."""

    def check(name: str, value: Any) -> str:
        if value not in options:
            raise ConfigError(
                name, f"{name} must be one of {', '.join(options)}; got {name}={value!r}"
            )
        return str(value)

    return check


def text(*, optional: bool = False) -> Check:
    """A check: a non-empty string (a path is converted); ``None`` too if ``optional``."""

    def check(name: str, value: Any) -> str | None:
        if value is None and optional:
            return None
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if not isinstance(value, str) or not value:
            kind = "a non-empty string" + (" or None" if optional else "")
            raise ConfigError(name, f"{name} must be {kind}, got {value!r}")
        return value

    return check


def table(name: str, value: Any) -> dict[str, Any]:
    """A check: a mapping of argument names to values, copied into a ``dict``."""
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ConfigError(
            name, f"{name} must be a table of argument names to values, got {value!r}"
        )
    return dict(value)
