"""The ``spikelottery`` command line: a thin layer over :mod:`spikelottery.engine`.

The ``run`` flags are generated from the :class:`~spikelottery.engine.TrainConfig` fields
(:func:`add_config_flags`): a new field is a new flag, with its help and its default.

``spikelottery demo`` compares the dense SNN, its lottery ticket and its binarised ticket
on the embedded digits; ``spikelottery run`` runs one experiment from flags and/or a
TOML/JSON config file (flags win over the file). Bad flags or values exit with status 2
and a message naming the flag.

Example:
    .. code-block:: console

        $ spikelottery demo --out runs/demo
        $ spikelottery run --model vgg9 --dataset cifar10 --data-root data --mode mp --pa 0.4
        $ spikelottery run --config exp.toml --seed 1 --out runs/seed1
        $ torchrun --nproc_per_node 4 -m spikelottery run --config exp.toml
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import json
import logging
import sys
import typing
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ._validation import check_int, check_ratio
from ._version import __version__
from .demo import demo, format_table
from .engine import RESULTS_FILE, ConfigError, TrainConfig, Trainer, load_config_file
from .engine.settings import default_of, format_default, plain, setting_of
from .errors import SpikeLotteryError

__all__ = ["add_config_flags", "build_parser", "flag_of", "main"]


def flag_of(f: dataclasses.Field[Any]) -> str:
    """The command-line flag of a config field: its own ``flag``, else ``--field-name``.

    A boolean whose default is true gets ``--no-field-name`` (the flag turns it off).

    >>> [flag_of(f) for f in dataclasses.fields(TrainConfig)][:5]
    ['--model', '--dataset', '--data-root', '--mode', '--ann']
    """
    declared = setting_of(f).flag
    if declared is not None:
        return declared
    name = f.name.replace("_", "-")
    return f"--no-{name}" if f.default is True else f"--{name}"


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


def _or_none(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse``, except that ``none``, ``null`` and the empty string give ``None``."""

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
    elif origin is dict or annotation is dict:
        parse = _json_object
    elif origin in (list, tuple) and typing.get_args(annotation)[0] in (int, float, str):
        return {"nargs": "+", "type": typing.get_args(annotation)[0]}
    else:
        raise TypeError(f"field {name!r}: no command-line parser for type {annotation!r}")
    return {"type": _or_none(parse) if optional else parse}


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
        options["help"] = f"{plain(declared.help)} ({shown})".replace("%", "%%")
        groups[declared.group].add_argument(flag_of(f), **options)


def _flag(field: str) -> str:
    """The flag of the field named ``field``, for an error message."""
    flags = {f.name: flag_of(f) for f in dataclasses.fields(TrainConfig)}
    return flags.get(field, "--" + field.replace("_", "-"))


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="TOML or JSON file of TrainConfig fields (flags override its values)",
    )
    add_config_flags(p)


def _add_demo_flags(p: argparse.ArgumentParser) -> None:
    defaults = {name: q.default for name, q in inspect.signature(demo).parameters.items()}

    def flag(name: str, help: str, **options: Any) -> None:
        default = defaults[name]
        shown = f"default: {format_default(default)}"
        p.add_argument(
            "--" + name.replace("_", "-"), default=default, help=f"{help} ({shown})", **options
        )

    flag("out", "output folder", type=_or_none(str), metavar="DIR")
    flag("epochs", "epochs per method", type=int)
    flag("seed", "seed of every run", type=int)
    flag("pa", "fraction of weights REMOVED by the tickets", type=float)
    flag("max_batches", "batches per epoch (quick tests)", type=_or_none(int))
    p.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        default=argparse.SUPPRESS,
        help="no progress bars",
    )


