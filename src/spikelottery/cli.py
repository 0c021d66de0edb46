"""The ``spikelottery`` command line: a thin layer over the Python API.

The ``run`` flags are generated from the :class:`~spikelottery.engine.TrainConfig` fields
(:func:`add_config_flags`): a new field is a new flag, with its help and its default.

``spikelottery demo`` compares the dense SNN, its lottery ticket and its binarised ticket
on the embedded digits; ``spikelottery run`` runs one experiment from flags and/or a
TOML/JSON config file (flags win over the file). ``models`` and ``datasets`` list the
zoo and the data sets; ``info`` describes a ticket file; ``evaluate``, ``energy`` and
``export`` rebuild the zoo model a run found the ticket in (from the ticket's metadata),
load the ticket into it and measure or export it. Bad flags or values exit with status 2
and a message naming the flag; a failure while running exits with status 1.

Example:
    .. code-block:: console

        $ spikelottery demo --out runs/demo
        $ spikelottery run --model vgg9 --dataset cifar10 --data-root data --mode mp --pa 0.4
        $ spikelottery run --config exp.toml --seed 1 --out runs/seed1
        $ torchrun --nproc_per_node 4 -m spikelottery run --config exp.toml
        $ spikelottery info runs/run/ticket.safetensors
        $ spikelottery evaluate runs/run/ticket.safetensors --data-root data
        $ spikelottery export runs/run/ticket.safetensors --to onnx --out ticket.onnx
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import json
import logging
import math
import sys
import typing
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._table import format_rows
from ._validation import check_int, check_ratio
from ._version import __version__
from .demo import demo, format_table
from .engine import RESULTS_FILE, ConfigError, TrainConfig, Trainer, load_config_file
from .engine.settings import default_of, format_default, plain, setting_of
from .errors import SpikeLotteryError

if TYPE_CHECKING:
    import torch
    from torch import nn
    from torch.utils.data import DataLoader

    from .data import DatasetInfo
    from .tickets import TicketInfo

__all__ = ["add_config_flags", "build_parser", "flag_of", "main"]

# The --to formats of ``spikelottery export``.
_EXPORT_FORMATS = ("dense", "onnx")


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


def _add_verbose_flag(p: argparse.ArgumentParser) -> None:
    """``-v``: log what loading the ticket does (quiet otherwise: the output is the result)."""
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.set_defaults(quiet=True)


def _add_json_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def _add_ticket_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "ticket",
        metavar="TICKET",
        help="a ticket file (the ticket.safetensors of spikelottery run, or save_ticket's)",
    )


def _add_data_flags(p: argparse.ArgumentParser, batches_help: str) -> None:
    p.add_argument(
        "--dataset",
        metavar="NAME",
        help="data set whose test split to use (default: the run's); its samples must have "
        "the shape the model was built for",
    )
    p.add_argument(
        "--data-root",
        metavar="DIR",
        help="folder of the data files (default: the run's data_root; the embedded data sets "
        "need none)",
    )
    p.add_argument("--batches", metavar="N", type=int, help=batches_help)
    p.add_argument(
        "--batch-size", metavar="N", type=int, help="samples per batch (default: the run's)"
    )
    p.add_argument(
        "--device",
        metavar="DEVICE",
        default="auto",
        help="'auto', 'cpu', 'cuda' or 'cuda:N' (default: auto, a GPU if there is one)",
    )


def _add_verbosity(p: argparse.ArgumentParser) -> None:
    v = p.add_mutually_exclusive_group()
    v.add_argument("-q", "--quiet", action="store_true", help="only warnings and the final output")
    v.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``spikelottery`` and its subcommands (see the module docstring)."""
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

    p_models = sub.add_parser(
        "models",
        help="list the model zoo: parameters and input shape at create_model's defaults",
        description="List the models of create_model with their parameter counts and input "
        "shapes at create_model's defaults.",
    )
    _add_json_flag(p_models)
    p_models.set_defaults(_parser=p_models)

    p_datasets = sub.add_parser(
        "datasets",
        help="list the data sets: classes, sample shape, split sizes",
        description="List the data sets of get_dataset with their classes, sample shape and "
        "split sizes; only the embedded ones need no --data-root.",
    )
    _add_json_flag(p_datasets)
    p_datasets.set_defaults(_parser=p_datasets)

    p_info = sub.add_parser(
        "info",
        help="describe a ticket file: layers, pa, pb, mode, kept weights, metadata",
        description="Describe a ticket file (read_ticket_info): it is checked, not loaded.",
    )
    _add_ticket_arg(p_info)
    _add_json_flag(p_info)
    p_info.set_defaults(_parser=p_info)

    p_eval = sub.add_parser(
        "evaluate",
        help="accuracy of a ticket on a data set's test split",
        description="Rebuild the run's model from the ticket's metadata, load the ticket and "
        "measure its accuracy and loss on the test split.",
    )
    _add_ticket_arg(p_eval)
    _add_data_flags(p_eval, "test batches to use (default: the whole test split)")
    _add_json_flag(p_eval)
    _add_verbose_flag(p_eval)
    p_eval.set_defaults(_parser=p_eval)

    p_energy = sub.add_parser(
        "energy",
        help="energy per sample of a ticket (paper Eq. 3-4), measured on test batches",
        description="Rebuild the run's model from the ticket's metadata, load the ticket and "
        "print estimate_energy's report, measured on test batches.",
    )
    _add_ticket_arg(p_energy)
    _add_data_flags(p_energy, "test batches to measure on (default: the run's energy_batches)")
    _add_json_flag(p_energy)
    _add_verbose_flag(p_energy)
    p_energy.set_defaults(_parser=p_energy)

    p_export = sub.add_parser(
        "export",
        help="export a ticket as a dense state_dict (safetensors) or an ONNX graph",
        description="Rebuild the run's model from the ticket's metadata, load the ticket and "
        "export it with the ticket baked into dense layers (export_dense, export_onnx); "
        "patch pruning is not applied.",
    )
    _add_ticket_arg(p_export)
    p_export.add_argument(
        "--to",
        required=True,
        choices=_EXPORT_FORMATS,
        help="'dense': the dense model's state_dict as safetensors; 'onnx': an ONNX graph",
    )
    p_export.add_argument("--out", required=True, metavar="PATH", help="the file to write")
    _add_verbose_flag(p_export)
    p_export.set_defaults(_parser=p_export)
    return parser


