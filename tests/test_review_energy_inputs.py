"""Defects found by an independent review of the energy estimator and of bad inputs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from spikelottery.energy import estimate_energy

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
