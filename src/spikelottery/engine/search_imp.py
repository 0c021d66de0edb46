"""Iterative magnitude pruning with rewinding as a search method (``search="imp"``).

The rounds and the rewind point are :class:`~spikelottery.engine.imp.ImpRounds`; this
file plans the ``imp0 .. imp<r>`` stages, checks the settings and calls the rounds.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from .imp import REWIND_FILE, ImpRounds, imp_round
from .methods import SearchMethod, register_search
from .settings import ConfigError

if TYPE_CHECKING:
    from .config import TrainConfig

__all__ = ["ImpSearch"]

logger = logging.getLogger("spikelottery.engine")


@register_search("imp")
class ImpSearch(SearchMethod):
    """Iterative magnitude pruning with weight rewinding (Frankle et al.; Kim et al.)."""

    description = "iterative magnitude pruning with rewinding: weights train, mask by |W|"
    modes = ("lt",)
    mode_reason = "trains the kept weights of W * M"
    fixed_mask = True
    global_scope = True

    def __init__(self, cfg: TrainConfig, *, main: bool = True) -> None:
        super().__init__(cfg, main=main)
        self.rounds = ImpRounds(
            cfg.imp_fraction,
            cfg.scope,
            cfg.rewind_epoch,
            path=Path(cfg.out) / REWIND_FILE if cfg.out is not None else None,
            write=main,
        )

    @classmethod
    def stages(cls, cfg: TrainConfig) -> list[tuple[str, int]]:
        """``imp0`` (dense) to ``imp<imp_rounds>``, ``epochs`` each."""
        return [(f"imp{k}", cfg.epochs) for k in range(cfg.imp_rounds + 1)]

    @classmethod
    def search_stages(cls, cfg: TrainConfig) -> tuple[str, ...]:
        """Every round but the last (which trains the found ticket)."""
        return tuple(f"imp{k}" for k in range(cfg.imp_rounds))

    @classmethod
    def check(cls, cfg: TrainConfig) -> None:
        """``rewind_epoch`` is an epoch of the dense training."""
        if cfg.rewind_epoch > cfg.epochs:
            raise ConfigError(
                "rewind_epoch",
                f"rewind_epoch={cfg.rewind_epoch} is an epoch of the dense training, which "
                f"has epochs={cfg.epochs}",
            )

    def enter(
        self,
        model: nn.Module,
        stage: Any,
        *,
        done: int = 0,
        checkpoint_model: Mapping[str, Any] | None = None,
    ) -> bool:
        """Enter a round: fresh, replayed, resumed inside it, or resumed at its start."""
        round_ = imp_round(stage.name)
        if round_ is None:
            return False
        if done >= stage.last_epoch:
            phase = "replay"
        elif checkpoint_model is not None and done > stage.first_epoch:
            phase = "mid"
        elif checkpoint_model is not None and done == stage.first_epoch and done > 0:
            phase = "boundary"
        else:
            phase = "fresh"
        loaded = self.rounds.enter(model, round_, phase=phase, checkpoint_model=checkpoint_model)
        if round_ in self.rounds.kept and phase != "replay":
            logger.info("IMP round %d: kept %s", round_, self.rounds.kept[round_])
        return loaded

    def after_epoch(self, model: nn.Module, stage: Any, epoch: int) -> None:
        """Record the rewind point after ``rewind_epoch`` epochs of round 0."""
        round_ = imp_round(stage.name)
        if round_ is not None:
            self.rounds.after_epoch(model, round_, epoch + 1 - stage.first_epoch)
