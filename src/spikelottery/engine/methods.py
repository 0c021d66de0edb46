"""How a run finds its mask (the ``search`` setting) and the checks that go with it.

* ``"scores"``: edge-popup / multi-prize tickets, the scores train on frozen weights
  (``scope="global"`` for one threshold over all layers, ``anneal_epochs`` to thin the
  network gradually);
* ``"imp"``: iterative magnitude pruning with weight rewinding
  (:mod:`~spikelottery.engine.imp`);
* ``"random"``: a random mask at the per-layer counts of ``pa`` whose kept weights
  train: random pruning, a baseline (method ``random-trained``);
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

from typing import TYPE_CHECKING

from .settings import ConfigError

if TYPE_CHECKING:
    from .config import TrainConfig

__all__ = ["RANDOM_SEARCHES", "SEARCHES", "check_search", "search_stage_names"]

#: The values of the ``search`` setting.
SEARCHES: tuple[str, ...] = ("scores", "imp", "random", "random-frozen")

#: The searches that draw one random fixed mask and find nothing.
RANDOM_SEARCHES: tuple[str, ...] = ("random", "random-frozen")


def search_stage_names(cfg: TrainConfig) -> tuple[str, ...]:
    """The stages that find the mask (run at ``search_timesteps`` for an Early-Time ticket).

    The score search, or the pruning rounds of ``imp`` but the last (which trains the
    found ticket); ``random`` finds nothing.

    >>> from spikelottery.engine import TrainConfig
    >>> search_stage_names(TrainConfig(search="imp", mode="lt", imp_rounds=2, out=None))
    ('imp0', 'imp1')
    """
    if cfg.search == "imp":
        return tuple(f"imp{k}" for k in range(cfg.imp_rounds))
    if cfg.search == "scores" and cfg.mode != "dense":
        return ("search",)
    return ()


def check_search(cfg: TrainConfig) -> None:
    """Check that the search settings fit together; raise :class:`~spikelottery.engine.ConfigError` naming one."""
    search = cfg.search
    if search != "scores" and cfg.mode == "dense":
        raise ConfigError(
            "search",
            f"search={search!r} finds a mask; it needs mode 'lt' (or 'mp' for 'random' and "
            "'random-frozen'), "
            "got mode='dense'",
        )
    if search == "imp" and cfg.mode != "lt":
        raise ConfigError(
            "mode",
            f"search='imp' trains the kept weights of W * M: it needs mode='lt', got mode={cfg.mode!r}",
        )
    if cfg.scope == "global" and (cfg.mode == "dense" or search in RANDOM_SEARCHES):
        raise ConfigError(
            "scope",
            "scope='global' chooses the per-layer counts by score (or, for imp, by magnitude); "
            f"search={search!r} with mode={cfg.mode!r} has none to choose: use scope='layer'",
        )
    if cfg.anneal_epochs:
        if search != "scores" or cfg.mode == "dense":
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
    if search == "imp" and cfg.rewind_epoch > cfg.epochs:
        raise ConfigError(
            "rewind_epoch",
            f"rewind_epoch={cfg.rewind_epoch} is an epoch of the dense training, which "
            f"has epochs={cfg.epochs}",
        )
    if cfg.search_timesteps is not None:
        if not cfg.spiking:
            raise ConfigError(
                "search_timesteps",
                f"search_timesteps={cfg.search_timesteps} (Early-Time tickets) changes T of a "
                "spiking network; the ANN twin (spiking=False) runs one step",
            )
        if not search_stage_names(cfg):
            raise ConfigError(
                "search_timesteps",
                f"search={search!r} with mode={cfg.mode!r} has no search to run at "
                f"search_timesteps={cfg.search_timesteps}",
            )
