"""Review of the sweeps, reports and method presets: defects found by exercising them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spikelottery.engine import ConfigError, TrainConfig
from spikelottery.report import collect_runs, infer_method, make_report
from spikelottery.report.tables import compare_rows


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


def test_report_reads_a_folder_with_a_demo_output(tmp_path: Path) -> None:
    # `spikelottery demo` writes a list of its runs as results.json beside the runs'
    # own folders; `report` crashed on it with "AttributeError: 'list' object has no
    # attribute 'get'".
    runs = tmp_path / "runs"
    for i, (mode, acc) in enumerate([("lt", 0.5), ("mp", 0.6)]):
        cfg = TrainConfig(model="vgg_tiny", mode=mode, seed=i, out=None).to_dict()
        record = {"accuracy": acc, "config": cfg, "history": [{"seconds": 1.0}]}
        (runs / "demo" / mode).mkdir(parents=True)
        (runs / "demo" / mode / "results.json").write_text(json.dumps(record))
    summary = [{"method": "SNN ticket (lt)", "mode": "lt", "accuracy": 0.5}]
    (runs / "demo" / "results.json").write_text(json.dumps(summary))
    rows = collect_runs([runs])
    assert sorted(r["method"] for r in rows) == ["mpslt", "slt"]
    report = make_report([runs], tmp_path / "report", figures=False)
    assert len(report.summary) == 2


def _rows(method: str, values: dict, accuracy: float) -> list[dict]:
    return [
        {
            "status": "done",
            "method": method,
            "model": "m",
            "seed": s,
            "accuracy": accuracy + s / 100,
        }
        | values
        for s in range(3)
    ]


@pytest.mark.parametrize(
    ("a", "a_values", "b", "b_values"),
    [
        ("multisp-slt", {"pb": 0.3}, "pepsp-slt", {"pb": 0.0}),  # the paper's Table II claim
        ("et-slt", {"search_timesteps": 2}, "slt", {"search_timesteps": None}),
    ],
)
def test_compare_pairs_methods_that_differ_in_a_setting_they_decide(
    a: str, a_values: dict, b: str, b_values: dict
) -> None:
    # pb is what MultiSp adds to PEPSp: --compare multisp-slt pepsp-slt paired nothing.
    rows = _rows(a, a_values, 0.8) + _rows(b, b_values, 0.7)
    (entry,) = compare_rows(rows, a, b)
    assert entry["pairs"] == 3 and entry["unpaired"] == 0
    assert entry["diff_mean"] == pytest.approx(0.1)


def test_compare_never_pairs_across_a_free_setting() -> None:
    # pa is not decided by either method: one pa per method must not be paired.
    rows = _rows("mpslt", {"pa": 0.2}, 0.8) + _rows("mplt", {"pa": 0.6}, 0.7)
    assert all(e["pairs"] == 0 for e in compare_rows(rows, "mpslt", "mplt"))
