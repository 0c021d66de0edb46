"""``report`` flags runs it averages or pairs across environments (torch, device, threads...)."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from spikelottery.cli import main
from spikelottery.report import make_report
from spikelottery.report.environment import NOT_RECORDED, check_environments

ENV = {
    "spikelottery": "0.1.0",
    "torch": "2.14.1",
    "numpy": "2.4.6",
    "python": "3.11.7",
    "platform": "Linux x86_64",
    "cpu": "Intel(R) Xeon(R) Processor",
    "device": "cpu",
    "cuda": None,
    "cudnn": None,
    "threads": 1,
    "deterministic": False,
    "cudnn_deterministic": False,
    "cudnn_benchmark": False,
}


def _write(root: Path, method: str, seed: int, env: dict[str, Any] | None, pa: float = 0.4) -> None:
    folder = root / f"{method}-{pa}-{seed}"
    folder.mkdir(parents=True)
    spiking = method.startswith("mps")
    config = {
        "model": "vgg_tiny",
        "dataset": "digits",
        "method": method,
        "activations": "keep" if spiking else "binary",
        "mode": "mp",
        "spiking": spiking,
        "pa": pa,
        "seed": seed,
        "out": str(folder),
    }
    data: dict[str, Any] = {
        "accuracy": 0.8 + 0.01 * seed + (0.02 if spiking else 0.0),
        "kept_fraction": 1 - pa,
        "seconds": 1.0,
        "config": config,
        "history": [{"epoch": 1, "seconds": 1.0}],
    }
    if env is not None:
        data["environment"] = env
    (folder / "results.json").write_text(json.dumps(data))


def test_one_environment_is_stated_not_warned(tmp_path: Path) -> None:
    for method in ("mpslt", "mplt"):
        for seed in range(3):
            _write(tmp_path / "runs", method, seed, ENV)
    report = make_report([tmp_path / "runs"], tmp_path / "report", figures=False)
    assert report.environment.warnings == []
    md = (tmp_path / "report" / "summary.md").read_text()
    assert "## Environment" in md and "6 runs: spikelottery 0.1.0, torch 2.14.1" in md
    with open(tmp_path / "report" / "runs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["env_torch"] for r in rows} == {"2.14.1"} and {r["env_threads"] for r in rows} == {
        "1"
    }


def test_paired_runs_of_other_torch_and_threads_are_flagged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Seed 2 of mpslt ran elsewhere: another torch and two threads.
    for method in ("mpslt", "mplt"):
        for seed in range(3):
            other = method == "mpslt" and seed == 2
            env = ENV | {"torch": "2.13.0", "threads": 2} if other else ENV
            _write(tmp_path / "runs", method, seed, env)
    with caplog.at_level(logging.WARNING, logger="spikelottery.report"):
        report = make_report(
            [tmp_path / "runs"], tmp_path / "report", compare=("mpslt", "mplt"), figures=False
        )
    warned = report.environment.warnings
    assert [w.split()[0] for w in warned] == ["torch", "threads"]
    assert warned[0] == (
        "torch differs inside 1 of 2 averaged groups (e.g. method=mpslt) and 1 of 1 paired "
        "groups (e.g. mpslt vs mplt): 2.13.0 (1 run), 2.14.1 (5 runs)"
    )
    assert "1 (5 runs), 2 (1 run)" in warned[1]
    md = (tmp_path / "report" / "summary.md").read_text()
    assert "## Environment" in md and "- torch differs inside" in md
    assert [r.getMessage() for r in caplog.records] == [f"report: {w}" for w in warned]


def test_differences_between_groups_are_not_warnings(tmp_path: Path) -> None:
    # Each pa ran on its own machine: nothing averaged or paired crosses machines.
    for pa, device in ((0.2, "cpu"), (0.4, "NVIDIA H100")):
        for method in ("mpslt", "mplt"):
            for seed in range(2):
                _write(tmp_path / "runs", method, seed, ENV | {"device": device}, pa=pa)
    report = make_report(
        [tmp_path / "runs"], tmp_path / "report", compare=("mpslt", "mplt"), figures=False
    )
    assert report.environment.warnings == []
    assert report.environment.common is not None
    assert report.environment.common.endswith("differing between (not inside) groups: device")


def test_older_results_without_environment_are_read_and_noted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for seed in range(2):
        _write(tmp_path / "runs", "mpslt", seed, None)
        _write(tmp_path / "runs", "mplt", seed, ENV if seed == 0 else None)
    code = main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "r"), "--no-figures"])
    assert code == 0
    captured = capsys.readouterr()
    assert f"environment {NOT_RECORDED} for 3 of 4 runs" in captured.out  # summary.md
    assert f"environment {NOT_RECORDED} for 3 of 4 runs" in captured.err  # the warning
    md = (tmp_path / "r" / "summary.md").read_text()
    assert "## Summary over seeds" in md and f"environment {NOT_RECORDED}" in md


def test_check_environments_on_rows() -> None:
    rows = [
        {"method": "a", "seed": s, "environment": ENV | {"device": d}}
        for s, d in [(0, "cpu"), (1, "cpu"), (2, "NVIDIA H100")]
    ]
    check = check_environments(rows, ["method"])
    assert check.warnings == [
        "device differs inside 1 of 1 averaged groups (e.g. method=a): NVIDIA H100 (1 run), "
        "cpu (2 runs)"
    ]
    assert check.lines() == check.warnings
    assert check_environments(rows[:2], ["method"]).lines()[0].startswith("2 runs: ")
    # A field that an older record lacks is not a difference (only what both recorded is).
    older = {k: v for k, v in ENV.items() if k != "cpu_capability"}
    mixed = [
        {"method": "a", "seed": 0, "environment": ENV | {"cpu_capability": "AVX512"}},
        {"method": "a", "seed": 1, "environment": older},
    ]
    check = check_environments(mixed, ["method"])
    assert check.warnings == [] and check.common is not None
    assert "cpu_capability AVX512" in check.common
