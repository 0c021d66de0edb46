"""Tests of the energy report (``energy/_report.py``): totals, printing and exports."""

from __future__ import annotations

import csv
import json
import math
import os

import pytest

from spikelottery.energy import (
    E_AC_PJ,
    E_MAC_PJ,
    VIEWS,
    EnergyReport,
    OpCount,
    energy_from_counts,
)


def two_readers() -> EnergyReport:
    """Two layers that read the same spikes at rate 0.5: the first is priced as a MAC."""
    counts = [
        OpCount("first", "linear", "Linear", "64 -> 16", 1024.0, 1.0, 0.5, True, 1.0),
        OpCount("second", "linear", "Linear", "64 -> 16", 1024.0, 1.0, 0.5, True, 1.0),
    ]
    return energy_from_counts(counts, samples=4)


def test_totals() -> None:
    report = two_readers()
    assert report.macs == 2048 and report.sops == 512 and report.snn_macs == 1024
    assert report.snn_mj == pytest.approx((E_MAC_PJ * 1024 + E_AC_PJ * 512) / 1e9)
    assert report.ann_mj == pytest.approx(E_MAC_PJ * 2048 / 1e9)
    assert report.ratio == pytest.approx(report.snn_mj / report.ann_mj)
    assert report.mean_rate == 0.5 and report.timesteps == 1 and report.samples == 4
    assert report.attention_pairs == 0 and len(report.counts) == 2


def test_report_exports(tmp_path: os.PathLike[str]) -> None:
    report = two_readers()
    assert isinstance(report, EnergyReport)
    text = str(report)
    assert "first" in text and "second" in text and "total" in text
    assert "E_ANN" in text and "paper Eq. 3-4" in text
    lines = text.splitlines()
    assert len({len(line) for line in lines[:2]}) == 1  # header as wide as the rule
    md = report.to_markdown()
    # separator, 2 rows, total; then the views: header, separator, 3 views
    assert md.startswith("| layer | kind |") and md.count("\n|") == 9
    d = report.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["totals"]["ann_mj"] == report.ann_mj and d["options"]["attention_order"] == "as_run"
    assert d["rows"][1]["snn_mj"] == report.rows[1].snn_mj
    path = report.to_csv(os.path.join(tmp_path, "energy.csv"))
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["first", "second"]
    assert float(rows[1]["ops"]) == report.rows[1].ops
    assert sorted(os.listdir(tmp_path)) == ["energy.csv"]  # no temp file left behind
    no_spikes = energy_from_counts(
        [OpCount("a", "linear", "Linear", "", 0.0, 1.0, 0.0, False, 1.0)]
    )
    assert math.isnan(no_spikes.ratio) and no_spikes.to_dict()["totals"]["ratio"] is None


def test_printed_table() -> None:
    lines = str(two_readers()).splitlines()
    assert lines[:6] == [
        "layer   kind    shape     MACs/step  T    rate  input  density  op     ops    SNN mJ    ANN mJ  synops  exact mJ",
        "----------------------------------------------------------------------------------------------------------------",
        "first   linear  64 -> 16      1,024  1  0.5000  spike    1.000  MAC  1,024  0.000005  0.000005     n/a  0.000005",
        "second  linear  64 -> 16      1,024  1  0.5000  spike    1.000  AC     512  0.000000  0.000005     n/a  0.000000",
        "----------------------------------------------------------------------------------------------------------------",
        "total                         2,048                                         0.000005  0.000009          0.000005",
    ]
    assert lines[6] == (
        "E_ANN 0.0000 mJ | E_SNN 0.0000 mJ (54.9% of ANN) | MACs/step 2.05k | SOPs 512 | "
        "SNN MACs 1.02k | mean firing rate 0.5000 | T 1 | samples 4"
    )
    # Hand-made counts carry no exact synaptic operations: the exact view uses the formula's.
    assert lines[7].startswith("exact: E_SNN 0.0000 mJ (54.9% of ANN fp32) | synops 512 AC")
    assert "(0/2 layers counted)" in lines[7]
    assert lines[8].startswith("memory parts (mJ): weights ")
    assert lines[9].startswith("view  ") and lines[9].endswith("SNN % of int8")
    assert [line.split("  ")[0] for line in lines[11:14]] == list(VIEWS)
    assert lines[14] == two_readers().conventions() and len(lines) == 15
    assert lines[14].startswith("preset fp32-45nm (Horowitz, ISSCC 2014, 45 nm")


def test_markdown_escapes_pipes() -> None:
    count = OpCount("a", "matmul", "M", "6x6 @ 6x4 | q", 10.0, 2.0, 0.5, True, 1.0)
    md = energy_from_counts([count]).to_markdown()
    assert "6x6 @ 6x4 \\| q" in md
    assert (
        md.splitlines()[1] == "|---|---|---|---:|---:|---:|---|---:|---|---:|---:|---:|---:|---:|"
    )


def test_reprice_keeps_the_measurement() -> None:
    report = two_readers()
    cheap = report.reprice(e_ac=0.03, first_layer_times_t=True)
    assert cheap.counts == report.counts and cheap.samples == report.samples
    assert cheap.options == {**report.options, "e_ac": 0.03, "first_layer_times_t": True}
    assert "e_AC=0.03 pJ" in cheap.conventions() and "counted every step" in cheap.conventions()
    assert cheap.reprice(e_ac=E_AC_PJ, first_layer_times_t=False).snn_mj == report.snn_mj
