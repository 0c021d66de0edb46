"""The README's main job, run in full: the binarised SNN ticket must reach 95% on the digits.

This is the one long test (about 90 s on 2 cores); it runs the same code path as
``spikelottery demo`` with its default budget and checks the figures the README promises.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from spikelottery.cli import main


@pytest.mark.slow
def test_demo_meets_the_bar(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Run it as a user would: compiled LIF kernels, both cores (conftest pins one thread).
    monkeypatch.setenv("SPIKELOTTERY_COMPILE", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    out = tmp_path / "demo"
    try:
        assert main(["demo", "--out", str(out), "--no-progress"]) in (0, None)
    finally:
        torch.set_num_threads(threads)
    records = json.loads((out / "results.json").read_text())
    by_mode = {r["mode"]: r for r in records}
    assert set(by_mode) == {"dense", "lt", "mp"}
    assert by_mode["mp"]["accuracy"] >= 0.95, records
    assert by_mode["lt"]["accuracy"] >= 0.95, records
    assert abs(by_mode["mp"]["kept_fraction"] - 0.6) < 1e-3
    assert by_mode["dense"]["kept_fraction"] == 1.0
    for r in records:
        assert {"method", "accuracy", "kept_fraction", "energy_mj", "seconds"} <= set(r)
        assert r["energy_mj"] > 0
    table = capsys.readouterr().out
    assert "binarised SNN ticket (mp)" in table
