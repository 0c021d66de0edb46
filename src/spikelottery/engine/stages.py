"""The stages of paper Algorithm 1: their epochs, what each trains, and its optimizer.

* ``search`` (``train`` for ``mode="dense"``), ``epochs``: the scores and every other
  trainable parameter;
* ``patch`` (with ``pb > 0``), ``patch_epochs``: all but the masks and the patch embedding;
* ``finetune``, ``finetune_epochs``: the kept weights, with the masks fixed.

The search method plans stage 1 (:meth:`~spikelottery.engine.methods.SearchMethod.stages`):
``search="imp"`` replaces it by ``imp_rounds + 1`` stages ``imp0`` (the dense weights) to
``imp<r>`` (the weights of the mask after ``r`` rounds), ``epochs`` each
(:mod:`~spikelottery.engine.imp`); ``search="random"`` by ``train`` (the kept weights of a
random mask) and ``search="random-frozen"`` by ``train`` (a random mask; only what the
score search also trains besides its scores, e.g. BatchNorm).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import SpikeLotteryError
from ..layers import SubnetLayer
from .config import TrainConfig
from .methods import search_method

__all__ = [
    "Stage",
    "enter_stage",
    "freeze_masks",
    "make_optimizer",
    "stage_plan",
    "train_kept_weights",
    "train_mode",
]


@dataclass(frozen=True)
class Stage:
    """A stage and its epochs ``first_epoch .. last_epoch - 1`` (counted over all stages)."""

    name: str
    first_epoch: int
    epochs: int

    @property
    def last_epoch(self) -> int:
        """One past the stage's last epoch: the epochs done when it ends."""
        return self.first_epoch + self.epochs


def stage_plan(cfg: TrainConfig) -> list[Stage]:
    """The stages in order; a stage with 0 epochs is still entered.

    >>> [(s.name, s.first_epoch, s.epochs) for s in stage_plan(TrainConfig(out=None, epochs=3))]
    [('search', 0, 3)]
    """
    plan = list(search_method(cfg.search).stages(cfg))
    if cfg.pb > 0:
        plan.append(("patch", cfg.patch_epochs))
    if cfg.finetune_epochs:
        plan.append(("finetune", cfg.finetune_epochs))
    stages, first = [], 0
    for name, epochs in plan:
        stages.append(Stage(name, first, epochs))
        first += epochs
    return stages


def _freeze(p: torch.Tensor) -> None:
    """Stop training ``p`` and drop its last gradient (memory a frozen tensor no longer needs)."""
    p.requires_grad_(False)
    p.grad = None


def enter_stage(model: nn.Module, stage: str, *, pb: float) -> str | None:
    """Set what trains in ``stage``; return the name of the module it keeps fixed, if any.

    Idempotent, so a resumed run can replay the stages before its checkpoint.
    """
    if stage == "patch":
        from ..patch import attach_patch_selector

        name = attach_patch_selector(model, pb)
        assert name is not None  # pb > 0 in stage 2
        # Stage 2: the sparse patch embedding (ConvPEP) and every mask stay fixed. Its
        # BatchNorm statistics too: train_mode keeps the module in eval mode.
        for p in model.get_submodule(name).parameters():
            _freeze(p)
        for scores in _all_scores(model):
            _freeze(scores)
        return name
    if stage == "finetune":
        train_kept_weights(model)
    return None


def freeze_masks(model: nn.Module) -> None:
    """Fix every mask (the scores stop training); the frozen weights stay frozen.

    What edge-popup's random-subnetwork control trains: everything the score search
    trains but the scores.
    """
    for scores in _all_scores(model):
        _freeze(scores)


def _all_scores(model: nn.Module) -> list[torch.Tensor]:
    """The scores of every masked tensor of every score-mask layer (an LSTM has several)."""
    return [
        m.scores_of(name)
        for m in model.modules()
        if isinstance(m, SubnetLayer)
        for name in m.masked_names
    ]


def train_kept_weights(model: nn.Module) -> None:
    """Fix every mask and train the kept weights (and biases) of the score-mask layers.

    The ticket is found (or its mask is fixed, as in magnitude pruning): the subnet layer
    passes ``dL/dw`` only to kept entries, the patch embedding's included.
    """
    for m in model.modules():
        if not isinstance(m, SubnetLayer):
            continue
        scores = {id(m.scores_of(n)) for n in m.masked_names}
        for p in m.parameters(recurse=False):
            if id(p) in scores:
                _freeze(p)
            else:  # the frozen weights (`weight` is the masked product) and the biases
                p.requires_grad_(True)


def train_mode(model: nn.Module, frozen: str | None) -> None:
    """``train()`` the model, except the module ``frozen`` that the stage keeps fixed."""
    model.train()
    if frozen is not None:
        model.get_submodule(frozen).eval()


def make_optimizer(
    model: nn.Module, cfg: TrainConfig, *, stage: str, steps: int
) -> tuple[torch.optim.Optimizer, Any]:
    """Adam on the trainable scores (``lr``) and other parameters (``weight_lr``), cosine over ``steps``.

    Raises:
        SpikeLotteryError: Nothing in the model trains in ``stage``.
    """
    scores = list({id(p): p for p in _all_scores(model) if p.requires_grad}.values())
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
