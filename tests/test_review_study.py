"""Review of the study change: defects found in ``--where`` and ``loss_vs_base.py``.

Each test fails on the change as reviewed; each accepts either the right numbers or a
clear refusal, so that any sound fix makes it pass.
"""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

from spikelottery.errors import SpikeLotteryError
from spikelottery.report import select_rows

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "docs" / "_scripts" / "loss_vs_base.py"


def _script():
    spec = importlib.util.spec_from_file_location("loss_vs_base_review", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(tmp_path: Path, rows: list[dict[str, str]], argv: list[str], capsys) -> str | None:
    """Run loss_vs_base on ``rows`` as a runs.csv; its output, or None if it refused."""
    path = tmp_path / "runs.csv"
    cols = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=cols)
        writer.writeheader()
        writer.writerows(rows)
    module = _script()
    capsys.readouterr()
    try:
        code = module.main([str(path), *argv])
    except (SystemExit, ValueError, SpikeLotteryError):
        return None  # a refusal of an ambiguous pairing is a fine answer
    assert code == 0
    return capsys.readouterr().out


def _row(method: str, seed: int, acc: float, **settings: object) -> dict[str, str]:
    base = {"dataset": "digits", "model": "vgg_tiny", "pa": 0.4, "pb": 0.0, "timesteps": 4,
            "beta": 0.99, "epochs": 5, "batch_size": 64, "lr": 0.1}  # fmt: skip
    base.update(settings)
    return {"status": "done", "method": method, "seed": str(seed), "accuracy": str(acc),
            **{k: str(v) for k, v in base.items()}}  # fmt: skip


def _cells(text: str, first: str) -> list[str]:
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == first:
            return cells
    raise AssertionError(f"no row starting {first!r} in\n{text}")


def test_select_rows_does_not_split_a_bare_string_into_characters() -> None:
    # ``where`` is typed Mapping[str, Sequence[Any]]; a str is a Sequence, and
    # {"seed": "12"} is read as the values "1" and "2": seeds 1 and 2 are kept, 12 is not.
    rows = [{"seed": s, "timesteps": t} for s, t in [(1, 1), (2, 6), (12, 16)]]
    for where, want in (({"seed": "12"}, [12]), ({"timesteps": "16"}, [16])):
        try:
            kept = select_rows(rows, where)
        except (SpikeLotteryError, TypeError, ValueError):
            continue  # refusing a bare string is fine
        key = next(iter(where))
        assert [r[key] for r in kept] == want, f"{where} kept {kept}"


def test_loss_vs_base_matches_a_pruned_baseline_on_pa(tmp_path: Path, capsys) -> None:
    # Reward 2's baselines (PEPSp) are tickets: they depend on pa. MATCH omits pa, so
    # with two values of pa every MultiSp ticket is paired with the PEPSp run of the
    # same seed that comes last in runs.csv, whatever its pa.
    rows = []
    for pa, base_slt, base_lt in ((0.2, 0.90, 0.92), (0.4, 0.80, 0.85)):
        for seed in range(3):
            rows += [
                _row("multisp-slt", seed, base_slt - 0.02, pa=pa, pb=0.3),  # loses 2 points
                _row("multisp-lt", seed, base_lt - 0.01, pa=pa, pb=0.3),  # loses 1 point
            ]
    for pa, base_slt, base_lt in ((0.2, 0.90, 0.92), (0.4, 0.80, 0.85)):
        for seed in range(3):
            rows.append(_row("pepsp-slt", seed, base_slt, pa=pa))
            rows.append(_row("pepsp-lt", seed, base_lt, pa=pa))
    argv = ["--spiking", "multisp-slt", "pepsp-slt", "--ann", "multisp-lt", "pepsp-lt"]
    text = _run(tmp_path, rows, argv, capsys)
    if text is None:
        return
    for pa in ("0.2", "0.4"):
        cells = _cells(text, pa)
        # pa, pairs, spiking loss, ANN loss, ANN - spiking
        assert cells[1:5] == ["3", "2.00", "1.00", "-1.00"], (pa, cells)


def test_loss_vs_base_several_baseline_runs_per_seed(tmp_path: Path, capsys) -> None:
    # Two dense SNN runs per seed that differ in a setting outside MATCH (batch_size):
    # the dict keeps the last one silently, so the tickets (batch 64) are measured
    # against the batch-32 baseline.
    rows = []
    for seed in range(3):
        rows += [
            _row("mpslt", seed, 0.85, pa=0.4),
            _row("mplt", seed, 0.88, pa=0.4),
            _row("ann", seed, 0.90),
            _row("snn", seed, 0.87),  # batch 64: the mpslt ticket loses 2 points
            _row("snn", seed, 0.60, batch_size=32),  # another study's SNN, same seed
        ]
    text = _run(tmp_path, rows, [], capsys)
    if text is None:
        return
    last = [c.strip() for c in text.strip().splitlines()[-1].strip("|").split("|")]
    assert last[:4] == ["3", "2.00", "2.00", "0.00"], last  # pairs, losses, difference
