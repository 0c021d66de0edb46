"""The reproduction study's regression guard (docs/reproduction.md).

Each SPEC of ``configs/study`` is run as a small cell: the first two values of every
axis (every method kept, so that each comparison has both sides), one epoch (and one
patch epoch), ``max_batches=2``. Its own ``sweep`` and ``report`` commands, read from the
SPEC's header, are then run through the CLI, and each table and figure the write-up
shows must come out. The research outcome is not asserted: that is the study's job.

The same commands must appear verbatim in ``docs/reproduction.md``, so that the page's
commands are the tested ones.
"""

from __future__ import annotations

import csv
import importlib.util
import itertools
import re
import shlex
from pathlib import Path

import pytest

from spikelottery.cli import main
from spikelottery.errors import SpikeLotteryError
from spikelottery.report import select_rows
from spikelottery.report.figures import CURVES
from spikelottery.sweep import load_spec
from spikelottery.sweep.spec import SweepSpec

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "configs" / "study"
SPECS = sorted(STUDY.glob("*.toml"))
PAGE = ROOT / "docs" / "reproduction.md"
SHORT = {"epochs": 1, "patch_epochs": 1, "max_batches": 2, "energy_batches": 1}


def commands(spec: Path) -> list[str]:
    """The ``spikelottery`` and ``python docs/_scripts/...`` command lines of a SPEC's
    header (continued lines joined)."""
    lines, text = [], ""
    for raw in spec.read_text().splitlines():
        if not raw.startswith("#"):
            break
        line = raw.lstrip("#").strip()
        if line.startswith(("spikelottery ", "python docs/_scripts/")) or text:
            text = f"{text} {line}".strip()
            if text.endswith("\\"):
                text = text[:-1].strip()
            else:
                lines.append(re.sub(r"\s+", " ", text))
                text = ""
    return lines


def wheres(cmds: list[str]) -> dict[str, set[str]]:
    """The values that the commands' ``--where KEY=V1,V2`` options select, per setting."""
    out: dict[str, set[str]] = {}
    for command in cmds:
        argv = shlex.split(command)
        for flag, value in itertools.pairwise(argv):
            if flag == "--where":
                key, _, values = value.partition("=")
                out.setdefault(key, set()).update(values.split(","))
    return out


def small(spec: SweepSpec, keep: dict[str, set[str]]) -> SweepSpec:
    """The SPEC cut to a cell: the first two values of each axis and those in ``keep``,
    every method, short training."""

    def cut(axis: str, values: list) -> list:
        if axis in SHORT:
            return [SHORT[axis]]
        if axis == "method":
            return list(values)
        return [v for i, v in enumerate(values) if i < 2 or str(v) in keep.get(axis, set())]

    base = {**spec.base, **{k: v for k, v in SHORT.items() if k != "patch_epochs"}}
    if "patch_epochs" in base:
        base["patch_epochs"] = SHORT["patch_epochs"]
    return SweepSpec(
        base=base,
        grids=[{k: cut(k, v) for k, v in g.items()} for g in spec.grids],
        zips=[{k: cut(k, v) for k, v in z.items()} for z in spec.zips],
        name=spec.name,
        description=spec.description,
        source=spec.source,
    )


def load_script(path: Path):
    """A docs script as a module (its ``main`` not run)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(path: Path, argv: list[str], capsys) -> str:
    """Run a docs script's ``main(argv)``; return what it printed."""
    module = load_script(path)
    capsys.readouterr()
    assert module.main(argv) == 0, path
    return capsys.readouterr().out


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def write_spec(spec: SweepSpec, path: Path) -> None:
    parts = [f"[sweep]\nname = {_toml(spec.name)}\n", "[base]"]
    parts += [f"{k} = {_toml(v)}" for k, v in spec.base.items() if v is not None]
    for table, name in [(g, "grid") for g in spec.grids] + [(z, "zip") for z in spec.zips]:
        parts.append(f"\n[[{name}]]")
        parts += [f"{k} = {_toml(v)}" for k, v in table.items()]
    path.write_text("\n".join(parts) + "\n")


