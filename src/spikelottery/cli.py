"""The ``spikelottery`` command line: a thin layer over :mod:`spikelottery.engine`.

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
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from ._version import __version__
from .errors import SpikeLotteryError

__all__ = ["build_parser", "main"]

# TrainConfig field -> flag, for the fields whose flag is not simply --field-name.
_FLAG_OF = {"spiking": "--ann", "checkpoint": "--no-checkpoint", "progress": "--no-progress"}


def _flag(field: str) -> str:
    return _FLAG_OF.get(field, "--" + field.replace("_", "-"))


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


def _optional_str(text: str) -> str | None:
    return None if text.lower() in ("none", "null", "") else text


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    S = argparse.SUPPRESS  # only flags given on the command line override the config file
    g = p.add_argument_group("experiment")
    g.add_argument(
        "--config", metavar="FILE", default=S, help="TOML or JSON file of TrainConfig fields"
    )
    g.add_argument(
        "--model",
        default=S,
        help="zoo model name (default vgg_small; vgg9, resnet19, spikformer_tiny, ...)",
    )
    g.add_argument(
        "--dataset",
        default=S,
        help="data set name (default digits; cifar10, cifar100, dvs128_gesture, ...)",
    )
    g.add_argument("--data-root", default=S, metavar="DIR", help="folder of the data files")
    g.add_argument(
        "--resolution",
        type=int,
        default=S,
        help="image side in pixels (default: the data set's own)",
    )
    g.add_argument("--augment", action="store_true", default=S, help="random crop and flip (CIFAR)")
    g.add_argument(
        "--model-kwargs",
        type=_json_object,
        default=S,
        metavar="JSON",
        help="extra create_model arguments, e.g. '{\"depth\": 4}'",
    )

    g = p.add_argument_group("ticket search")
    g.add_argument(
        "--mode", default=S, help="dense (baseline), lt (W*M) or mp (alpha*sign(W)*M); default mp"
    )
    g.add_argument(
        "--pa", type=float, default=S, help="fraction of weights REMOVED, in [0, 1) (default 0.4)"
    )
    g.add_argument(
        "--pb", type=float, default=S, help="fraction of patches REMOVED, in [0, 1) (default 0)"
    )
    g.add_argument(
        "--filter",
        type=_optional_str,
        default=S,
        metavar="REGEX",
        help="only sparsify matching layers, e.g. patch_embed",
    )
    g.add_argument("--batchnorm", default=S, help="keep or nonaffine (default keep)")
    g.add_argument("--init", default=S, help="kaiming_normal or signed_constant")

    g = p.add_argument_group("spiking neurons")
    g.add_argument(
        "--ann",
        dest="spiking",
        action="store_false",
        default=S,
        help="train the ReLU twin (ANN) instead of the SNN",
    )
    g.add_argument("--timesteps", type=int, default=S, help="T (default 4)")
    g.add_argument(
        "--beta", type=float, default=S, help="LIF membrane decay, in [0, 1] (default 0.99)"
    )

    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=S, help="stage 1 epochs N_a (default 10)")
    g.add_argument("--patch-epochs", type=int, default=S, help="stage 2 (patch pruning) epochs N_b")
    g.add_argument(
        "--finetune-epochs",
        type=int,
        default=S,
        help="fine-tuning epochs of the ticket's kept weights",
    )
    g.add_argument(
        "--lr", type=float, default=S, help="Adam learning rate of the scores (default 0.1)"
    )
    g.add_argument(
        "--weight-lr",
        type=float,
        default=S,
        help="Adam learning rate of other parameters (default 1e-3)",
    )
    g.add_argument("--weight-decay", type=float, default=S)
    g.add_argument(
        "--batch-size",
        type=int,
        default=S,
        help="GLOBAL batch size (split over torchrun processes)",
    )
    g.add_argument("--seed", type=int, default=S)

    g = p.add_argument_group("running")
    g.add_argument(
        "--out",
        type=_optional_str,
        default=S,
        metavar="DIR",
        help="output folder (default runs/run)",
    )
    g.add_argument("--device", default=S, help="auto, cpu, cuda or cuda:N")
    g.add_argument("--num-workers", type=int, default=S)
    g.add_argument(
        "--resume", action="store_true", default=S, help="continue from OUT/checkpoint.pt"
    )
    g.add_argument(
        "--no-checkpoint",
        dest="checkpoint",
        action="store_false",
        default=S,
        help="do not write checkpoints",
    )
    g.add_argument("--max-batches", type=int, default=S, help="batches per epoch (quick tests)")
    g.add_argument(
        "--energy-batches", type=int, default=S, help="test batches for the energy estimate"
    )
    g.add_argument(
        "--deterministic", action="store_true", default=S, help="torch.use_deterministic_algorithms"
    )
    g.add_argument(
        "--sync-batchnorm",
        action="store_true",
        default=S,
        help="under torchrun on CUDA: BatchNorm statistics of the global batch (SyncBatchNorm)",
    )


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        default=argparse.SUPPRESS,
        help="no progress bars",
    )
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
    _add_common(p_run)
    p_run.set_defaults(_parser=p_run)

    p_demo = sub.add_parser(
        "demo",
        help="dense SNN vs. SNN ticket vs. binarised SNN ticket on the embedded digits",
        description=(
            "Train a small spiking VGG on the embedded digits three ways (dense, ticket 'lt', "
            "binarised ticket 'mp' at pa=0.4) and print accuracy, kept %, energy and time."
        ),
    )
    from .engine import DEMO_EPOCHS

    p_demo.add_argument(
        "--out",
        type=_optional_str,
        default="runs/demo",
        metavar="DIR",
        help="output folder (default runs/demo)",
    )
    p_demo.add_argument(
        "--epochs", type=int, default=DEMO_EPOCHS, help=f"epochs per method (default {DEMO_EPOCHS})"
    )
    p_demo.add_argument("--seed", type=int, default=0)
    p_demo.add_argument(
        "--pa",
        type=float,
        default=0.4,
        help="fraction of weights REMOVED by the tickets (default 0.4)",
    )
    p_demo.add_argument(
        "--max-batches", type=int, default=None, help="batches per epoch (quick tests)"
    )
    _add_common(p_demo)
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


def _config_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Any:
    from .engine import TrainConfig, _FieldError, load_config_file

    names = {f for f in TrainConfig.__dataclass_fields__}
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
    except _FieldError as exc:
        if exc.field in flags or source is None:
            parser.error(f"argument {_flag(exc.field)}: {exc}")
        parser.error(f"config file {source!r}: {exc} (or override it with {_flag(exc.field)})")
    except (SpikeLotteryError, TypeError, ValueError) as exc:
        parser.error(str(exc))


def _check_demo_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    from ._validation import check_ratio

    if args.epochs < 1:
        parser.error(f"argument --epochs: must be >= 1, got {args.epochs}")
    if args.seed < 0:
        parser.error(f"argument --seed: must be >= 0, got {args.seed}")
    if args.max_batches is not None and args.max_batches < 1:
        parser.error(f"argument --max-batches: must be >= 1, got {args.max_batches}")
    try:
        check_ratio("pa", args.pa)
    except ValueError as exc:
        parser.error(f"argument --pa: {exc}")


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from .engine import RESULTS_FILE, Trainer

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
    from .engine import RESULTS_FILE, demo, format_table

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
    from .engine import _FieldError

    args = build_parser().parse_args(argv)
    parser: argparse.ArgumentParser = args._parser  # errors read "spikelottery run: error: ..."
    with _logging(args.quiet, args.verbose):
        try:
            if args.command == "run":
                return _run(parser, args)
            return _demo(parser, args)
        except _FieldError as exc:  # found at run time, e.g. a batch size not divisible by W
            parser.error(f"argument {_flag(exc.field)}: {exc}")  # exits with status 2
        except (SpikeLotteryError, OSError) as exc:
            print(f"spikelottery: error: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("spikelottery: interrupted", file=sys.stderr)
            return 130