@contextlib.contextmanager
def _logging(quiet: bool, verbose: bool) -> Iterator[None]:
    """Print the ``spikelottery`` logger's messages to stderr while the command runs.

    The logger's handlers, level and ``propagate`` flag are restored afterwards, so an
    in-process ``main()`` (a test, a notebook) leaves the caller's logging as it was.
    """
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
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


# ----------------------------------------------------------------------------- listings

# Training and test samples of each data set's default split, known without reading it
# (the data set classes document them; the tests check the embedded ones against the data).
_SPLIT_SIZES: dict[str, tuple[int, int]] = {
    "digits": (1438, 359),
    "digits_dvs": (1438, 359),
    "cifar10": (50_000, 10_000),
    "cifar100": (50_000, 10_000),
    "dvs128_gesture": (1176, 288),
    "cifar10_dvs": (9000, 1000),
}


def _dims(shape: Sequence[int] | None) -> str:
    """``(1, 8, 8)`` as ``1x8x8``."""
    return "-" if shape is None else "x".join(str(n) for n in shape)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def _model_rows() -> list[dict[str, Any]]:
    """Every zoo model at :func:`~spikelottery.models.create_model`'s defaults."""
    import torch

    from .models import create_model, list_models

    defaults = {
        name: q.default
        for name, q in inspect.signature(create_model).parameters.items()
        if q.default is not inspect.Parameter.empty
    }
    size = defaults["img_size"]
    height, width = (size, size) if isinstance(size, int) else size
    rows = []
    for name in list_models():
        with torch.device("meta"):  # shapes only: no memory, no random initialisation
            model = create_model(name)
        rows.append(
            {
                "name": name,
                "class": type(model).__name__,
                "parameters": sum(p.numel() for p in model.parameters()),
                "input_shape": [defaults["in_channels"], height, width],
                "timesteps": defaults["timesteps"],
                "num_classes": defaults["num_classes"],
            }
        )
    return rows