def _add_verbosity(p: argparse.ArgumentParser) -> None:
    v = p.add_mutually_exclusive_group()
    v.add_argument("-q", "--quiet", action="store_true", help="only warnings and the final output")
    v.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``spikelottery`` (subcommands ``run`` and ``demo``)."""
    parser = argparse.ArgumentParser(
        prog="spikelottery",
        description="Find lottery tickets in spiking neural networks.",
    )
    parser.add_argument("--version", action="version", version=f"spikelottery {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p_run = sub.add_parser(
        "run",
        help="run one experiment (Algorithm 1) from flags and/or a config file",
        description="Run one experiment. Flags override the values of --config.",
    )
    _add_run_flags(p_run)
    _add_verbosity(p_run)
    p_run.set_defaults(_parser=p_run)

    p_demo = sub.add_parser(
        "demo",
        help="dense SNN vs. SNN ticket vs. binarised SNN ticket on the embedded digits",
        description=(
            "Train a small spiking VGG on the embedded digits three ways (dense, ticket 'lt', "
            "binarised ticket 'mp') and print accuracy, kept %, energy and time."
        ),
    )
    _add_demo_flags(p_demo)
    _add_verbosity(p_demo)
    p_demo.set_defaults(_parser=p_demo)
    return parser


@contextlib.contextmanager
def _logging(quiet: bool, verbose: bool) -> Iterator[None]:
    """Print the ``spikelottery`` logger's messages to stderr while the command runs.

    The logger's handlers, level and ``propagate`` flag are restored afterwards, so an
    in-process ``main()`` (a test, a notebook) leaves the caller's logging as it was.
    """
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    logger = logging.getLogger("spikelottery")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False  # no second copy through the root logger's handlers
    try:
        yield
    finally:
        logger.handlers[:] = saved[0]
        handler.close()
        logger.setLevel(saved[1])
        logger.propagate = saved[2]


def _config_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> TrainConfig:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    flags = {k: v for k, v in vars(args).items() if k in names}
    source = getattr(args, "config", None)
    values: dict[str, Any] = {}
    if source is not None:
        try:
            values = load_config_file(source)
        except SpikeLotteryError as exc:
            parser.error(f"argument --config: {exc}")
    values.update(flags)
    try:
        return TrainConfig.from_dict(values, source=source or "command line")
    except ConfigError as exc:
        if exc.field in flags or source is None:
            parser.error(f"argument {_flag(exc.field)}: {exc}")
        parser.error(f"config file {source!r}: {exc} (or override it with {_flag(exc.field)})")
    except (SpikeLotteryError, TypeError, ValueError) as exc:
        parser.error(str(exc))


def _check_demo_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for name, minimum, optional in (
        ("epochs", 1, False),
        ("seed", 0, False),
        ("max_batches", 1, True),
    ):
        try:
            check_int(name, getattr(args, name), minimum=minimum, optional=optional)
        except ValueError as exc:
            parser.error(f"argument --{name.replace('_', '-')}: {exc}")
    try:
        check_ratio("pa", args.pa)
    except ValueError as exc:
        parser.error(f"argument --pa: {exc}")


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    cfg = _config_from_args(parser, args)
    res = Trainer(cfg).run()
    energy = "n/a" if res.energy_mj is None else f"{res.energy_mj:.6f} mJ"
    print(
        f"accuracy {100 * res.accuracy:.2f}% | kept {100 * res.kept_fraction:.2f}% | "
        f"energy {energy} per sample | {res.seconds:.1f} s"
    )
    if cfg.out is not None:
        print(f"results: {cfg.out}/{RESULTS_FILE}")
    return 0


def _demo(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    _check_demo_args(parser, args)
    progress = getattr(args, "progress", True)
    echo = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    records = demo(
        args.out,
        epochs=args.epochs,
        seed=args.seed,
        pa=args.pa,
        max_batches=args.max_batches,
        progress=progress,
        echo=echo,
    )
    print(format_table(records))
    if args.out is not None:
        print(f"results: {args.out}/{RESULTS_FILE}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``spikelottery`` and ``python -m spikelottery``; returns the exit status.

    Argument errors exit with status 2 (``SystemExit``) and a message naming the flag;
    an error found while running (a missing data file, a mismatched checkpoint) prints
    ``spikelottery: error: ...`` and returns 1.
    """
    args = build_parser().parse_args(argv)
    parser: argparse.ArgumentParser = args._parser  # errors read "spikelottery run: error: ..."
    with _logging(args.quiet, args.verbose):
        try:
            if args.command == "run":
                return _run(parser, args)
            return _demo(parser, args)
        except ConfigError as exc:  # found at run time, e.g. a batch size not divisible by W
            parser.error(f"argument {_flag(exc.field)}: {exc}")  # exits with status 2
        except (SpikeLotteryError, OSError) as exc:
            print(f"spikelottery: error: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("spikelottery: interrupted", file=sys.stderr)
            return 130
