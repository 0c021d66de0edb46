"""One experiment's settings: :class:`TrainConfig`, its checks and its config files.

Each field is declared once, with :func:`~spikelottery.engine.settings.setting`: its
default, its help, its check, its flag group, and whether it is a runtime setting. The
checks, the attribute list below and the ``spikelottery run`` flags are generated from it.

>>> TrainConfig(pa=0.3, out=None).pa
0.3
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import SpikeLotteryError
from ..layers import INITS
from ..layers import MODES as SUBNET_MODES
from ..scope import SCOPES
from .checks import (
    check_data,
    dataset_name,
    device_name,
    hardware_preset_name,
    method_name,
    model_name,
    regex,
    search_name,
    thread_count,
)
from .config_file import load_config_file
from .convention import INPUT_CONVENTIONS
from .methods import check_search
from .presets import RENAMED_METHODS, check_method, resolve_method
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
    "ACTIVATION_OPTIONS",
    "BATCHNORM_OPTIONS",
    "MODES",
    "ConfigError",
    "TrainConfig",
    "field_defaults",
    "runtime_fields",
]

#: ``"dense"`` trains the dense network (the baseline); ``"lt"`` and ``"mp"`` search a ticket.
MODES: tuple[str, ...] = ("dense", *SUBNET_MODES)
#: The ``batchnorm`` values of :func:`~spikelottery.sparsify`.
BATCHNORM_OPTIONS: tuple[str, ...] = ("keep", "nonaffine")
#: The values of ``activations``: the model's own, or binary in the sparsified part.
ACTIVATION_OPTIONS: tuple[str, ...] = ("keep", "binary")


_EXPERIMENT = "experiment"
_SEARCH = "ticket search"
_NEURONS = "spiking neurons"
_OPTIM = "optimisation"
_RUNNING = "running"

#: Training steps from which ``compile_lif="auto"`` compiles the LIF kernels. Demo network
#: break-even (benchmarks/bench_startup.py): 286-360 steps (1 thread) and 690 (2) with an
#: empty compile cache; 46 and 104 warm, as every run after the first (kept on disk).
COMPILE_MIN_STEPS = 300
#: Upper bounds of ``timesteps`` and ``resolution``: far above any paper's values, low
#: enough that a typo fails here, naming the setting, not deep inside torch.
MAX_TIMESTEPS = 4096
MAX_RESOLUTION = 4096


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
        help="Model name (see :func:`spikelottery.models.list_models`; register your own with "
        ":func:`~spikelottery.models.register_model`).",
        check=model_name,
        group=_EXPERIMENT,
    )
    dataset: str = setting(
        "digits",
        help="Data set name (see :data:`spikelottery.data.DATASETS`; register your own with "
        ":func:`~spikelottery.data.register_dataset`).",
        check=dataset_name,
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
    method: str | None = setting(
        None,
        help="A method of the paper's vocabulary (``mpslt``, ``multisp-lt``, ...; see "
        ":data:`spikelottery.engine.presets.METHODS`) or a registered one: it sets ``spiking``, ``mode`` and "
        "``filter`` (and a starting ``pb``), and results record it. ``None``: set them yourself.",
        check=method_name,
        group=_EXPERIMENT,
        metavar="NAME",
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
        help="Fraction of weights REMOVED per layer, in ``[0, 1)``: a layer of ``n`` weights "
        "keeps ``n - floor(pa * n)`` (0.4 keeps 60%). Not biprop's ``prune_rate``, the fraction "
        'KEPT (its 0.4 is ``pa=0.6``). Ignored by ``"dense"``.',
        check=ratio,
        group=_SEARCH,
    )
    pb: float = setting(
        0.0,
        help="Fraction of patches REMOVED after the patch embedding (transformers), in "
        "``[0, 1)``: ``N`` patches keep ``N - floor(pb * N)`` (0.3 keeps 45 of 64).",
        check=ratio,
        group=_SEARCH,
    )
    timesteps: int = setting(
        4,
        help="``T``: repeats of a static image, or frames of event data (at most 4096).",
        check=integer(1, maximum=MAX_TIMESTEPS),
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
        check=device_name,
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
    threads: int | str = setting(
        "auto",
        help="Intra-op CPU threads (``torch.set_num_threads``) during the run: a count, or "
        '``"auto"``: a count given before (``torch.set_num_threads``, ``OMP_NUM_THREADS``), '
        "else the CPUs the process may use (affinity, cgroup quota, SLURM; shared among a "
        "sweep's workers), 1 when the machine's load leaves no second CPU free, else the "
        "faster of 1 and N threads timed on a copy of the model. The count and how it was "
        "chosen go to ``results.json``; a different count can change float rounding.",
        check=thread_count,
        group=_RUNNING,
        runtime=True,
        metavar="N|auto",
    )
    filter: str | None = setting(
        None,
        help='Regex of the layers to sparsify (``"patch_embed"`` for PEPSp/MultiSp); '
        "``None`` sparsifies every conv and linear layer.",
        check=regex,
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
    activations: str = setting(
        "keep",
        help='``"keep"`` (the model\'s own activations: ReLU in an ANN, spikes in an SNN) or '
        '``"binary"`` (each activation module of the sparsified part, as chosen by '
        "``filter``, becomes a sign with the ApproxSign gradient: the multi-prize tickets' "
        "binary activations, biprop's 1/1 networks; ANN only, spikes are binary already).",
        check=choice(ACTIVATION_OPTIONS),
        group=_SEARCH,
    )
    init: str = setting(
        "kaiming_normal",
        help='Frozen weight init: ``"kaiming_normal"``, ``"signed_constant"`` or ``"keep"`` '
        "(the model's own weights, e.g. pretrained ones).",
        check=choice(INITS),
        group=_SEARCH,
    )
    search: str = setting(
        "scores",
        help='How the mask is found: ``"scores"`` (edge-popup / multi-prize: scores train on '
        'frozen weights), ``"imp"`` (iterative magnitude pruning with rewinding: the weights '
        "train, ``imp_rounds`` times the fraction ``imp_fraction`` of the kept ones is "
        'removed by magnitude; needs ``mode="lt"``), ``"random"`` (a random mask at the '
        "per-layer counts of ``pa``, its kept weights train: random pruning) or "
        '``"random-frozen"`` (a random mask of the frozen weights, nothing but BatchNorm '
        "trains: edge-popup's control of the search), or a registered one "
        "(:func:`~spikelottery.engine.methods.register_search`).",
        check=search_name,
        group=_SEARCH,
    )
    scope: str = setting(
        "layer",
        help='``"layer"``: each layer keeps ``n - floor(pa * n)`` weights; ``"global"``: one '
        "threshold over all sparsified layers (scores divided by each layer's score std; "
        "for ``imp``, raw magnitudes), at least one weight per layer.",
        check=choice(SCOPES),
        group=_SEARCH,
    )
    anneal_epochs: int = setting(
        0,
        help="Score search only: the kept fraction moves linearly from 0.5 to ``1 - pa`` over "
        "the first ``anneal_epochs`` epochs (biprop), then stays; 0: ``pa`` throughout.",
        check=integer(0),
        group=_SEARCH,
    )
    imp_rounds: int = setting(
        3,
        help='``search="imp"``: pruning rounds ``r``; the run trains ``r + 1`` times ``epochs`` '
        "epochs, and a layer of ``n`` weights keeps ``n - floor(p * n)`` applied ``r`` times.",
        check=integer(1),
        group=_SEARCH,
    )
    imp_fraction: float = setting(
        0.2,
        help='``search="imp"``: fraction ``p`` of the still-kept weights REMOVED per round.',
        check=ratio,
        group=_SEARCH,
    )
    rewind_epoch: int = setting(
        0,
        help='``search="imp"``: after each round the weights go back to their values after '
        "this many epochs of the dense training (0: the initial weights).",
        check=integer(0),
        group=_SEARCH,
    )
    search_timesteps: int | None = setting(
        None,
        help="Early-Time tickets: find the mask (score search, or the pruning rounds of "
        "``imp``) at this ``T``, then train and evaluate at ``timesteps``; results record "
        "both accuracies and the search time saved. ``None``: search at ``timesteps``.",
        check=integer(1, optional=True),
        group=_NEURONS,
    )
    resolution: int | None = setting(
        None,
        help="Image side in pixels (at most 4096); ``None``: the data set's own (the digits "
        "are 8x8).",
        check=integer(1, optional=True, maximum=MAX_RESOLUTION),
        group=_EXPERIMENT,
    )
    augment: bool = setting(
        False,
        help="Random crop and flip of the training images (the data sets that take "
        "``augment``: CIFAR).",
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
    overwrite: bool = setting(
        False,
        help="Replace the results of an earlier run in ``out``. Without it (or ``resume``) a "
        "run refuses an ``out`` that holds ``results.json`` or ``checkpoint.pt``.",
        check=boolean,
        group=_RUNNING,
        runtime=True,
    )
    download: bool = setting(
        False,
        help="Download CIFAR10/CIFAR100 into ``data_root`` first (through torchvision; needs "
        "internet access). The other data sets cannot be downloaded automatically.",
        check=boolean,
        group=_EXPERIMENT,
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
    energy_preset: str = setting(
        "fp32-45nm",
        help="Hardware preset that prices the energy estimate (the paper's: fp32 at 45 nm; "
        "see :data:`spikelottery.energy.hardware.HARDWARE_PRESETS`, register your own with "
        ":func:`~spikelottery.energy.hardware.register_hardware_preset`).",
        check=hardware_preset_name,
        group=_RUNNING,
        metavar="NAME",
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
        check_method(self.to_dict())
        if self.mode == "dense" and self.finetune_epochs:
            raise ConfigError(
                "finetune_epochs",
                "finetune_epochs fine-tunes a found ticket; it needs mode 'lt' or 'mp', "
                f"got mode='dense' with finetune_epochs={self.finetune_epochs}",
            )
        check_search(self)
        if self.activations == "binary" and self.spiking:
            raise ConfigError(
                "activations",
                "activations='binary' binarises an ANN's hidden activations; a spiking network's "
                "spikes are binary already: use it with spiking=False (--ann)",
            )
        check_data(self.dataset, self.resolution, self.download)
        if self.patch_epochs and self.pb == 0.0:
            raise ConfigError(
                "patch_epochs",
                f"patch_epochs={self.patch_epochs} is stage 2 (patch pruning): it needs pb > 0 "
                "(the fraction of patches removed)",
            )
        if self.resume and self.overwrite:
            raise ConfigError(
                "overwrite",
                "resume=True continues the run in out, overwrite=True replaces it: choose one",
            )
        return self

    # -- conversion ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """All fields as a JSON-safe dict (round-trips through :meth:`from_dict`)."""
        values = {name: getattr(self, name) for name in _field_names(type(self))}
        return {k: dict(v) if isinstance(v, dict) else v for k, v in values.items()}

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
        names = _field_names(cls)
        unknown = [k for k in values if k not in names]
        if unknown:
            raise SpikeLotteryError(
                f"{source}: unknown field(s) {', '.join(map(repr, unknown))}; "
                f"valid fields are: {', '.join(names)}"
            )
        return cls(**resolve_method(values))

    @classmethod
    def from_record(cls, values: Mapping[str, Any], *, source: str = "config") -> TrainConfig:
        """Rebuild a config recorded by a run (``results.json``, a sweep's settings, a ticket).

        A record written before a setting existed is read as the run that wrote it ran:
        before ``activations`` existed every run kept its model's activations, so the
        methods whose preset now binarises them (``mplt``, ``pepsp-lt``, ``multisp-lt``)
        are read as their ``-relu`` variants, and ``random`` as ``random-trained``.

        >>> TrainConfig.from_record({"method": "mplt", "spiking": False, "mode": "mp",
        ...                          "out": None}).method
        'mplt-relu'
        """
        values = dict(values)
        if "activations" not in values:
            values["activations"] = "keep"
            method = values.get("method")
            if isinstance(method, str) and method in RENAMED_METHODS:
                values["method"] = RENAMED_METHODS[method]
        return cls.from_dict(values, source=source)

    @classmethod
    def for_method(cls, method: str, **values: Any) -> TrainConfig:
        """A config of a method preset; ``values`` set the rest (and must not contradict it).

        >>> cfg = TrainConfig.for_method("slt", pa=0.5, out=None)
        >>> cfg.mode, cfg.spiking, cfg.method
        ('lt', True, 'slt')
        """
        return cls.from_dict({"method": method, **values}, source=f"method {method!r}")

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


def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))  # cheap: no cache to keep


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
    ['check_ticket', 'checkpoint', 'data_root', 'device', 'download', 'num_workers', 'out', 'overwrite', 'progress', 'resume', 'threads']
    """
    return runtime_settings(cls)
