"""A label outside the model's classes is named by the engine, not left to torch's IndexError."""

from __future__ import annotations

import pytest
import torch

from _engine_testing import tiny
from spikelottery.engine import evaluate, run
from spikelottery.errors import SpikeLotteryError


@pytest.mark.parametrize("bad", [10, -1])
def test_training_on_a_label_past_the_classes_is_named(bad: int) -> None:
    x = torch.rand(16, 1, 8, 8)
    y = torch.arange(16) % 10
    y[5] = bad
    data = torch.utils.data.TensorDataset(x, y)
    with pytest.raises(SpikeLotteryError, match=rf"label {bad}, but the model has 10 outputs"):
        run(tiny(batch_size=8, max_batches=2), train_set=data, test_set=data)


def test_evaluating_on_a_label_past_the_classes_is_named() -> None:
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    with pytest.raises(SpikeLotteryError, match="label 3, but the model has 3 outputs"):
        evaluate(net, [(torch.zeros(2, 4), torch.tensor([0, 3]))])
