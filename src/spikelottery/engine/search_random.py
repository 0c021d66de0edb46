"""The random masks (``search="random"`` and ``"random-frozen"``): baselines and a control.

Both draw one random mask at each layer's kept count from ``seed`` when the ``train``
stage starts. ``random`` then trains the kept weights (random pruning); ``random-frozen``
trains nothing that the score search does not also train besides its scores
(BatchNorm): edge-popup's control of the search.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..pruning import random_masks
from .methods import SearchMethod, register_search
from .stages import freeze_masks, train_kept_weights

__all__ = ["RandomFrozenSearch", "RandomSearch"]


@register_search("random")
class RandomSearch(SearchMethod):
    """A random mask at the per-layer counts of ``pa``; its kept weights train."""

    description = "a random mask at the counts of pa; its kept weights train (random pruning)"
    fixed_mask = True

    def enter(
        self,
        model: nn.Module,
        stage: Any,
        *,
        done: int = 0,
        checkpoint_model: Mapping[str, Any] | None = None,
    ) -> bool:
        """Draw the mask from ``seed`` on entering ``train``; fix it and set what trains."""
        if stage.name == "train":
            random_masks(model, torch.Generator().manual_seed(self.cfg.seed))
            self.train_what(model)
        return False

    def train_what(self, model: nn.Module) -> None:
        """The kept weights (and biases) train; the mask is fixed."""
        train_kept_weights(model)


@register_search("random-frozen")
class RandomFrozenSearch(RandomSearch):
    """A random mask of the frozen weights; only what the score search also trains does."""

    description = "a random mask of the frozen weights; nothing but BatchNorm trains"

    def train_what(self, model: nn.Module) -> None:
        """The scores stop training; the frozen weights stay frozen."""
        freeze_masks(model)