def _models(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    rows = _model_rows()
    if args.json:
        _print_json(rows)
        return 0
    header = ["model", "class", "parameters", "input", "T", "classes"]
    cells = [
        [
            r["name"],
            r["class"],
            f"{r['parameters']:,}",
            _dims(r["input_shape"]),
            str(r["timesteps"]),
            str(r["num_classes"]),
        ]
        for r in rows
    ]
    print("\n".join(format_rows(header, cells, numeric=[2, 4, 5])))
    print(
        "\nAt create_model's defaults (a run shapes the model for its data set); the ANN twins\n"
        "(spiking=False) have the same parameters."
    )
    return 0


def _dataset_rows() -> list[dict[str, Any]]:
    from .data import DATASETS, dataset_info

    rows = []
    for name in DATASETS:
        info = dataset_info(name)
        train, test = _SPLIT_SIZES.get(name, (None, None))
        rows.append(
            {
                "name": name,
                "num_classes": info.num_classes,
                "input_shape": list(info.input_shape),
                "event": info.is_event,
                "timesteps": info.timesteps,
                "embedded": not info.needs_root,
                "train": train,
                "test": test,
            }
        )
    return rows


def _datasets(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    rows = _dataset_rows()
    if args.json:
        _print_json(rows)
        return 0
    header = ["dataset", "classes", "sample", "kind", "train", "test", "files"]
    cells = [
        [
            r["name"],
            str(r["num_classes"]),
            _dims(r["input_shape"]),
            "events TxCxHxW" if r["event"] else "image CxHxW",
            "?" if r["train"] is None else f"{r['train']:,}",
            "?" if r["test"] is None else f"{r['test']:,}",
            "embedded" if r["embedded"] else "--data-root",
        ]
        for r in rows
    ]
    print("\n".join(format_rows(header, cells, numeric=[1, 4, 5])))
    return 0


# ----------------------------------------------------------------------------- tickets


def _read_ticket(parser: argparse.ArgumentParser, path: str) -> TicketInfo:
    """The checked metadata of the ticket at ``path``; a bad file is an argument error."""
    from .tickets import read_ticket_info

    if not Path(path).exists():
        parser.error(f"argument TICKET: {path!r} does not exist")
    if not Path(path).is_file():
        parser.error(f"argument TICKET: {path!r} is not a file")
    try:
        return read_ticket_info(path)
    except SpikeLotteryError as exc:
        parser.error(f"argument TICKET: {exc}")


def _kept(ticket: TicketInfo) -> tuple[int, int]:
    """Weights kept by the ticket's layers, and their weights in all."""
    kept = sum(layer["kept"] for layer in ticket.layers)
    total = sum(math.prod(layer["shape"]) for layer in ticket.layers)
    return kept, total


def _config_summary(text: str) -> str:
    """A run's config (JSON) as its non-default fields, ``key=value`` separated by spaces."""
    from .engine.config import field_defaults

    try:
        values = json.loads(text)
    except json.JSONDecodeError:
        values = None
    if not isinstance(values, dict):
        return text if len(text) <= 200 else text[:200] + "..."
    defaults = field_defaults()
    changed = {k: v for k, v in values.items() if k not in defaults or defaults[k] != v}
    return " ".join(f"{k}={json.dumps(v)}" for k, v in changed.items()) or "(all defaults)"


def _metadata_order(key: str) -> tuple[int, str]:
    """The engine's entries first (the long run config last), then the others by name."""
    engine = ("model", "dataset", "seed", "accuracy")
    if key in engine:
        return (engine.index(key) - len(engine), "")
    return (1, "") if key == "config" else (0, key)


def _info(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    ticket = _read_ticket(parser, args.ticket)
    kept, total = _kept(ticket)
    if args.json:
        record = dataclasses.asdict(ticket)
        record["path"] = str(ticket.path)
        record.update(kept=kept, weights=total, kept_fraction=kept / total if total else None)
        _print_json(record)
        return 0
    if ticket.pb > 0:
        patches = f"pb={ticket.pb:g} after {ticket.patch_embed!r}"
        if ticket.patch_layout is not None:
            patches += f", layout {ticket.patch_layout!r}"
        if ticket.num_prefix_tokens is not None:
            patches += f", {ticket.num_prefix_tokens} prefix tokens never pruned"
    else:
        patches = "none (pb=0)"
    share = f" ({100 * kept / total:.2f}%)" if total else ""
    lines = [
        ("ticket", str(ticket.path)),
        (
            "format",
            f"spikelottery ticket v{ticket.format_version}, {ticket.size_bytes:,} bytes, "
            f"written by spikelottery {ticket.library_version}",
        ),
        ("mode", f"{ticket.mode} (pa={ticket.pa:g})"),
        ("kept", f"{kept:,} of {total:,} weights{share} in {len(ticket.layers)} layers"),
        ("patches", patches),
        (
            "stored",
            f"weight dtype {ticket.weight_dtype}; scores "
            + ("included" if ticket.include_scores else "not included"),
        ),
    ]
    for key, value in sorted(ticket.metadata.items(), key=lambda kv: _metadata_order(kv[0])):
        shown = _config_summary(value) if key == "config" else value
        lines.append((f"user.{key}", shown))
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        print(f"{key.ljust(width)}  {value}")
    header = ["layer", "class", "shape", "pa", "mode", "kept", "of", "kept %"]
    cells = []
    for layer in ticket.layers:
        n = math.prod(layer["shape"])
        cells.append(
            [
                layer["name"],
                layer["class"],
                _dims(layer["shape"]),
                f"{layer['pa']:g}",
                layer["mode"],
                f"{layer['kept']:,}",
                f"{n:,}",
                f"{100 * layer['kept'] / n:.2f}" if n else "-",
            ]
        )
    print()
    print("\n".join(format_rows(header, cells, numeric=[3, 5, 6, 7])))
    return 0


@dataclasses.dataclass(frozen=True)
class _Rebuilt:
    """A ticket loaded into the model its run was built around.

    Attributes:
        ticket: The ticket file's metadata.
        config: The run's config, as recorded in the ticket.
        shape: The data set shape the model was built for.
        model: The zoo model with the ticket loaded, on the CPU.
    """

    ticket: TicketInfo
    config: TrainConfig
    shape: DatasetInfo
    model: nn.Module


def _no_model(path: str) -> str:
    return (
        f"argument TICKET: {path!r} records no run config (metadata 'config'), so its model "
        "cannot be rebuilt here (the spikelottery engine records it). In Python, load it into "
        f"the model it was found in: net = load_ticket(build_my_model(), {path!r}), then "
        "evaluate(net, loader), estimate_energy(net, batches) or export_dense(net)"
    )


def _run_config(parser: argparse.ArgumentParser, ticket: TicketInfo, path: str) -> TrainConfig:
    """The run config recorded in a ticket saved by the engine."""
    text = ticket.metadata.get("config")
    if text is None:
        parser.error(_no_model(path))
    try:
        values = json.loads(text)
        return TrainConfig.from_dict(values, source=f"the run config recorded in {path!r}")
    except (TypeError, ValueError) as exc:  # ConfigError and JSONDecodeError are ValueErrors
        parser.error(f"argument TICKET: cannot rebuild the model of {path!r}: {exc}")


def _read_run(parser: argparse.ArgumentParser, path: str) -> tuple[TicketInfo, TrainConfig]:
    """The ticket at ``path`` and the run config it records; a bad file is an argument error."""
    ticket = _read_ticket(parser, path)
    return ticket, _run_config(parser, ticket, path)


def _data_shape(cfg: TrainConfig) -> DatasetInfo:
    """The samples of ``cfg``'s data set, as the run shaped them (its model's input)."""
    from .data import dataset_info

    return dataset_info(cfg.dataset, resolution=cfg.resolution, timesteps=cfg.timesteps)


def _rebuild(path: str, ticket: TicketInfo, cfg: TrainConfig) -> _Rebuilt:
    """Rebuild the run's zoo model as the engine does (:func:`zoo_model`), load the ticket."""
    import torch

    from .engine.build import zoo_model
    from .tickets import load_ticket

    shape = _data_shape(cfg)
    with torch.random.fork_rng():  # the random initialisation is overwritten anyway
        try:
            model = zoo_model(cfg, shape)
        except (TypeError, ValueError) as exc:
            raise SpikeLotteryError(
                f"cannot rebuild the model {cfg.model!r} from the run config recorded in "
                f"{path!r}: {exc}"
            ) from None
        try:
            load_ticket(model, path)
        except SpikeLotteryError as exc:
            raise SpikeLotteryError(
                f"{exc} (the ticket's metadata names the zoo model {cfg.model!r}; a ticket found "
                "in a model of your own loads in Python: load_ticket(build_my_model(), path))"
            ) from None
    return _Rebuilt(ticket, cfg, shape, model)


def _engine_net(rebuilt: _Rebuilt) -> nn.Module:
    """What the engine calls: the model, or a time-first view of it (the run's model_input)."""
    from .engine.convention import engine_view

    cfg = rebuilt.config
    return engine_view(
        rebuilt.model, cfg.model_input, timesteps=cfg.timesteps, event=rebuilt.shape.is_event
    )


@dataclasses.dataclass(frozen=True)
class _Measuring:
    """What ``evaluate`` and ``energy`` measure: the loaded ticket and the test data."""

    rebuilt: _Rebuilt
    config: TrainConfig  # the run's, with this command's --dataset, --data-root, ...
    device: torch.device
    net: nn.Module  # what the engine calls (the model itself for the zoo's batch-first models)
    loader: DataLoader
    batches: int | None
    samples: int


def _positive(parser: argparse.ArgumentParser, flag: str, value: int | None) -> int | None:
    if value is not None and value < 1:
        parser.error(f"argument {flag}: must be at least 1, got {value}")
    return value


def _prepare(parser: argparse.ArgumentParser, args: argparse.Namespace) -> _Measuring:
    """Check the flags, load the ticket, open the test split."""
    from torch.utils.data import DataLoader

    from .engine.build import dataset_split
    from .engine.distributed import DistInfo, resolve_device

    batches = _positive(parser, "--batches", args.batches)
    _positive(parser, "--batch-size", args.batch_size)
    ticket, run_cfg = _read_run(parser, args.ticket)
    changes = {
        "dataset": args.dataset,
        "data_root": args.data_root,
        "batch_size": args.batch_size,
        "device": args.device,
    }
    try:
        cfg = run_cfg.replace(**{k: v for k, v in changes.items() if v is not None})
    except ConfigError as exc:
        parser.error(f"argument {_flag(exc.field)}: {exc}")
    shape, data = _data_shape(run_cfg), _data_shape(cfg)
    if (data.num_classes, data.input_shape) != (shape.num_classes, shape.input_shape):
        parser.error(
            f"argument --dataset: the ticket's model was built for {shape.name!r} "
            f"({shape.num_classes} classes, samples {_dims(shape.input_shape)}), but "
            f"{data.name!r} has {data.num_classes} classes, samples {_dims(data.input_shape)}"
        )
    if data.needs_root and cfg.data_root is None:
        parser.error(
            f"argument --data-root: {data.name!r} is read from local files; pass --data-root "
            "DIR, the folder that holds them"
        )
    try:
        device = resolve_device(cfg.device, DistInfo())
    except SpikeLotteryError as exc:
        parser.error(f"argument --device: {exc}")
    rebuilt = _rebuild(args.ticket, ticket, run_cfg)
    try:
        test_set = dataset_split(cfg, "test")
    except SpikeLotteryError:
        raise
    except (TypeError, ValueError) as exc:
        raise SpikeLotteryError(f"cannot read the test split of {cfg.dataset!r}: {exc}") from None
    loader = DataLoader(test_set, batch_size=cfg.batch_size, shuffle=False)
    n = len(test_set)  # type: ignore[arg-type]
    samples = n if batches is None else min(n, batches * cfg.batch_size)
    rebuilt.model.to(device)
    return _Measuring(rebuilt, cfg, device, _engine_net(rebuilt), loader, batches, samples)


def _evaluate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from ._state import finite_or_none
    from .engine import evaluate

    m = _prepare(parser, args)
    accuracy, loss = evaluate(m.net, m.loader, device=m.device, max_batches=m.batches)
    recorded = _recorded_accuracy(m.rebuilt.ticket)
    if args.json:
        _print_json(
            {
                "ticket": args.ticket,
                "dataset": m.config.dataset,
                "samples": m.samples,
                "accuracy": finite_or_none(accuracy),
                "loss": finite_or_none(loss),
                "recorded_accuracy": recorded,
            }
        )
        return 0
    line = (
        f"accuracy {100 * accuracy:.2f}% | loss {loss:.4f} | {m.samples:,} samples of the "
        f"{m.config.dataset!r} test split"
    )
    if recorded is not None:
        run = m.rebuilt.config
        line += f" | the run recorded {100 * recorded:.2f}%"
        if run.max_batches is not None:
            line += f" on {run.max_batches} batches of {run.batch_size}"
    print(line)
    return 0


def _recorded_accuracy(ticket: TicketInfo) -> float | None:
    """The test accuracy that the run recorded in the ticket's metadata, if any."""
    try:
        return float(ticket.metadata["accuracy"])
    except (KeyError, ValueError):
        return None


def _energy(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from ._state import finite_or_none
    from .energy import estimate_energy

    m = _prepare(parser, args)
    batches = m.batches if m.batches is not None else m.config.energy_batches
    # As the engine measures it: a network that does not spike pays its MACs on every step
    # it runs; the SNN's ANN reference runs once.
    spiking = getattr(m.net, "spiking", m.config.spiking)
    report = estimate_energy(m.net, m.loader, max_batches=batches, ann_every_step=not spiking)
    sparse = report.reprice(density_scaling=True)
    energy, energy_sparse = (
        (report.snn_mj, sparse.snn_mj) if spiking else (report.ann_mj, sparse.ann_mj)
    )
    if args.json:
        _print_json(
            {
                "ticket": args.ticket,
                "dataset": m.config.dataset,
                "samples": report.samples,
                "energy_mj": energy,
                "energy_sparse_mj": energy_sparse,
                "ann_energy_mj": report.ann_mj,
                "firing_rate": finite_or_none(report.mean_rate) if spiking else None,
                "report": report.to_dict(),
            }
        )
        return 0
    print(report)
    print(
        f"\nenergy per sample: {energy:.6f} mJ ({'SNN' if spiking else 'ANN'}); "
        f"{energy_sparse:.6f} mJ if pruned weights do no work (density_scaling) | "
        f"{report.samples:,} samples of the {m.config.dataset!r} test split"
    )
    return 0


def _export(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    out = Path(args.out)
    if not out.parent.is_dir():
        parser.error(f"argument --out: the folder {str(out.parent)!r} does not exist")
    if out.is_dir():
        parser.error(f"argument --out: {args.out!r} is a folder; give a file name")
    if out.exists() and out.resolve() == Path(args.ticket).resolve():
        parser.error(f"argument --out: {args.out!r} is the ticket itself")
    rebuilt = _rebuild(args.ticket, *_read_run(parser, args.ticket))
    note = " (patch pruning is not applied)" if rebuilt.ticket.pb > 0 else ""
    if args.to == "dense":
        n, size = _export_dense(rebuilt, out, args.ticket)
        print(f"{out}: the dense model's state_dict, {n} tensors, {size:,} bytes{note}")
        print(
            "load it with safetensors.torch.load_file into the run's dense zoo model "
            "(the file's metadata holds the run config)"
        )
    else:
        example = _export_onnx(rebuilt, out)
        print(
            f"{out}: ONNX graph of the dense model for input 'input' of shape "
            f"{list(example.shape)} (one sample), output 'logits'{note}"
        )
    return 0


def _export_dense(rebuilt: _Rebuilt, out: Path, ticket_path: str) -> tuple[int, int]:
    """Write the dense model's ``state_dict`` (safetensors, atomically); tensors and bytes."""
    import safetensors.torch

    from ._io import atomic_write_bytes
    from .tickets import export_dense

    dense = export_dense(rebuilt.model)
    # Clones: safetensors refuses tensors that share memory (tied weights).
    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in dense.state_dict().items()}
    metadata = {
        **rebuilt.ticket.metadata,
        "format": "spikelottery.dense",
        "ticket": Path(ticket_path).name,
    }
    data = safetensors.torch.save(tensors, metadata=metadata)
    atomic_write_bytes(out, data)
    return len(tensors), len(data)


def _export_onnx(rebuilt: _Rebuilt, out: Path) -> torch.Tensor:
    """Write the ONNX graph for one sample of the run's data set; the example input."""
    import torch

    from .tickets import export_onnx

    example = torch.rand(1, *rebuilt.shape.input_shape)
    try:
        with warnings.catch_warnings():
            # The tracer warns at every Python branch on a shape: the graph is for this
            # input shape, which the command prints.
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            export_onnx(
                _engine_net(rebuilt), out, example, input_names=["input"], output_names=["logits"]
            )
    except ImportError as exc:
        raise SpikeLotteryError(
            f"--to onnx needs the onnx package ({exc}); install it: pip install onnx"
        ) from None
    return example


_COMMANDS: dict[str, Callable[[argparse.ArgumentParser, argparse.Namespace], int]] = {
    "run": _run,
    "demo": _demo,
    "models": _models,
    "datasets": _datasets,
    "info": _info,
    "evaluate": _evaluate,
    "energy": _energy,
    "export": _export,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``spikelottery`` and ``python -m spikelottery``; returns the exit status.

    Argument errors exit with status 2 (``SystemExit``) and a message naming the flag;
    an error found while running (a missing data file, a mismatched checkpoint) prints
    ``spikelottery: error: ...`` and returns 1.
    """
    args = build_parser().parse_args(argv)
    parser: argparse.ArgumentParser = args._parser  # errors read "spikelottery run: error: ..."
    with _logging(getattr(args, "quiet", False), getattr(args, "verbose", False)):
        try:
            return _COMMANDS[args.command](parser, args)
        except ConfigError as exc:  # found at run time, e.g. a batch size not divisible by W
            parser.error(f"argument {_flag(exc.field)}: {exc}")  # exits with status 2
        except (SpikeLotteryError, OSError) as exc:
            print(f"spikelottery: error: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("spikelottery: interrupted", file=sys.stderr)
            return 130
