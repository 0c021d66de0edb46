"""Tests of running the model (``energy/_counting.py``): batches, ``B``, ``T``, state.

SpikingJelly is an optional extra: the tests that build its layers are marked ``needs_sj``
and skipped one by one when it is missing.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spikelottery._compat import optional_import
from spikelottery.energy import count_ops, estimate_energy
from spikelottery.errors import LayoutError, SpikeLotteryError

sj_layer = optional_import("spikingjelly.activation_based.layer")
sj_neuron = optional_import("spikingjelly.activation_based.neuron")
needs_sj = pytest.mark.skipif(
    sj_layer is None or sj_neuron is None,
    reason="needs SpikingJelly (pip install spikelottery[spikingjelly])",
)


class Spike(nn.Module):
    """A stateless Heaviside neuron: spikes where the input is positive."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x > 0).float()


@needs_sj
def test_multistep_input_reads_t_and_b() -> None:
    assert sj_layer is not None
    t, b = 4, 3
    net = nn.Sequential(
        sj_layer.Linear(10, 6, step_mode="m"), Spike(), sj_layer.Linear(6, 2, step_mode="m")
    )
    x = torch.randn(t, b, 10)
    counts = count_ops(net, (x, torch.zeros(b)))  # B from the labels, T from [T, B, D]
    assert [c.steps for c in counts] == [t, t]
    assert [c.macs for c in counts] == [60, 12]
    report = estimate_energy(net, x, timesteps=t, batch_size=b)  # a 3-D x needs B told
    assert report.timesteps == t and report.samples == b
    spikes = (F.linear(x, net[0].weight, net[0].bias) > 0).float()
    assert report.rows[1].rate == pytest.approx(spikes.mean().item())
    assert report.rows[1].ops == pytest.approx(spikes.mean().item() * t * 12)


