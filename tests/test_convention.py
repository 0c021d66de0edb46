"""The engine takes the models users already have: SpikingJelly's time-first convention."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from _engine_testing import tiny
from spikelottery import SpikeLotteryError
from spikelottery.engine import Trainer, run
from spikelottery.engine.convention import TimeFirst, is_time_first, logits_of
from spikelottery.layers import SubnetLayer


def _sj_sequential(in_channels: int, classes: int = 10) -> nn.Module:
    from spikingjelly.activation_based import functional, layer, neuron

    net = nn.Sequential(
        layer.Conv2d(in_channels, 8, 3, padding=1),
        layer.BatchNorm2d(8),
        neuron.LIFNode(tau=2.0),
        layer.AvgPool2d(2),
        layer.Flatten(),
        layer.Linear(8 * 8 * 8, classes),
    )
    functional.set_step_mode(net, "m")
    return net


def test_logits_of_reduces_time_and_states_the_contract() -> None:
    assert logits_of(torch.ones(3, 10), 3).shape == (3, 10)
    assert logits_of(torch.ones(4, 3, 10), 3).shape == (3, 10)  # [T, B, K]
    assert logits_of(torch.ones(3, 4, 10), 3).shape == (3, 10)  # [B, T, K]
    with pytest.raises(SpikeLotteryError, match=r"\[T, B, K\].*model_input='time_first'"):
        logits_of(torch.ones(5, 10), 3)
    with pytest.raises(SpikeLotteryError, match="returned tuple"):
        logits_of((torch.ones(3, 10),), 3)


def test_time_first_view_repeats_images_and_transposes_events() -> None:
    seen: list[torch.Size] = []

    class Spy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x.shape)
            return x.flatten(2)[..., :10]

    TimeFirst(Spy(), timesteps=4, event=False)(torch.rand(2, 1, 8, 8))
    TimeFirst(Spy(), timesteps=4, event=True)(torch.rand(2, 3, 2, 8, 8))
    assert seen == [torch.Size([4, 2, 1, 8, 8]), torch.Size([3, 2, 2, 8, 8])]


def test_a_spikingjelly_sequential_trains_unwrapped_on_the_event_digits() -> None:
    pytest.importorskip("spikingjelly")
    net = _sj_sequential(in_channels=2)
    assert is_time_first(net, "auto")
    cfg = tiny(dataset="digits_dvs", resolution=16, model_kwargs={}, mode="mp", max_batches=4)
    res = run(cfg, model=net)
    assert res.model is net and isinstance(net[0], SubnetLayer)  # the user's own model
    assert 0.0 <= res.accuracy <= 1.0 and res.kept_fraction < 1.0
    assert not any(k.startswith("model.") for k in net.state_dict())


def test_a_spikingjelly_zoo_network_trains_on_the_digits() -> None:
    pytest.importorskip("spikingjelly")
    from spikingjelly.activation_based import functional, neuron
    from spikingjelly.activation_based.model import spiking_vgg

    torch.manual_seed(0)
    net = spiking_vgg.spiking_vgg11(num_classes=10, spiking_neuron=neuron.IFNode)
    from spikingjelly.activation_based import layer

    net.features[0] = layer.Conv2d(1, 64, 3, padding=1)  # 1-channel digits
    net.avgpool = layer.AdaptiveAvgPool2d(1)  # 32x32 inputs shrink to 1x1
    net.classifier = layer.Linear(512, 10)
    functional.set_step_mode(net, "m")
    # At initialisation no IF neuron of this deep VGG spikes on four digits, so the
    # first-batch guard cannot verify the masks: it says so, and that is expected here.
    with pytest.warns(UserWarning, match=r"no bypass found, but 9 of 9 .* not verified"):
        res = run(
            tiny(resolution=32, mode="lt", max_batches=2, batch_size=8, model_kwargs={}), model=net
        )
    assert any(isinstance(m, SubnetLayer) for m in net.modules())
    assert res.energy_mj is not None


def test_declaring_batch_first_on_a_time_first_model_says_what_to_do() -> None:
    pytest.importorskip("spikingjelly")
    cfg = tiny(model_input="batch_first", model_kwargs={}, check_ticket=False)
    with pytest.raises(ValueError, match=r"\[T, N, C, H, W\]") as info:  # SpikingJelly's own
        Trainer(cfg, model=_sj_sequential(in_channels=1)).run()
    assert any("model_input='time_first'" in note for note in info.value.__notes__)
