"""Event data in results.json and the report (issue 24, item 3): one ANN-reference
convention for SNN and ANN runs, distinct names, no SNN views of an ANN run, and runs
recorded before the change still reported under their old names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from spikelottery.energy import estimate_energy
from spikelottery.engine.evaluation import measure_energy
from spikelottery.neuron import LIFNeuron
from spikelottery.report import collect_runs
from spikelottery.report.tables import summary_rows, to_markdown

T, B = 4, 6


class Net(nn.Module):
    """conv -> activation -> linear on ``[B, T, C, H, W]`` event frames (batch first)."""

    def __init__(self, spiking: bool) -> None:
        super().__init__()
        self.spiking = spiking
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.act = LIFNeuron() if spiking else nn.ReLU()
        self.fc = nn.Linear(4 * 16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = x.transpose(0, 1)  # [T, B, ...]
        t, b = seq.shape[:2]
        h = self.conv(seq.flatten(0, 1)).reshape(t, b, 4, 4, 4)
        return self.fc(self.act(h).flatten(2)).mean(0)


def _measure(net: nn.Module, x: torch.Tensor) -> dict:
    loader = [(x, torch.zeros(x.shape[0], dtype=torch.long))]
    out = measure_energy(net, loader, device=torch.device("cpu"), batches=1, spiking=net.spiking)
    assert out is not None
    return out


def test_snn_and_ann_runs_share_one_ann_reference_on_event_frames() -> None:
    torch.manual_seed(0)
    events = (torch.rand(B, T, 2, 4, 4) < 0.1).float()
    snn, ann = Net(True), Net(False)
    ann.load_state_dict(snn.state_dict())
    s, a = _measure(snn, events), _measure(ann, events)
    dense = 4 * 16 * 2 * 9 + 64 * 3  # MACs per step
    # The ANN reference sees every one of the T frames, in both runs.
    assert s["ann_reference_mj"] == pytest.approx(4.6 * dense * T / 1e9)
    assert a["energy_mj"] == pytest.approx(s["ann_reference_mj"])
    assert a["ann_reference_mj"] == a["energy_mj"]
    # The SNN's first layer reads binary events: spikes on every step, not one dense MAC pass.
    first = s["report"]["rows"][0]
    assert first["op"] == "AC" and first["exact_op"] == "AC"
    assert s["report"]["frames"] == T
    # An ANN run carries no SNN view of itself.
    assert "views" not in a["report"] and a["report"]["spiking"] is False
    assert not any("snn" in k or "exact" in k for k in a["report"]["totals"])
    assert a["firing_rate"] is None


def test_static_input_keeps_the_papers_single_pass() -> None:
    torch.manual_seed(0)
    image = torch.rand(B, 1, 2, 4, 4).expand(B, T, 2, 4, 4)  # one image repeated over T
    report = estimate_energy(Net(True), (image, torch.zeros(B)))
    assert report.frames == 1 and report.timesteps == T
    assert report.ann_mj == pytest.approx(4.6 * report.macs / 1e9)
    assert report.rows[0].op == "MAC" and report.rows[0].ops == report.rows[0].macs


def _results(folder: Path, spiking: bool, **energy: float) -> None:
    folder.mkdir(parents=True)
    config = {"model": "vgg_small", "dataset": "digits_dvs", "mode": "mp", "spiking": spiking}
    config.update({"pa": 0.4, "pb": 0.0, "seed": 0, "timesteps": 4, "epochs": 1})
    data = {"accuracy": 0.9, "kept_fraction": 0.6, "firing_rate": 0.1, "seconds": 1.0}
    data.update({"config": config, "history": [], "energy_sparse_mj": 1e-3, **energy})
    (folder / "results.json").write_text(json.dumps(data))


def test_old_and_new_results_report_under_their_own_names(tmp_path: Path) -> None:
    _results(tmp_path / "old", True, energy_mj=2e-3, ann_energy_mj=1e-2)
    _results(tmp_path / "new", True, energy_mj=2e-3, ann_reference_mj=4e-2)
    rows = {Path(r["run"]).name: r for r in collect_runs([tmp_path])}
    assert rows["old"]["ann_energy_mj"] == 1e-2 and rows["old"]["ann_reference_mj"] is None
    assert rows["new"]["ann_reference_mj"] == 4e-2 and rows["new"]["ann_energy_mj"] is None
    for name, share in (("old", "20.00"), ("new", "5.00")):
        table = to_markdown(summary_rows([rows[name]], ["pa"]), ["pa"])
        assert share in table.splitlines()[2]
