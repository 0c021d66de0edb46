"""T and B of an energy estimate read from the spiking neurons (issue 24, item 1).

Every expected figure is recounted here by brute force in numpy, not by the library.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from spikelottery._compat import optional_import
from spikelottery.energy import estimate_energy
from spikelottery.energy._layout import read_layout
from spikelottery.errors import LayoutError, NoSpikingLayerWarning
from spikelottery.models import create_model
from spikelottery.neuron import LIFNeuron

sj_layer = optional_import("spikingjelly.activation_based.layer")
sj_neuron = optional_import("spikingjelly.activation_based.neuron")
needs_sj = pytest.mark.skipif(sj_neuron is None, reason="SpikingJelly is not installed")

T, B = 3, 5


def _lif_numpy(current: np.ndarray, beta: float = 0.99, threshold: float = 1.0) -> np.ndarray:
    """LIFNeuron's update in numpy: V = beta V + I, spike at V >= threshold, reset to 0."""
    v = np.zeros(current.shape[1:])
    out = np.zeros_like(current)
    for t in range(current.shape[0]):
        v = beta * v + current[t]
        out[t] = v >= threshold
        v = np.where(out[t] > 0, 0.0, v)
    return out


def _mlp() -> tuple[nn.Sequential, torch.Tensor]:
    """The issue's spiking MLP, its weights and its event input set so that 10 input
    spikes make the LIF layer fire 13 times: 10 * 20 + 13 * 7 = 291 accumulates over 5
    samples, 58.2 per sample."""
    net = nn.Sequential(nn.Linear(12, 20), LIFNeuron(), nn.Linear(20, 7))
    with torch.no_grad():
        w1 = torch.full((20, 12), 1e-3)  # every connection kept, too weak to fire alone
        w1[0, 0] = w1[1, 0] = 1.5  # a spike on feature 0 fires units 0 and 1
        for j in range(1, 12):
            w1[j + 1, j] = 1.5  # a spike on feature j fires unit j + 1
        net[0].weight.copy_(w1)
        net[0].bias.zero_()
        net[2].weight.fill_(0.1)
        net[2].bias.zero_()
    x = torch.zeros(T, B, 12)
    for t, b in ((0, 0), (1, 2), (2, 4)):
        x[t, b, 0] = 1.0  # 3 spikes on feature 0: 6 LIF spikes
    for j, (t, b) in enumerate(((0, 1), (0, 2), (1, 0), (1, 3), (2, 1), (2, 2), (2, 3)), 1):
        x[t, b, j] = 1.0  # 7 spikes on features 1..7: 7 LIF spikes
    return net, x


def _brute_force_mlp(net: nn.Sequential, x: torch.Tensor) -> float:
    """Accumulates per sample by hand: each input spike times its kept outgoing weights."""
    w1, w2 = net[0].weight.detach().numpy(), net[2].weight.detach().numpy()
    xs = x.numpy()
    spikes = _lif_numpy(xs @ w1.T + net[0].bias.detach().numpy())
    total = 0.0
    for events, w in ((xs, w1), (spikes, w2)):
        for index in zip(*np.nonzero(events), strict=True):
            total += np.count_nonzero(w[:, index[-1]])
    return total / x.shape[1]


def test_spiking_mlp_reads_t_and_b_from_the_neuron() -> None:
    net, x = _mlp()
    assert int(_lif_numpy(x.numpy() @ net[0].weight.detach().numpy().T).sum()) == 13
    expected = _brute_force_mlp(net, x)
    assert expected == pytest.approx(58.2)
    report = estimate_energy(net, x)  # no hints
    assert report.timesteps == T and report.samples == B
    assert report.exact_sops + report.exact_macs == pytest.approx(expected)
    assert report.frames == T and report.rows[0].exact_op == "AC"  # event frames: spikes
    # Hints that agree change nothing; labels give B too.
    agreed = estimate_energy(net, (x, torch.zeros(B)), timesteps=T)
    assert agreed.samples == B and agreed.exact_sops == pytest.approx(report.exact_sops)


def test_hints_that_contradict_the_neurons_raise() -> None:
    net, x = _mlp()
    with pytest.raises(LayoutError, match=r"timesteps=5 but the spiking neurons see T=3"):
        estimate_energy(net, x, timesteps=5)
    # Both hints given: the caller overrides the neurons.
    forced = estimate_energy(net, x, timesteps=T, batch_size=B)
    assert forced.samples == B