class ConvThenLinear(nn.Module):
    """Multi-step conv (T merged into the batch) then a linear on [T, B, D]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.fc = nn.Linear(2 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, T, 1, 4, 4]
        t, b = x.shape[1], x.shape[0]
        y = (self.conv(x.transpose(0, 1).flatten(0, 1)) > 0).float()
        return self.fc(y.view(t, b, -1)).mean(0)


@pytest.mark.parametrize("b", [2, 3])  # B == T must not read [T, B, D] as B samples of T tokens
def test_batch_equal_to_timesteps(b: int) -> None:
    x = torch.randn(b, 2, 1, 4, 4)
    # No neuron tells which of the first two dims is time: the layout is asked for.
    with pytest.raises(LayoutError, match="timesteps= and batch_size="):
        estimate_energy(ConvThenLinear(), x)
    report = estimate_energy(ConvThenLinear(), (x, torch.zeros(b)))  # B from the labels
    assert report.timesteps == 2 and report.samples == b
    assert [(r.macs, r.steps) for r in report.rows] == [(2 * 16 * 9, 2), (32 * 3, 2)]


class LoopNet(nn.Module):
    """A single-step SpikingJelly model that loops over time itself."""

    def __init__(self, steps: int = 5) -> None:
        super().__init__()
        assert sj_neuron is not None
        self.steps = steps
        self.fc1 = nn.Linear(16, 32)
        self.lif = sj_neuron.LIFNode(tau=2.0)
        self.fc2 = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = 0
        for _ in range(self.steps):
            out = out + self.fc2(self.lif(self.fc1(x)))
        return out / self.steps


@needs_sj
def test_single_step_loop_model_and_reset_between_batches() -> None:
    model = LoopNet()
    x = 3 * torch.rand(3, 16)
    once = estimate_energy(model, x)
    assert once.timesteps == 5
    assert [(r.name, r.macs, r.steps) for r in once.rows] == [("fc1", 512, 5), ("fc2", 128, 5)]
    assert 0 < once.rows[1].rate < 1
    twice = estimate_energy(model, [x, x])  # two batches: the state must not leak
    assert twice.samples == 6
    assert twice.rows[1].rate == pytest.approx(once.rows[1].rate)
    assert isinstance(model.lif.v, float) and model.lif.v == 0.0  # left at rest


def test_argument_errors() -> None:
    net = nn.Linear(4, 2)
    x = torch.rand(2, 4)
    with pytest.raises(ValueError, match="timesteps"):
        estimate_energy(net, x, timesteps=0)
    with pytest.raises(ValueError, match="max_batches must be a positive int or None"):
        count_ops(net, x, max_batches=True)
    with pytest.raises(TypeError, match="model"):
        estimate_energy("net", x)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no batch"):
        estimate_energy(net, [])
    with pytest.raises(SpikeLotteryError, match="no conv, linear or matmul"):
        estimate_energy(nn.ReLU(), x)
    with pytest.raises(TypeError, match="batch"):
        estimate_energy(net, [{"x": x}])
    with pytest.raises(TypeError, match="iterable of batches"):
        count_ops(net, 3)


def test_training_flags_and_hooks_restored_even_on_error() -> None:
    net = nn.Sequential(nn.Linear(4, 4), nn.Dropout(), nn.Linear(4, 2))
    net.train()
    net[1].eval()  # a mixed state must come back as it was
    estimate_energy(net, torch.rand(2, 4))
    assert net.training and not net[1].training and net[2].training

    class Broken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.fc(x)
            raise RuntimeError("boom")

    broken = Broken().train()
    with pytest.raises(RuntimeError, match="boom"):
        estimate_energy(broken, torch.rand(2, 4))
    assert broken.training
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in broken.modules())
    assert torch.is_grad_enabled()


def test_max_batches_and_dataloader_batches() -> None:
    data = torch.utils.data.TensorDataset(torch.rand(10, 6), torch.zeros(10))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    net = nn.Linear(6, 3)
    assert estimate_energy(net, loader).samples == 10  # 4 + 4 + 2, from the labels
    assert estimate_energy(net, loader, max_batches=2).samples == 8
    assert estimate_energy(net, next(iter(loader))).samples == 4  # one [x, y] batch


def test_names_of_modules_with_several_ops() -> None:
    class TwoMatmuls(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(4, 4))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x @ self.w) @ self.w

    net = nn.Sequential(nn.Linear(4, 4), TwoMatmuls())
    assert [c.name for c in count_ops(net, torch.rand(2, 4))] == ["0", "1.matmul0", "1.matmul1"]


@pytest.mark.parametrize("timesteps", [2, 3, 4])
def test_a_static_image_whose_channels_equal_t_is_one_frame(timesteps: int) -> None:
    """A static ``[B, C, H, W]`` image with ``C == T`` (CIFAR at ``T = 3``) used to be read
    as ``[B, T, ...]`` event frames: the ANN reference and the first layer were charged
    ``T`` times. Every ``T`` must give the same per-frame figures."""
    from spikelottery.models import create_model

    torch.manual_seed(0)
    x = torch.rand(5, 3, 16, 16)
    model = create_model(
        "vgg_tiny", num_classes=10, in_channels=3, img_size=16, timesteps=timesteps
    )
    report = estimate_energy(model, x)
    assert (report.timesteps, report.samples, report.frames) == (timesteps, 5, 1)
    first = report.rows[0]
    assert first.op == "MAC" and first.ops == first.macs  # charged once, not T times
    assert report.ann_mj == pytest.approx(sum(r.ann_pj for r in report.rows) * 1e-9)
    assert report.ann_mj == pytest.approx(4.6e-9 * sum(r.macs for r in report.rows))


def test_event_frames_stay_frames_when_the_first_layer_reads_fewer_copies() -> None:
    """The check above must not lose real event frames: a batch-first ``[B, T, F]``
    sequence through one linear call, and ``[B, T, C, H, W]`` frames pooled before the
    first conv (the first layer reads less than the input holds)."""
    from spikelottery.neuron import LIFNeuron

    class Sequence(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.lif, self.out = nn.Linear(12, 20), LIFNeuron(), nn.Linear(20, 7)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, 12]
            return self.out(self.lif(self.fc(x).transpose(0, 1)))

    class Pooled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.lif = nn.Conv2d(2, 4, 3, padding=1), LIFNeuron()

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, 2, 8, 8]
            seq = x.transpose(0, 1)
            t, b = seq.shape[:2]
            h = self.conv(F.avg_pool2d(seq.flatten(0, 1), 2))
            return self.lif(h.reshape(t, b, 4, 4, 4))

    torch.manual_seed(0)
    seq = estimate_energy(Sequence(), torch.rand(5, 3, 12))
    assert (seq.timesteps, seq.samples, seq.frames) == (3, 5, 3)
    assert seq.ann_mj == pytest.approx(4.6e-9 * (240 * 3 + 140 * 3))
    pooled = estimate_energy(Pooled(), (torch.rand(5, 2, 2, 8, 8) < 0.3).float())
    assert (pooled.timesteps, pooled.samples, pooled.frames) == (2, 5, 2)
