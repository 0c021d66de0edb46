"""The ``spikelottery`` command line: a thin layer over the Python API.

The ``run`` flags are generated from the :class:`~spikelottery.engine.TrainConfig` fields
(:func:`add_config_flags`): a new field is a new flag, with its help and its default.

``spikelottery demo`` compares the dense SNN, its lottery ticket and its binarised ticket
on the embedded digits; ``spikelottery run`` runs one experiment from flags and/or a
TOML/JSON config file (flags win over the file); ``sweep`` runs a SPEC's grid of runs
(here or on SLURM) and ``report`` turns their results into tables and figures. ``models`` and ``datasets`` list the
zoo and the data sets; ``info`` describes a ticket file; ``evaluate``, ``energy`` and
``export`` rebuild the zoo model a run found the ticket in (from the ticket's metadata),
load the ticket into it and measure or export it. Bad flags or values exit with status 2
and a message naming the flag; a failure while running exits with status 1.

This package holds the parser and the dispatch; the commands live in ``run`` (``run``,
``demo``), ``sweep``, ``report``, ``catalog`` (``models``, ``datasets``) and ``tickets`` (``info``, ``evaluate``,
``energy``, ``export``, over ``rebuild``), the generated flags in ``flags``.

Example:
    .. code-block:: console

        $ spikelottery demo --out runs/demo
        $ spikelottery run --model vgg9 --dataset cifar10 --data-root data --mode mp --pa 0.4
        $ spikelottery run --config exp.toml --seed 1 --out runs/seed1
        $ torchrun --nproc_per_node 4 -m spikelottery run --config exp.toml
        $ spikelottery sweep configs/digits/reward1.toml --out runs/reward1
        $ spikelottery report runs/reward1 --out report --compare mpslt mplt
        $ spikelottery info runs/run/ticket.safetensors
        $ spikelottery evaluate runs/run/ticket.safetensors --data-root data
        $ spikelottery export runs/run/ticket.safetensors --to onnx --out ticket.onnx
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from .._version import __version__
from ..engine import ConfigError
from ..errors import SpikeLotteryError
from ..plugins import load_plugins, remember
from ..threads import thread_scope
from .catalog import LIST_KINDS, datasets_command, list_command, models_command
from .common import log_to_stderr
from .flags import (
    add_config_flags,
    add_json_flag,
    add_verbose_flag,
    add_verbosity,
    field_flag,
    flag_of,
)
from .rebuild import add_data_flags, add_ticket_arg
from .report import add_report_flags, report_command
from .run import add_demo_flags, add_run_flags, demo_command, run_command
from .sweep import add_sweep_flags, sweep_command
from .tickets import (
    EXPORT_FORMATS,
    energy_command,
    evaluate_command,
    export_command,
    info_command,
)

__all__ = ["add_config_flags", "build_parser", "flag_of", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``spikelottery`` and its subcommands (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="spikelottery",
        description="Find lottery tickets in spiking neural networks.",
    )
    parser.add_argument("--version", action="version", version=f"spikelottery {__version__}")
    parser.add_argument(
        "--plugin",
        action="append",
        metavar="MODULE",
        default=[],
        help="import MODULE first, so that what it registers (models, data sets, methods, "
        "hardware presets) can be named; repeatable, allowed anywhere on the command line; "
        "also read from $SPIKELOTTERY_PLUGINS and the 'spikelottery.plugins' entry points",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p_run = sub.add_parser(
        "run",
        help="run one experiment (Algorithm 1) from flags and/or a config file",
        description="Run one experiment. Flags override the values of --config.",
    )
    add_run_flags(p_run)
    add_verbosity(p_run)
    p_run.set_defaults(_parser=p_run)

    p_demo = sub.add_parser(
        "demo",
        help="dense SNN vs. SNN ticket vs. binarised SNN ticket on the embedded digits",
        description=(
            "Train a small spiking VGG on the embedded digits three ways (dense, ticket 'lt', "
            "binarised ticket 'mp') and print accuracy, kept %, energy and time."
        ),
    )
    add_demo_flags(p_demo)
    add_verbosity(p_demo)
    p_demo.set_defaults(_parser=p_demo)

    p_sweep = sub.add_parser(
        "sweep",
        help="run a SPEC's grid of runs (skips done ones, resumes interrupted ones)",
        description="Expand a SPEC file ([base], [grid], [[zip]]) into runs, one folder per "
        "run under DIR/runs/<hash of its settings>, and run those not done yet: here (one "
        "after another, or --workers N), or as one SLURM job array (--executor slurm).",
    )
    add_sweep_flags(p_sweep)
    add_verbosity(p_sweep)
    p_sweep.set_defaults(_parser=p_sweep)

    p_report = sub.add_parser(
        "report",
        help="collect runs into runs.csv, a summary over seeds with 95%% CIs, and figures",
        description="Collect every results.json under DIR... into REPORT/runs.csv, "
        "summary.csv/.md (mean, std, n, 95% CI over seeds, grouped by every axis that "
        "varies), the paired difference of two methods (--compare) and the figures.",
    )
    add_report_flags(p_report)
    p_report.set_defaults(_parser=p_report)

    p_models = sub.add_parser(
        "models",
        help="list the model zoo: parameters and input shape at create_model's defaults",
        description="List the models of create_model with their parameter counts and input "
        "shapes at create_model's defaults.",
    )
    add_json_flag(p_models)
    p_models.set_defaults(_parser=p_models)

    p_datasets = sub.add_parser(
        "datasets",
        help="list the data sets: classes, sample shape, split sizes",
        description="List the data sets of get_dataset with their classes, sample shape and "
        "split sizes; only the embedded ones need no --data-root.",
    )
    add_json_flag(p_datasets)
    p_datasets.set_defaults(_parser=p_datasets)

    p_list = sub.add_parser(
        "list",
        help="list a registry: models, datasets, methods, searches or hardware presets",
        description="List the registered names of one kind, the library's and those of "
        "plugins (--plugin MODULE).",
    )
    p_list.add_argument("kind", choices=sorted(LIST_KINDS), help="what to list")
    add_json_flag(p_list)
    p_list.set_defaults(_parser=p_list)

    p_info = sub.add_parser(
        "info",
        help="describe a ticket file: layers, pa, pb, mode, kept weights, metadata",
        description="Describe a ticket file (read_ticket_info): it is checked, not loaded.",
    )
    add_ticket_arg(p_info)
    add_json_flag(p_info)
    p_info.set_defaults(_parser=p_info)

    p_eval = sub.add_parser(
        "evaluate",
        help="accuracy of a ticket on a data set's test split",
        description="Rebuild the run's model from the ticket's metadata, load the ticket and "
        "measure its accuracy and loss on the test split.",
    )
    add_ticket_arg(p_eval)
    add_data_flags(p_eval, "test batches to use (default: the whole test split)")
    add_json_flag(p_eval)
    add_verbose_flag(p_eval)
    p_eval.set_defaults(_parser=p_eval)

    p_energy = sub.add_parser(
        "energy",
        help="energy per sample of a ticket (paper Eq. 3-4), measured on test batches",
        description="Rebuild the run's model from the ticket's metadata, load the ticket and "
        "print estimate_energy's report, measured on test batches and priced as the run "
        "priced it (its energy_preset; the ANN reference once per distinct input frame).",
    )
    add_ticket_arg(p_energy)
    add_data_flags(p_energy, "test batches to measure on (default: the run's energy_batches)")
    add_json_flag(p_energy)
    add_verbose_flag(p_energy)
    p_energy.set_defaults(_parser=p_energy)

    p_export = sub.add_parser(
        "export",
        help="export a ticket as a dense state_dict (safetensors), an ONNX or a NIR graph",
        description="Rebuild the run's model from the ticket's metadata, load the ticket and "
        "export it with the ticket baked into dense layers (densify(copy=True, "
        "patches='remove'), export_onnx); "
        "patch pruning is not applied.",
    )
    add_ticket_arg(p_export)
    p_export.add_argument(
        "--to",
        required=True,
        choices=EXPORT_FORMATS,
        help="'dense': the dense model's state_dict as safetensors; 'onnx': an ONNX graph; "
        "'nir': a NIR graph (neuromorphic simulators and chips)",
    )
    p_export.add_argument("--out", required=True, metavar="PATH", help="the file to write")
    add_verbose_flag(p_export)
    p_export.set_defaults(_parser=p_export)
    return parser


_COMMANDS: dict[str, Callable[[argparse.ArgumentParser, argparse.Namespace], int]] = {
    "run": run_command,
    "demo": demo_command,
    "sweep": sweep_command,
    "report": report_command,
    "models": models_command,
    "datasets": datasets_command,
    "list": list_command,
    "info": info_command,
    "evaluate": evaluate_command,
    "energy": energy_command,
    "export": export_command,
}


def _load_plugins(argv: list[str]) -> list[str]:
    """Load the ``--plugin`` modules (anywhere in ``argv``) and the installed plugins first,
    so that the parser's lists and the run see their registrations; return the rest of
    ``argv``."""
    rest, modules, i = [], [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest += argv[i:]
            break
        if arg == "--plugin" and i + 1 < len(argv):
            modules.append(argv[i + 1])
            i += 2
            continue
        if arg.startswith("--plugin="):
            modules.append(arg.partition("=")[2])
        else:
            rest.append(arg)
        i += 1
    if modules:
        remember(modules)  # a sweep's worker processes load them too
    load_plugins(modules)
    return rest


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``spikelottery`` and ``python -m spikelottery``; returns the exit status.

    Argument errors exit with status 2 (``SystemExit``) and a message naming the flag;
    an error found while running (a missing data file, a mismatched checkpoint) prints
    ``spikelottery: error: ...`` and returns 1.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        argv = _load_plugins(argv)
    except SpikeLotteryError as exc:
        print(f"spikelottery: error: {exc}", file=sys.stderr)
        return 1
    args = build_parser().parse_args(argv)
    parser: argparse.ArgumentParser = args._parser  # errors read "spikelottery run: error: ..."
    quiet, verbose = getattr(args, "quiet", False), getattr(args, "verbose", False)
    # thread_scope: a command sets torch's thread count for its work (--threads); an
    # in-process main() (a test, a notebook) gets the caller's count back.
    with log_to_stderr(quiet, verbose), thread_scope():
        try:
            return _COMMANDS[args.command](parser, args)
        except ConfigError as exc:  # found at run time, e.g. a batch size not divisible by W
            parser.error(f"argument {field_flag(exc.field)}: {exc}")  # exits with status 2
        except (SpikeLotteryError, OSError) as exc:
            print(f"spikelottery: error: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("spikelottery: interrupted", file=sys.stderr)
            return 130