def test_neurons_that_disagree_raise_a_named_error() -> None:
    class TwoClocks(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.a, self.b = LIFNeuron(), LIFNeuron()

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # [T, B, 4]
            h = self.a(self.fc(x))
            return self.b(h.transpose(0, 1))  # a neuron fed [B, T, ...]: T and B swapped

    with pytest.raises(LayoutError, match=r"disagree on the number of time steps.*'a'.*'b'"):
        estimate_energy(TwoClocks(), torch.rand(3, 5, 4))


def test_read_layout_rules() -> None:
    assert read_layout([("l", "m", (4, 8, 16))], (8, 3, 32, 32)).batch == 8
    assert read_layout([("l", "s", (8, 16))] * 4, (4, 8, 16)).timesteps == 4
    # Heads folded into the batch further on: the first neuron's B, a divisor of the rest.
    heads = [("a", "m", (4, 8, 16)), ("b", "m", (4, 24, 16))]
    assert read_layout(heads, (8, 3, 32, 32)).batch == 8
    with pytest.raises(LayoutError, match="batch size"):
        read_layout([("a", "m", (4, 8, 16)), ("b", "m", (4, 12, 16))], (8, 3))
    with pytest.raises(LayoutError, match="no spiking neuron ran"):
        read_layout([], (2, 3, 1, 4, 4))
    assert read_layout([], (2, 3, 1, 4, 4), labels=2).batch == 2


def test_cnn_of_the_zoo_reads_t_and_b() -> None:
    torch.manual_seed(0)
    net = create_model("vgg_tiny", img_size=8, timesteps=3, in_channels=1)
    report = estimate_energy(net, torch.rand(5, 1, 8, 8))  # a static image, T inside
    assert report.timesteps == 3 and report.samples == 5 and report.frames == 1
    assert report.rows[0].op == "MAC" and report.rows[0].ops == report.rows[0].macs
    events = (torch.rand(5, 3, 1, 8, 8) < 0.2).float()  # [B, T, ...] event frames
    ev = estimate_energy(net, events)
    assert ev.timesteps == 3 and ev.samples == 5 and ev.frames == 3
    assert ev.rows[0].op == "AC"
    assert ev.ann_mj == pytest.approx(3 * 4.6 * ev.macs / 1e9)  # one ANN pass per frame


def test_transformer_of_the_zoo_reads_t_and_b() -> None:
    torch.manual_seed(0)
    net = create_model("spikformer_micro", img_size=8, timesteps=2)
    report = estimate_energy(net, torch.rand(3, 3, 8, 8))
    assert report.timesteps == 2 and report.samples == 3
    per_sample = estimate_energy(net, torch.rand(6, 3, 8, 8))
    assert per_sample.samples == 6
    assert per_sample.macs == report.macs  # per sample and step: independent of B


@needs_sj
def test_spikingjelly_multi_step() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        sj_layer.Linear(12, 20, step_mode="m"),
        sj_neuron.LIFNode(step_mode="m"),
        sj_layer.Linear(20, 7, step_mode="m"),
    )
    with torch.no_grad():
        net[0].weight.mul_(4)
    x = (torch.rand(T, B, 12) < 0.3).float()
    report = estimate_energy(net, x)
    assert report.timesteps == T and report.samples == B
    with torch.no_grad():
        net[1].reset()
        spikes = net[1](net[0](x))
        net[1].reset()
    fan2 = (net[2].weight != 0).sum(0).double()
    expected = (x.sum() * 20 + (spikes.double().sum((0, 1)) * fan2).sum()) / B
    assert report.exact_sops == pytest.approx(float(expected))


