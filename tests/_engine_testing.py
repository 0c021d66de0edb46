"""Shared helpers of the engine tests: a tiny, fast experiment and ways to compare runs."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from spikelottery.engine import TrainConfig
from spikelottery.layers import SubnetLayer

# A tiny, fast experiment: the 8x8 digits, the tiny VGG, the eager LIF loop (no compile).
EAGER = {"neuron_kwargs": {"backend": "eager"}}


def tiny(**changes: Any) -> TrainConfig:
    values: dict[str, Any] = {
        "model": "vgg_tiny",
        "dataset": "digits",
        "resolution": 8,
        "timesteps": 2,
        "epochs": 1,
        "batch_size": 32,
        "max_batches": 3,
        "energy_batches": 1,
        "out": None,
        "progress": False,
        "device": "cpu",
        "model_kwargs": EAGER,
    }
    values.update(changes)
    return TrainConfig(**values)


def subnet_state(model: nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    return {
        name: {
            "scores": m.scores.detach().clone(),
            "mask": m.mask().clone(),
            "weight": m.frozen_weight.detach().clone(),  # the stored weight, not W * M
        }
        for name, m in model.named_modules()
        if isinstance(m, SubnetLayer)
    }


def strip_seconds(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]
