"""Command-line flags: those generated from the TrainConfig fields, and a few shared ones.

Every :class:`~spikelottery.engine.TrainConfig` field is one flag (:func:`add_config_flags`),
with its help, its default and a parser for its type; a new field is a new flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from collections.abc import Callable
from typing import Any

from ..engine import TrainConfig
from ..engine.settings import default_of, format_default, plain, setting_of

__all__ = [
    "add_config_flags",
    "add_json_flag",
    "add_verbose_flag",
    "add_verbosity",
    "field_flag",
    "flag_of",
    "or_none",
    "registered_names",
]


def flag_of(f: dataclasses.Field[Any]) -> str:
    """The command-line flag of a config field: its own ``flag``, else ``--field-name``.

    A boolean whose default is true gets ``--no-field-name`` (the flag turns it off).

    >>> [flag_of(f) for f in dataclasses.fields(TrainConfig)][:5]
    ['--model', '--dataset', '--data-root', '--method', '--mode']
    """
    declared = setting_of(f).flag
    if declared is not None:
        return declared
    name = f.name.replace("_", "-")
    return f"--no-{name}" if f.default is True else f"--{name}"


def field_flag(field: str) -> str:
    """The flag of the TrainConfig field named ``field``, for an error message.

    >>> field_flag("data_root"), field_flag("no_such_field")
    ('--data-root', '--no-such-field')
    """
    flags = {f.name: flag_of(f) for f in dataclasses.fields(TrainConfig)}
    return flags.get(field, "--" + field.replace("_", "-"))


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"must be a JSON object such as '{{\"depth\": 4}}', got {text!r}"
        )
    return value


def _int_or_text(text: str) -> int | str:
    """An int if ``text`` is one, else ``text`` (``--threads 2``, ``--threads auto``).

    >>> _int_or_text("2"), _int_or_text("auto"), _int_or_text("-1")
    (2, 'auto', -1)
    """
    try:
        return int(text)
    except ValueError:
        return text


def or_none(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse``, except that ``none``, ``null`` and the empty string give ``None``.

    >>> parse = or_none(int)
    >>> parse("3"), parse("none")
    (3, None)
    """

    def convert(text: str) -> Any:
        return None if text.lower() in ("none", "null", "") else parse(text)

    convert.__name__ = getattr(parse, "__name__", "value")  # argparse: "invalid int value"
    return convert


def _value_options(annotation: Any, name: str) -> dict[str, Any]:
    """``add_argument`` options that parse a flag's text as a field of type ``annotation``."""
    args = typing.get_args(annotation)
    optional = type(None) in args
    if optional:
        rest = [a for a in args if a is not type(None)]
        annotation = rest[0] if len(rest) == 1 else annotation
    origin = typing.get_origin(annotation)
    if annotation in (int, float, str):
        parse: Callable[[str], Any] = annotation
    elif set(typing.get_args(annotation)) == {int, str}:
        parse = _int_or_text  # a count or a word ("auto"); the field's check says which
    elif origin is dict or annotation is dict:
        parse = _json_object
    elif origin in (list, tuple) and typing.get_args(annotation)[0] in (int, float, str):
        return {"nargs": "+", "type": typing.get_args(annotation)[0]}
    else:
        raise TypeError(f"field {name!r}: no command-line parser for type {annotation!r}")
    return {"type": or_none(parse) if optional else parse}


def add_config_flags(
    parser: argparse.ArgumentParser, config_class: type[TrainConfig] = TrainConfig
) -> None:
    """Add one flag per field of ``config_class``, generated from the field declarations.

    The help is the field's help and its dataclass default; the argument groups are the
    fields' groups. A flag not given on the command line is absent from the parsed
    namespace (so a config file's value stands).

    >>> p = argparse.ArgumentParser()
    >>> add_config_flags(p)
    >>> vars(p.parse_args(["--pa", "0.3", "--ann"]))
    {'pa': 0.3, 'spiking': False}
    """
    groups: dict[str, Any] = {}
    hints = typing.get_type_hints(config_class)
    for f in dataclasses.fields(config_class):
        declared = setting_of(f)
        default = default_of(f)
        if declared.group not in groups:
            groups[declared.group] = parser.add_argument_group(declared.group)
        options: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS}
        if hints[f.name] is bool:
            options["action"] = "store_false" if default else "store_true"
            shown = f"this flag sets {f.name}={format_default(not default)}; "
            shown += f"default: {format_default(default)}"
        else:
            options.update(_value_options(hints[f.name], f.name))
            options["metavar"] = declared.metavar or f.name.upper()
            shown = f"default: {format_default(default)}"
        names = registered_names(f.name)
        if names:
            shown = f"one of: {', '.join(names)}; {shown}"
        options["help"] = f"{plain(declared.help)} ({shown})".replace("%", "%%")
        groups[declared.group].add_argument(flag_of(f), **options)


def registered_names(field: str) -> list[str]:
    """The names a registry holds for the TrainConfig field ``field`` (empty for others).

    The lists of ``--model``, ``--dataset``, ``--method``, ``--search`` and
    ``--energy-preset`` read the registries, plugins' registrations included.

    >>> "vgg9" in registered_names("model"), registered_names("pa")
    (True, [])
    """
    from ..data import DATASETS
    from ..energy.hardware import HARDWARE_PRESETS
    from ..engine import METHODS, SEARCH_METHODS
    from ..models import MODELS

    registries: dict[str, Any] = {
        "model": MODELS,
        "dataset": DATASETS,
        "method": METHODS,
        "search": SEARCH_METHODS,
        "energy_preset": HARDWARE_PRESETS,
    }
    registry = registries.get(field)
    return [] if registry is None else list(registry)


def add_verbosity(p: argparse.ArgumentParser) -> None:
    """``-q`` and ``-v``: the log level of a command that logs its progress."""
    v = p.add_mutually_exclusive_group()
    v.add_argument("-q", "--quiet", action="store_true", help="only warnings and the final output")
    v.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def add_verbose_flag(p: argparse.ArgumentParser) -> None:
    """``-v``: log what loading the ticket does (quiet otherwise: the output is the result)."""
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.set_defaults(quiet=True)


def add_json_flag(p: argparse.ArgumentParser) -> None:
    """``--json``: print the result as JSON."""
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
