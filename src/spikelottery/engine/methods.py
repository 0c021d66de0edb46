"""How a run finds its mask (the ``search`` setting): :class:`SearchMethod` and its registry.

A search method is a small class the engine calls, registered by name in
:data:`SEARCH_METHODS`: its class attributes say what the engine needs to know (the modes
it accepts, whether the scores train, whether the mask is fixed), its class methods plan
its stages and check the settings, and an instance per run does the work around the
stages. The library's four are registered the way a user registers their own (one file
plus :func:`register_search`):

* ``"scores"`` (:mod:`~spikelottery.engine.search_scores`): edge-popup / multi-prize
  tickets, the scores train on frozen weights (``scope="global"`` for one threshold over
  all layers, ``anneal_epochs`` to thin the network gradually);
* ``"imp"`` (:mod:`~spikelottery.engine.search_imp`): iterative magnitude pruning with
  weight rewinding;
* ``"random"`` (:mod:`~spikelottery.engine.search_random`): a random mask at the
  per-layer counts of ``pa`` whose kept weights train: random pruning, a baseline
  (method ``random-trained``);
* ``"random-frozen"``: a random mask of the same frozen weights at the same counts, and
  nothing trained that the score search does not also train (BatchNorm): edge-popup's
  control of the search (method ``random-frozen``).

``search_timesteps`` makes any search an Early-Time ticket: the mask is found at a small
``T`` and used at ``timesteps`` (:mod:`~spikelottery.engine.search`).

>>> from spikelottery.engine import TrainConfig
>>> TrainConfig(search="imp", mode="mp", out=None)
Traceback (most recent call last):
...
spikelottery.engine.settings.ConfigError: search='imp' trains the kept weights of W * M: \
it needs mode='lt', got mode='mp'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from ..registry import Registry
from .settings import ConfigError

if TYPE_CHECKING:
    from torch import nn

    from .config import TrainConfig

__all__ = [
    "RANDOM_SEARCHES",
    "SEARCH_METHODS",
    "SearchMethod",
    "check_search",
    "register_search",
    "search_method",
    "search_stage_names",
]


class SearchMethod:
    """One way of finding the mask; subclass it and register it with :func:`register_search`.

    Class attributes (what the engine asks instead of comparing names):

    Attributes:
        name: The registered name (set by :func:`register_search`).
        description: One line for the method list.
        modes: The ``mode`` values it accepts (``"dense"`` only for a method that can
            also train a dense baseline, as ``"scores"`` does).
        mode_reason: Why other modes are refused, for the error message.
        trains_scores: The scores are what trains (``scope`` and ``anneal_epochs`` apply).
        fixed_mask: The mask is fixed in the scores and each layer's ``pa`` (a checkpoint
            load restores it with :func:`~spikelottery.pruning.restore_fixed_masks`).
        global_scope: ``scope="global"`` means something (one threshold over all layers).

    A run creates one instance (``cls(cfg, main=...)``) and calls :meth:`enter` when it
    enters a stage and :meth:`after_epoch` after each epoch.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    modes: ClassVar[tuple[str, ...]] = ("lt", "mp")
    mode_reason: ClassVar[str] = "finds a mask"
    trains_scores: ClassVar[bool] = False
    fixed_mask: ClassVar[bool] = False
    global_scope: ClassVar[bool] = False

    def __init__(self, cfg: TrainConfig, *, main: bool = True) -> None:
        self.cfg = cfg
        self.main = main

    @classmethod
    def stages(cls, cfg: TrainConfig) -> list[tuple[str, int]]:
        """The stages that replace stage 1 (name, epochs); default: ``train`` for ``epochs``."""
        return [("train", cfg.epochs)]

    @classmethod
    def search_stages(cls, cfg: TrainConfig) -> tuple[str, ...]:
        """The stages that find the mask (run at ``search_timesteps`` for Early-Time)."""
        return ()

    @classmethod
    def check(cls, cfg: TrainConfig) -> None:
        """Settings this method needs besides its modes; raise ConfigError naming one."""

    def enter(
        self,
        model: nn.Module,
        stage: Any,
        *,
        done: int = 0,
        checkpoint_model: Mapping[str, Any] | None = None,
    ) -> bool:
        """Set up ``stage`` (a :class:`~spikelottery.engine.stages.Stage`); return whether
        the checkpoint's model state was loaded here (the trainer then does not load it)."""
        return False

    def after_epoch(self, model: nn.Module, stage: Any, epoch: int) -> None:
        """After epoch ``epoch`` (counted over all stages) of ``stage``."""


