"""``report`` on hand-written results.json files: rows, means and intervals checked by hand."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from spikelottery.cli import main
from spikelottery.engine import TrainConfig
from spikelottery.errors import SpikeLotteryError
from spikelottery.report import collect_runs, make_report, summarize, t_quantile
from spikelottery.report.tables import compare_rows

#: Student-t 0.975 quantiles from printed tables (e.g. NIST/SEMATECH e-Handbook, 1.3.6.7.2).
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 9: 2.262, 29: 2.045}


@pytest.mark.parametrize(("dof", "value"), T_975.items())
def test_t_quantile_matches_tables(dof: int, value: float) -> None:
    assert t_quantile(0.975, dof) == pytest.approx(value, abs=5e-4)


def test_t_quantile_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    for dof in (1, 2, 3, 6, 11, 50, 200):
        for p in (0.9, 0.975, 0.995):
            assert t_quantile(p, dof) == pytest.approx(stats.t.ppf(p, dof), rel=1e-9)


def test_summarize_one_value_has_no_interval() -> None:
    s = summarize([0.5])
    assert s.n == 1 and math.isnan(s.std) and math.isnan(s.ci_low)
    with pytest.raises(ValueError, match="non-finite"):
        summarize([0.5, float("nan")])


def _write_run(root: Path, name: str, **config) -> Path:
    accuracy = config.pop("accuracy")
    energy = config.pop("energy_mj", 1e-3)
    folder = root / name
    folder.mkdir(parents=True)
    full = {
        "model": "vgg_small",
        "dataset": "digits",
        "mode": "mp",
        "spiking": True,
        "pa": 0.4,
        "pb": 0.0,
        "filter": None,
        "seed": 0,
        "method": None,
        "timesteps": 4,
        "beta": 0.99,
        "epochs": 2,
        "out": str(folder),
    }
    full.update(config)
    full.setdefault("activations", "binary" if full["method"] == "mplt" else "keep")
    results = {
        "accuracy": accuracy,
        "kept_fraction": 1 - full["pa"],
        "energy_mj": energy,
        "energy_sparse_mj": energy,
        "ann_energy_mj": 0.01,
        "firing_rate": 0.1,
        "seconds": 4.0,
        "config": full,
        "loss": 0.5,
        "history": [{"epoch": 1, "seconds": 1.0}, {"epoch": 2, "seconds": 3.0}],
    }
    (folder / "results.json").write_text(json.dumps(results))
    return folder


# Hand-written accuracies of two methods over five seeds at two values of pa.
ACC = {
    ("mpslt", 0.2): [0.91, 0.93, 0.90, 0.94, 0.92],
    ("mplt", 0.2): [0.89, 0.92, 0.88, 0.91, 0.90],
    ("mpslt", 0.6): [0.80, 0.84, 0.79, 0.83, 0.85],
    ("mplt", 0.6): [0.78, 0.80, 0.80, 0.79, 0.81],
}


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    for (method, pa), values in ACC.items():
        for seed, acc in enumerate(values):
            _write_run(
                root,
                f"{method}-{pa}-{seed}",
                method=method,
                spiking=method == "mpslt",
                pa=pa,
                seed=seed,
                accuracy=acc,
                energy_mj=1e-3 * (1 + seed),
            )
    return root


def test_runs_recorded_before_binary_activations_are_their_relu_variants(tmp_path: Path) -> None:
    """A results.json without ``activations`` ran with ReLU: ``mplt`` then is ``mplt-relu``."""
    root = tmp_path / "runs"
    for seed in range(2):
        folder = _write_run(
            root, f"old-{seed}", method="mplt", spiking=False, seed=seed, accuracy=0.8
        )
        data = json.loads((folder / "results.json").read_text())
        del data["config"]["activations"]
        (folder / "results.json").write_text(json.dumps(data))
        _write_run(root, f"new-{seed}", method="mplt", spiking=False, seed=seed, accuracy=0.7)
    report = make_report([root], tmp_path / "report", figures=False)
    got = {(r["method"], r["activations"]) for r in report.rows}
    assert got == {("mplt-relu", "keep"), ("mplt", "binary")}


def test_summary_means_and_intervals(runs: Path, tmp_path: Path) -> None:
    report = make_report([runs], tmp_path / "report", latex=True)
    assert report.axes == ["method", "pa"]  # spiking is decided by the method; seed pooled
    with open(tmp_path / "report" / "summary.csv", newline="") as f:
        rows = {(r["method"], float(r["pa"])): r for r in csv.DictReader(f)}
    for key, values in ACC.items():
        row = rows[key]
        x = np.array(values)
        mean, std = x.mean(), x.std(ddof=1)
        half = T_975[4] * std / np.sqrt(5)
        assert int(row["n"]) == 5
        assert float(row["accuracy_mean"]) == pytest.approx(mean, abs=1e-12)
        assert float(row["accuracy_std"]) == pytest.approx(std, abs=1e-12)
        assert float(row["accuracy_ci_low"]) == pytest.approx(mean - half, abs=1e-4)
        assert float(row["accuracy_ci_high"]) == pytest.approx(mean + half, abs=1e-4)
        assert float(row["energy_mj_mean"]) == pytest.approx(3e-3)
        assert float(row["seconds_per_epoch_mean"]) == pytest.approx(2.0)
        assert float(row["epochs_run_mean"]) == 2  # the training cost, beside the accuracy
    with open(tmp_path / "report" / "runs.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 20
    md = (tmp_path / "report" / "summary.md").read_text()
    assert "| mpslt | 0.2 | 80.00 | 5 | 92.00 |" in md  # pa, then the fraction kept
    assert r"\toprule" in (tmp_path / "report" / "summary.tex").read_text()
    for stem in ("accuracy_vs_pa", "energy_per_method", "accuracy_vs_energy"):
        assert (tmp_path / "report" / f"{stem}.png").stat().st_size > 1000
        assert (tmp_path / "report" / f"{stem}.svg").read_text().startswith("<?xml")


def test_paired_comparison(runs: Path, tmp_path: Path) -> None:
    report = make_report([runs], tmp_path / "report", compare=("mpslt", "mplt"), figures=False)
    by_pa = {r["pa"]: r for r in report.comparison}
    for pa in (0.2, 0.6):
        d = np.array(ACC[("mpslt", pa)]) - np.array(ACC[("mplt", pa)])
        row = by_pa[pa]
        assert row["pairs"] == 5 and row["unpaired"] == 0
        assert row["diff_mean"] == pytest.approx(d.mean(), abs=1e-12)
        assert row["diff_std"] == pytest.approx(d.std(ddof=1), abs=1e-12)
        half = T_975[4] * d.std(ddof=1) / np.sqrt(5)
        assert row["diff_ci_low"] == pytest.approx(d.mean() - half, abs=1e-4)
    assert (tmp_path / "report" / "compare_mpslt_vs_mplt.md").is_file()


def test_unpaired_seed_is_counted_not_averaged(runs: Path, tmp_path: Path) -> None:
    (runs / "mplt-0.2-4" / "results.json").unlink()
    report = make_report([runs], tmp_path / "report", compare=("mpslt", "mplt"), figures=False)
    row = {r["pa"]: r for r in report.comparison}[0.2]
    assert row["pairs"] == 4 and row["unpaired"] == 1
    d = np.array(ACC[("mpslt", 0.2)][:4]) - np.array(ACC[("mplt", 0.2)][:4])
    assert row["diff_mean"] == pytest.approx(d.mean())


def test_failed_and_missing_runs_are_listed(runs: Path, tmp_path: Path) -> None:
    broken = runs / "sweep-run"
    broken.mkdir()
    (broken / "settings.json").write_text(json.dumps({"config": {"method": "mpslt", "pa": 0.2}}))
    (broken / "failed.json").write_text(json.dumps({"error": "RuntimeError", "message": "OOM"}))
    report = make_report([runs], tmp_path / "report", figures=False)
    assert [r["status"] for r in report.unfinished] == ["failed"]
    assert "RuntimeError: OOM" in (tmp_path / "report" / "summary.md").read_text()
    assert sum(r["n"] for r in report.summary) == 20  # not averaged in


def test_duplicate_runs_are_refused(runs: Path, tmp_path: Path) -> None:
    _write_run(runs / "copy", "again", method="mplt", spiking=False, pa=0.2, seed=0, accuracy=0.5)
    with pytest.raises(SpikeLotteryError, match="same settings"):
        make_report([runs], tmp_path / "report")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--compare", "mpslt", "nope"], "no finished run of method"),
        ([], None),
    ],
)
def test_cli(runs: Path, tmp_path: Path, capsys, args: list[str], message: str | None) -> None:
    code = main(["report", str(runs), "--out", str(tmp_path / "r"), "--no-figures", *args])
    captured = capsys.readouterr()
    if message:
        assert code == 1 and message in captured.err
    else:
        assert code == 0 and "## Summary over seeds" in captured.out


def test_cli_empty_folder(tmp_path: Path, capsys) -> None:
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r")]) == 1
    assert "no results.json" in capsys.readouterr().err


def test_energy_views_per_layer_and_the_epochs_setting(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    for method, seed, scale in [("mpslt", 0, 1.0), ("mpslt", 1, 3.0), ("mplt", 0, 2.0)]:
        folder = _write_run(
            root,
            f"{method}-{seed}",
            method=method,
            spiking=method == "mpslt",
            seed=seed,
            accuracy=0.8,
            epochs=7,
        )
        data = json.loads((folder / "results.json").read_text())
        data["energy"] = {
            "totals": {"exact_snn_mj": 2e-4 * scale, "memory_snn_mj": 5e-4, "ann_int8_mj": 1e-5},
            "rows": [
                {"name": "conv1", "snn_mj": 1e-4 * scale, "exact_mj": 5e-5 * scale},
                {"name": "fc", "snn_mj": 2e-4, "exact_mj": 1e-4},
            ],
        }
        (folder / "results.json").write_text(json.dumps(data))
    report = make_report([root], tmp_path / "report")
    with open(tmp_path / "report" / "runs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["epochs"] for r in rows} == {"7"}  # the setting, not the epochs that ran
    assert {r["epochs_run"] for r in rows} == {"2"}
    by = {(r["method"], r["seed"]): r for r in rows}
    assert float(by[("mpslt", "1")]["energy_exact_mj"]) == pytest.approx(6e-4)
    assert float(by[("mplt", "0")]["ann_int8_energy_mj"]) == pytest.approx(1e-5)
    assert (tmp_path / "report" / "energy_per_layer.svg").is_file()
    assert any(p.name == "energy_per_layer.png" for p in report.files)


def _header(md: str) -> list[str]:
    line = next(line for line in md.splitlines() if line.startswith("| method"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_the_kept_fraction_stands_beside_pa(runs: Path, tmp_path: Path) -> None:
    # pa is the fraction REMOVED: a summary grouped by pa shows the recorded fraction kept
    # right after it (results.json's kept_fraction, not 1 - pa: a dense run keeps 100%).
    _write_run(runs, "snn-0", method="snn", mode="dense", pa=0.2, accuracy=0.95)
    folder = runs / "snn-0"
    data = json.loads((folder / "results.json").read_text())
    data["kept_fraction"] = 1.0
    (folder / "results.json").write_text(json.dumps(data))
    report = make_report([runs], tmp_path / "report", latex=True, figures=False)
    md = (tmp_path / "report" / "summary.md").read_text()
    header = _header(md)
    assert header[:4] == ["method", "pa", "kept %", "n"] and header.count("kept %") == 1
    assert "| mplt | 0.6 | 40.00 | 5 |" in md and "| snn | 0.2 | 100.00 | 1 |" in md
    tex = (tmp_path / "report" / "summary.tex").read_text()
    assert r"\begin{tabular}{llr" in tex and r"method & pa & kept \% & n" in tex
    assert report.axes == ["method", "pa"]


def test_the_kept_column_keeps_its_place_without_a_pa_axis(runs: Path, tmp_path: Path) -> None:
    make_report([runs], tmp_path / "report", where={"pa": [0.2]}, figures=False)
    header = _header((tmp_path / "report" / "summary.md").read_text())
    assert "pa" not in header and header[:3] == ["method", "n", "accuracy %"]
    assert header.index("kept %") > header.index("95% CI")


def test_figure_axes_say_what_pa_and_pb_count() -> None:
    from spikelottery.report.figures import CURVES

    assert CURVES["pa"][1] == "pa (fraction of weights removed)"
    assert CURVES["pb"][1] == "pb (fraction of patches removed)"


# --- from test_review_sweeps.py: Review of the sweeps, reports and method presets: defects found by exercising them.


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


def test_compare_never_pairs_across_a_free_setting() -> None:
    # pa is not decided by either method: one pa per method must not be paired.
    rows = _rows("mpslt", {"pa": 0.2}, 0.8) + _rows("mplt", {"pa": 0.6}, 0.7)
    assert all(e["pairs"] == 0 for e in compare_rows(rows, "mpslt", "mplt"))


# --- from test_report_damaged.py: ``report`` on damaged values, partial sweeps and intervals past 100%: named, never silent.


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
@example([5e-324, 5e-324])  # x / n underflowed: a mean of 0.0 below both values
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
