"""Iterative magnitude pruning with weight rewinding (Frankle et al.; Kim et al. for SNNs).

``search="imp"`` runs ``imp_rounds + 1`` stages of ``epochs`` epochs each:

* ``imp0`` trains the dense weights (every mask keeps everything);
* entering ``imp<k>`` (``k >= 1``) removes the fraction ``imp_fraction`` of the weights
  still kept, smallest ``|W|`` first, per layer or over all layers (``scope``), then
  rewinds every parameter and buffer but the masks to the values recorded after
  ``rewind_epoch`` epochs of ``imp0`` (0: the initial values), and trains again.

The mask is an ordinary fixed mask of the score-mask layers (scores 1 on kept weights,
0 elsewhere, frozen), so the found ticket is saved, densified, exported and measured
like any other. A layer of ``n`` weights keeps exactly ``n - floor(p * n)`` applied
``r`` times (:func:`imp_kept_counts`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .._io import atomic_path
from .._validation import kept_count
from ..errors import SpikeLotteryError
from ..pruning import check_one_mask_each, prune_by_magnitude, restore_fixed_masks, ticket_layers
from ..scope import attach_scope
from .stages import train_kept_weights

__all__ = ["PHASES", "REWIND_FILE", "ImpRounds", "imp_kept_counts", "imp_round"]


def imp_round(stage: str) -> int | None:
    """The round of an IMP stage name (``"imp2"`` is 2), ``None`` for any other stage.

    >>> imp_round("imp2"), imp_round("search")
    (2, None)
    """
    if stage.startswith("imp") and stage[3:].isdigit():
        return int(stage[3:])
    return None


def imp_kept_counts(n: int, fraction: float, rounds: int) -> list[int]:
    """The kept count of a layer of ``n`` weights after each of ``rounds`` rounds (layer scope).

    >>> imp_kept_counts(100, 0.2, 3)
    [80, 64, 52]
    """
    counts = []
    for _ in range(rounds):
        n = kept_count(n, fraction)
        counts.append(n)
    return counts


#: The file, in the run's ``out`` folder, that keeps the rewind point for a resumed run.
REWIND_FILE = "imp_rewind.safetensors"
#: How a round is entered: for the first time, replayed (finished before a restart),
#: resumed inside it, or resumed exactly at its start (the checkpoint closed the round before).
PHASES = ("fresh", "replay", "mid", "boundary")


@dataclass
class ImpRounds:
    """The IMP side of one run: what entering a round does, and the rewind point.

    Attributes:
        fraction: The fraction of the kept weights removed per round.
        scope: ``"layer"`` or ``"global"``.
        rewind_epoch: Epochs of ``imp0`` after which the rewind point is recorded.
        rewind_state: The recorded parameters and buffers (``None`` until recorded).
        kept: The kept count per layer after each round, by round.
        path: Where the rewind point is kept for a resumed run (``None``: nowhere).
        write: Whether this process writes ``path`` (rank 0).
    """

    fraction: float
    scope: str = "layer"
    rewind_epoch: int = 0
    rewind_state: dict[str, Tensor] | None = None
    kept: dict[int, dict[str, int]] = field(default_factory=dict)
    path: Path | None = None
    write: bool = True

    def enter(
        self,
        model: nn.Module,
        round_: int,
        *,
        phase: str = "fresh",
        checkpoint_model: Mapping[str, Any] | None = None,
    ) -> bool:
        """Start round ``round_``: dense masks (0), or prune and rewind (1 and on).

        Args:
            model: The run's model.
            round_: The round.
            phase: One of :data:`PHASES`. A replayed round and a round resumed inside
                it leave the masks to the checkpoint (the trainer loads it); a round
                resumed at its start loads the checkpoint here, then prunes and rewinds.
            checkpoint_model: The checkpoint's model state (``"boundary"`` only).

        Returns:
            Whether the checkpoint's model state was loaded here.
        """
        if phase != "fresh" and self.rewind_state is None:
            self.load()
        loaded = False
        if round_ == 0:
            groups = ticket_layers(model)
            check_one_mask_each(groups, "iterative magnitude pruning")
            layers = [m for group in groups.values() for m in group]
            attach_scope(layers, "layer", 0.0)  # fixed masks: no score threshold
            for layer in layers:
                layer.set_mask(torch.ones_like(layer.scores, dtype=torch.bool))
            if self.rewind_epoch == 0 and self.rewind_state is None:
                self.record(model)
        elif phase in ("fresh", "boundary"):
            if phase == "boundary":
                if checkpoint_model is None:
                    raise RuntimeError(f"IMP round {round_} resumed without its checkpoint")
                model.load_state_dict(checkpoint_model)
                restore_fixed_masks(model)
                loaded = True
            if self.rewind_state is None:
                raise SpikeLotteryError(
                    f"IMP round {round_} needs the rewind point, which is not recorded"
                    + (f" (no {str(self.path)!r})" if self.path is not None else "")
                    + "; start the run again without resume"
                )
            self.kept[round_] = prune_by_magnitude(model, self.fraction, self.scope)
            self.rewind(model)
        train_kept_weights(model)
        return loaded

    def after_epoch(self, model: nn.Module, round_: int, epochs_done: int) -> None:
        """Record the rewind point after ``rewind_epoch`` epochs of round 0."""
        if round_ == 0 and self.rewind_epoch and epochs_done == self.rewind_epoch:
            self.record(model)

    def record(self, model: nn.Module) -> None:
        """Remember every parameter and buffer but the scores (which hold the masks).

        With a :attr:`path`, the rewind point is also written there (atomically, as
        safetensors), so that a resumed run rewinds to the same values.
        """
        self.rewind_state = {
            k: v.detach().clone() for k, v in model.state_dict().items() if not k.endswith("scores")
        }
        if self.path is not None and self.write:
            cpu = {k: v.cpu().contiguous() for k, v in self.rewind_state.items()}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(self.path) as tmp:
                save_file(cpu, str(tmp))

    def load(self) -> None:
        """Read the rewind point from :attr:`path` if it was recorded there."""
        if self.path is None or not self.path.is_file():
            return
        try:
            self.rewind_state = load_file(str(self.path))
        except (OSError, SafetensorError) as exc:
            raise SpikeLotteryError(
                f"cannot read the IMP rewind point {str(self.path)!r}: {exc}; start the run "
                "again without resume"
            ) from None

    def rewind(self, model: nn.Module) -> None:
        """Put the recorded values back; the masks (scores) stay."""
        assert self.rewind_state is not None
        result = model.load_state_dict(self.rewind_state, strict=False)
        wrong = [k for k in result.missing_keys if not k.endswith("scores")]
        if wrong or result.unexpected_keys:
            raise RuntimeError(
                f"rewinding changed the model's keys: missing {wrong}, "
                f"unexpected {result.unexpected_keys}"
            )
