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

The modules: :mod:`~spikelottery.engine.config` (the settings, declared once in
:mod:`~spikelottery.engine.settings`), :mod:`~spikelottery.engine.trainer` (the loop and its
:mod:`~spikelottery.engine.stages`), :mod:`~spikelottery.engine.build` (data, model,
loaders), :mod:`~spikelottery.engine.evaluation`, :mod:`~spikelottery.engine.checkpoint`
(checkpoints and random generators), :mod:`~spikelottery.engine.distributed` and
:mod:`~spikelottery.engine.results`. The demo lives in :mod:`spikelottery.demo`; its names
are also importable from here.

Example:
    >>> cfg = TrainConfig(model="vgg_tiny", dataset="digits", mode="mp", pa=0.4,
    ...                   epochs=1, max_batches=2, out=None, progress=False)
    >>> res = run(cfg)  # doctest: +SKIP
    >>> 0.0 <= res.accuracy <= 1.0, res.kept_fraction  # doctest: +SKIP
    (True, 0.6...)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .._state import reset_states

# The library's search methods register themselves on import.
from . import search_imp, search_random, search_scores  # noqa: F401
from .checkpoint import CHECKPOINT_FILE, seed_everything
from .config import MODES, ConfigError, TrainConfig
from .config_file import load_config_file
from .evaluation import evaluate
from .methods import SEARCH_METHODS, SearchMethod, register_search, search_method
from .presets import METHODS, MethodPreset, register_method
from .results import RESULTS_FILE, TICKET_FILE, Results
from .trainer import Trainer, run

if TYPE_CHECKING:
    from ..demo import DEMO_EPOCHS, DEMO_LAYERS, DEMO_METHODS, demo, demo_configs, format_table

__all__ = [
    "CHECKPOINT_FILE",
    "DEMO_EPOCHS",
    "DEMO_LAYERS",
    "DEMO_METHODS",
    "METHODS",
    "MODES",
    "RESULTS_FILE",
    "SEARCH_METHODS",
    "TICKET_FILE",
    "ConfigError",
    "MethodPreset",
    "Results",
    "SearchMethod",
    "TrainConfig",
    "Trainer",
    "demo",
    "demo_configs",
    "evaluate",
    "format_table",
    "load_config_file",
    "register_method",
    "register_search",
    "reset_states",
    "run",
    "search_method",
    "seed_everything",
]

# The demo is built on the engine, so the engine imports it only when asked for it.
_DEMO_NAMES = frozenset(
    {"DEMO_EPOCHS", "DEMO_LAYERS", "DEMO_METHODS", "demo", "demo_configs", "format_table"}
)


def __getattr__(name: str) -> Any:
    if name in _DEMO_NAMES:
        return getattr(importlib.import_module("spikelottery.demo"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_DEMO_NAMES})
