"""What a run is made of: its data sets, its (sparsified) model and its data loaders."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .._modules import freeze_batchnorm_affine
from ..activations import binarize_activations
from ..errors import SpikeLotteryError
from ..sparsify import sparsify
from .checkpoint import seed_worker
from .config import ConfigError, TrainConfig
from .distributed import DistInfo, ShardSampler
from .methods import search_method

if TYPE_CHECKING:
    from ..data import DatasetInfo

__all__ = [
    "Loaders",
    "build_datasets",
    "build_loaders",
    "build_model",
    "check_first_batch",
    "dataset_split",
    "zoo_model",
]


@dataclass(frozen=True)
class Loaders:
    """The data side of a run.

    Attributes:
        train: This process's training batches (``batch_size / W`` samples each).
        test: This process's share of the test set, in order.
        sampler: The training sampler; ``set_epoch`` before each epoch.
        generator: Seeds the training loader's workers; reseeded before each epoch.
        steps_per_epoch: Training batches per epoch (``max_batches`` at most).
    """

    train: DataLoader
    test: DataLoader
    sampler: DistributedSampler
    generator: torch.Generator
    steps_per_epoch: int


def build_datasets(
    cfg: TrainConfig, train_set: Dataset | None = None, test_set: Dataset | None = None
) -> tuple[Dataset, Dataset, DatasetInfo]:
    """The training and test sets (the given ones, else ``cfg.dataset``'s) and its shape.

    Raises:
        ConfigError: ``cfg.dataset`` is read from files and ``cfg.data_root`` is not set.
        SpikeLotteryError: A set is empty (checked here, before any training).
    """
    from ..data import DATASETS, dataset_info

    info = dataset_info(cfg.dataset, resolution=cfg.resolution, timesteps=cfg.timesteps)
    if (train_set is None or test_set is None) and info.needs_root and cfg.data_root is None:
        fetch = " (with download=True, --download, to fetch them there)" if cfg.download else ""
        embedded = [repr(n) for n, s in DATASETS.items() if not s.needs_root and s.base is None]
        raise ConfigError(
            "data_root",
            f"{cfg.dataset!r} is read from local files: set data_root (--data-root) to the "
            f"folder that holds them{fetch}; only {' and '.join(embedded)} (and their "
            "variants) are embedded",
        )
    origin = {
        "training": "the train_set given" if train_set is not None else f"{cfg.dataset!r}",
        "test": "the test_set given" if test_set is not None else f"{cfg.dataset!r}",
    }
    if train_set is None:
        train_set = dataset_split(cfg, "train")
    if test_set is None:
        test_set = dataset_split(cfg, "test")
    for split, data in (("training", train_set), ("test", test_set)):
        _check_not_empty(data, f"the {split} set ({origin[split]})")
    return train_set, test_set, info


def _check_not_empty(data: Dataset, what: str) -> None:
    """Refuse an empty data set before training (its metrics would be NaN at the end)."""
    try:
        n = len(data)  # type: ignore[arg-type]
    except TypeError:
        return  # no length (an IterableDataset): the loaders find out
    if n == 0:
        raise SpikeLotteryError(
            f"{what} is empty: a run needs samples to train on and to test on; check the data "
            "files or the subset that built it"
        )


def dataset_split(cfg: TrainConfig, split: str) -> Dataset:
    """``cfg.dataset``'s ``split`` (``"train"`` or ``"test"``), read as a run reads it.

    The data set gets ``cfg.resolution`` (unless its images come at one size, as CIFAR's),
    ``cfg.timesteps`` (event data only), ``download`` if it downloads and, for the
    training split with ``cfg.augment``, ``augment`` if it augments
    (:class:`~spikelottery.data.DatasetSpec`).

    >>> len(dataset_split(TrainConfig(dataset="digits", resolution=8), "test"))
    359
    """
    from ..data import dataset_spec, get_dataset

    spec = dataset_spec(cfg.dataset)
    kwargs: dict[str, Any] = {}
    fixed = spec.fixed_resolution
    if not fixed or (cfg.resolution is not None and cfg.resolution != spec.img_size):
        kwargs["resolution"] = cfg.resolution
    if spec.is_event:
        kwargs["timesteps"] = cfg.timesteps
    if spec.downloadable and cfg.download:
        kwargs["download"] = True
    if spec.augmentable and cfg.augment and split == "train":
        kwargs["augment"] = True
    return get_dataset(cfg.dataset, cfg.data_root, split=split, **kwargs)


def _check_patch_embed(model: nn.Module, pb: float) -> None:
    """Fail before any training if stage 2 could not attach its patch selector (a pure query)."""
    from ..patch import plan_patch_selector

    try:
        plan_patch_selector(model)
    except SpikeLotteryError as exc:
        raise ConfigError(
            "pb",
            f"pb={pb} prunes patches after the patch embedding (stage 2), but {exc} "
            "Use pb=0 for a model without one.",
        ) from None


def check_first_batch(model: nn.Module, loader: DataLoader, device: torch.device) -> None:
    """Verify the ticket on four samples of the first test batch (:func:`check_ticket`).

    Runs under a forked RNG and leaves the model exactly as it was, so a run with the
    check computes bit for bit what a run without it does.

    Raises:
        SpikeLotteryError: A score-mask layer is bypassed by the network.
    """
    from ..check import check_ticket
    from .evaluation import input_and_label

    x, _ = input_and_label(next(iter(loader)))
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        check_ticket(model, x[:4].to(device)).raise_if_failed()


def build_model(cfg: TrainConfig, info: DatasetInfo, model: nn.Module | None = None) -> nn.Module:
    """``model`` (else :func:`zoo_model`), sparsified in place.

    With ``cfg.activations == "binary"`` the activation modules that ``cfg.filter``
    accepts become binary (:func:`~spikelottery.binarize_activations`), in a dense
    baseline too.
    """
    if model is None:
        model = zoo_model(cfg, info)
    if cfg.pb > 0:
        _check_patch_embed(model, cfg.pb)
    if cfg.mode != "dense":
        sparsify(
            model,
            cfg.pa,
            mode=cfg.mode,
            filter=cfg.filter,
            init=cfg.init,
            batchnorm=cfg.batchnorm,
            # IMP chooses its global counts by magnitude, each round (engine/imp.py).
            scope=cfg.scope if search_method(cfg.search).trains_scores else "layer",
            activations=cfg.activations,
        )
    else:
        if cfg.batchnorm == "nonaffine":
            freeze_batchnorm_affine(model)
        if cfg.activations == "binary" and not binarize_activations(model, cfg.filter):
            raise ConfigError(
                "activations",
                f"activations='binary' found no activation module (nn.ReLU, ...) that "
                f"filter={cfg.filter!r} accepts in {type(model).__name__}",
            )
    return model


def zoo_model(cfg: TrainConfig, info: DatasetInfo) -> nn.Module:
    """The dense zoo model ``cfg.model`` of a run, shaped for the data set ``info``.

    The model a run builds before sparsifying it: the architecture that a ticket found
    by the run loads into (:func:`~spikelottery.tickets.load_ticket`).

    Raises:
        ~spikelottery.engine.ConfigError: ``model_kwargs`` holds an argument the model does not take, one the
            run sets itself, or a bad value; or the image size is below the model's
            smallest (:func:`~spikelottery.models.min_img_size`), naming ``resolution``.

    >>> from spikelottery.data import dataset_info
    >>> cfg = TrainConfig(model="vgg_tiny", dataset="digits", resolution=8)
    >>> type(zoo_model(cfg, dataset_info("digits", resolution=8))).__name__
    'VGG'
    """
    from ..models import create_model, min_img_size

    fixed: dict[str, Any] = {
        "spiking": cfg.spiking,
        "num_classes": info.num_classes,
        "in_channels": info.in_channels,
        "img_size": info.img_size,
        "timesteps": cfg.timesteps,
        "beta": cfg.beta,
    }
    taken = sorted(set(fixed) & set(cfg.model_kwargs))
    if taken:
        raise ConfigError(
            "model_kwargs",
            f"model_kwargs sets {', '.join(map(repr, taken))}, which a run sets itself (from "
            "spiking, the data set, resolution, timesteps and beta): use those settings",
        )
    smallest = min_img_size(cfg.model, **cfg.model_kwargs)
    if info.img_size < smallest:
        raise ConfigError(
            "resolution",
            f"model {cfg.model!r} takes images of at least {smallest}x{smallest}, but the run "
            f"feeds it {info.img_size}x{info.img_size} ({cfg.dataset!r} at resolution="
            f"{cfg.resolution}); set resolution to {smallest} or more",
        )
    try:
        return create_model(cfg.model, **fixed, **cfg.model_kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, SpikeLotteryError):
            raise
        field = "model_kwargs" if cfg.model_kwargs else "model"
        raise ConfigError(field, f"cannot build model {cfg.model!r}: {exc}") from None


def build_loaders(
    cfg: TrainConfig,
    train_set: Dataset,
    test_set: Dataset,
    *,
    dist: DistInfo,
    device: torch.device,
) -> Loaders:
    """The loaders of this process: ``batch_size / W`` samples per batch.

    Raises:
        ConfigError: ``batch_size`` is not divisible by the number of processes.
        SpikeLotteryError: The training set is empty.
    """
    if cfg.batch_size % dist.world:
        raise ConfigError(
            "batch_size",
            f"batch_size={cfg.batch_size} is the global batch; it must be divisible by the "
            f"{dist.world} processes",
        )
    per_rank = cfg.batch_size // dist.world
    # One sampler for 1 or W processes: its permutation depends on (seed, epoch) only and
    # rank r takes every W-th index, so the W local batches of step k together are the
    # single-process batch k. Only if W divides len(train_set): otherwise the sampler pads
    # the permutation with its first indices, and the last batches differ.
    sampler: DistributedSampler = DistributedSampler(
        train_set, num_replicas=dist.world, rank=dist.rank, shuffle=True, seed=cfg.seed
    )
    common: dict[str, Any] = {
        "num_workers": cfg.num_workers,
        "pin_memory": device.type == "cuda",
        "worker_init_fn": seed_worker,
    }
    # The loader generator seeds the workers; it is reseeded every epoch, so a resumed
    # run's workers draw the same random numbers.
    generator = torch.Generator()
    train = DataLoader(
        train_set, batch_size=per_rank, sampler=sampler, generator=generator, **common
    )
    test = DataLoader(
        test_set,
        batch_size=per_rank,
        sampler=ShardSampler(len(test_set), dist.rank, dist.world),  # type: ignore[arg-type]
        generator=torch.Generator().manual_seed(cfg.seed),
        **common,
    )
    steps = len(train)
    if cfg.max_batches is not None:
        steps = min(steps, cfg.max_batches)
    if steps == 0:
        raise SpikeLotteryError(f"the training set of {cfg.dataset!r} is empty")
    return Loaders(train, test, sampler, generator, steps)
