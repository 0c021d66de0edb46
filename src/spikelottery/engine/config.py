"""One experiment's settings: :class:`TrainConfig`, its checks and its config files.

Each field is declared once, with :func:`~spikelottery.engine.settings.setting`: its
default, its help, its check, its flag group, and whether it is a runtime setting. The
checks, the attribute list below and the ``spikelottery run`` flags are generated from it.

>>> TrainConfig(pa=0.3, out=None).pa
0.3
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import SpikeLotteryError
from ..layers import INITS
from ..layers import MODES as SUBNET_MODES
from .convention import INPUT_CONVENTIONS
from .settings import (
    ConfigError,
    boolean,
    choice,
    default_of,
    document_settings,
    integer,
    number,
    ratio,
    runtime_settings,
    setting,
    table,
    text,
    validate_settings,
)

__all__ = [
    "BATCHNORM_OPTIONS",
    "MODES",
    "ConfigError",
    "TrainConfig",
    "field_defaults",
    "load_config_file",
    "runtime_fields",
]

#: ``"dense"`` trains the dense network (the baseline); ``"lt"`` and ``"mp"`` search a ticket.
MODES: tuple[str, ...] = ("dense", *SUBNET_MODES)
#: The ``batchnorm`` values of :func:`~spikelottery.sparsify`.
BATCHNORM_OPTIONS: tuple[str, ...] = ("keep", "nonaffine")


def _model_name(name: str, value: Any) -> str:
    from ..models import list_models

    key = str(text()(name, value)).strip().lower()
    if key not in list_models():
        raise ConfigError(name, f"unknown model {value!r}; valid names: {', '.join(list_models())}")
    return key


def _dataset_name(name: str, value: Any) -> str:
    from ..data import DATASETS

    key = str(text()(name, value)).strip().lower().replace("-", "_")
    if key not in DATASETS:
        raise ConfigError(name, f"unknown dataset {value!r}; valid names: {', '.join(DATASETS)}")
    return key


def _device(name: str, value: Any) -> str:
    value = text()(name, value)
    try:
        if value != "auto":
            torch.device(value)
    except (RuntimeError, ValueError):
        raise ConfigError(
            name, f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {value!r}"
        ) from None
    return str(value)


_EXPERIMENT = "experiment"
_SEARCH = "ticket search"
_NEURONS = "spiking neurons"
_OPTIM = "optimisation"
_RUNNING = "running"

#: Training steps from which ``compile_lif="auto"`` compiles the LIF kernels: a cold
#: compile costs about 10 s on 2 CPU cores and saves 0.03-0.07 s per step of the demo
#: network (benchmarks/bench_startup.py).
COMPILE_MIN_STEPS = 300


@document_settings
@dataclass
class TrainConfig:
    """One experiment: model, data, pruning, SNN and optimisation settings.

    Every field has a default that runs on the embedded digits. Build it from keyword
    arguments, a dict (:meth:`from_dict`) or a TOML/JSON file (:meth:`from_file`); a bad
    value raises :class:`~spikelottery.engine.ConfigError` (a ``ValueError``) naming the
    field. Every field is also a ``spikelottery run`` flag (``--field-name``).
    """

    model: str = setting(
        "vgg_small",
        help="Zoo name (see :func:`spikelottery.models.list_models`).",
        check=_model_name,
        group=_EXPERIMENT,
    )
    dataset: str = setting(
        "digits",
        help="Data set name (see :data:`spikelottery.data.DATASETS`).",
        check=_dataset_name,
        group=_EXPERIMENT,
    )
    data_root: str | None = setting(
        None,
        help="Folder of the data files (not needed for the embedded digits).",
        check=text(optional=True),
        group=_EXPERIMENT,
        runtime=True,
        metavar="DIR",
    )
    mode: str = setting(
        "mp",
        help='``"dense"`` (baseline), ``"lt"`` (``W * M``) or ``"mp"`` (``alpha * sign(W) * M``).',
        check=choice(MODES),
        group=_SEARCH,
    )
    spiking: bool = setting(
        True,
        help="LIF neurons (SNN) if true, the ReLU twin (ANN) if false.",
        check=boolean,
        group=_NEURONS,
        flag="--ann",
    )
    pa: float = setting(
        0.4,
        help='Fraction of weights REMOVED per layer, in ``[0, 1)`` (ignored by ``"dense"``).',
        check=ratio,
        group=_SEARCH,
    )
    pb: float = setting(
        0.0,
        help="Fraction of patches REMOVED after the patch embedding (transformers), in ``[0, 1)``.",
        check=ratio,
        group=_SEARCH,
    )
    timesteps: int = setting(
        4,
        help="``T``: repeats of a static image, or frames of event data.",
        check=integer(1),
        group=_NEURONS,
    )
    beta: float = setting(
        0.99,
        help="LIF membrane decay (the paper's lambda), in ``[0, 1]``.",
        check=number(0.0, 1.0),
        group=_NEURONS,
    )
    epochs: int = setting(10, help="Stage 1 epochs (``N_a``).", check=integer(0), group=_OPTIM)
    patch_epochs: int = setting(
        0,
        help="Stage 2 (patch pruning) epochs (``N_b``), with ``pb > 0``.",
        check=integer(0),
        group=_OPTIM,
    )
    finetune_epochs: int = setting(
        0,
        help="Fine-tuning epochs of the found ticket's kept weights.",
        check=integer(0),
        group=_OPTIM,
    )
    lr: float = setting(
        0.1,
        help="Adam learning rate of the scores (the paper uses 0.1).",
        check=number(0.0, math.inf, lo_open=True),
        group=_OPTIM,
    )
    weight_lr: float = setting(
        1e-3,
        help="Adam learning rate of every other trainable parameter (BatchNorm, dense "
        "layers outside ``filter``, the whole dense baseline, fine-tuning).",
        check=number(0.0, math.inf, lo_open=True),
        group=_OPTIM,
    )
    weight_decay: float = setting(
        0.0,
        help="Adam weight decay (L2), for scores and weights alike.",
        check=number(0.0, math.inf),
        group=_OPTIM,
    )
    batch_size: int = setting(
        64,
        help="GLOBAL batch size; under ``torchrun`` each of ``W`` processes takes "
        "``batch_size / W`` and together they see the single-process batches. The result "
        "equals the single-process one (up to float rounding) for a model without BatchNorm "
        "and a training set whose size ``W`` divides; see ``sync_batchnorm``.",
        check=integer(1),
        group=_OPTIM,
    )
    seed: int = setting(
        0,
        help="Seed of model init, data order and every random generator.",
        check=integer(0),
        group=_OPTIM,
    )
    out: str | None = setting(
        "runs/run",
        help="Output folder (``results.json``, ``checkpoint.pt``, the ticket); ``None`` "
        "writes nothing.",
        check=text(optional=True),
        group=_RUNNING,
        runtime=True,
        metavar="DIR",
    )
    device: str = setting(
        "auto",
        help='``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.',
        check=_device,
        group=_RUNNING,
        runtime=True,
    )
    num_workers: int = setting(
        0,
        help="DataLoader worker processes.",
        check=integer(0),
        group=_RUNNING,
        runtime=True,
    )
    filter: str | None = setting(
        None,
        help='Regex of the layers to sparsify (``"patch_embed"`` for PEPSp/MultiSp); '
        "``None`` sparsifies every conv and linear layer.",
        check=text(optional=True),
        group=_SEARCH,
        metavar="REGEX",
    )
    batchnorm: str = setting(
        "keep",
        help='``"keep"`` (BatchNorm affine parameters train) or ``"nonaffine"`` (fixed at 1 '
        "and 0: a score-only search, as in edge-popup).",
        check=choice(BATCHNORM_OPTIONS),
        group=_SEARCH,
    )
    init: str = setting(
        "kaiming_normal",
        help='Frozen weight init: ``"kaiming_normal"``, ``"signed_constant"`` or ``"keep"`` '
        "(the model's own weights, e.g. pretrained ones).",
        check=choice(INITS),
        group=_SEARCH,
    )
    resolution: int | None = setting(
        None,
        help="Image side in pixels; ``None``: the data set's own (the digits are 8x8).",
        check=integer(1, optional=True),
        group=_EXPERIMENT,
    )
    augment: bool = setting(
        False,
        help="Random crop and flip of the training images (CIFAR only).",
        check=boolean,
        group=_EXPERIMENT,
    )
    # setting() is dataclasses.field() plus metadata: the default_factory builds each default.
    model_kwargs: dict[str, Any] = setting(  # noqa: RUF009
        default_factory=dict,
        help='Extra arguments of :func:`~spikelottery.models.create_model`, e.g. ``{"depth": 4}``.',
        check=table,
        group=_EXPERIMENT,
        metavar="JSON",
    )
    resume: bool = setting(
        False,
        help="Continue from ``out/checkpoint.pt`` if it exists.",
        check=boolean,
        group=_RUNNING,
        runtime=True,
    )
    checkpoint: bool = setting(
        True,
        help="Write ``out/checkpoint.pt`` after every epoch.",
        check=boolean,
        group=_RUNNING,
        runtime=True,
    )
    max_batches: int | None = setting(
        None,
        help="Batches per epoch, of training and of evaluation (quick tests); ``None``: all.",
        check=integer(1, optional=True),
        group=_RUNNING,
    )
    energy_batches: int = setting(
        2,
        help="Test batches measured by the energy estimate.",
        check=integer(1),
        group=_RUNNING,
    )
    deterministic: bool = setting(
        False,
        help="``torch.use_deterministic_algorithms(True)`` during the run (slower on GPU); "
        "the previous setting is restored afterwards.",
        check=boolean,
        group=_RUNNING,
    )
    sync_batchnorm: bool = setting(
        False,
        help="Under ``torchrun`` on CUDA, normalise with the statistics of the global batch "
        "(``nn.SyncBatchNorm``) instead of each process's share. CUDA only (PyTorch's "
        "``SyncBatchNorm`` has no CPU kernel): a distributed run on CPU with "
        "``sync_batchnorm=True`` is an error; one process ignores it.",
        check=boolean,
        group=_RUNNING,
    )
    model_input: str = setting(
        "auto",
        help='How the model takes its input: ``"batch_first"`` (the data set\'s batches, '
        '``[B, ...]``; the zoo), ``"time_first"`` (SpikingJelly\'s multi-step convention: '
        '``[T, B, ...]`` in, ``[T, B, K]`` out, averaged over ``T``) or ``"auto"`` '
        "(time-first for a model in SpikingJelly's multi-step mode, else batch-first).",
        check=choice(INPUT_CONVENTIONS),
        group=_EXPERIMENT,
    )
    compile_lif: str = setting(
        "auto",
        help='Compile the LIF kernels with ``torch.compile``: ``"auto"`` only when the run '
        f"plans at least {COMPILE_MIN_STEPS} training steps, enough to repay the compile time "
        '(shorter runs start as fast as without compiling), ``"on"`` always, '
        '``"off"`` never. Compiled and uncompiled kernels agree to float rounding.',
        check=choice(("auto", "on", "off")),
        group=_RUNNING,
    )
    check_ticket: bool = setting(
        True,
        help="Before training, verify on four test samples that every score-mask layer's mask "
        "shapes the output (:func:`spikelottery.check_ticket`): a layer the network bypasses "
        "stops the run with its name. Costs about two forwards per layer, once.",
        check=boolean,
        group=_RUNNING,
        runtime=True,
    )
    progress: bool = setting(
        True,
        help="tqdm progress bars (only on a terminal, only on rank 0).",
        check=boolean,
        group=_RUNNING,
        runtime=True,
    )

    def __post_init__(self) -> None:
        self.validate()

    # -- validation ------------------------------------------------------------------
    def validate(self) -> TrainConfig:
        """Check every field; raise :class:`ConfigError` naming the first bad one."""
        validate_settings(self)
        if self.mode == "dense" and self.finetune_epochs:
            raise ConfigError(
                "finetune_epochs",
                "finetune_epochs fine-tunes a found ticket; it needs mode 'lt' or 'mp', "
                f"got mode='dense' with finetune_epochs={self.finetune_epochs}",
            )
        if self.patch_epochs and self.pb == 0.0:
            raise ConfigError(
                "patch_epochs",
                f"patch_epochs={self.patch_epochs} is stage 2 (patch pruning): it needs pb > 0 "
                "(the fraction of patches removed)",
            )
        return self

    # -- conversion ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """All fields as a JSON-safe dict (round-trips through :meth:`from_dict`)."""
        return {f.name: _copy(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, source: str = "config") -> TrainConfig:
        """Build a config from a mapping; unknown keys are an error naming them.

        Args:
            values: Field names to values (missing fields keep their defaults).
            source: Where the mapping came from, for error messages (a file name).
        """
        if not isinstance(values, Mapping):
            raise TypeError(
                f"{source}: expected a mapping of field names to values, got {type(values).__name__}"
            )
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in values if k not in names]
        if unknown:
            raise SpikeLotteryError(
                f"{source}: unknown field(s) {', '.join(map(repr, unknown))}; "
                f"valid fields are: {', '.join(names)}"
            )
        return cls(**dict(values))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **overrides: Any) -> TrainConfig:
        """Load a ``.toml`` or ``.json`` config file; ``overrides`` win over the file.

        The file holds the fields at top level, or under a ``[train]`` table (TOML) /
        ``"train"`` key (JSON). TOML has no null: leave a field out to keep its default.

        >>> TrainConfig.from_file("exp.toml", seed=1)  # doctest: +SKIP
        """
        values = load_config_file(path)
        values.update(overrides)
        return cls.from_dict(values, source=str(path))

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)


def _copy(value: Any) -> Any:
    return dict(value) if isinstance(value, dict) else value


def field_defaults(cls: type[TrainConfig] = TrainConfig) -> dict[str, Any]:
    """Every field's default value.

    >>> field_defaults()["pa"]
    0.4
    """
    return {f.name: default_of(f) for f in dataclasses.fields(cls)}


def runtime_fields(cls: type[TrainConfig] = TrainConfig) -> frozenset[str]:
    """The fields that may differ between a checkpoint and the run that resumes it.

    They change where and how fast the run goes, never what it computes.

    >>> sorted(runtime_fields())
    ['check_ticket', 'checkpoint', 'data_root', 'device', 'num_workers', 'out', 'progress', 'resume']
    """
    return runtime_settings(cls)


def load_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a TOML or JSON config file into a dict of fields (not yet validated).

    Raises:
        SpikeLotteryError: The file is missing, unreadable, not TOML/JSON, or not a table.
    """
    p = Path(path)
    if not p.is_file():
        raise SpikeLotteryError(f"config file {str(p)!r} does not exist")
    suffix = p.suffix.lower()
    try:
        content = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpikeLotteryError(f"cannot read config file {str(p)!r}: {exc}") from None
    try:
        if suffix == ".toml":
            data: Any = tomllib.loads(content)
        elif suffix == ".json":
            data = json.loads(content)
        else:
            raise SpikeLotteryError(
                f"config file {str(p)!r}: unknown extension {suffix!r}; use .toml or .json"
            )
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise SpikeLotteryError(
            f"config file {str(p)!r} is not valid {suffix[1:].upper()}: {exc}"
        ) from None
    if not isinstance(data, dict):
        raise SpikeLotteryError(
            f"config file {str(p)!r} must hold a table of fields, got {type(data).__name__}"
        )
    if set(data) == {"train"} and isinstance(data["train"], dict):
        data = data["train"]
    return dict(data)
