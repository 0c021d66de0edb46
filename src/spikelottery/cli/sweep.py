"""``spikelottery sweep``: run a SPEC's grid of runs, here or as a SLURM job array."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from ..errors import SpikeLotteryError
from ..sweep import EXECUTORS, SlurmOptions, parse_shard, sweep
from ..threads import check_threads
from .flags import or_none

__all__ = ["add_sweep_flags", "sweep_command"]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


_positive.__name__ = "positive int"


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(text)
    return key, value


_key_value.__name__ = "KEY=VALUE"


def add_sweep_flags(p: argparse.ArgumentParser) -> None:
    """SPEC, ``--out``, the plan's options, the runtime settings and the SLURM options."""
    p.add_argument("spec", metavar="SPEC", help="the sweep's TOML file ([base], [grid], [[zip]])")
    p.add_argument("--out", required=True, metavar="DIR", help="the sweep's folder")
    p.add_argument("--dry-run", action="store_true", help="print the plan; run nothing")
    p.add_argument("--shard", metavar="I/N", help="run only share I of N of the plan (1-based)")
    p.add_argument(
        "--executor", choices=EXECUTORS, default="local", help="where the runs run (default: local)"
    )
    p.add_argument(
        "--workers",
        type=_positive,
        default=1,
        metavar="N",
        help="local worker processes (default: 1, one run after another)",
    )
    p.add_argument(
        "--tensorboard",
        action="store_true",
        help="also write each run's TensorBoard event files (needs spikelottery[tensorboard])",
    )
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    run = p.add_argument_group("runtime settings of every run (they do not change a run's id)")
    run.add_argument("--device", metavar="DEV", help="'auto', 'cpu', 'cuda' or 'cuda:N'")
    run.add_argument("--data-root", metavar="DIR", help="folder of the data files")
    run.add_argument("--num-workers", type=int, metavar="N", help="DataLoader workers per run")
    run.add_argument(
        "--threads",
        metavar="N|auto",
        help="intra-op CPU threads of each run (default: auto, each worker's share of the "
        "usable CPUs, 1 on a busy machine; recorded in results.json)",
    )
    slurm = p.add_argument_group("SLURM (--executor slurm; needs spikelottery[slurm])")
    slurm.add_argument("--partition", help="the partition (default: the cluster's)")
    slurm.add_argument(
        "--gpus",
        type=int,
        default=0,
        metavar="N",
        help="GPUs per run; N > 1 runs DistributedDataParallel over N tasks",
    )
    slurm.add_argument(
        "--cpus-per-task", type=_positive, default=4, metavar="N", help="CPUs per task (default: 4)"
    )
    slurm.add_argument("--mem-gb", type=or_none(float), metavar="GB", help="memory per node")
    slurm.add_argument(
        "--time",
        type=_positive,
        default=240,
        metavar="MIN",
        help="time limit per run in minutes (default: 240)",
    )
    slurm.add_argument(
        "--array-parallelism",
        type=_positive,
        default=64,
        metavar="N",
        help="tasks of the array running at once (default: 64)",
    )
    slurm.add_argument(
        "--setup",
        action="append",
        default=[],
        metavar="CMD",
        help="a shell line run before each task (repeatable)",
    )
    slurm.add_argument("--job-name", default="spikelottery", help="the job's name")
    slurm.add_argument(
        "--sbatch",
        action="append",
        default=[],
        type=_key_value,
        metavar="KEY=VALUE",
        help="another sbatch option, e.g. account=lab",
    )


def _threads(parser: argparse.ArgumentParser, text: str | None) -> int | str | None:
    if text is None:
        return None
    try:
        return check_threads("threads", text)
    except ValueError as exc:
        parser.error(f"argument --threads: {exc}")


def sweep_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``spikelottery sweep``: exit 0 when every run of the shard is done or submitted."""
    try:
        shard = parse_shard(args.shard) if args.shard else None
        options = SlurmOptions(
            partition=args.partition,
            gpus=args.gpus,
            cpus_per_task=args.cpus_per_task,
            mem_gb=args.mem_gb,
            time_min=args.time,
            array_parallelism=args.array_parallelism,
            setup=tuple(args.setup),
            job_name=args.job_name,
            extra=dict(args.sbatch),
        )
    except SpikeLotteryError as exc:
        parser.error(str(exc))
    if not args.verbose:  # a line per run is the sweep's log; -v shows the engine's too
        logging.getLogger("spikelottery").setLevel(logging.WARNING)
    runtime: dict[str, Any] = {
        k: v
        for k, v in (
            ("device", args.device),
            ("data_root", args.data_root),
            ("num_workers", args.num_workers),
            ("threads", _threads(parser, args.threads)),
        )
        if v is not None
    }
    result = sweep(
        args.spec,
        args.out,
        executor=args.executor,
        workers=args.workers,
        shard=shard,
        dry_run=args.dry_run,
        runtime=runtime,
        slurm=options,
        tensorboard=args.tensorboard,
        echo=None if not args.quiet else (lambda line: None),
        progress=args.progress,
    )
    if result.failed:
        print(
            f"spikelottery sweep: {len(result.failed)} run(s) failed; their errors are in "
            "failed.json in each run folder, and the next sweep retries them",
            file=sys.stderr,
        )
        return 1
    return 0
