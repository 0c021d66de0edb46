"""The report's study features: several paired comparisons with verdicts, ``--where``, the
difference figure, the energy columns and the energy disclosure lines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from spikelottery.cli import main
from spikelottery.errors import SpikeLotteryError
from spikelottery.report import make_report, select_rows, verdict

# Hand-written accuracies: mpslt clearly above mplt at pa 0.2, clearly below at 0.6;
# slt and lt tie in distribution (differences straddle 0).
ACC = {
    ("mpslt", 0.2): [0.91, 0.93, 0.90, 0.94, 0.92],
    ("mplt", 0.2): [0.89, 0.90, 0.88, 0.91, 0.90],
    ("mpslt", 0.6): [0.70, 0.72, 0.71, 0.69, 0.73],
    ("mplt", 0.6): [0.80, 0.81, 0.79, 0.80, 0.82],
    ("slt", 0.2): [0.80, 0.82, 0.78, 0.83, 0.80],
    ("lt", 0.2): [0.81, 0.80, 0.80, 0.81, 0.81],
    ("slt", 0.6): [0.70, 0.75, 0.68, 0.74, 0.71],
    ("lt", 0.6): [0.72, 0.71, 0.73, 0.70, 0.72],
}
CONVENTIONS = "preset fp32-45nm; per sample"


def _write(root: Path, name: str, method: str, pa: float, seed: int, acc: float, **extra) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    spiking = method in ("mpslt", "slt")
    config = {
        "model": "vgg_tiny",
        "dataset": extra.pop("dataset", "digits"),
        "mode": "mp" if method.startswith("mp") else "lt",
        "spiking": spiking,
        "pa": pa,
        "pb": 0.0,
        "filter": None,
        "seed": seed,
        "method": method,
        "activations": "binary" if method == "mplt" else "keep",
        "timesteps": 4,
        "beta": extra.pop("beta", 0.99),
        "epochs": 5,
        "out": str(folder),
    }
    energy = 2e-4 if spiking else 1e-3
    results = {
        "accuracy": acc,
        "kept_fraction": 1 - pa,
        "energy_mj": energy,
        "ann_energy_mj": 1e-3,
        "config": config,
        "history": [{"epoch": 1, "seconds": 1.0}],
        "energy": {"totals": {"exact_snn_mj": energy / 4}, "rows": [], "conventions": CONVENTIONS},
    }
    (folder / "results.json").write_text(json.dumps(results))


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    for (method, pa), values in ACC.items():
        for seed, acc in enumerate(values):
            _write(root, f"{method}-{pa}-{seed}", method, pa, seed, acc)
    return root


def test_several_pairs_each_with_its_verdict(runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    report = make_report([runs], out, compare=[("mpslt", "mplt"), ("slt", "lt")])
    assert report.pairs() == [("mpslt", "mplt"), ("slt", "lt")]
    got = {(r["a"], r["pa"]): r for r in report.comparison}
    for a, b in report.pairs():
        for pa in (0.2, 0.6):
            d = np.array(ACC[(a, pa)]) - np.array(ACC[(b, pa)])
            assert got[(a, pa)]["diff_mean"] == pytest.approx(d.mean(), abs=1e-12)
    assert got[("mpslt", 0.2)]["verdict"] == "mpslt higher"
    assert got[("mpslt", 0.6)]["verdict"] == "mplt higher"
    assert got[("slt", 0.2)]["verdict"] == "inconclusive"
    assert got[("slt", 0.6)]["verdict"] == "inconclusive"
    md = (out / "summary.md").read_text()
    assert "## Paired difference: mpslt - mplt" in md and "## Paired difference: slt - lt" in md
    assert "| 0.6 | 5 | -9.40 |" in (out / "compare_mpslt_vs_mplt.md").read_text()
    for stem in ("difference_mpslt_vs_mplt", "difference_slt_vs_lt"):
        assert (out / f"{stem}.png").stat().st_size > 1000
        assert (out / f"{stem}.svg").read_text().startswith("<?xml")


def test_energy_columns_and_disclosure(runs: Path, tmp_path: Path) -> None:
    report = make_report([runs], tmp_path / "report", figures=False)
    assert report.conventions == [f"lt, mplt, mpslt, slt: {CONVENTIONS}"]
    md = (tmp_path / "report" / "summary.md").read_text()
    assert "## Energy conventions" in md and f"- lt, mplt, mpslt, slt: {CONVENTIONS}" in md
    header = next(line for line in md.splitlines() if line.startswith("| method"))
    assert "exact mJ" in header and "% of ANN" in header
    mpslt = next(line for line in md.splitlines() if line.startswith("| mpslt | 0.2"))
    assert "| 20.00 |" in mpslt  # 2e-4 of 1e-3 mJ
    row = next(r for r in report.summary if r["method"] == "mpslt" and r["pa"] == 0.2)
    assert row["energy_exact_mj_mean"] == pytest.approx(5e-5)


def test_where_keeps_a_subset(runs: Path, tmp_path: Path) -> None:
    report = make_report([runs], tmp_path / "r", where={"pa": ["0.2"]}, figures=False)
    assert {r["pa"] for r in report.rows} == {0.2}
    assert report.axes == ["method"]  # pa no longer varies
    both = make_report(
        [runs], tmp_path / "r2", where={"method": ["mpslt", "mplt"], "pa": [0.6]}, figures=False
    )
    assert {(r["method"], r["pa"]) for r in both.rows} == {("mpslt", 0.6), ("mplt", 0.6)}


@pytest.mark.parametrize(
    ("where", "message"),
    [({"nope": ["1"]}, "unknown setting"), ({"pa": ["0.3"]}, "no run matches")],
)
def test_where_bad_input(runs: Path, tmp_path: Path, where, message: str) -> None:
    with pytest.raises(SpikeLotteryError, match=message):
        make_report([runs], tmp_path / "r", where=where, figures=False)


def test_where_matches_booleans_and_none() -> None:
    rows = [{"spiking": True, "filter": None}, {"spiking": False, "filter": "patch_embed"}]
    assert select_rows(rows, {"spiking": ["true"]}) == [rows[0]]
    assert select_rows(rows, {"filter": ["none"]}) == [rows[0]]
    assert select_rows(rows, {"filter": ["patch_embed"]}) == [rows[1]]


def test_cli_repeated_compare_and_where(runs: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "r"
    code = main(
        ["report", str(runs), "--out", str(out), "--no-figures", "--where", "pa=0.2,0.6",
         "--compare", "mpslt", "mplt", "--compare", "slt", "lt"]
    )  # fmt: skip
    text = capsys.readouterr().out
    assert code == 0 and "mpslt higher" in text and "mplt higher" in text
    assert (out / "compare_slt_vs_lt.csv").is_file()


def test_cli_where_needs_key_and_value(runs: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["report", str(runs), "--out", str(tmp_path / "r"), "--where", "pa"])
    assert exc.value.code == 2 and "expected KEY=VALUE" in capsys.readouterr().err


def test_difference_figure_without_a_curve_axis(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    for dataset in ("digits", "digits_dvs"):
        for seed in range(3):
            for method, acc in (("mpslt", 0.8 + 0.01 * seed), ("mplt", 0.75)):
                _write(root, f"{dataset}-{method}-{seed}", method, 0.4, seed, acc, dataset=dataset)
    out = tmp_path / "r"
    report = make_report([root], out, compare=("mpslt", "mplt"))
    assert {r["dataset"] for r in report.comparison} == {"digits", "digits_dvs"}
    assert (out / "difference_mpslt_vs_mplt.png").stat().st_size > 1000


@given(
    low=st.floats(-1, 1, allow_nan=False),
    width=st.floats(0, 1, allow_nan=False),
)
def test_verdict_follows_the_interval(low: float, width: float) -> None:
    high = low + width
    said = verdict(low, high, "a", "b")
    if low > 0:
        assert said == "a higher"
    elif high < 0:
        assert said == "b higher"
    else:
        assert said == "inconclusive" and low <= 0 <= high
    assert verdict(None, None, "a", "b") == "too few pairs"


def test_an_ann_run_has_no_spiking_energy_views(runs: Path, tmp_path: Path) -> None:
    # The estimator's exact and memory views price an ANN's ReLU outputs as spikes; the
    # report must not show them as the ANN ticket's energy (nor its per-layer rows).
    report = make_report([runs], tmp_path / "r", figures=False)
    ann = [r for r in report.rows if r["method"] in ("mplt", "lt")]
    snn = [r for r in report.rows if r["method"] in ("mpslt", "slt")]
    assert ann and all(r["energy_exact_mj"] is None and r["energy_layers"] == [] for r in ann)
    assert all(r["energy_exact_mj"] == pytest.approx(5e-5) for r in snn)
    row = next(r for r in report.summary if r["method"] == "mplt" and r["pa"] == 0.2)
    assert row["energy_exact_mj_mean"] is None and row["energy_mj_mean"] == pytest.approx(1e-3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"compare": ("mpslt", "mpslt")}, "two different methods"),
        ({"compare": ("mpslt", "mplt"), "where": {"method": ["mpslt"]}}, "left by --where"),
    ],
)
def test_compare_bad_pairs(runs: Path, tmp_path: Path, kwargs, message: str) -> None:
    with pytest.raises(SpikeLotteryError, match=message):
        make_report([runs], tmp_path / "r", figures=False, **kwargs)
