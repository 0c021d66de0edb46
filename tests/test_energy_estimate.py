"""End-to-end tests of ``estimate_energy`` (``energy/_estimate.py``): whole networks by hand
count, weight density, and the cross-check with SpikingJelly's synaptic-op counter.

SpikingJelly is an optional extra: the tests that use it are marked ``needs_sj`` and
skipped one by one when it is missing.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from spikelottery._compat import optional_import
from spikelottery.energy import count_ops, estimate_energy
from spikelottery.layers import SubnetConv, SubnetLinear
from spikelottery.models import create_model

sj_layer = optional_import("spikingjelly.activation_based.layer")
sj_neuron = optional_import("spikingjelly.activation_based.neuron")
sj_op_counter = optional_import("spikingjelly.activation_based.op_counter")
needs_sj = pytest.mark.skipif(
    sj_layer is None or sj_neuron is None or sj_op_counter is None,
    reason="needs SpikingJelly 2.0 (pip install spikelottery[spikingjelly])",
)

# ----------------------------------------------------------------------------- hand counts

VGG9_CONFIG = (64, 64, "A", 128, 128, "A", 256, 256, 256, "A")


def vgg9_hand_count(
    size: int = 32, in_channels: int = 3, hidden: int = 128, classes: int = 10
) -> int:
    """64C3-64C3-AP2-128C3-128C3-AP2-256C3-256C3-256C3-AP2-FC128-FC10, 3x3 convs, padding 1."""
    total, channels = 0, in_channels
    for item in VGG9_CONFIG:
        if item == "A":
            size //= 2
        else:
            total += size * size * channels * item * 9
            channels = item
    return total + channels * size * size * hidden + hidden * classes


def resnet19_hand_count(size: int = 32) -> int:
    """Stem 3->64 conv3; BasicBlocks [3, 3, 2] at 128/256/512 (strides 1, 2, 2); FC256; FC10.

    A BasicBlock is conv3x3(stride) + conv3x3, plus a 1x1 conv shortcut (with the stride)
    where the shape changes: the first block of every stage (64 -> 128 changes channels).
    """
    total = size * size * 3 * 64 * 9
    channels = 64
    for width, blocks, stride in ((128, 3, 1), (256, 3, 2), (512, 2, 2)):
        for i in range(blocks):
            s = stride if i == 0 else 1
            size //= s
            total += size * size * channels * width * 9 + size * size * width * width * 9
            if s != 1 or channels != width:
                total += size * size * channels * width
            channels = width
    return total + 512 * 256 + 256 * 10


def local_vgg9() -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = 3
    for item in VGG9_CONFIG:
        if item == "A":
            layers.append(nn.AvgPool2d(2))
        else:
            layers += [
                nn.Conv2d(channels, item, 3, padding=1, bias=False),
                nn.BatchNorm2d(item),
                nn.ReLU(),
            ]
            channels = item
    layers += [nn.Flatten(), nn.Linear(4096, 128), nn.ReLU(), nn.Linear(128, 10)]
    return nn.Sequential(*layers)


def test_local_vgg9_is_191m_macs_and_0879_mj() -> None:
    hand = vgg9_hand_count()
    assert hand == 191_038_720
    report = estimate_energy(local_vgg9(), torch.rand(1, 3, 32, 32))
    assert report.macs == hand
    assert [r.kind for r in report.rows] == ["conv"] * 7 + ["linear"] * 2
    assert report.rows[0].macs == 32 * 32 * 3 * 64 * 9
    assert report.rows[-2].macs == 4096 * 128
    assert report.ann_mj == pytest.approx(hand * 4.6e-9, rel=1e-12)
    assert round(report.ann_mj, 3) == 0.879
    assert report.timesteps == 1


def test_zoo_vgg9_mac_count() -> None:
    model = create_model("vgg9", neuron_kwargs={"backend": "eager"})
    x, y = torch.rand(3, 3, 32, 32), torch.arange(3)
    report = estimate_energy(model, (x, y))
    assert report.macs == vgg9_hand_count()
    assert report.timesteps == 4
    assert all(r.steps == 4 for r in report.rows)


def test_zoo_resnet19_mac_count() -> None:
    model = create_model("resnet19", spiking=False)
    hand = resnet19_hand_count()
    assert hand == 2_216_495_616
    report = estimate_energy(model, torch.rand(1, 3, 32, 32))
    assert report.macs == hand
    assert (
        sum(r.kind == "conv" for r in report.rows) == 1 + 2 * 8 + 3
    )  # stem, 8 blocks, 3 shortcuts


# ----------------------------------------------------------------------------- density


class Spike(nn.Module):
    """A stateless Heaviside neuron: spikes where the input is positive."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x > 0).float()


