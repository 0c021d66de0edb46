"""The thread policy (:mod:`spikelottery.threads`) applied to a run: time its model, keep the faster.

:func:`settle_by_timing` settles ``auto`` by timing a training step (forward and
backward) or an evaluation step (forward) of a *copy* of the model at each candidate
count, on the first test batch, with every random generator and the test loader's
generator restored afterwards: the run then computes exactly what it would have computed
at the chosen count without the timing.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from .._state import reset_states
from ..threads import ThreadChoice, timed_choice
from .checkpoint import rng_state, set_rng_state
from .convention import call_model
from .evaluation import input_and_label

__all__ = ["settle_by_timing", "timing_key"]

logger = logging.getLogger("spikelottery.engine")


def _steps(
    net: nn.Module, loader: DataLoader, device: torch.device, train: bool
) -> tuple[Callable[[], None], Callable[[], None]]:
    """A forward pass and a step (forward and backward, if ``train``) of a copy of ``net``,
    on the first test batch."""
    generator = loader.generator
    saved = generator.get_state() if generator is not None else None
    try:
        x, y = input_and_label(next(iter(loader)))
    finally:
        if generator is not None and saved is not None:
            generator.set_state(saved)
    twin = copy.deepcopy(net)
    x, y = x.to(device), y.to(device)
    twin.train(train)

    def forward() -> None:
        reset_states(twin)
        with torch.no_grad():
            call_model(twin, x)

    def step() -> None:
        reset_states(twin)
        loss = F.cross_entropy(call_model(twin, x), y)
        twin.zero_grad(set_to_none=True)
        loss.backward()

    return forward, step if train else forward


#: The settings that decide how long a step takes: runs that agree on them share a timing.
_TIMING_FIELDS = (
    "model",
    "dataset",
    "mode",
    "spiking",
    "activations",
    "filter",
    "pb",
    "batch_size",
    "timesteps",
    "resolution",
    "model_kwargs",
    "device",
)


def timing_key(config: Mapping[str, Any]) -> str:
    """What makes two runs' timings interchangeable: their model, data and batch settings.

    >>> timing_key({"model": "vgg_tiny", "seed": 3}) == timing_key({"model": "vgg_tiny", "seed": 4})
    True
    """
    return json.dumps({k: config.get(k) for k in _TIMING_FIELDS}, sort_keys=True, default=str)


def settle_by_timing(
    choice: ThreadChoice,
    net: nn.Module,
    loader: DataLoader,
    device: torch.device,
    *,
    train: bool = True,
    key: str | None = None,
) -> ThreadChoice:
    """``choice`` settled by timing a step of a copy of ``net`` at each candidate count.

    Args:
        choice: The untimed choice (:func:`~spikelottery.threads.current_choice`).
        net: What the engine calls (the model, or its time-first view).
        loader: The test batches; the first one is timed.
        device: Where ``net`` lives. Only CPU runs are timed (on a GPU the CPU threads
            do little; the untimed count stands).
        train: Time a training step (forward and backward); else a forward pass.
        key: What makes two runs' timings interchangeable (:func:`timing_key`): a timing
            of the same key, at most two minutes old, is reused. ``None``: always time.

    Returns:
        The choice; a failure of the timing (a model that cannot be copied) is logged
        and leaves the untimed choice.
    """
    if not choice.needs_timing or device.type != "cpu":
        return choice
    state = rng_state()
    try:
        return timed_choice(choice, key, lambda: _steps(net, loader, device, train))
    except Exception as exc:  # the timing is an optimisation: never the run's failure
        logger.warning("threads: timing the model failed (%s); using %d", exc, choice.count)
        return choice
    finally:
        set_rng_state(state)
