"""The ticket-search engine: paper Algorithm 1 as a resumable, distributed training loop.

One experiment is one :class:`TrainConfig`; :func:`run` (or :class:`Trainer`) executes it:

* **stage 1** (``epochs``, the paper's ``N_a``): after :func:`~spikelottery.sparsify`, Adam
  trains the scores (``lr``, the paper's 0.1) and every other trainable parameter
  (``weight_lr``), with a cosine schedule. ``mode="dense"`` trains the dense network
  instead (the baseline).
* **stage 2** (``patch_epochs``, ``N_b``, only with ``pb > 0``): patch pruning at ``pb``
  after the patch embedding; the sparse patch embedding (ConvPEP) and every mask stay
  fixed, the rest trains.
* **fine-tuning** (``finetune_epochs``, optional, paper Section IV-E): the weights of the
  kept connections train with the masks fixed.

After training it measures the test accuracy, the kept fraction and the energy per sample
(:func:`~spikelottery.energy.estimate_energy` on a few test batches), and writes
``results.json`` (and the ticket) to ``out``. A checkpoint is written atomically after
every epoch; ``resume=True`` continues from it and ends with exactly the result of an
uninterrupted run. Under ``torchrun`` the loop runs with DistributedDataParallel; ``W``
processes reproduce the single-process run (up to float rounding in the gradient average)
only for a model without BatchNorm (each process normalises its own share of the batch,
unless ``sync_batchnorm``) and a training set whose size ``W`` divides (otherwise
``DistributedSampler`` pads the epoch by repeating samples).

Example:
    >>> cfg = TrainConfig(model="vgg_tiny", dataset="digits", mode="mp", pa=0.4,
    ...                   epochs=1, max_batches=2, out=None, progress=False)
    >>> res = run(cfg)  # doctest: +SKIP
    >>> 0.0 <= res.accuracy <= 1.0, res.kept_fraction  # doctest: +SKIP
    (True, 0.6...)
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import math
import os
import random
import sys
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ._io import atomic_open
from ._state import finite_or_none, reset_states, split_batch, unwrap
from ._validation import check_ratio
from .errors import SpikeLotteryError
from .layers import INITS, SubnetLayer
from .layers import MODES as _SUBNET_MODES
from .sparsify import _freeze_batchnorm_affine, kept_fraction, sparsify

__all__ = [
    "CHECKPOINT_FILE",
    "DEMO_EPOCHS",
    "DEMO_LAYERS",
    "DEMO_METHODS",
    "MODES",
    "RESULTS_FILE",
    "TICKET_FILE",
    "Results",
    "TrainConfig",
    "Trainer",
    "demo",
    "demo_configs",
    "evaluate",
    "format_table",
    "load_config_file",
    "reset_states",
    "run",
    "seed_everything",
]

logger = logging.getLogger("spikelottery.engine")

#: ``"dense"`` trains the dense network (the baseline); ``"lt"`` and ``"mp"`` search a ticket.
MODES: tuple[str, ...] = ("dense", *_SUBNET_MODES)
# The ``batchnorm`` values of :func:`~spikelottery.sparsify` (it names them only in its checks).
_BATCHNORM_OPTIONS: tuple[str, ...] = ("keep", "nonaffine")
RESULTS_FILE = "results.json"
CHECKPOINT_FILE = "checkpoint.pt"
TICKET_FILE = "ticket.safetensors"
_CHECKPOINT_FORMAT = 1

# Fields that may differ between a checkpoint and the run that resumes it: they change
# where and how fast the run goes, never what it computes.
_RUNTIME_FIELDS = frozenset(
    {"resume", "progress", "out", "device", "num_workers", "data_root", "checkpoint"}
)


# --------------------------------------------------------------------------- configuration


class _FieldError(ValueError):
    """A :class:`TrainConfig` field has a bad value; ``field`` names it (the CLI maps it to a flag)."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name


