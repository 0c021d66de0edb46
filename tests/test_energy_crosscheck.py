"""Cross-checks of the exact synaptic operations with SpikingJelly 2.0's op counters and
NeuroBench 2.3, on the same models: equal where the definitions coincide, and the
documented differences where they do not (docs/energy.md, "Cross-checks").

Both are optional: each test is skipped when its library is missing.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from spikelottery import sparsify
from spikelottery._compat import optional_import
from spikelottery.energy import (
    estimate_energy,
    neurobench_view,
    run_neurobench,
)
from spikelottery.models import create_model

sj_layer = optional_import("spikingjelly.activation_based.layer")
sj_neuron = optional_import("spikingjelly.activation_based.neuron")
sj_functional = optional_import("spikingjelly.activation_based.functional")
sj_oc = optional_import("spikingjelly.activation_based.op_counter")
needs_sj = pytest.mark.skipif(
    sj_layer is None or sj_oc is None, reason="needs SpikingJelly 2.0 (spikelottery[spikingjelly])"
)
needs_nb = pytest.mark.skipif(
    optional_import("neurobench.benchmarks") is None,
    reason="needs NeuroBench (pip install 'spikelottery[neurobench]')",
)

T, B = 4, 2


def sj_conv_net() -> nn.Module:
    """Padding, stride and groups, multi-step, strong positive weights so neurons fire."""
    assert sj_layer is not None and sj_neuron is not None
    net = nn.Sequential(
        sj_layer.Conv2d(2, 8, 3, padding=1, bias=False, step_mode="m"),
        sj_neuron.LIFNode(tau=2.0, step_mode="m"),
        sj_layer.Conv2d(8, 8, 3, padding=1, stride=2, groups=2, bias=False, step_mode="m"),
        sj_neuron.LIFNode(tau=2.0, step_mode="m"),
        sj_layer.Flatten(step_mode="m"),
        sj_layer.Linear(8 * 3 * 3, 4, bias=False, step_mode="m"),
    )
    with torch.no_grad():
        for m in net:
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.abs_().mul_(3)
    return net


def sj_synops(net: nn.Module, x: torch.Tensor, layers: tuple[str, ...] = ()) -> int:
    """SpikingJelly's SynOps: the total, or the sum over ``layers`` (``"Sequential.2"``)."""
    assert sj_oc is not None and sj_functional is not None
    sj_functional.reset_net(net)
    counter = sj_oc.SynOpCounter()
    with torch.no_grad(), sj_oc.DispatchCounterMode([counter]):
        net(x)
    sj_functional.reset_net(net)
    if not layers:
        return int(counter.get_total())
    counts = counter.get_counts()
    return int(sum(sum(counts[name].values()) for name in layers))


@needs_sj
def test_exact_synops_equal_spikingjelly_synopcounter_on_dense_weights() -> None:
    # Where the definitions coincide (binary input, no zero weight) the counts are equal,
    # padding, stride and groups included.
    torch.manual_seed(0)
    net, x = sj_conv_net(), 3 * torch.rand(T, B, 2, 6, 6)
    report = estimate_energy(net, x, timesteps=T)
    spike_rows = [r for r in report.rows if r.binary]
    assert len(spike_rows) == 2 and all(r.exact for r in spike_rows)
    ours = sum(r.exact_ops for r in spike_rows) * B
    assert ours == sj_synops(net, x)


@needs_sj
def test_pruned_weights_are_where_spikingjelly_differs() -> None:
    # SpikingJelly counts every weight a spike reaches, zeros included; we skip pruned
    # weights. Its count on the 0/1 indicator of the weights (its binary-binary path
    # counts coincidences) is ours.
    torch.manual_seed(0)
    net, x = sj_conv_net(), 3 * torch.rand(T, B, 2, 6, 6)
    report_dense = estimate_energy(net, x, timesteps=T)
    with torch.no_grad():
        net[2].weight[:, :2] = 0.0  # prune two input channels of each group
    report = estimate_energy(net, x, timesteps=T)
    row = report.rows[1]
    assert row.exact_ops < report_dense.rows[1].exact_ops
    counted = sj_synops(net, x)
    assert counted > sum(r.exact_ops for r in report.rows if r.binary) * B
    with torch.no_grad():
        for m in net:
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.copy_((m.weight != 0).float())
    # The spikes change with the weights: re-measure. (With a binary weight and a real
    # input SpikingJelly also counts the first layer, densely: compare the spike layers.)
    report_ind = estimate_energy(net, x, timesteps=T)
    spike_layers = ("Sequential.2", "Sequential.5")
    ours = sum(r.exact_ops for r in report_ind.rows if r.binary) * B
    assert ours == sj_synops(net, x, spike_layers)