@needs_sj
def test_density_scaling_halves_sops_at_pa_half() -> None:
    assert sj_layer is not None
    # Spikes -> SubnetLinear (pa=0.5) and a multi-step SubnetConv (pa=0.5) on [T, B, C, H, W].
    t, b = 2, 3
    fc = nn.Sequential(nn.Linear(32, 64), Spike(), SubnetLinear(64, 32, pa=0.5))
    conv = nn.Sequential(
        sj_layer.Conv2d(2, 4, 1, step_mode="m"), Spike(), SubnetConv(4, 6, 3, padding=1, pa=0.5)
    )
    for model, x in ((fc, torch.randn(b, 32)), (conv, torch.randn(t, b, 2, 5, 5))):
        dense = estimate_energy(model, x, batch_size=b)
        scaled = estimate_energy(model, x, batch_size=b, density_scaling=True)
        row_d, row_s = dense.rows[1], scaled.rows[1]
        assert row_d.binary and row_d.op == "AC" and row_d.ops > 0
        assert row_s.density == 0.5 and row_d.density == 0.5  # measured either way
        assert row_s.ops == pytest.approx(row_d.ops / 2)  # the SOPs halve
        assert row_s.ann_pj == pytest.approx(row_d.ann_pj / 2)
        assert row_s.macs == row_d.macs  # the MAC column stays the dense count
    assert scaled.timesteps == t


# ----------------------------------------------------------------------------- SpikingJelly cross-check


def sj_synops(model: nn.Module, x: torch.Tensor) -> int:
    assert sj_op_counter is not None
    counter = sj_op_counter.SynOpCounter()
    with torch.no_grad(), sj_op_counter.DispatchCounterMode([counter]):
        model(x)
    return counter.get_total()


@needs_sj
def test_sops_equal_spikingjelly_synops_on_1x1_conv() -> None:
    assert sj_layer is not None
    conv = sj_layer.Conv2d(6, 5, 1, bias=False)
    x = torch.bernoulli(torch.full((3, 6, 7, 7), 0.2))
    (c,) = count_ops(conv, x)
    ours = c.rate * c.steps * c.macs * 3  # per sample times B
    assert ours == pytest.approx(sj_synops(conv, x), rel=1e-12)


@needs_sj
def test_sops_near_spikingjelly_on_3x3_conv() -> None:
    # Without padding every tap reads a real input; the exact count differs from
    # fr * T * FLOPs only by how the spikes happen to fall near the border.
    conv = nn.Conv2d(4, 8, 3, bias=False)
    x = torch.bernoulli(torch.full((2, 4, 24, 24), 0.3))
    (c,) = count_ops(conv, x)
    assert c.rate * c.macs * 2 == pytest.approx(sj_synops(conv, x), rel=0.03)
    # With zero padding the paper's FLOPs include the padded taps, which SpikingJelly skips:
    # on an all-ones input the ratio is exactly the fraction of taps inside the image.
    conv = nn.Conv2d(4, 8, 3, padding=1, bias=False)
    ones = torch.ones(1, 4, 8, 8)
    (c,) = count_ops(conv, ones)
    inside = (3 * 8 - 2) ** 2 / (9 * 8 * 8)
    assert c.rate == 1.0
    assert sj_synops(conv, ones) == pytest.approx(c.macs * inside, rel=1e-12)


