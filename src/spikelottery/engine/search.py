"""What the run's search method does around the stages: :class:`SearchSteps`.

The trainer calls it when it enters a stage (also when a resumed run replays the stages
before its checkpoint), before and after each epoch, and when the run ends:

* the run's search method (:class:`~spikelottery.engine.methods.SearchMethod`): what it
  does on entering a stage and after each epoch (``imp``: the rounds and the rewind
  point; ``random`` and ``random-frozen``: a random fixed mask drawn from ``seed``);
* score search: the annealed kept fraction (``anneal_epochs``) before each epoch;
* Early-Time tickets (``search_timesteps``): the search stages run at
  ``search_timesteps``, the rest at ``timesteps``. After the last search epoch the found
  ticket is evaluated at both, and the time one evaluation takes at each gives the
  search time that a search at ``timesteps`` would have taken (the cost of a spiking
  network grows with ``T``; the ratio of two forward times over the same test batches
  is measured, not assumed). The record goes into
  that epoch's history entry (so a resumed run keeps it) and into
  :attr:`Results.early_time <spikelottery.engine.Results.early_time>`.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from .._state import finite_or_none, reset_states
from ..pruning import restore_fixed_masks
from ..scope import annealed_ratio, set_model_pa
from .convention import call_model
from .evaluation import evaluate, input_and_label
from .methods import search_method
from .settings import ConfigError
from .stages import Stage

if TYPE_CHECKING:
    from .config import TrainConfig
    from .trainer import RunState

__all__ = ["EARLY_TIME_KEY", "SearchSteps", "forward_seconds", "set_timesteps"]

logger = logging.getLogger("spikelottery.engine")

#: The key of the Early-Time record in the history entry of the last search epoch.
EARLY_TIME_KEY = "early_time"
#: Test batches whose forward time at both ``T`` gives the search-time ratio.
_TIMED_BATCHES = 2


def set_timesteps(modules: tuple[nn.Module, ...], timesteps: int) -> None:
    """Set ``T`` of the zoo model (its ``timesteps``) and of the engine's time-first view.

    Raises:
        ~spikelottery.engine.ConfigError: None of ``modules`` has an int ``timesteps``
            attribute to set.
    """
    found = False
    for module in {id(m): m for m in modules}.values():
        if isinstance(getattr(module, "timesteps", None), int):
            setattr(module, "timesteps", timesteps)  # noqa: B010 (an nn.Module attribute)
            found = True
    if not found:
        raise ConfigError(
            "search_timesteps",
            "search_timesteps (Early-Time tickets) changes T, but the model has no "
            "`timesteps` attribute (a zoo model has one) and is not time-first "
            "(model_input='time_first')",
        )


@torch.no_grad()
def forward_seconds(net: nn.Module, batches: list[Tensor], *, repeats: int = 3) -> float:
    """The fastest of ``repeats`` timings of one forward pass over ``batches`` (eval mode).

    The fastest run is the least disturbed by other work on the machine; the first one
    also pays for warm-up.

    >>> forward_seconds(nn.Linear(4, 2), [torch.zeros(3, 4)]) >= 0
    True
    """
    was_training = net.training
    net.eval()
    try:
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            for x in batches:
                reset_states(net)
                call_model(net, x)
            if batches and batches[-1].is_cuda:
                torch.cuda.synchronize(batches[-1].device)
            best = min(best, time.perf_counter() - start)
    finally:
        net.train(was_training)
    return best


class SearchSteps:
    """The per-method steps of one run (see the module docstring).

    Args:
        cfg: The run's settings.
        event: Whether the data are event frames (whose ``T`` the data set fixes).
    """

    def __init__(self, cfg: TrainConfig, *, event: bool, main: bool = True) -> None:
        self.cfg = cfg
        self.method_class = search_method(cfg.search)
        self.method = self.method_class(cfg, main=main)
        self.search_stages = self.method_class.search_stages(cfg)
        self.early = cfg.search_timesteps is not None
        self.small_t: int = cfg.search_timesteps or cfg.timesteps
        if self.early and event:
            raise ConfigError(
                "search_timesteps",
                f"{cfg.dataset!r} holds event frames whose T the data set fixes at timesteps="
                f"{cfg.timesteps}; Early-Time tickets need static images (direct encoding)",
            )

    # -- the trainer's calls ----------------------------------------------------------
    def enter(
        self,
        state: RunState,
        stage: Stage,
        *,
        done: int = 0,
        checkpoint_model: Mapping[str, Any] | None = None,
    ) -> bool:
        """Set up ``stage`` (after :func:`~spikelottery.engine.stages.enter_stage`).

        Args:
            state: The run.
            stage: The stage entered.
            done: Epochs finished before this session (a resumed run).
            checkpoint_model: The resumed checkpoint's model state, if any.

        Returns:
            Whether the checkpoint's model state was loaded here (IMP resumed at the start
            of a round prunes the checkpoint's weights); the trainer then does not load it.
        """
        cfg = self.cfg
        if self.early:
            searching = stage.name in self.search_stages
            set_timesteps((state.model, state.net), self.small_t if searching else cfg.timesteps)
        return self.method.enter(state.model, stage, done=done, checkpoint_model=checkpoint_model)

    def after_load(self, state: RunState) -> None:
        """After the trainer loads a checkpoint: fixed masks get their counts back.

        A fixed mask (IMP, random) lives in the scores and in each layer's ``pa``, which
        a ``state_dict`` does not hold.
        """
        if self.method_class.fixed_mask:
            restore_fixed_masks(state.model)

    def before_epoch(self, state: RunState, stage: Stage, epoch: int) -> None:
        """Anneal the kept fraction of a score search."""
        if self.cfg.anneal_epochs and stage.name in self.search_stages:
            pa = annealed_ratio(self.cfg.pa, epoch - stage.first_epoch, self.cfg.anneal_epochs)
            set_model_pa(state.model, pa)

    def after_epoch(
        self, state: RunState, stage: Stage, epoch: int, record: dict[str, Any]
    ) -> None:
        """The method's step (IMP's rewind point); measure an Early-Time ticket after the search."""
        self.method.after_epoch(state.model, stage, epoch)
        last_search = self.search_stages[-1] if self.search_stages else None
        if self.early and stage.name == last_search and epoch + 1 == stage.last_epoch:
            record[EARLY_TIME_KEY] = self._measure(state, record["seconds"])

    def finish(self, state: RunState) -> tuple[dict[str, Any] | None, bool]:
        """The Early-Time record, and whether it holds the final model's figures at ``T``.

        Sets ``T`` back to ``timesteps`` for the final evaluation and the energy estimate.
        """
        if not self.early:
            return None, False
        set_timesteps((state.model, state.net), self.cfg.timesteps)
        found = [h for h in state.history if EARLY_TIME_KEY in h]
        if not found:
            return None, False
        last = state.history[-1]
        return found[-1][EARLY_TIME_KEY], last is found[-1]

    # -- Early-Time ------------------------------------------------------------------
    def _measure(self, state: RunState, epoch_seconds: float) -> dict[str, Any]:
        cfg = self.cfg
        modules = (state.model, state.net)
        batches = [
            input_and_label(b)[0].to(state.device)
            for b in itertools.islice(state.loaders.test, _TIMED_BATCHES)
        ]
        test = state.loaders.test
        search_acc, search_loss = evaluate(
            state.net, test, device=state.device, max_batches=cfg.max_batches
        )
        search_eval = forward_seconds(state.net, batches)
        set_timesteps(modules, cfg.timesteps)
        try:
            acc, loss = evaluate(state.net, test, device=state.device, max_batches=cfg.max_batches)
            eval_seconds = forward_seconds(state.net, batches)
        finally:
            set_timesteps(modules, self.small_t)
        searched = [h for h in state.history if h["stage"] in self.search_stages]
        seconds = sum(h["seconds"] for h in searched) + epoch_seconds
        ratio = eval_seconds / search_eval if search_eval > 0 else 1.0
        record = {
            "search_timesteps": cfg.search_timesteps,
            "timesteps": cfg.timesteps,
            "search_epochs": len(searched) + 1,  # this epoch is not in the history yet
            "search_accuracy": search_acc,
            "search_loss": finite_or_none(search_loss),
            "accuracy": acc,
            "loss": finite_or_none(loss),
            "search_seconds": seconds,
            "time_ratio": ratio,  # forward time at timesteps / at search_timesteps
            "search_seconds_at_timesteps": seconds * ratio,
            "seconds_saved": seconds * ratio - seconds,
        }
        logger.info(
            "Early-Time ticket: accuracy %.4f at T=%d (searched), %.4f at T=%d",
            search_acc,
            cfg.search_timesteps,
            acc,
            cfg.timesteps,
        )
        return record
