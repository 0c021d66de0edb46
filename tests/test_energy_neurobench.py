"""``neurobench_view`` against NeuroBench itself (issue 24, item 5): equal on what
NeuroBench counts, what ours adds named; per-step counts add up to the exact total."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from spikelottery._compat import optional_import
from spikelottery.energy import estimate_energy, neurobench_view, run_neurobench
from spikelottery.neuron import LIFNeuron

needs_nb = pytest.mark.skipif(
    optional_import("neurobench.benchmarks") is None,
    reason="needs NeuroBench (pip install 'spikelottery[neurobench]')",
)


class WithTransposed(nn.Module):
    """conv (padded) -> LIF -> transposed conv -> LIF -> linear, on ``[B, T, C, H, W]``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.lif1 = LIFNeuron(threshold=0.2)
        self.up = nn.ConvTranspose2d(4, 3, 2, stride=2)
        self.lif2 = LIFNeuron(threshold=0.2)
        self.fc = nn.Linear(3 * 8 * 8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = x.transpose(0, 1)
        t, b = seq.shape[:2]
        h = self.lif1(self.conv(seq.flatten(0, 1)).reshape(t, b, 4, 4, 4))
        h = self.lif2(self.up(h.flatten(0, 1)).reshape(t, b, 3, 8, 8))
        return self.fc(h.flatten(2)).mean(0)


def _loader() -> DataLoader[tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    x = torch.rand(6, 3, 2, 4, 4)  # [B, T, C, H, W], real-valued frames
    return DataLoader(TensorDataset(x, torch.zeros(6, dtype=torch.long)), batch_size=3)


@needs_nb
def test_view_equals_neurobench_and_names_the_transposed_conv() -> None:
    torch.manual_seed(0)
    net = WithTransposed().eval()
    loader = _loader()
    nb = run_neurobench(net, loader, bake=False)
    report = estimate_energy(net, loader)
    ours = neurobench_view(report)
    ops = nb["SynapticOperations"]
    assert ops["Effective_ACs"] == pytest.approx(ours["effective_acs"], rel=1e-12)
    assert ops["Effective_MACs"] == pytest.approx(ours["effective_macs"], rel=1e-12)
    assert ops["Dense"] == pytest.approx(ours["dense"], rel=1e-12)
    assert nb["ActivationSparsity"] == pytest.approx(ours["activation_sparsity"], rel=1e-12)
    # NeuroBench does not hook transposed convs: ours counts it and says so.
    up = next(c for c in report.counts if c.name == "up")
    assert not up.neurobench and ours["added"]["layers"] == {"up": up.synops}
    assert up.synops is not None and up.synops > 0
    assert ours["added"]["synops"] == up.synops


def test_per_step_counts_add_up_to_the_exact_total() -> None:
    torch.manual_seed(0)
    net = WithTransposed().eval()
    image = torch.rand(4, 1, 2, 4, 4).expand(4, 3, 2, 4, 4)  # a static image: first layer once
    report = estimate_energy(net, (image, torch.zeros(4)))
    assert report.frames == 1
    total = report.exact_sops + report.exact_macs
    assert math.fsum(report.per_step_synops) == pytest.approx(total, rel=1e-12)
    first = report.rows[0]
    assert first.exact_op == "MAC" and first.per_step[1:] == (0.0, 0.0)
    events = estimate_energy(net, ((torch.rand(4, 3, 2, 4, 4) < 0.3).float(), torch.zeros(4)))
    total = events.exact_sops + events.exact_macs
    assert math.fsum(events.per_step_synops) == pytest.approx(total, rel=1e-12)


@needs_nb
def test_run_neurobench_sees_snntorch_neurons() -> None:
    """``run_neurobench`` registered only our and SpikingJelly's neurons, so on a snnTorch
    network NeuroBench found no activation and reported an activation sparsity of 0.0
    (NeuroBench's own ``SNNTorchModel`` registers ``snn.SpikingNeuron``)."""
    snn = pytest.importorskip("snntorch")

    class Loop(nn.Module):  # the snnTorch tutorials' network, batch-first [B, T, F]
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(12, 20), nn.Linear(20, 7)
            self.lif1 = snn.Leaky(beta=0.9, init_hidden=True)
            self.lif2 = snn.Leaky(beta=0.9, init_hidden=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            steps = [self.lif2(self.fc2(self.lif1(self.fc1(x[:, t])))) for t in range(x.shape[1])]
            return torch.stack(steps, 1)

    torch.manual_seed(0)
    net = Loop().eval()
    with torch.no_grad():
        net.fc1.weight.mul_(3)
    x = torch.rand(6, 4, 12) * 2
    loader = DataLoader(TensorDataset(x, torch.zeros(6, dtype=torch.long)), batch_size=3)
    nb = run_neurobench(net, loader, time_first=False, bake=False)
    ours = neurobench_view(estimate_energy(net, loader))
    assert 0.0 < ours["activation_sparsity"] < 1.0
    assert nb["ActivationSparsity"] == pytest.approx(ours["activation_sparsity"], rel=1e-12)
    assert nb["SynapticOperations"]["Effective_ACs"] == pytest.approx(ours["effective_acs"])