@needs_sj
def test_sj_multistep_net_matches_spikingjelly_synops() -> None:
    assert sj_layer is not None and sj_neuron is not None
    t, b = 4, 2
    net = nn.Sequential(
        sj_layer.Conv2d(2, 8, 1, bias=False, step_mode="m"),
        sj_neuron.LIFNode(tau=2.0, step_mode="m"),
        sj_layer.Conv2d(8, 8, 1, bias=False, step_mode="m"),
        sj_neuron.LIFNode(tau=2.0, step_mode="m"),
        sj_layer.Flatten(step_mode="m"),
        sj_layer.Linear(8 * 5 * 5, 10, step_mode="m"),
    )
    with torch.no_grad():
        for m in net:
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.abs_().mul_(3)  # large positive weights: the neurons fire
    x = 4 * torch.rand(t, b, 2, 5, 5)
    report = estimate_energy(net, x, timesteps=t)  # 5-D x with x.shape[0] == T: [T, B, ...]
    assert report.samples == b
    assert [r.name for r in report.rows] == ["0", "2", "5"]
    assert [r.steps for r in report.rows] == [t, t, t]
    assert [r.binary for r in report.rows] == [False, True, True]
    assert 0 < report.rows[1].rate < 1 and 0 < report.rows[2].rate < 1
    # estimate_energy reset the neurons afterwards, so this run starts from rest too.
    reference = sj_synops(net, x)
    ours = sum(r.ops for r in report.rows if r.op == "AC") * b
    assert ours == pytest.approx(reference, rel=1e-9)


# --- from test_review_energy_inputs.py: Defects found by an independent review of the energy estimator and of bad inputs.


T, B = 4, 3


class _GradedNet(nn.Module):
    """Conv -> spikes -> sum of two spike maps (a graded input, as in SEW-ResNet) -> conv."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, 4, 3, padding=1)
        self.conv = nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [T, B, C, H, W]
        h = self.stem(x.flatten(0, 1))
        graded = (h > 0).float() + (h > 0.3).float()  # values 0, 1, 2
        return self.conv(graded)


def test_per_step_view_adds_up_to_the_exact_count_of_a_graded_input() -> None:
    # The exact view prices a graded input by its values (a sum of k spikes costs k ACs
    # per reached weight); its per-step split must split that same figure, not the
    # count of non-zero inputs.
    torch.manual_seed(0)
    x = torch.randn(T, B, 2, 6, 6)
    report = estimate_energy(_GradedNet(), (x, torch.zeros(B)), timesteps=T)
    row = report.rows[1]
    assert not row.binary and row.exact_op == "AC"
    assert len(row.per_step) == T
    assert math.fsum(row.per_step) == pytest.approx(row.exact_ops, rel=1e-9)
    # Each step by hand: conv of |input| with the kept-weight indicator.
    net = _GradedNet()
    torch.manual_seed(0)
    net = _GradedNet()
    with torch.no_grad():
        h = net.stem(x.flatten(0, 1))
        graded = ((h > 0).float() + (h > 0.3).float()).double()
        per = torch.nn.functional.conv2d(graded, (net.conv.weight != 0).double(), padding=1)
        by_step = per.flatten(1).sum(1).reshape(T, B).sum(1) / B
    report = estimate_energy(net, (x, torch.zeros(B)), timesteps=T)
    assert report.rows[1].per_step == pytest.approx(tuple(by_step.tolist()), rel=1e-9)


class _Shared(nn.Module):
    """A multi-step network that applies one conv twice per time step (weight tying)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, 4, 3, padding=1)
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 36, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [T, B, C, H, W]
        t, b = x.shape[:2]
        h = (self.stem(x.flatten(0, 1)) > 0).float()
        h = (self.conv(h) > 0).float()
        h = (self.conv(h) > 0).float()
        return self.fc(h.flatten(1)).reshape(t, b, -1).mean(0)


