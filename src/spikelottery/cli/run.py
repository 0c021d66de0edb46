"""``spikelottery run`` (one experiment) and ``spikelottery demo`` (the three-way comparison)."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import sys
from typing import Any

from .._validation import check_int, check_ratio
from ..demo import demo, format_table
from ..engine import RESULTS_FILE, ConfigError, TrainConfig, Trainer, load_config_file
from ..engine.settings import format_default
from ..errors import SpikeLotteryError
from ..threads import check_threads
from .flags import add_config_flags, field_flag, or_none

__all__ = ["add_demo_flags", "add_run_flags", "demo_command", "run_command"]


def add_run_flags(p: argparse.ArgumentParser) -> None:
    """``--config FILE`` and one flag per TrainConfig field."""
    p.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="TOML or JSON file of TrainConfig fields (flags override its values)",
    )
    add_config_flags(p)


def add_demo_flags(p: argparse.ArgumentParser) -> None:
    """The flags of :func:`~spikelottery.demo.demo`'s arguments, with its defaults."""
    defaults = {name: q.default for name, q in inspect.signature(demo).parameters.items()}

    def flag(name: str, help: str, **options: Any) -> None:
        default = defaults[name]
        shown = f"default: {format_default(default)}"
        p.add_argument(
            "--" + name.replace("_", "-"), default=default, help=f"{help} ({shown})", **options
        )

    flag("out", "output folder", type=or_none(str), metavar="DIR")
    flag("epochs", "epochs per method", type=int)
    flag("seed", "seed of every run", type=int)
    flag(
        "pa",
        "fraction of weights REMOVED by the tickets: a layer of n weights keeps "
        "n - floor(pa * n), so 0.4 keeps 60%%; not biprop's prune_rate, the fraction kept",
        type=float,
    )
    flag("max_batches", "batches per epoch (quick tests)", type=or_none(int))
    flag(
        "threads",
        "intra-op CPU threads of each run: N, or auto (a count given by OMP_NUM_THREADS, "
        "else the usable CPUs, 1 on a busy machine, else the faster of 1 and N timed)",
        metavar="N|auto",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the results of an earlier demo in --out (default: refuse them)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted demo in --out from its checkpoints, as run --resume does",
    )
    p.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        default=argparse.SUPPRESS,
        help="no progress bars",
    )


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
            parser.error(f"argument {field_flag(exc.field)}: {exc}")
        parser.error(f"config file {source!r}: {exc} (or override it with {field_flag(exc.field)})")
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
    if args.resume and args.overwrite:
        parser.error("argument --resume: not allowed with --overwrite (continue, or replace)")
    try:
        args.threads = check_threads("threads", args.threads)
    except ValueError as exc:
        parser.error(f"argument --threads: {exc}")


def run_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``spikelottery run``: one experiment from flags and/or a config file."""
    cfg = _config_from_args(parser, args)
    res = Trainer(cfg).run()
    energy = "n/a" if res.energy_mj is None else f"{res.energy_mj:.6f} mJ"
    ann = "n/a" if res.ann_reference_mj is None else f"{res.ann_reference_mj:.6f} mJ"
    if res.energy_mj is not None and res.ann_reference_mj:
        ann += f" ({100 * res.energy_mj / res.ann_reference_mj:.1f}% of ANN)"
    print(
        f"accuracy {100 * res.accuracy:.2f}% | kept {100 * res.kept_fraction:.2f}% | "
        f"energy {energy} per sample | ANN {ann} | {res.seconds:.1f} s"
    )
    if cfg.out is not None:
        print(f"results: {cfg.out}/{RESULTS_FILE}")
    return 0


def demo_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``spikelottery demo``: dense SNN, ticket and binarised ticket on the embedded digits."""
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
        overwrite=args.overwrite,
        threads=args.threads,
        resume=args.resume,
    )
    print(format_table(records))
    if args.out is not None:
        print(f"results: {args.out}/{RESULTS_FILE}")
    return 0
