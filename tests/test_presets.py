"""Method presets: the paper's columns as run settings, recorded, and refused when contradicted."""

from __future__ import annotations

import pytest

from spikelottery.engine import ConfigError, TrainConfig
from spikelottery.engine.presets import METHODS, preset_table, resolve_method
from spikelottery.report import infer_method

PAPER = {
    "ann": (False, "dense", None, 0.0),
    "snn": (True, "dense", None, 0.0),
    "lt": (False, "lt", None, 0.0),
    "slt": (True, "lt", None, 0.0),
    "mplt": (False, "mp", None, 0.0),
    "mpslt": (True, "mp", None, 0.0),
    "pepsp-lt": (False, "mp", "patch_embed", 0.0),
    "pepsp-slt": (True, "mp", "patch_embed", 0.0),
    "multisp-lt": (False, "mp", "patch_embed", 0.3),
    "multisp-slt": (True, "mp", "patch_embed", 0.3),
}


@pytest.mark.parametrize("name", list(PAPER))
def test_paper_presets(name: str) -> None:
    cfg = TrainConfig.for_method(name, out=None)
    assert (cfg.spiking, cfg.mode, cfg.filter, cfg.pb) == PAPER[name]
    assert cfg.method == name
    assert infer_method(cfg.to_dict()) == name
    assert infer_method({**cfg.to_dict(), "method": None}) == name  # runs made without a preset
    assert f"`{name}`" in preset_table()


def test_every_preset_builds() -> None:
    for name in METHODS:
        assert TrainConfig.for_method(name, out=None).method == name


def test_a_sweep_may_vary_pb_of_multisp() -> None:
    assert TrainConfig.for_method("multisp-slt", pb=0.6, out=None).pb == 0.6


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"method": "lt", "mode": "mp"}, "mode"),
        ({"method": "mpslt", "spiking": False}, "spiking"),
        ({"method": "pepsp-slt", "filter": "conv"}, "filter"),
        ({"method": "mpslt", "pb": 0.3}, "pb"),
        ({"method": "multisp-lt", "pb": 0.0}, "pb"),
        ({"method": "best"}, "method"),
    ],
)
def test_contradictions_are_refused(values: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict({**values, "out": None})
    assert info.value.field == field


def test_constructor_checks_the_method() -> None:
    with pytest.raises(ConfigError, match="for_method"):
        TrainConfig(method="slt", out=None)  # mode defaults to "mp"
    assert TrainConfig(method="MPSLT", out=None).method == "mpslt"


def test_resolve_keeps_explicit_defaults() -> None:
    assert resolve_method({"pa": 0.2}) == {"pa": 0.2}
    assert resolve_method({"method": "multisp-lt", "pb": 0.5})["pb"] == 0.5


def test_cli_method_flag(tmp_path, capsys) -> None:
    from spikelottery.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--method", "slt", "--mode", "mp", "--out", str(tmp_path / "x")])
    assert exit_info.value.code == 2
    assert "--mode" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_docs_preset_table_is_current() -> None:
    from pathlib import Path

    docs = Path(__file__).resolve().parents[1] / "docs" / "experiments.md"
    assert preset_table() in docs.read_text(encoding="utf-8"), (
        "docs/experiments.md: paste spikelottery.engine.presets.preset_table() again"
    )


# --- from test_review_sweeps.py: Review of the sweeps, reports and method presets: defects found by exercising them.


@pytest.mark.parametrize(
    ("method", "values"),
    [
        ("et-slt", {}),
        ("et-imp-snn", {}),
        ("global-slt", {}),
        ("imp-snn", {}),
        ("random-trained", {}),
        ("random-frozen", {}),
        ("mplt-relu", {}),
        ("multisp-lt-relu", {}),
    ],
)
def test_runs_without_a_preset_are_not_mislabelled(method: str, values: dict) -> None:
    # An Early-Time run made with --search-timesteps but no --method was reported as
    # "slt" / "imp-snn": averaged and compared under the wrong method.
    cfg = TrainConfig.for_method(method, out=None, **values)
    assert infer_method({**cfg.to_dict(), "method": None}) == method


@pytest.mark.parametrize(
    ("method", "values", "field"),
    [
        ("slt", {"search": "imp"}, "search"),
        ("mpslt", {"search": "random"}, "search"),
        ("slt", {"scope": "global"}, "scope"),
        ("mplt", {"scope": "global"}, "scope"),
        ("slt", {"search_timesteps": 2}, "search_timesteps"),
        ("imp-snn", {"search_timesteps": 2}, "search_timesteps"),
        ("global-slt", {"search_timesteps": 2}, "search_timesteps"),
        ("et-slt", {"search_timesteps": None}, "search_timesteps"),
        ("et-imp-snn", {"search_timesteps": None}, "search_timesteps"),
        ("multisp-slt", {"scope": "global"}, "scope"),
    ],
)
def test_a_preset_refuses_settings_that_make_it_another_method(
    method: str, values: dict, field: str
) -> None:
    # TrainConfig.for_method("slt", search="imp") ran IMP and recorded it as "slt".
    with pytest.raises(ConfigError) as info:
        TrainConfig.for_method(method, out=None, **values)
    assert info.value.field == field
    assert method in str(info.value)


def test_preset_variants_that_stay_the_method_are_accepted() -> None:
    assert TrainConfig.for_method("slt", anneal_epochs=1, epochs=2, out=None).method == "slt"
    assert TrainConfig.for_method("et-slt", search_timesteps=1, out=None).search_timesteps == 1
    assert TrainConfig.for_method("imp-snn", scope="global", out=None).scope == "global"
