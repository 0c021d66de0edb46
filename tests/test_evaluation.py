"""Tests of ``evaluate`` and the engine's batch and device helpers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from _engine_testing import tiny
from spikelottery import SpikeLotteryError
from spikelottery.engine import evaluate, run
from spikelottery.engine.evaluation import input_and_label, model_device


def test_evaluate_counts_correct_labels() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        net[1].weight.zero_()
        net[1].bias.copy_(torch.tensor([1.0, 0.0]))
    y = torch.tensor([0, 0, 1, 0])
    acc, loss = evaluate(net, [(torch.rand(4, 4), y)])
    assert acc == 0.75 and loss > 0
    net.train()
    assert evaluate(net, [(torch.rand(4, 4), y)] * 3, max_batches=1)[0] == 0.75
    assert net.training  # the mode is restored
    acc, loss = evaluate(net, [])
    assert math.isnan(acc) and math.isnan(loss)


def test_evaluate_defaults_to_the_model_device() -> None:
    assert model_device(nn.Linear(2, 2, device="meta")) == torch.device("meta")
    assert model_device(nn.ReLU()) == torch.device("cpu")
    if torch.cuda.is_available():
        net = nn.Linear(4, 2).cuda()
        acc, loss = evaluate(net, [(torch.rand(3, 4), torch.zeros(3, dtype=torch.long))])
        assert 0.0 <= acc <= 1.0 and math.isfinite(loss)


def test_batches_must_be_input_label_pairs() -> None:
    x, y = input_and_label([torch.zeros(2, 3), torch.tensor([0, 1]), "extra"])
    assert x.shape == (2, 3) and y.tolist() == [0, 1]
    for bad in (torch.zeros(2, 3), (torch.zeros(2, 3),), {"x": 1}, (torch.zeros(2), [0, 1])):
        with pytest.raises(SpikeLotteryError, match=r"\(input, label\) pairs"):
            input_and_label(bad)


# --- from test_engine_labels.py: A label outside the model's classes is named by the engine, not left to torch's IndexError.


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
