"""The score search (``search="scores"``): edge-popup and multi-prize tickets.

The scores train on frozen weights in one stage, ``search`` (``train`` for a dense
baseline, ``mode="dense"``); ``anneal_epochs`` moves the kept fraction from 0.5 to
``1 - pa`` (the trainer's :class:`~spikelottery.engine.search.SearchSteps` does it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .methods import SearchMethod, register_search

if TYPE_CHECKING:
    from .config import TrainConfig

__all__ = ["ScoreSearch"]


@register_search("scores")
class ScoreSearch(SearchMethod):
    """Edge-popup / multi-prize: train the scores of frozen random weights (the paper's)."""

    description = "edge-popup / multi-prize: scores train on frozen weights"
    modes = ("dense", "lt", "mp")
    trains_scores = True
    global_scope = True

    @classmethod
    def stages(cls, cfg: TrainConfig) -> list[tuple[str, int]]:
        """``search`` for ``epochs`` (``train`` for a dense baseline)."""
        return [("train" if cfg.mode == "dense" else "search", cfg.epochs)]

    @classmethod
    def search_stages(cls, cfg: TrainConfig) -> tuple[str, ...]:
        """``("search",)``, none for a dense baseline."""
        return () if cfg.mode == "dense" else ("search",)
