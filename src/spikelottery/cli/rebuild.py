"""A ticket file back into the model its run found it in, and the test data to measure it on.

A ticket saved by the engine records its run's config (metadata ``config``); the ticket
commands rebuild the zoo model from it (:func:`rebuild`), load the ticket and, for
``evaluate`` and ``energy``, open the test split (:func:`prepare`). A bad file or flag is
an argument error (exit status 2) naming ``TICKET`` or the flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from ..engine import ConfigError, TrainConfig
from ..errors import SpikeLotteryError
from .common import dims
from .flags import field_flag

if TYPE_CHECKING:
    import torch
    from torch import nn
    from torch.utils.data import DataLoader

    from ..data import DatasetInfo
    from ..threads import ThreadChoice
    from ..tickets import TicketInfo

__all__ = [
    "Measuring",
    "Rebuilt",
    "add_data_flags",
    "add_ticket_arg",
    "engine_net",
    "prepare",
    "read_run",
    "read_ticket",
    "rebuild",
]

logger = logging.getLogger("spikelottery.cli")


def add_ticket_arg(p: argparse.ArgumentParser) -> None:
    """The positional ``TICKET``: the ticket file a command reads."""
    p.add_argument(
        "ticket",
        metavar="TICKET",
        help="a ticket file (the ticket.safetensors of spikelottery run, or save_ticket's)",
    )


def add_data_flags(p: argparse.ArgumentParser, batches_help: str) -> None:
    """The flags that :func:`prepare` reads: the test data and the device to measure on."""
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
    p.add_argument(
        "--threads",
        metavar="N|auto",
        default="auto",
        help="intra-op CPU threads: N, or auto (a count given by OMP_NUM_THREADS, else the "
        "usable CPUs, 1 on a busy machine, else the faster of 1 and N timed; default: auto)",
    )


def read_ticket(parser: argparse.ArgumentParser, path: str) -> TicketInfo:
    """The checked metadata of the ticket at ``path``; a bad file is an argument error."""
    from ..tickets import read_ticket_info

    if not Path(path).exists():
        parser.error(f"argument TICKET: {path!r} does not exist")
    if not Path(path).is_file():
        parser.error(f"argument TICKET: {path!r} is not a file")
    try:
        return read_ticket_info(path)
    except SpikeLotteryError as exc:
        parser.error(f"argument TICKET: {exc}")


@dataclasses.dataclass(frozen=True)
class Rebuilt:
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
        f"argument TICKET: {path!r} records no zoo model (metadata 'config', and "
        "'model_source' = 'zoo' when the engine trained a zoo model), so its model cannot be "
        "rebuilt here. In Python, load it into "
        f"the model it was found in: net = load_ticket(build_my_model(), {path!r}), then "
        "evaluate(net, loader), estimate_energy(net, batches) or densify(net, copy=True)"
    )


def _run_config(parser: argparse.ArgumentParser, ticket: TicketInfo, path: str) -> TrainConfig:
    """The run config recorded in a ticket saved by the engine."""
    text = ticket.metadata.get("config")
    if text is None or ticket.metadata.get("model_source") == "user":
        parser.error(_no_model(path))
    try:
        values = json.loads(text)
        return TrainConfig.from_record(values, source=f"the run config recorded in {path!r}")
    except (TypeError, ValueError) as exc:  # ConfigError and JSONDecodeError are ValueErrors
        parser.error(f"argument TICKET: cannot rebuild the model of {path!r}: {exc}")


def read_run(parser: argparse.ArgumentParser, path: str) -> tuple[TicketInfo, TrainConfig]:
    """The ticket at ``path`` and the run config it records; a bad file is an argument error."""
    ticket = read_ticket(parser, path)
    return ticket, _run_config(parser, ticket, path)


def _data_shape(cfg: TrainConfig) -> DatasetInfo:
    """The samples of ``cfg``'s data set, as the run shaped them (its model's input)."""
    from ..data import dataset_info

    return dataset_info(cfg.dataset, resolution=cfg.resolution, timesteps=cfg.timesteps)


def rebuild(path: str, ticket: TicketInfo, cfg: TrainConfig) -> Rebuilt:
    """Rebuild the run's zoo model as the engine does (:func:`zoo_model`), load the ticket."""
    import torch

    from ..engine.build import zoo_model
    from ..tickets import load_ticket

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
    return Rebuilt(ticket, cfg, shape, model)


def engine_net(rebuilt: Rebuilt) -> nn.Module:
    """What the engine calls: the model, or a time-first view of it (the run's model_input)."""
    from ..engine.convention import engine_view

    cfg = rebuilt.config
    return engine_view(
        rebuilt.model, cfg.model_input, timesteps=cfg.timesteps, event=rebuilt.shape.is_event
    )


@dataclasses.dataclass(frozen=True)
class Measuring:
    """What ``evaluate`` and ``energy`` measure: the loaded ticket and the test data."""

    rebuilt: Rebuilt
    config: TrainConfig  # the run's, with this command's --dataset, --data-root, ...
    device: torch.device
    net: nn.Module  # what the engine calls (the model itself for the zoo's batch-first models)
    loader: DataLoader
    batches: int | None
    samples: int
    threads: ThreadChoice  # the intra-op CPU threads set for the measurement, and why


def _positive(parser: argparse.ArgumentParser, flag: str, value: int | None) -> int | None:
    if value is not None and value < 1:
        parser.error(f"argument {flag}: must be at least 1, got {value}")
    return value


def prepare(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Measuring:
    """Check the flags, load the ticket, open the test split."""
    from torch.utils.data import DataLoader

    from ..engine.build import dataset_split
    from ..engine.distributed import DistInfo, resolve_device

    batches = _positive(parser, "--batches", args.batches)
    _positive(parser, "--batch-size", args.batch_size)
    ticket, run_cfg = read_run(parser, args.ticket)
    changes = {
        "dataset": args.dataset,
        "data_root": args.data_root,
        "batch_size": args.batch_size,
        "device": args.device,
    }
    changes["download"] = False  # measuring reads the files in place; it never fetches them
    try:
        cfg = run_cfg.replace(**{k: v for k, v in changes.items() if v is not None})
    except ConfigError as exc:
        parser.error(f"argument {field_flag(exc.field)}: {exc}")
    shape, data = _data_shape(run_cfg), _data_shape(cfg)
    if (data.num_classes, data.input_shape) != (shape.num_classes, shape.input_shape):
        parser.error(
            f"argument --dataset: the ticket's model was built for {shape.name!r} "
            f"({shape.num_classes} classes, samples {dims(shape.input_shape)}), but "
            f"{data.name!r} has {data.num_classes} classes, samples {dims(data.input_shape)}"
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
    rebuilt = rebuild(args.ticket, ticket, run_cfg)
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
    net = engine_net(rebuilt)
    threads = _set_threads(parser, args.threads, net, loader, device)
    return Measuring(rebuilt, cfg, device, net, loader, batches, samples, threads)


def _set_threads(
    parser: argparse.ArgumentParser,
    setting: str,
    net: nn.Module,
    loader: DataLoader,
    device: torch.device,
) -> ThreadChoice:
    """Choose and set the intra-op thread count (``main`` restores it when the command ends)."""
    import torch

    from ..engine.threads import settle_by_timing
    from ..threads import check_threads, current_choice

    try:
        count = check_threads("threads", setting)
    except ValueError as exc:
        parser.error(f"argument --threads: {exc}")
    choice = settle_by_timing(current_choice(count), net, loader, device, train=False)
    torch.set_num_threads(choice.count)
    logger.info("threads: %d, %s", choice.count, choice.reason)
    return choice
