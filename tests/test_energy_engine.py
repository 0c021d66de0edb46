"""Energy where a user sees it: ``results.json`` (``measure_energy``), the demo table."""

from __future__ import annotations

import json

import torch
from torch import nn

from spikelottery.demo import format_table
from spikelottery.engine.evaluation import measure_energy
from spikelottery.neuron import LIFNeuron


def test_results_energy_carries_the_per_layer_table() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), LIFNeuron(step_mode="s"), nn.Linear(8, 3))
    loader = [(torch.rand(4, 1, 4, 4), torch.zeros(4, dtype=torch.long))]
    out = measure_energy(net, loader, device=torch.device("cpu"), batches=1, spiking=True)
    assert out is not None
    report = out["report"]
    json.dumps(report, allow_nan=False)
    assert [r["name"] for r in report["rows"]] == ["1", "3"]
    assert {"exact_ops", "exact_mj", "memory_pj", "per_step", "snn_mj", "ann_mj"} <= set(
        report["rows"][0]
    )
    assert [v["view"] for v in report["views"]] == [
        "paper formula",
        "exact synaptic ops",
        "memory-aware",
    ]
    assert report["conventions"].startswith("preset fp32-45nm")
    assert out["ann_reference_mj"] == report["totals"]["ann_mj"]


def test_demo_table_shows_the_ann_and_the_percentage() -> None:
    record = {
        "method": "ticket",
        "accuracy": 0.9,
        "kept_fraction": 0.6,
        "energy_mj": 0.02,
        "energy_sparse_mj": 0.01,
        "ann_energy_mj": 0.1,
        "seconds": 3.0,
    }
    header, _, row = format_table([record]).splitlines()
    assert "ANN (mJ)" in header and "% of ANN" in header
    assert "0.100000" in row and "20.0%" in row
    missing = format_table([{**record, "ann_energy_mj": None}]).splitlines()[2]
    assert missing.count("n/a") == 2