def test_a_module_applied_twice_per_step_does_not_double_t_nor_halve_the_ann() -> None:
    torch.manual_seed(0)
    net, x = _Shared(), torch.rand(T, B, 2, 6, 6)
    inferred = estimate_energy(net, (x, torch.zeros(B)))
    given = estimate_energy(net, (x, torch.zeros(B)), timesteps=T)
    assert inferred.timesteps == T
    dense_ann = 36 * (4 * 2 * 9 + 2 * 4 * 4 * 9) + 4 * 36 * 3  # the shared conv runs twice
    for report in (inferred, given):
        assert report.macs == dense_ann
        # Event frames (x differs over T): the ANN reference sees each of the T frames.
        assert report.ann_mj == pytest.approx(4.6 * dense_ann * T / 1e9)
        shared = next(r for r in report.rows if r.name == "conv")
        assert shared.steps == T and shared.macs == 2 * 36 * 4 * 4 * 9
        assert len(shared.per_step) == T and all(v > 0 for v in shared.per_step)
    assert inferred.snn_mj == pytest.approx(given.snn_mj)
    assert inferred.exact_snn_mj == pytest.approx(given.exact_snn_mj)


def test_a_dict_as_inputs_is_named() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(TypeError, match="inputs.*dict"):
        estimate_energy(net, {"x": torch.rand(2, 4)})


@pytest.mark.parametrize("target", ["results.json", "checkpoint.pt", "other.safetensors"])
def test_export_refuses_to_overwrite_a_file_it_did_not_write(
    tmp_path: Path, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # `export --out run/results.json` used to replace the run's results with a
    # safetensors file (and a ticket with a dense state_dict), silently.
    import spikelottery as sl
    from spikelottery.cli import main

    ticket = sl.save_ticket(sl.sparsify(nn.Sequential(nn.Linear(4, 3)), pa=0.5), tmp_path / "t.st")
    victim = tmp_path / target
    if target.endswith(".safetensors"):
        sl.save_ticket(sl.sparsify(nn.Sequential(nn.Linear(4, 3)), pa=0.5), victim)
    else:
        victim.write_bytes(b'{"accuracy": 0.9}')
    before = victim.read_bytes()
    with pytest.raises(SystemExit) as exc:
        main(["export", str(ticket), "--to", "dense", "--out", str(victim)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--out" in err and target in err and "Traceback" not in err
    assert victim.read_bytes() == before


def test_export_out_with_a_trailing_slash_is_a_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import spikelottery as sl
    from spikelottery.cli import main

    ticket = sl.save_ticket(sl.sparsify(nn.Sequential(nn.Linear(4, 3)), pa=0.5), tmp_path / "t.st")
    with pytest.raises(SystemExit) as exc:
        main(["export", str(ticket), "--to", "onnx", "--out", f"{tmp_path}/new.onnx.d/"])
    assert exc.value.code == 2
    assert "folder" in capsys.readouterr().err
    assert not (tmp_path / "new.onnx.d").exists()


@pytest.mark.parametrize("bad", [5, b"ticket.safetensors", 1.5])
def test_save_and_load_ticket_name_a_path_of_the_wrong_type(bad: object) -> None:
    import spikelottery as sl

    ticket = sl.sparsify(nn.Sequential(nn.Linear(4, 3)), pa=0.5)
    with pytest.raises(TypeError, match="path"):
        sl.save_ticket(ticket, bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="path"):
        sl.load_ticket(ticket, bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="path"):
        sl.read_ticket_info(bad)  # type: ignore[arg-type]


def test_load_ticket_from_a_folder_says_so(tmp_path: Path) -> None:
    import spikelottery as sl

    ticket = sl.sparsify(nn.Sequential(nn.Linear(4, 3)), pa=0.5)
    with pytest.raises(IsADirectoryError, match="is a folder"):
        sl.load_ticket(ticket, tmp_path)