@needs_sj
def test_spikingjelly_single_step_loop() -> None:
    class Loop(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.lif, self.fc2 = nn.Linear(12, 20), sj_neuron.LIFNode(), nn.Linear(20, 7)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # [T, B, 12]
            return torch.stack([self.fc2(self.lif(self.fc1(x[t]))) for t in range(x.shape[0])])

    torch.manual_seed(0)
    report = estimate_energy(Loop(), (torch.rand(T, B, 12) < 0.3).float())
    assert report.timesteps == T and report.samples == B
    assert [r.steps for r in report.rows] == [T, T]


def test_single_step_lif_of_ours_in_a_loop() -> None:
    class Loop(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.lif = nn.Linear(12, 20), LIFNeuron(step_mode="s")

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # [T, B, 12]
            return torch.stack([self.lif(self.fc(x[t])) for t in range(x.shape[0])])

    report = estimate_energy(Loop(), torch.rand(4, 6, 12))
    assert report.timesteps == 4 and report.samples == 6


def test_a_model_without_neurons_warns() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(48, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.warns(UserWarning, match="no spiking neuron ran in Sequential"):
        report = estimate_energy(net, torch.rand(4, 3, 4, 4))
    assert not report.spiking and "warning: no spiking neuron ran" in str(report)


def test_snntorch_neurons_with_hidden_state_start_every_batch_from_rest() -> None:
    """snnTorch's ``init_hidden=True`` neurons keep their membrane between calls; the
    estimate used to count a batch from whatever state the last run left (here a warm-up
    batch): the spikes after fc1, recounted by brute force from rest, differed."""
    snn = pytest.importorskip("snntorch")
    import snntorch.utils

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(12, 30),
        snn.Leaky(beta=0.8, init_hidden=True),
        nn.Linear(30, 7),
        snn.Leaky(beta=0.8, init_hidden=True),
    )
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Linear):
                m.weight.mul_(4)

    class Loop(nn.Module):  # the snnTorch tutorials' loop, no reset in forward
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.stack([self.net(x[t]) for t in range(x.shape[0])])

    x = torch.rand(5, 4, 12)
    snntorch.utils.reset(net)
    seen: list[torch.Tensor] = []
    hook = net[1].register_forward_hook(lambda _m, _i, out: seen.append(out.detach()))
    with torch.no_grad():
        Loop()(x)
    hook.remove()
    want = float(torch.stack(seen).count_nonzero()) * 7 / 4  # fc2: 7 accumulates a spike

    with torch.no_grad():
        Loop()(torch.rand(5, 4, 12) * 3)  # a warm-up batch leaves the membranes charged
    report = estimate_energy(Loop(), x)
    assert report.timesteps == 5 and report.samples == 4
    assert report.rows[1].exact_ops == pytest.approx(want)


def test_norse_neurons_tell_t_and_b() -> None:
    """Norse's neurons (``LIFCell`` in a Python loop, ``LIF`` over a whole sequence) are
    spiking neurons: the estimate used to warn "no spiking neuron ran" and read the time
    axis as the batch (3 samples instead of 5, 400 MACs a step instead of 240)."""
    norse = pytest.importorskip("norse.torch")

    class CellLoop(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.lif, self.fc2 = nn.Linear(12, 20), norse.LIFCell(), nn.Linear(20, 7)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # [T, B, 12]
            state, out = None, []
            for t in range(x.shape[0]):
                z, state = self.lif(self.fc1(x[t]), state)
                out.append(self.fc2(z))
            return torch.stack(out)

    class Sequence(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = norse.SequentialState(nn.Linear(12, 20), norse.LIF(), nn.Linear(20, 7))

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # [T, B, 12]
            return self.net(x)[0]

    torch.manual_seed(0)
    x = torch.rand(T, B, 12) * 3
    for net in (CellLoop(), Sequence()):
        with warnings.catch_warnings():
            warnings.simplefilter("error", NoSpikingLayerWarning)
            report = estimate_energy(net, x)
        assert report.spiking and len(report.neurons) == 1
        assert (report.timesteps, report.samples) == (T, B)
        assert [r.macs for r in report.rows] == [240.0, 140.0]
        assert report.neurons[0].units == 20 and report.neurons[0].steps == T


def test_labels_that_contradict_the_neurons_raise() -> None:
    """Per-step labels ``[T, B]`` (time-first targets) gave ``B = T``: 3 samples and a
    sixth of the true accumulates per sample, silently."""
    net, x = _mlp()
    with pytest.raises(LayoutError, match=r"3 labels but the spiking neurons see B=5"):
        estimate_energy(net, (x, torch.zeros(T, B)))
    report = estimate_energy(net, (x, torch.zeros(T, B)), batch_size=B)  # the caller says
    assert report.samples == B
    assert report.exact_sops + report.exact_macs == pytest.approx(_brute_force_mlp(net, x))


def test_neurons_whose_batch_is_not_an_input_dim_raise() -> None:
    """Tokens folded into the batch of every neuron (``[T, B * N, D]``) gave ``B * N``
    samples (35 instead of 5) without a word; labels or ``batch_size=`` tell."""

    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.lif, self.out = nn.Linear(8, 8), LIFNeuron(), nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # [T, B, N, D]
            t, b, n, d = x.shape
            h = self.lif(self.fc(x).reshape(t, b * n, d))
            return self.out(h.reshape(t, b, n, d).mean(2))

    x = torch.rand(3, 5, 7, 8)
    with pytest.raises(LayoutError, match=r"B=35 .* not one of the input's first two dims"):
        estimate_energy(Tokens(), x)
    assert estimate_energy(Tokens(), (x, torch.zeros(5))).samples == 5
    assert estimate_energy(Tokens(), x, batch_size=5).samples == 5
