"""Running under ``torchrun``: the process group, the device, the test-set shards, SyncBatchNorm.

Outside ``torchrun`` (no ``WORLD_SIZE > 1``) everything here is the single-process case:
:func:`process_group` yields ``DistInfo()`` (rank 0 of 1) and creates nothing.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import SpikeLotteryError

__all__ = [
    "DistInfo",
    "ShardSampler",
    "convert_sync_batchnorm",
    "init_distributed",
    "process_group",
    "resolve_device",
    "restore_batchnorm",
]


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the run: ``rank`` of ``world``; ``created``: we made the group.

    >>> DistInfo().main, DistInfo().enabled
    (True, False)
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    created: bool = False

    @property
    def enabled(self) -> bool:
        """More than one process."""
        return self.world > 1

    @property
    def main(self) -> bool:
        """Rank 0: the process that logs and writes files."""
        return self.rank == 0


def init_distributed(device: str) -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    if not dist.is_available():
        raise SpikeLotteryError(
            "WORLD_SIZE > 1 but torch.distributed is not available in this build"
        )
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    created = False
    if not dist.is_initialized():
        use_cuda = device != "cpu" and torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        created = True
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, created)


@contextlib.contextmanager
def process_group(device: str) -> Iterator[DistInfo]:
    """:func:`init_distributed`, and leave the process group afterwards if we created it."""
    info = init_distributed(device)
    try:
        yield info
    finally:
        if info.created and dist.is_initialized():
            dist.destroy_process_group()


def resolve_device(device: str, info: DistInfo) -> torch.device:
    """The ``torch.device`` of a ``device`` setting (``"auto"``, ``"cuda"``: this rank's GPU)."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device(
                "cuda", info.local_rank if info.enabled else torch.cuda.current_device()
            )
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SpikeLotteryError(
                f"device={device!r} but CUDA is not available; use device='cpu'"
            )
        if dev.index is None:
            dev = torch.device(
                "cuda", info.local_rank if info.enabled else torch.cuda.current_device()
            )
    return dev


class ShardSampler(torch.utils.data.Sampler[int]):
    """This process's share ``rank::world`` of the indices, in order, without padding (for evaluation).

    >>> list(ShardSampler(5, rank=1, world=2))
    [1, 3]
    """

    def __init__(self, n: int, rank: int, world: int) -> None:
        self.indices = list(range(rank, n, world))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


_SYNC_CLASSES: dict[type, type] = {}


def _sync_class(cls: type) -> type:
    """``cls`` with ``nn.SyncBatchNorm``'s computation under its own ``forward``.

    ``nn.SyncBatchNorm.convert_sync_batchnorm`` would replace a multi-step BatchNorm
    (:class:`~spikelottery.multistep.SeqBatchNorm2d`, SpikingJelly's ``layer.BatchNorm2d``)
    by a plain ``SyncBatchNorm``, which normalises dim 1 of ``[T, B, C, H, W]``: B, not C.
    Those classes reshape and then call ``super().forward``; placing ``SyncBatchNorm``
    after ``cls`` in the MRO makes that call the synchronised one.
    """
    if cls not in _SYNC_CLASSES:
        _SYNC_CLASSES[cls] = type(f"Sync{cls.__name__}", (cls, nn.SyncBatchNorm), {})
    return _SYNC_CLASSES[cls]


def convert_sync_batchnorm(model: nn.Module) -> list[tuple[nn.Module, type]]:
    """Make every BatchNorm of ``model`` synchronise over the processes, in place.

    The modules keep their parameters, buffers, hooks and ``state_dict`` keys (only their
    class changes). Returns ``(module, original class)`` pairs for
    :func:`restore_batchnorm`.
    """
    converted: list[tuple[nn.Module, type]] = []
    for module in model.modules():
        if isinstance(module, _BatchNorm) and not isinstance(module, nn.SyncBatchNorm):
            converted.append((module, type(module)))
            module.__class__ = _sync_class(type(module))
            module.process_group = None  # type: ignore[assignment]  # the whole world
    return converted


def restore_batchnorm(converted: list[tuple[nn.Module, type]]) -> None:
    """Undo :func:`convert_sync_batchnorm`: give the modules their own classes back."""
    for module, cls in converted:
        module.__class__ = cls
        module.__dict__.pop("process_group", None)