@needs_sj
def test_lemaire_estimator_synops_and_neuron_updates() -> None:
    # SpikingJelly's Lemaire model: for linear layers with spike input its SynOps are
    # spikes x fan-out (ours, on dense weights); its MAC count adds one per membrane
    # update to the dense MACs of the real-valued first layer.
    assert sj_layer is not None and sj_neuron is not None and sj_oc is not None
    assert sj_functional is not None
    torch.manual_seed(0)
    net = nn.Sequential(
        sj_layer.Linear(20, 16, bias=False, step_mode="m"),
        sj_neuron.LIFNode(tau=2.0, step_mode="m"),
        sj_layer.Linear(16, 8, bias=False, step_mode="m"),
        sj_neuron.LIFNode(tau=2.0, step_mode="m"),
        sj_layer.Linear(8, 4, bias=False, step_mode="m"),
    )
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Linear):
                m.weight.abs_().mul_(2)
    x = 3 * torch.rand(T, B, 20)
    report = estimate_energy(net, x, timesteps=T, batch_size=B)
    sj_functional.reset_net(net)
    lemaire = sj_oc.estimate_lemaire_energy(net, x).counts
    assert sum(r.exact_ops for r in report.rows if r.binary) * B == lemaire["synop"]
    first = report.rows[0]
    assert lemaire["mac"] == first.macs * first.steps * B + report.neuron_updates * B
    # Simple energy: one membrane read and one write per update, at 4 bytes.
    sj_functional.reset_net(net)
    simple = sj_oc.estimate_simple_energy(net, x).counts
    assert simple["neuron_state_read_bytes"] == report.neuron_updates * B * 4
    assert simple["synop"] == lemaire["synop"]


def tiny_ticket() -> tuple[nn.Module, DataLoader[tuple[torch.Tensor, ...]]]:
    torch.manual_seed(0)
    net = create_model("vgg9", img_size=8, timesteps=2)
    sparsify(net, pa=0.4)
    x, y = torch.rand(4, 3, 8, 8), torch.zeros(4, dtype=torch.long)
    return net, DataLoader(TensorDataset(x, y), batch_size=2)


@needs_nb
def test_neurobench_metrics_equal_ours_on_the_densified_ticket() -> None:
    net, loader = tiny_ticket()
    nb = run_neurobench(net, loader)
    ours = neurobench_view(estimate_energy(net, loader))
    ops = nb["SynapticOperations"]
    assert ops["Effective_ACs"] == pytest.approx(ours["effective_acs"], rel=1e-12)
    assert ops["Effective_MACs"] == pytest.approx(ours["effective_macs"], rel=1e-12)
    assert nb["ActivationSparsity"] == pytest.approx(ours["activation_sparsity"], rel=1e-12)
    # NeuroBench's "Dense" leaves out padded taps, as ours; the paper's FLOPs include them.
    assert ops["Dense"] == pytest.approx(ours["dense"], rel=1e-12)
    assert ours["dense"] < ours["added"]["dense_flops"]
    assert nb["ConnectionSparsity"] == pytest.approx(0.4, abs=1e-3)  # pa = 0.4, baked
    dense = create_model("vgg9", img_size=8, timesteps=2)
    assert nb["ParameterCount"] == sum(p.numel() for p in dense.parameters())


@needs_nb
def test_neurobench_needs_the_baked_ticket() -> None:
    # Unbaked, NeuroBench reads the layers' dense frozen weights and counts the scores
    # too: the connection sparsity and the footprint are wrong (the report).
    net, loader = tiny_ticket()
    raw = run_neurobench(net, loader, bake=False)
    baked = run_neurobench(net, loader)
    assert raw["Footprint"] > baked["Footprint"]
    assert baked["ConnectionSparsity"] == pytest.approx(0.4, abs=1e-3)
    # The user's model is untouched.
    assert any(type(m).__name__.startswith("Subnet") for m in net.modules())


def test_missing_neurobench_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import spikelottery.energy.neurobench as adapter

    monkeypatch.setattr(adapter, "optional_import", lambda name: None)
    with pytest.raises(ImportError, match=r"spikelottery\[neurobench\]"):
        adapter.neurobench_model(nn.Linear(2, 2))


@needs_nb
def test_neurobench_empty_loader() -> None:
    net, _ = tiny_ticket()
    empty = DataLoader(TensorDataset(torch.zeros(0, 3, 8, 8), torch.zeros(0)), batch_size=2)
    with pytest.raises(ValueError, match="loader is empty"):
        run_neurobench(net, empty)