#: Every search method by name (a :class:`~spikelottery.registry.Registry` of classes).
SEARCH_METHODS: Registry[type[SearchMethod]] = Registry("search method")

#: The library's searches that draw one random fixed mask and find nothing.
RANDOM_SEARCHES: tuple[str, ...] = ("random", "random-frozen")


def register_search(
    name: str, method: type[SearchMethod] | None = None, *, overwrite: bool = False
) -> Any:
    """Register a :class:`SearchMethod` subclass as ``name``; without ``method``, a decorator.

    Raises:
        TypeError: ``method`` is not a :class:`SearchMethod` subclass.
        ~spikelottery.registry.DuplicateNameError: ``name`` is taken and not ``overwrite``.
    """

    def add(cls: type[SearchMethod]) -> type[SearchMethod]:
        if not (isinstance(cls, type) and issubclass(cls, SearchMethod)):
            raise TypeError(
                f"register_search({name!r}): expected a SearchMethod subclass, got {cls!r}"
            )
        SEARCH_METHODS.register(name, cls, overwrite=overwrite)
        cls.name = SEARCH_METHODS.resolve(name)
        return cls

    return add if method is None else add(method)


def _load_builtin() -> None:
    # The library's methods register themselves on import (engine/__init__ imports them
    # too); importing here makes a lookup work from any import order.
    from . import search_imp, search_random, search_scores  # noqa: F401


def search_method(name: str) -> type[SearchMethod]:
    """The registered search method ``name``.

    Raises:
        ~spikelottery.registry.UnknownNameError: Naming the valid names.
    """
    _load_builtin()
    return SEARCH_METHODS[name]


def search_stage_names(cfg: TrainConfig) -> tuple[str, ...]:
    """The stages that find the mask (run at ``search_timesteps`` for an Early-Time ticket).

    >>> from spikelottery.engine import TrainConfig
    >>> search_stage_names(TrainConfig(search="imp", mode="lt", imp_rounds=2, out=None))
    ('imp0', 'imp1')
    """
    return search_method(cfg.search).search_stages(cfg)


def check_search(cfg: TrainConfig) -> None:
    """Check that the search settings fit together; raise :class:`~spikelottery.engine.ConfigError` naming one."""
    search = cfg.search
    method = search_method(search)
    if cfg.mode not in method.modes:
        wanted = " or ".join(f"mode={m!r}" for m in method.modes)
        raise ConfigError(
            "search" if cfg.mode == "dense" else "mode",
            f"search={search!r} {method.mode_reason}: it needs {wanted}, got mode={cfg.mode!r}",
        )
    scored = method.trains_scores and cfg.mode != "dense"
    if cfg.scope == "global" and (cfg.mode == "dense" or not method.global_scope):
        raise ConfigError(
            "scope",
            "scope='global' chooses the per-layer counts by score (or, for imp, by magnitude); "
            f"search={search!r} with mode={cfg.mode!r} has none to choose: use scope='layer'",
        )
    if cfg.anneal_epochs:
        if not scored:
            raise ConfigError(
                "anneal_epochs",
                "anneal_epochs anneals the kept fraction of a score search (search='scores', "
                f"mode 'lt' or 'mp'), got search={search!r}, mode={cfg.mode!r}",
            )
        if cfg.anneal_epochs >= cfg.epochs:
            raise ConfigError(
                "anneal_epochs",
                f"anneal_epochs={cfg.anneal_epochs} must be less than epochs={cfg.epochs}, so "
                "that the search ends at pa",
            )
    method.check(cfg)
    if cfg.search_timesteps is not None:
        if not cfg.spiking:
            raise ConfigError(
                "search_timesteps",
                f"search_timesteps={cfg.search_timesteps} (Early-Time tickets) changes T of a "
                "spiking network; the ANN twin (spiking=False) runs one step",
            )
        if not method.search_stages(cfg):
            raise ConfigError(
                "search_timesteps",
                f"search={search!r} with mode={cfg.mode!r} has no search to run at "
                f"search_timesteps={cfg.search_timesteps}",
            )


def __getattr__(name: str) -> Any:
    # SEARCHES: the registered names, read when asked (a registration after import shows).
    if name == "SEARCHES":
        _load_builtin()
        return tuple(SEARCH_METHODS)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
