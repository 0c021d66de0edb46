"""``report`` on damaged values, partial sweeps and intervals past 100%: named, never silent."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spikelottery.cli import main
from spikelottery.report import make_report, summarize

_CONFIG = {
    "model": "vgg_small",
    "dataset": "digits",
    "mode": "mp",
    "spiking": True,
    "pa": 0.4,
    "method": "mpslt",
    "activations": "keep",
}


def _run(root: Path, name: str, accuracy: object, seed: int, **metrics: object) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    results = {
        "accuracy": accuracy,
        "loss": 0.5,
        "kept_fraction": 0.6,
        "energy_mj": 1e-3,
        "config": {**_CONFIG, "seed": seed, "out": str(folder)},
        "history": [{"epoch": 1, "seconds": 1.0}],
        **metrics,
    }
    # NaN as JSON writes it (Python's json reads it back as float nan)
    (folder / "results.json").write_text(json.dumps(results))
    return folder


@pytest.mark.parametrize("bad", [float("nan"), "0.9", 1e308, -5, None, True])
def test_a_damaged_accuracy_is_left_out_and_named(tmp_path: Path, bad: object) -> None:
    _run(tmp_path / "runs", "a", 0.9, 0)
    damaged = _run(tmp_path / "runs", "b", bad, 1)
    _run(tmp_path / "runs", "c", 0.8, 2)
    report = make_report([tmp_path / "runs"], tmp_path / "report", figures=False)
    (row,) = report.summary
    assert row["n"] == 2 and row["accuracy_mean"] == pytest.approx(0.85)
    assert [r["status"] for r in report.unfinished] == ["invalid"]
    named = [n for n in report.notes if str(damaged) in n]
    assert named and "accuracy" in named[0], report.notes
    assert "invalid" in report.markdown()


def test_a_nan_loss_is_named_and_left_out_of_its_mean(tmp_path: Path) -> None:
    _run(tmp_path / "runs", "a", 0.9, 0, loss=float("nan"))
    _run(tmp_path / "runs", "b", 0.8, 1)
    report = make_report([tmp_path / "runs"], tmp_path / "report", figures=False)
    assert report.summary[0]["n"] == 2
    assert any("loss=nan" in n for n in report.notes), report.notes


def test_huge_energies_do_not_overflow(tmp_path: Path) -> None:
    _run(tmp_path / "runs", "a", 0.9, 0, energy_mj=1e308)
    _run(tmp_path / "runs", "b", 0.8, 1, energy_mj=1.7e308)
    report = make_report([tmp_path / "runs"], tmp_path / "report", figures=False)
    assert report.summary[0]["energy_mj_mean"] == pytest.approx(1.35e308)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-1.7e308, 1.7e308), min_size=2, max_size=6))
def test_summarize_never_overflows(values: list[float]) -> None:
    s = summarize(values)
    assert min(values) <= s.mean <= max(values) or math.isclose(s.mean, min(values))
    assert s.std >= 0 and not math.isnan(s.std)


def test_an_interval_past_100_is_clipped_and_said(tmp_path: Path) -> None:
    for seed, acc in enumerate([0.99, 1.0, 0.995]):
        _run(tmp_path / "runs", f"r{seed}", acc, seed)
    report = make_report([tmp_path / "runs"], tmp_path / "report", figures=False)
    (row,) = report.summary
    raw = summarize([0.99, 1.0, 0.995])
    assert raw.ci_high > 1.0  # the t interval passes 100%...
    assert row["accuracy_ci_high"] == 1.0 and row["accuracy_ci_clipped"] is True  # ...clipped
    md = report.markdown()
    assert "100.00] (clipped)" in md and "passed 0% or 100%" in md


def test_a_partial_sweep_is_summarised_not_listed_run_by_run(tmp_path: Path) -> None:
    _run(tmp_path / "runs", "done", 0.9, 0)
    for i in range(43):
        folder = tmp_path / "runs" / f"todo{i:02d}"
        folder.mkdir()
        (folder / "settings.json").write_text(json.dumps({"config": {**_CONFIG, "seed": i + 1}}))
        if i == 0:
            (folder / "failed.json").write_text(json.dumps({"error": "E", "message": "boom"}))
    report = make_report([tmp_path / "runs"], tmp_path / "report", figures=False)
    assert len(report.unfinished) == 43
    section = report.markdown().split("## Runs not in the summary")[1]
    assert "43 runs: 1 failed" in section and "42 not started" in section
    assert "E: boom" in section and "... and 37 more" in section
    assert len([line for line in section.splitlines() if line.startswith("- ")]) <= 8


def test_report_help_says_95_percent(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["report", "--help"])
    out = capsys.readouterr().out
    assert "%%" not in out and re.search(r"95%\s+CI", out)
