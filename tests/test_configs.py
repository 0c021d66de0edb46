"""The shipped SPEC files: each parses, and each run of it is a valid run."""

from __future__ import annotations

import itertools
import re
import tomllib
from pathlib import Path

import pytest

from spikelottery.data import DATASETS
from spikelottery.engine import TrainConfig
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


#: The settings that are the library's and not the paper's (or the paper's, but left to a
#: default): every configs/paper SPEC lists each in its header, so that a reader of the
#: SPEC sees every choice and a new one cannot be dropped silently.
LIBRARY_CHOICES = (
    "lr",
    "weight_lr",
    "schedule",
    "weight_decay",
    "batchnorm",
    "init",
    "scope",
    "surrogate",
    "augment",
    "batch_size",
    "epochs",
    "timesteps",
    "beta",
    "resolution",
    "seed",
)
#: A header entry: ``#   name = value`` (checked against every run) or ``#   name: text``.
ENTRY = re.compile(r"^#   (\w+(?: \w+)?)(?: = (\S+)|:)", re.M)
PAPER_SPECS = sorted((CONFIGS / "paper").glob("*.toml"))


def _header(path: Path) -> str:
    lines = path.read_text().splitlines()
    return "\n".join(itertools.takewhile(lambda line: line.startswith("#") or not line, lines))


@pytest.mark.parametrize("path", PAPER_SPECS, ids=lambda p: p.name)
def test_paper_spec_header_lists_every_library_choice(path: Path, tmp_path: Path) -> None:
    header = _header(path)
    entries = {m.group(1): m.group(2) for m in ENTRY.finditer(header)}
    missing = [name for name in LIBRARY_CHOICES if name not in entries]
    assert not missing, f"{path.name}: the header does not list {missing}"
    assert "REMOVED" in header and "prune_rate" in header  # what pa counts, said once more
    runs = plan_runs(load_spec(path), tmp_path)
    for name, text in entries.items():
        if text is None or name not in TrainConfig.__dataclass_fields__:
            continue
        value = tomllib.loads(f"v = {text}")["v"]
        wrong = {getattr(r.config, name) for r in runs} - {value}
        assert not wrong, f"{path.name}: the header says {name} = {text}, runs use {wrong}"


def test_figures_4_and_9_use_the_papers_p4(tmp_path: Path) -> None:
    # Section IV-C: "we select patch-level pruning ratio P_b = 0.4/0.5 (P.4/P.5)"; the
    # study SPEC of the same figure uses the same value.
    runs = plan_runs(load_spec(CONFIGS / "paper" / "figs_timesteps_decay.toml"), tmp_path)
    assert {r.config.pb for r in runs if r.config.model == "spikformer_tiny"} == {0.4}
    assert {r.config.pa for r in runs} == {0.4}
