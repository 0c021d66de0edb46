"""The shipped SPEC files: each parses, and each run of it is a valid run."""

from __future__ import annotations

from pathlib import Path

import pytest

from spikelottery.data import DATASETS
from spikelottery.sweep import load_spec, plan_runs

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SPECS = sorted(CONFIGS.rglob("*.toml"))


def test_configs_are_shipped() -> None:
    names = {p.relative_to(CONFIGS).as_posix() for p in SPECS}
    assert {"paper/table1.toml", "paper/table2.toml", "digits/reward1.toml"} <= names


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.relative_to(CONFIGS).as_posix())
def test_spec_plans(path: Path, tmp_path: Path) -> None:
    spec = load_spec(path)
    runs = plan_runs(spec, tmp_path)
    assert runs and spec.name and spec.description
    assert all(r.status == "pending" for r in runs)
    if path.parent.name == "digits":  # runs on a CPU with the embedded data, no download
        assert all(r.config.dataset.startswith("digits") for r in runs)
        assert len(runs) <= 64


def test_table1_is_the_paper_grid(tmp_path: Path) -> None:
    runs = plan_runs(load_spec(CONFIGS / "paper" / "table1.toml"), tmp_path)
    cells = {(r.config.model, r.config.dataset, r.config.method) for r in runs}
    assert len(cells) == 2 * 4 * 6 and len(runs) == 3 * len(cells)
    assert {r.config.dataset for r in runs} == {d for d in DATASETS if not d.startswith("digits")}
    assert {r.config.pa for r in runs} == {0.4}