@dataclass
class TrainConfig:
    """One experiment: model, data, pruning, SNN and optimisation settings.

    Every field has a default that runs on the embedded digits. Build it from keyword
    arguments, a dict (:meth:`from_dict`) or a TOML/JSON file (:meth:`from_file`); any
    bad value raises a ``ValueError``/``TypeError`` naming the field.

    Attributes:
        model: Zoo name (see :func:`spikelottery.models.list_models`).
        dataset: Data set name (see :data:`spikelottery.data.DATASETS`).
        data_root: Folder of the data files (not needed for the embedded digits).
        mode: ``"dense"`` (baseline), ``"lt"`` (``W * M``) or ``"mp"`` (``alpha * sign(W) * M``).
        spiking: LIF neurons (SNN) or the ReLU twin (ANN).
        pa: Fraction of weights REMOVED per layer, in ``[0, 1)`` (ignored by ``"dense"``).
        pb: Fraction of patches REMOVED after the patch embedding (transformers), in ``[0, 1)``.
        timesteps: ``T``: repeats of a static image, or frames of event data.
        beta: LIF membrane decay (the paper's lambda).
        epochs: Stage 1 epochs (``N_a``).
        patch_epochs: Stage 2 epochs (``N_b``), with ``pb > 0``.
        finetune_epochs: Fine-tuning epochs of the found ticket's kept weights.
        lr: Adam learning rate of the scores (the paper uses 0.1).
        weight_lr: Adam learning rate of every other trainable parameter (BatchNorm,
            dense layers outside ``filter``, the whole dense baseline, fine-tuning).
        weight_decay: Adam weight decay (L2), for scores and weights alike.
        batch_size: GLOBAL batch size; under ``torchrun`` each of ``W`` processes takes
            ``batch_size / W`` and together they see the single-process batches. The
            result equals the single-process one (up to float rounding) for a model
            without BatchNorm and a training set whose size ``W`` divides; see
            ``sync_batchnorm``.
        seed: Seed of model init, data order and every random generator.
        out: Output folder (``results.json``, ``checkpoint.pt``, the ticket); ``None``
            writes nothing.
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        num_workers: DataLoader worker processes.
        filter: Regex of the layers to sparsify (``"patch_embed"`` for PEPSp/MultiSp);
            ``None`` sparsifies every conv and linear layer.
        batchnorm: ``"keep"`` (BatchNorm affine parameters train) or ``"nonaffine"``
            (fixed at 1 and 0: a score-only search, as in edge-popup).
        init: Frozen weight init: ``"kaiming_normal"``, ``"signed_constant"`` or
            ``"keep"`` (the model's own weights, e.g. pretrained ones).
        resolution: Image side (default: the data set's own; the digits are 8x8).
        augment: Random crop and flip of the training images (CIFAR only).
        model_kwargs: Extra arguments of :func:`~spikelottery.models.create_model`.
        resume: Continue from ``out/checkpoint.pt`` if it exists.
        checkpoint: Write ``out/checkpoint.pt`` after every epoch.
        max_batches: Batches per epoch, of training and of evaluation (quick tests).
        energy_batches: Test batches measured by the energy estimate.
        deterministic: ``torch.use_deterministic_algorithms(True)`` during the run
            (slower on GPU); the previous setting is restored afterwards.
        sync_batchnorm: Under ``torchrun`` on CUDA, normalise with the statistics of the
            global batch (``nn.SyncBatchNorm``) instead of each process's share. CUDA
            only (PyTorch's ``SyncBatchNorm`` has no CPU kernel): a distributed run on
            CPU with ``sync_batchnorm=True`` is an error; one process ignores it.
        progress: tqdm progress bars (only on a terminal, only on rank 0).
    """

    model: str = "vgg_small"
    dataset: str = "digits"
    data_root: str | None = None
    mode: str = "mp"
    spiking: bool = True
    pa: float = 0.4
    pb: float = 0.0
    timesteps: int = 4
    beta: float = 0.99
    epochs: int = 10
    patch_epochs: int = 0
    finetune_epochs: int = 0
    lr: float = 0.1
    weight_lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 64
    seed: int = 0
    out: str | None = "runs/run"
    device: str = "auto"
    num_workers: int = 0
    filter: str | None = None
    batchnorm: str = "keep"
    init: str = "kaiming_normal"
    resolution: int | None = None
    augment: bool = False
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    resume: bool = False
    checkpoint: bool = True
    max_batches: int | None = None
    energy_batches: int = 2
    deterministic: bool = False
    sync_batchnorm: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        self.validate()

    # -- validation ------------------------------------------------------------------
    def validate(self) -> TrainConfig:
        """Check every field; raise ``ValueError``/``TypeError`` naming the first bad one."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            setattr(self, f.name, _check_field(f.name, value))
        if self.mode == "dense" and self.finetune_epochs:
            raise _FieldError(
                "finetune_epochs",
                "finetune_epochs fine-tunes a found ticket; it needs mode 'lt' or 'mp', "
                f"got mode='dense' with finetune_epochs={self.finetune_epochs}",
            )
        if self.patch_epochs and self.pb == 0.0:
            raise _FieldError(
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
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpikeLotteryError(f"cannot read config file {str(p)!r}: {exc}") from None
    try:
        if suffix == ".toml":
            data: Any = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
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


def _field_defaults() -> dict[str, Any]:
    """Every :class:`TrainConfig` field's default value."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(TrainConfig):
        if f.default is not dataclasses.MISSING:
            values[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            values[f.name] = f.default_factory()
    return values


def _copy(value: Any) -> Any:
    return dict(value) if isinstance(value, dict) else value


def _check_int(name: str, value: Any, minimum: int, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        kind = "an int" + (" or None" if optional else "")
        raise _FieldError(name, f"{name} must be {kind} >= {minimum}, got {value!r}")
    if value < minimum:
        raise _FieldError(name, f"{name} must be >= {minimum}, got {name}={value!r}")
    return int(value)


def _check_float(name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
        raise _FieldError(name, f"{name} must be a number, got {value!r}")
    value = float(value)
    bad_lo = value <= lo if lo_open else value < lo
    if not math.isfinite(value) or bad_lo or value > hi:
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
        raise _FieldError(name, f"{name} must be in {interval}, got {name}={value!r}")
    return value


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _FieldError(name, f"{name} must be true or false, got {value!r}")
    return value


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise _FieldError(name, f"{name} must be one of {', '.join(choices)}; got {name}={value!r}")
    return value


def _check_str(name: str, value: Any, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value:
        kind = "a non-empty string" + (" or None" if optional else "")
        raise _FieldError(name, f"{name} must be {kind}, got {value!r}")
    return value


def _check_field(name: str, value: Any) -> Any:
    """Validate and normalise one :class:`TrainConfig` field."""
    if name in ("pa", "pb"):
        try:
            return check_ratio(name, value)
        except ValueError as exc:
            raise _FieldError(name, str(exc)) from None
    if name == "mode":
        return _check_choice(name, value, MODES)
    if name == "batchnorm":
        return _check_choice(name, value, _BATCHNORM_OPTIONS)
    if name == "init":
        return _check_choice(name, value, INITS)
    if name == "model":
        from .models import list_models

        value = _check_str(name, value)
        if value.strip().lower() not in list_models():
            raise _FieldError(
                name, f"unknown model {value!r}; valid names: {', '.join(list_models())}"
            )
        return value.strip().lower()
    if name == "dataset":
        from .data import DATASETS

        value = _check_str(name, value)
        key = value.strip().lower().replace("-", "_")
        if key not in DATASETS:
            raise _FieldError(
                name, f"unknown dataset {value!r}; valid names: {', '.join(DATASETS)}"
            )
        return key
    if name in ("data_root", "out", "filter"):
        return _check_str(name, value, optional=True)
    if name == "device":
        value = _check_str(name, value)
        try:
            if value != "auto":
                torch.device(value)
        except (RuntimeError, ValueError):
            raise _FieldError(
                name, f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {value!r}"
            ) from None
        return value
    if name in (
        "spiking",
        "resume",
        "checkpoint",
        "deterministic",
        "sync_batchnorm",
        "progress",
        "augment",
    ):
        return _check_bool(name, value)
    if name in ("timesteps", "batch_size", "energy_batches"):
        return _check_int(name, value, 1)
    if name in ("epochs", "patch_epochs", "finetune_epochs", "num_workers", "seed"):
        return _check_int(name, value, 0)
    if name in ("max_batches", "resolution"):
        return _check_int(name, value, 1, optional=True)
    if name == "beta":
        return _check_float(name, value, 0.0, 1.0)
    if name in ("lr", "weight_lr"):
        return _check_float(name, value, 0.0, math.inf, lo_open=True)
    if name == "weight_decay":
        return _check_float(name, value, 0.0, math.inf)
    if name == "model_kwargs":
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise _FieldError(
                name, f"model_kwargs must be a table of argument names to values, got {value!r}"
            )
        return dict(value)
    raise _FieldError(name, f"unknown field {name!r}")  # pragma: no cover - fields are fixed


# --------------------------------------------------------------------------- results


@dataclass
class Results:
    """What :func:`run` found; :meth:`to_dict` is the content of ``results.json``.

    Attributes:
        accuracy: Test accuracy of the final model, in ``[0, 1]``.
        kept_fraction: Fraction of the masked weights kept (1.0 for ``"dense"``).
        energy_mj: Energy per sample in mJ (paper Eq. 3-4: ``E_SNN`` for a spiking
            model, ``E_ANN`` for the ReLU twin, charged for every time step it ran: ``T``
            on event frames, one on a static image); ``None`` if it could not be measured.
        energy_sparse_mj: The same with every layer's FLOPs scaled by its weight density
            (pruned weights do no work).
        ann_energy_mj: ``E_ANN`` of the same network run as an ANN (the reference of the
            paper's ratios): once per sample for a spiking model, as in the paper; for
            the ReLU twin the same as ``energy_mj``.
        firing_rate: Mean input firing rate of the binary-input layers (``None`` for an ANN).
        seconds: Wall time of the whole run (all sessions of a resumed run).
        config: The :class:`TrainConfig` as a dict.
        history: One dict per epoch: ``epoch``, ``stage``, ``train_loss``,
            ``train_accuracy``, ``test_loss``, ``test_accuracy``, ``lr``, ``seconds``.
        energy: The energy report's totals, options and conventions.
        loss: Mean test cross-entropy of the final model (``None`` if not finite).
        model: The trained model (not serialised).
    """

    accuracy: float
    kept_fraction: float
    energy_mj: float | None
    energy_sparse_mj: float | None
    ann_energy_mj: float | None
    firing_rate: float | None
    seconds: float
    config: dict[str, Any]
    history: list[dict[str, Any]]
    energy: dict[str, Any] | None = None
    loss: float | None = None
    model: nn.Module | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of everything but the model."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "model"}
        return json.loads(json.dumps(out, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# --------------------------------------------------------------------------- helpers


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's global generator and torch (CPU and CUDA).

    >>> seed_everything(0)
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _seed_worker(worker_id: int) -> None:
    # Each DataLoader worker gets a distinct, reproducible seed derived from the loader's.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    created: bool = False

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: str) -> _Dist:
    """Join the process group that ``torchrun`` describes in the environment, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and not (dist.is_available() and dist.is_initialized()):
        return _Dist()
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
    return _Dist(dist.get_rank(), dist.get_world_size(), local_rank, created)


def _resolve_device(device: str, ddp: _Dist) -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device(
                "cuda", ddp.local_rank if ddp.enabled else torch.cuda.current_device()
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
                "cuda", ddp.local_rank if ddp.enabled else torch.cuda.current_device()
            )
    return dev


def _atomic_write_bytes(path: Path, write: Callable[[Any], None]) -> None:
    """Create the folder, then write through :func:`~spikelottery._io.atomic_open`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as fh:
        write(fh)


def _write_json(path: Path, data: Any) -> None:
    text = json.dumps(data, indent=2, default=_json_default, allow_nan=False) + "\n"
    _atomic_write_bytes(path, lambda fh: fh.write(text.encode("utf-8")))


def _rng_state() -> dict[str, Any]:
    """Every random generator's state, as tensors and plain values (``weights_only``-safe)."""
    np_key, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "key": str(np_key),
            "state": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "python": {
            "version": int(py_version),
            "state": torch.tensor(py_state, dtype=torch.int64),
            "gauss": py_gauss,
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["key"], n["state"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _xy(batch: Any) -> tuple[Tensor, Tensor]:
    """``(input, label)`` of a training or test batch; anything else is a data-set problem."""
    try:
        x, y = split_batch(batch)
    except TypeError:
        y = None
    if not isinstance(y, Tensor):
        raise SpikeLotteryError(
            "a data set must yield (input, label) pairs of tensors; got a batch of type "
            f"{type(batch).__name__}"
        )
    return x, y


def _model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); the CPU for a model without."""
    net = unwrap(model)
    first = next(itertools.chain(net.parameters(), net.buffers()), None)
    return first.device if first is not None else torch.device("cpu")


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Any,
    *,
    device: torch.device | str | None = None,
    max_batches: int | None = None,
) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of ``model`` on ``loader``'s ``(x, y)`` batches.

    Neuron states are reset before every batch; under ``torch.distributed`` the counts
    of all processes are summed.

    Args:
        model: The model (a ``DistributedDataParallel`` wrapper is looked through).
        loader: Any iterable of ``(x, y)`` batches, e.g. a ``DataLoader``.
        device: Where the batches go; ``None``: the device of the model's first
            parameter (the CPU for a model without parameters).
        max_batches: Stop after this many batches.

    Returns:
        ``(accuracy, loss)``; accuracy in ``[0, 1]``.

    >>> net = nn.Linear(4, 2)
    >>> with torch.no_grad():
    ...     _ = net.bias.copy_(torch.tensor([1.0, 0.0]))  # class 0 wins on zero input
    >>> evaluate(net, [(torch.zeros(3, 4), torch.zeros(3, dtype=torch.long))])[0]
    1.0
    """
    net = unwrap(model)
    if device is None:
        device = _model_device(net)
    was_training = net.training
    net.eval()
    correct = torch.zeros((), dtype=torch.float64, device=device)
    total = torch.zeros((), dtype=torch.float64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    try:
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            x, y = _xy(batch)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            reset_states(net)
            logits = net(x)
            loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
            correct += (logits.argmax(-1) == y).sum().double()
            total += y.numel()
    finally:
        net.train(was_training)
    if dist.is_available() and dist.is_initialized():
        stats = torch.stack([correct, total, loss_sum])
        dist.all_reduce(stats)
        correct, total, loss_sum = stats
    n = float(total)
    if n == 0:
        return float("nan"), float("nan")
    return float(correct) / n, float(loss_sum) / n


class _ShardSampler(torch.utils.data.Sampler[int]):
    """This process's share ``rank::world`` of the indices, in order, without padding (for evaluation)."""

    def __init__(self, n: int, rank: int, world: int) -> None:
        self.indices = list(range(rank, n, world))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


# --------------------------------------------------------------------------- the trainer


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


def _convert_sync_batchnorm(model: nn.Module) -> list[tuple[nn.Module, type]]:
    """Make every BatchNorm of ``model`` synchronise over the processes, in place.

    The modules keep their parameters, buffers, hooks and ``state_dict`` keys (only their
    class changes). Returns ``(module, original class)`` pairs for
    :func:`_restore_batchnorm`.
    """
    converted: list[tuple[nn.Module, type]] = []
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
            module, nn.SyncBatchNorm
        ):
            converted.append((module, type(module)))
            module.__class__ = _sync_class(type(module))
            module.process_group = None  # type: ignore[assignment]  # the whole world
    return converted


def _restore_batchnorm(converted: list[tuple[nn.Module, type]]) -> None:
    for module, cls in converted:
        module.__class__ = cls
        module.__dict__.pop("process_group", None)


def _check_patch_embed(model: nn.Module, pb: float) -> None:
    """Fail before any training if stage 2 could not attach its patch selector.

    A dry run: attach the selector (which finds the patch embedding and checks what
    follows it), then detach it again; stage 1 trains without it.
    """
    from .patch import attach_patch_selector

    try:
        attach_patch_selector(model, pb)
    except SpikeLotteryError as exc:
        raise SpikeLotteryError(
            f"pb={pb} prunes patches after the patch embedding (stage 2), but {exc} "
            "Use pb=0 for a model without one."
        ) from None
    attach_patch_selector(model, 0.0)  # pb = 0 detaches it


def _stage_plan(cfg: TrainConfig) -> list[tuple[str, int]]:
    """The stages in order with their epochs; a stage with 0 epochs is still entered."""
    plan = [("train" if cfg.mode == "dense" else "search", cfg.epochs)]
    if cfg.pb > 0:
        plan.append(("patch", cfg.patch_epochs))
    if cfg.finetune_epochs:
        plan.append(("finetune", cfg.finetune_epochs))
    return plan


class Trainer:
    """Runs one :class:`TrainConfig` (paper Algorithm 1); see the module docstring.

    Args:
        config: The experiment.
        model: Use this model instead of building ``config.model`` from the zoo (it is
            sparsified in place unless ``mode="dense"``).
        train_set: Use this training set instead of ``config.dataset``.
        test_set: Use this test set instead of ``config.dataset``.
        on_epoch_end: Called on every process after each epoch (and its checkpoint) with
            that epoch's history record.

    With your own data sets and no ``model``, the zoo model is still shaped for
    ``config.dataset`` (classes, channels, image size): pick a ``dataset`` of the same
    shape or pass your own model.

    >>> Trainer(TrainConfig(epochs=1, max_batches=1, out=None)).run()  # doctest: +SKIP
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        model: nn.Module | None = None,
        train_set: Dataset | None = None,
        test_set: Dataset | None = None,
        on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        self.config = config.replace()  # validated copy: later edits by the caller do not leak in
        self._user_model = model
        self._train_set = train_set
        self._test_set = test_set
        self.on_epoch_end = on_epoch_end
        self.model: nn.Module | None = None
        self.history: list[dict[str, Any]] = []
        self._frozen_module: str | None = None  # the patch embedding, in stage 2

    # -- building blocks -------------------------------------------------------------
    def _datasets(self) -> tuple[Dataset, Dataset, Any]:
        from .data import dataset_info, get_dataset

        cfg = self.config
        info = dataset_info(cfg.dataset, resolution=cfg.resolution, timesteps=cfg.timesteps)
        train_set, test_set = self._train_set, self._test_set
        if train_set is None or test_set is None:
            kwargs: dict[str, Any] = {"resolution": cfg.resolution}
            if info.is_event:
                kwargs["timesteps"] = cfg.timesteps
            if cfg.dataset in ("cifar10", "cifar100") and cfg.resolution in (None, 32):
                kwargs.pop("resolution")
            aug = (
                {"augment": True} if cfg.augment and cfg.dataset in ("cifar10", "cifar100") else {}
            )
            if train_set is None:
                train_set = get_dataset(cfg.dataset, cfg.data_root, split="train", **kwargs, **aug)
            if test_set is None:
                test_set = get_dataset(cfg.dataset, cfg.data_root, split="test", **kwargs)
        return train_set, test_set, info

    def _build_model(self, info: Any) -> nn.Module:
        cfg = self.config
        if self._user_model is not None:
            model = self._user_model
        else:
            from .models import create_model

            model = create_model(
                cfg.model,
                spiking=cfg.spiking,
                num_classes=info.num_classes,
                in_channels=info.in_channels,
                img_size=info.img_size,
                timesteps=cfg.timesteps,
                beta=cfg.beta,
                **cfg.model_kwargs,
            )
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
            )
        elif cfg.batchnorm == "nonaffine":
            _freeze_batchnorm_affine(model)
        return model

    def _loaders(
        self, train_set: Dataset, test_set: Dataset
    ) -> tuple[DataLoader, DataLoader, DistributedSampler]:
        cfg, ddp = self.config, self._ddp
        if cfg.batch_size % ddp.world:
            raise _FieldError(
                "batch_size",
                f"batch_size={cfg.batch_size} is the global batch; it must be divisible by the "
                f"{ddp.world} processes",
            )
        per_rank = cfg.batch_size // ddp.world
        # One sampler for 1 or W processes: its permutation depends on (seed, epoch) only and
        # rank r takes every W-th index, so the W local batches of step k together are the
        # single-process batch k. Only if W divides len(train_set): otherwise the sampler pads
        # the permutation with its first indices, and the last batches differ.
        sampler: DistributedSampler = DistributedSampler(
            train_set, num_replicas=ddp.world, rank=ddp.rank, shuffle=True, seed=cfg.seed
        )
        common: dict[str, Any] = {
            "num_workers": cfg.num_workers,
            "pin_memory": self.device.type == "cuda",
            "worker_init_fn": _seed_worker,
        }
        # The loader generator seeds the workers; it is reseeded every epoch (see
        # _train_epoch), so a resumed run's workers draw the same random numbers.
        self._generator = torch.Generator()
        train_loader = DataLoader(
            train_set, batch_size=per_rank, sampler=sampler, generator=self._generator, **common
        )
        test_sampler = _ShardSampler(len(test_set), ddp.rank, ddp.world)  # type: ignore[arg-type]
        test_loader = DataLoader(
            test_set,
            batch_size=per_rank,
            sampler=test_sampler,
            generator=torch.Generator().manual_seed(cfg.seed),
            **common,
        )
        return train_loader, test_loader, sampler

    def _enter_stage(self, stage: str) -> None:
        """Set what trains in ``stage``; idempotent, so a resumed run can replay it."""
        cfg, model = self.config, self._net
        if stage == "patch":
            from .patch import attach_patch_selector

            name = attach_patch_selector(model, cfg.pb)
            assert name is not None  # pb > 0 in stage 2
            # Stage 2: the sparse patch embedding (ConvPEP) and every mask stay fixed. Its
            # BatchNorm statistics too: _train_mode keeps the module in eval mode.
            self._frozen_module = name
            for p in model.get_submodule(name).parameters():
                p.requires_grad_(False)
            for m in model.modules():
                if isinstance(m, SubnetLayer):
                    m.scores.requires_grad_(False)
        elif stage == "finetune":
            # The ticket is found: its masks stay fixed and the kept weights train (the subnet
            # layer passes dL/dw only to kept entries), the patch embedding's included.
            self._frozen_module = None
            for m in model.modules():
                if isinstance(m, SubnetLayer):
                    m.scores.requires_grad_(False)
                    m.weight.requires_grad_(True)
                    if m.bias is not None:
                        m.bias.requires_grad_(True)

    def _train_mode(self) -> None:
        """``train()`` the model, except a module that the current stage keeps fixed."""
        self._net.train()
        frozen = self._frozen_module
        if frozen is not None:
            self._net.get_submodule(frozen).eval()

    def _optimizer(self, stage: str, steps: int) -> tuple[torch.optim.Optimizer, Any]:
        cfg, model = self.config, self._net
        scores = [
            m.scores
            for m in model.modules()
            if isinstance(m, SubnetLayer) and m.scores.requires_grad
        ]
        ids = {id(p) for p in scores}
        others = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
        groups = []
        if scores:
            groups.append({"params": scores, "lr": cfg.lr})
        if others:
            groups.append({"params": others, "lr": cfg.weight_lr})
        if not groups:
            raise SpikeLotteryError(
                f"stage {stage!r} has nothing to train: every parameter is frozen "
                "(e.g. stage 2 with a fully sparsified model and batchnorm='nonaffine'); "
                "set patch_epochs=0 or sparsify only the patch embedding (filter='patch_embed')"
            )
        opt = torch.optim.Adam(groups, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
        return opt, sched

    def _wrap(self) -> nn.Module:
        if not self._ddp.enabled:
            return self._net
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(self._net, device_ids=ids)

    # -- checkpoints -----------------------------------------------------------------
    def _checkpoint_path(self) -> Path | None:
        cfg = self.config
        return Path(cfg.out) / CHECKPOINT_FILE if cfg.out is not None else None

    def _save_checkpoint(
        self, epoch: int, stage: str, opt: Any, sched: Any, elapsed: float
    ) -> None:
        path = self._checkpoint_path()
        if path is None or not self.config.checkpoint or not self._ddp.main:
            return
        state = {
            "format": _CHECKPOINT_FORMAT,
            "epoch": epoch,
            "stage": stage,
            "model": self._net.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "rng": _rng_state(),
            "config": json.dumps(self.config.to_dict()),
            "history": json.dumps(self.history),
            "elapsed": elapsed,
        }
        _atomic_write_bytes(path, lambda fh: torch.save(state, fh))

    def _load_checkpoint(self) -> dict[str, Any] | None:
        path = self._checkpoint_path()
        if path is None or not self.config.resume:
            return None
        if not path.is_file():
            logger.info("resume: no checkpoint at %s, starting from scratch", path)
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise SpikeLotteryError(f"cannot read checkpoint {str(path)!r}: {exc}") from None
        if not isinstance(state, dict) or state.get("format") != _CHECKPOINT_FORMAT:
            raise SpikeLotteryError(
                f"{str(path)!r} is not a spikelottery checkpoint of format {_CHECKPOINT_FORMAT}"
            )
        saved = json.loads(state["config"])
        mine = json.loads(json.dumps(self.config.to_dict()))  # tuples compare as JSON lists
        # A field newer than the checkpoint had its default when the checkpoint was written.
        defaults = json.loads(json.dumps(_field_defaults()))
        diff = sorted(
            k for k in mine if k not in _RUNTIME_FIELDS and saved.get(k, defaults.get(k)) != mine[k]
        )
        if diff:
            changes = ", ".join(f"{k}: {saved.get(k)!r} -> {mine[k]!r}" for k in diff)
            raise SpikeLotteryError(
                f"checkpoint {str(path)!r} was written by a different experiment ({changes}); "
                "resume with the same settings, or use another out folder"
            )
        return state

    # -- the run ---------------------------------------------------------------------
    def run(self) -> Results:
        """Train, evaluate, measure the energy, write the results; return them.

        For reproducibility the run seeds python's ``random``, numpy's global generator and
        torch's (CPU and CUDA) with ``config.seed`` (see :func:`seed_everything`); their
        states are not restored afterwards. ``torch.use_deterministic_algorithms`` and
        ``CUBLAS_WORKSPACE_CONFIG``, which ``deterministic=True`` sets, are restored.
        """
        cfg = self.config
        start = time.perf_counter()
        deterministic = (
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
        )
        cublas = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
        self._ddp = _init_distributed(cfg.device)
        try:
            return self._run(start)
        finally:
            torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
            if cublas is None:
                os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
            else:
                os.environ["CUBLAS_WORKSPACE_CONFIG"] = cublas
            if self._ddp.created and dist.is_initialized():
                dist.destroy_process_group()

    def _run(self, start: float) -> Results:
        cfg, ddp = self.config, self._ddp
        self.device = _resolve_device(cfg.device, ddp)
        sync_bn = cfg.sync_batchnorm and ddp.enabled
        if sync_bn and self.device.type != "cuda":
            raise _FieldError(
                "sync_batchnorm",
                f"sync_batchnorm=True needs CUDA (nn.SyncBatchNorm has no {self.device.type} "
                "kernel); set sync_batchnorm=False for a distributed run on "
                f"{self.device.type}",
            )
        if cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        self._frozen_module = None
        self.history = []
        seed_everything(cfg.seed)
        train_set, test_set, info = self._datasets()
        self._net = self._build_model(info).to(self.device)
        self.model = self._net
        converted = _convert_sync_batchnorm(self._net) if sync_bn else []
        try:
            return self._run_stages(start, train_set, test_set)
        finally:
            _restore_batchnorm(converted)  # the caller gets the model's own classes back

    def _run_stages(self, start: float, train_set: Dataset, test_set: Dataset) -> Results:
        cfg, ddp = self.config, self._ddp
        train_loader, test_loader, sampler = self._loaders(train_set, test_set)
        steps_per_epoch = len(train_loader)
        if cfg.max_batches is not None:
            steps_per_epoch = min(steps_per_epoch, cfg.max_batches)
        if steps_per_epoch == 0:
            raise SpikeLotteryError(f"the training set of {cfg.dataset!r} is empty")

        plan = _stage_plan(cfg)
        total_epochs = sum(n for _, n in plan)
        state = self._load_checkpoint()
        done, elapsed_before = 0, 0.0
        if state is not None:
            done = int(state["epoch"])
            self.history = json.loads(state["history"])
            elapsed_before = float(state["elapsed"])
            logger.info("resuming %s after epoch %d of %d", cfg.out, done, total_epochs)

        first_epoch = 0
        for stage, n_epochs in plan:
            self._enter_stage(stage)
            last_epoch = first_epoch + n_epochs
            if done >= last_epoch:  # finished before the restart: only replay its setup
                first_epoch = last_epoch
                continue
            opt, sched = self._optimizer(stage, n_epochs * steps_per_epoch)
            if state is not None and state["stage"] == stage and done > first_epoch:
                self._net.load_state_dict(state["model"])
                opt.load_state_dict(state["optimizer"])
                sched.load_state_dict(state["scheduler"])
                _set_rng_state(state["rng"])
            elif state is not None and done > 0:
                # The checkpoint closed the previous stage: weights and RNG carry over.
                self._net.load_state_dict(state["model"])
                _set_rng_state(state["rng"])
            state = None
            net = self._wrap()
            for epoch in range(max(done, first_epoch), last_epoch):
                record = self._train_epoch(
                    net,
                    train_loader,
                    test_loader,
                    sampler,
                    opt,
                    sched,
                    stage,
                    epoch,
                    first_epoch,
                    n_epochs,
                    steps_per_epoch,
                )
                self.history.append(record)
                elapsed = elapsed_before + time.perf_counter() - start
                self._save_checkpoint(epoch + 1, stage, opt, sched, elapsed)
                if ddp.enabled:
                    dist.barrier()
                if self.on_epoch_end is not None:
                    self.on_epoch_end(record)
            done = last_epoch
            first_epoch = last_epoch
        if state is not None:  # every epoch was done before this session
            self._net.load_state_dict(state["model"])
        if total_epochs == 0:
            logger.info("epochs=0: evaluating the untrained network")

        last = self.history[-1] if self.history else None
        if last is not None and last["stage"] == plan[-1][0] and last["test_accuracy"] is not None:
            # The final model, already evaluated: no stage was entered after that epoch.
            accuracy, loss = last["test_accuracy"], last["test_loss"]
        else:
            # No epoch yet, or a stage without epochs (pb > 0 with patch_epochs = 0) changed
            # the model after the last evaluation.
            accuracy, loss = evaluate(
                self._net, test_loader, device=self.device, max_batches=cfg.max_batches
            )
        energy = self._energy(test_loader) if ddp.main else None
        results = Results(
            accuracy=accuracy,
            loss=finite_or_none(loss),
            kept_fraction=kept_fraction(self._net),
            energy_mj=energy["energy_mj"] if energy else None,
            energy_sparse_mj=energy["energy_sparse_mj"] if energy else None,
            ann_energy_mj=energy["ann_energy_mj"] if energy else None,
            firing_rate=energy["firing_rate"] if energy else None,
            seconds=elapsed_before + time.perf_counter() - start,
            config=cfg.to_dict(),
            history=list(self.history),
            energy=energy["report"] if energy else None,
            model=self._net,
        )
        self._write_outputs(results)
        logger.info(
            "done: accuracy %.4f, kept %.4f, energy %s mJ, %.1f s",
            results.accuracy,
            results.kept_fraction,
            "n/a" if results.energy_mj is None else f"{results.energy_mj:.6f}",
            results.seconds,
        )
        return results

    def _train_epoch(
        self,
        net: nn.Module,
        train_loader: DataLoader,
        test_loader: DataLoader,
        sampler: DistributedSampler,
        opt: torch.optim.Optimizer,
        sched: Any,
        stage: str,
        epoch: int,
        stage_start: int,
        stage_epochs: int,
        steps: int,
    ) -> dict[str, Any]:
        cfg, ddp = self.config, self._ddp
        t0 = time.perf_counter()
        sampler.set_epoch(epoch)
        self._generator.manual_seed(cfg.seed * 100_003 + epoch)
        self._train_mode()
        show = cfg.progress and ddp.main and sys.stderr.isatty()
        bar = _progress(steps, f"{stage} {epoch - stage_start + 1}/{stage_epochs}", show)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.float64, device=self.device)
        seen = torch.zeros((), dtype=torch.float64, device=self.device)
        lr = opt.param_groups[0]["lr"]
        try:
            for i, batch in enumerate(train_loader):
                if i >= steps:
                    break
                x, y = _xy(batch)
                x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
                reset_states(self._net)
                logits = net(x)
                loss = F.cross_entropy(logits, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                with torch.no_grad():
                    loss_sum += loss.detach().double() * y.numel()
                    correct += (logits.argmax(-1) == y).sum().double()
                    seen += y.numel()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss.item():.3f}")
        finally:
            if bar is not None:
                bar.close()
        if ddp.enabled:
            stats = torch.stack([loss_sum, correct, seen])
            dist.all_reduce(stats)
            loss_sum, correct, seen = stats
            for buf in self._net.buffers():  # evaluate with rank 0's BatchNorm statistics
                dist.broadcast(buf, 0)
        test_acc, test_loss = evaluate(
            self._net, test_loader, device=self.device, max_batches=cfg.max_batches
        )
        n = float(seen)
        record = {
            "epoch": epoch + 1,
            "stage": stage,
            "stage_epoch": epoch - stage_start + 1,
            "train_loss": float(loss_sum) / n if n else None,
            "train_accuracy": float(correct) / n if n else None,
            "test_loss": finite_or_none(test_loss),
            "test_accuracy": finite_or_none(test_acc),
            "lr": lr,
            "seconds": time.perf_counter() - t0,
        }
        if ddp.main:
            logger.info(
                "epoch %d (%s %d): train loss %.4f acc %.4f | test loss %.4f acc %.4f | %.1f s",
                record["epoch"],
                stage,
                record["stage_epoch"],
                record["train_loss"] or float("nan"),
                record["train_accuracy"] or float("nan"),
                test_loss,
                test_acc,
                record["seconds"],
            )
        return record

    def _energy(self, test_loader: DataLoader) -> dict[str, Any] | None:
        from .energy import estimate_energy

        cfg = self.config
        net = self._net
        spiking = getattr(net, "spiking", cfg.spiking)
        batches = []
        for i, batch in enumerate(test_loader):
            if i >= cfg.energy_batches:
                break
            x, y = _xy(batch)
            batches.append((x.to(self.device), y.to(self.device)))
        if not batches:
            return None
        was_training = net.training
        net.eval()
        try:
            reset_states(net)
            with torch.no_grad():
                # A network that does not spike pays its MACs on every step it runs (the
                # ANN twin on event frames runs T); the SNN's ANN reference runs once.
                report = estimate_energy(net, batches, ann_every_step=not spiking)
            sparse = report.reprice(density_scaling=True)
        except Exception as exc:  # a user model the counter cannot follow must not lose the run
            logger.warning(
                "energy estimate failed (%s: %s); energy_mj is None", type(exc).__name__, exc
            )
            return None
        finally:
            net.train(was_training)
        rate = finite_or_none(report.mean_rate) if spiking else None
        summary = report.to_dict()
        summary.pop("rows", None)
        return {
            "energy_mj": report.snn_mj if spiking else report.ann_mj,
            "energy_sparse_mj": sparse.snn_mj if spiking else sparse.ann_mj,
            "ann_energy_mj": report.ann_mj,
            "firing_rate": rate,
            "report": summary,
        }

    def _write_outputs(self, results: Results) -> None:
        cfg = self.config
        if cfg.out is None or not self._ddp.main:
            return
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)  # no checkpoint made it yet when epochs = 0
        if cfg.mode != "dense":
            from .tickets import save_ticket

            save_ticket(
                self._net,
                out / TICKET_FILE,
                metadata={
                    "model": cfg.model,
                    "dataset": cfg.dataset,
                    "seed": str(cfg.seed),
                    "accuracy": f"{results.accuracy:.6f}",
                    "config": json.dumps(cfg.to_dict()),
                },
            )
        _write_json(out / RESULTS_FILE, results.to_dict())


def _progress(total: int, desc: str, show: bool) -> Any:
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)


def run(
    config: TrainConfig | None = None,
    *,
    train_set: Dataset | None = None,
    test_set: Dataset | None = None,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    **fields: Any,
) -> Results:
    """Run one experiment and return its :class:`Results` (see :class:`Trainer`).

    Like :meth:`Trainer.run`, it seeds python's, numpy's and torch's global generators
    with ``seed`` (for reproducibility) and leaves them so.

    Args:
        config: The experiment; ``None`` builds a :class:`TrainConfig` from ``fields``.
        train_set: Use this training set instead of ``config.dataset``.
        test_set: Use this test set instead of ``config.dataset``.
        on_epoch_end: Called after each epoch with its history record.
        **fields: :class:`TrainConfig` fields (they override ``config``'s). ``model`` may
            also be an ``nn.Module`` to train instead of a zoo model.

    >>> res = run(model="vgg_tiny", epochs=1, max_batches=1, out=None, progress=False)  # doctest: +SKIP
    """
    instance = fields.pop("model") if isinstance(fields.get("model"), nn.Module) else None
    if config is None:
        config = TrainConfig(**fields)
    elif fields:
        config = config.replace(**fields)
    trainer = Trainer(
        config, model=instance, train_set=train_set, test_set=test_set, on_epoch_end=on_epoch_end
    )
    return trainer.run()


# --------------------------------------------------------------------------- the demo

#: Epochs per method of ``spikelottery demo``.
DEMO_EPOCHS = 25
#: Feature layers of the demo's VGG (conv widths, ``"A"`` = 2x2 average pool).
DEMO_LAYERS: tuple[int | str, ...] = (64, 64, "A", 128, "A")
#: Methods of the demo: label, mode.
DEMO_METHODS: tuple[tuple[str, str], ...] = (
    ("dense SNN", "dense"),
    ("SNN ticket (lt)", "lt"),
    ("binarised SNN ticket (mp)", "mp"),
)


def demo_configs(
    out: str | os.PathLike[str] | None = "runs/demo",
    *,
    epochs: int = DEMO_EPOCHS,
    seed: int = 0,
    pa: float = 0.4,
    max_batches: int | None = None,
    progress: bool = True,
) -> list[tuple[str, TrainConfig]]:
    """The three experiments of the demo: dense SNN, SNN ticket, binarised SNN ticket.

    The zoo's ``vgg_small`` widened to ``64C3-64C3-AP2-128C3-AP2-FC10`` on the embedded
    8x8 digits, ``T = 4``, ``beta = 0.99``, ``pa = 0.4``, Adam at 0.01 for the scores and
    for the weights (the paper's 0.1 on scores gave 1 to 3 points less here), cosine
    schedule, batch 64. A wide layer gives the search more random weights to choose
    from. Each method writes to ``out/<mode>``.

    >>> [label for label, _ in demo_configs(None)]
    ['dense SNN', 'SNN ticket (lt)', 'binarised SNN ticket (mp)']
    """
    configs = []
    for label, mode in DEMO_METHODS:
        cfg = TrainConfig(
            model="vgg_small",
            dataset="digits",
            mode=mode,
            pa=pa,
            timesteps=4,
            beta=0.99,
            epochs=epochs,
            lr=0.01,
            weight_lr=0.01,
            batch_size=64,
            seed=seed,
            resolution=8,
            model_kwargs={"config": list(DEMO_LAYERS)},
            out=None if out is None else str(Path(out) / mode),
            max_batches=max_batches,
            energy_batches=2,
            progress=progress,
        )
        configs.append((label, cfg))
    return configs


def demo(
    out: str | os.PathLike[str] | None = "runs/demo",
    *,
    epochs: int = DEMO_EPOCHS,
    seed: int = 0,
    pa: float = 0.4,
    max_batches: int | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Compare the dense SNN, its ticket and its binarised ticket on the embedded digits.

    Writes ``out/results.json``: a list of records with the keys ``method``, ``mode``,
    ``accuracy``, ``kept_fraction``, ``energy_mj``, ``energy_sparse_mj``, ``seconds``.

    Args:
        out: Output folder (``None`` writes nothing).
        epochs: Epochs per method.
        seed: Seed of every run.
        pa: Fraction of weights removed by the tickets.
        max_batches: Batches per epoch (quick tests).
        progress: tqdm progress bars.
        echo: Called with a line after each method (e.g. ``print``).

    Returns:
        The records, one per method.
    """
    records = []
    for label, cfg in demo_configs(
        out, epochs=epochs, seed=seed, pa=pa, max_batches=max_batches, progress=progress
    ):
        res = Trainer(cfg).run()
        record = {
            "method": label,
            "mode": cfg.mode,
            "accuracy": res.accuracy,
            "kept_fraction": res.kept_fraction,
            "energy_mj": res.energy_mj,
            "energy_sparse_mj": res.energy_sparse_mj,
            "seconds": res.seconds,
        }
        records.append(record)
        if echo is not None:
            echo(
                f"{label}: accuracy {100 * res.accuracy:.2f}%, kept {100 * res.kept_fraction:.1f}%, "
                f"{res.seconds:.1f} s"
            )
    if out is not None:
        _write_json(Path(out) / RESULTS_FILE, records)
    return records


def format_table(records: Sequence[Mapping[str, Any]]) -> str:
    """A fixed-width table of demo records (accuracy, kept %, energy, time).

    >>> print(format_table([{"method": "m", "accuracy": 0.5, "kept_fraction": 1.0,
    ...                      "energy_mj": 0.001, "energy_sparse_mj": 0.001, "seconds": 2.0}]))
    method  accuracy  kept %  energy (mJ)  energy, sparse (mJ)  time (s)
    ------  --------  ------  -----------  -------------------  --------
    m         50.00%  100.0%     0.001000             0.001000       2.0
    """

    def mj(v: Any) -> str:
        return "n/a" if v is None else f"{v:.6f}"

    header = ("method", "accuracy", "kept %", "energy (mJ)", "energy, sparse (mJ)", "time (s)")
    rows = [
        (
            str(r["method"]),
            f"{100 * r['accuracy']:.2f}%",
            f"{100 * r['kept_fraction']:.1f}%",
            mj(r.get("energy_mj")),
            mj(r.get("energy_sparse_mj")),
            f"{r['seconds']:.1f}",
        )
        for r in records
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*row) for row in rows]
    return "\n".join(lines)