def test_the_study_is_shipped() -> None:
    names = {p.stem for p in SPECS}
    assert {
        "reward1",
        "reward1_long",
        "reward1_wide",
        "reward2",
        "fig4_vgg",
        "fig4_transformer",
    } <= names
    for spec in SPECS:
        cmds = commands(spec)
        assert any(c.startswith("spikelottery sweep ") for c in cmds), spec.name
        assert any(c.startswith("spikelottery report ") for c in cmds), spec.name


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_the_page_gives_each_command(spec: Path) -> None:
    page = re.sub(r"\s+", " ", PAGE.read_text().replace("\\\n", " "))
    for command in commands(spec):
        assert command in page, f"docs/reproduction.md lacks `{command}` ({spec.name})"


def test_loss_against_the_baseline_by_hand() -> None:
    """loss_vs_base pairs each ticket with the baseline of its seed, across pa."""
    acc = {  # seed -> accuracy; the baselines have no pa
        ("snn", None): [0.90, 0.80, 0.85],
        ("ann", None): [0.95, 0.90, 0.90],
        ("mpslt", "0.4"): [0.88, 0.79, 0.84],  # loses 2, 1, 1
        ("mplt", "0.4"): [0.85, 0.80, 0.81],  # loses 10, 10, 9
    }
    rows = [
        {"status": "done", "method": m, "dataset": "digits", "pa": pa or "0.4",
         "seed": str(seed), "accuracy": str(a)}
        for (m, pa), values in acc.items() for seed, a in enumerate(values)
    ]  # fmt: skip
    text = load_script(ROOT / "docs" / "_scripts" / "loss_vs_base.py").table(
        rows, ("mpslt", "snn"), ("mplt", "ann")
    )
    cells = [c.strip() for c in text.splitlines()[-1].strip("|").split("|")]
    assert cells[:4] == ["3", "1.33", "9.67", "8.33"]  # pairs, the losses, their difference
    assert cells[-1] == "spiking loses less"


@pytest.mark.slow
@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_a_small_cell_makes_every_table_and_figure(spec: Path, tmp_path: Path, capsys) -> None:
    cell = small(load_spec(spec), wheres(commands(spec)))
    cell_file = tmp_path / spec.name
    write_spec(cell, cell_file)
    rel = spec.relative_to(ROOT).as_posix()
    for command in commands(spec):
        argv = shlex.split(command)[1:]
        argv = [str(cell_file) if a == rel else a for a in argv]
        argv = [str(tmp_path / a) if a.startswith(("runs/", "report/")) else a for a in argv]
        if argv[0].startswith("docs/_scripts/"):
            script = run_script(ROOT / argv[0], argv[1:], capsys)
            assert re.search(r"^\| .*\| (spiking loses less|ANN loses less|inconclusive) \|$",
                             script, re.M), (command, script)  # fmt: skip
            continue
        if argv[0] == "sweep":
            argv += ["--no-progress", "-q"]
        assert main(argv) == 0, command
        if argv[0] != "report":
            continue
        out = Path(argv[argv.index("--out") + 1])
        for name in ("runs.csv", "summary.csv", "summary.md"):
            assert (out / name).stat().st_size > 0, (command, name)
        with open(out / "runs.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert rows and all(r["status"] == "done" for r in rows), command
        md = (out / "summary.md").read_text()
        assert "## Energy conventions" in md and "per sample" in md
        pairs = [(argv[i + 1], argv[i + 2]) for i, a in enumerate(argv) if a == "--compare"]
        for a, b in pairs:
            table = (out / f"compare_{a}_vs_{b}.md").read_text()
            assert "verdict" in table and f"## Paired difference: {a} - {b}" in md
            assert (out / f"difference_{a}_vs_{b}.png").stat().st_size > 1000
        for axis, (stem, _) in CURVES.items():
            if len({r[axis] for r in rows}) > 1:
                assert (out / f"{stem}.png").stat().st_size > 1000, (command, stem)
        if len({r["method"] for r in rows}) > 1:
            assert (out / "energy_per_method.png").stat().st_size > 1000
            assert (out / "accuracy_vs_energy.png").stat().st_size > 1000


# --- from test_review_study.py: Review of the study change: defects found in ``--where`` and ``loss_vs_base.py``.


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
