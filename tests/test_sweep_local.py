"""A local sweep of 2 x 2 x 2 runs on the digits: run, run again (nothing), kill and finish."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _sweep_testing import TINY_SPEC, write_spec
from spikelottery.cli import main
from spikelottery.engine import CHECKPOINT_FILE, RESULTS_FILE
from spikelottery.errors import SpikeLotteryError
from spikelottery.sweep import FAILED_FILE, PLAN_FILE, load_spec, plan_runs, run_local, sweep


def _results(out: Path) -> dict[str, float]:
    return {p.parent.name: p.stat().st_mtime_ns for p in (out / "runs").glob(f"*/{RESULTS_FILE}")}


def test_sweep_runs_every_point_once_and_records_the_method(tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    out = tmp_path / "sweep"
    lines: list[str] = []
    result = sweep(spec, out, echo=lines.append)
    assert len(result.plan) == 8 and len(result.outcomes) == 8 and not result.failed
    done = _results(out)
    assert len(done) == 8
    points = set()
    for run in result.plan:
        data = json.loads((run.folder / RESULTS_FILE).read_text())
        cfg = data["config"]
        assert cfg["method"] == run.axes["method"]
        assert cfg["spiking"] == (run.axes["method"] == "mpslt") and cfg["mode"] == "mp"
        points.add((cfg["method"], cfg["pa"], cfg["seed"]))
    assert len(points) == 8
    assert sum(line.startswith("[") for line in lines) == 8  # a line per finished run
    plan = json.loads((out / PLAN_FILE).read_text())
    assert plan["name"] == "tiny" and len(plan["runs"]) == 8
    # Started again: nothing runs, nothing is rewritten.
    again = sweep(spec, out, echo=lines.append)
    assert again.todo == [] and again.outcomes == []
    assert _results(out) == done
    # The SPEC grows: only the new points run.
    write_spec(tmp_path, TINY_SPEC.replace("seed = [0, 1]", "seed = [0, 1, 2]"))
    grown = sweep(spec, out, echo=lines.append)
    assert len(grown.plan) == 12 and len(grown.todo) == 4
    after = _results(out)
    assert {k: after[k] for k in done} == done and len(after) == 12


def test_interrupted_run_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, TINY_SPEC.replace("epochs = 1", "epochs = 2"))
    out = tmp_path / "sweep"
    plan = plan_runs(load_spec(spec), out)
    first = plan[0]
    sweep(spec, out, echo=lambda line: None)
    reference = json.loads((first.folder / RESULTS_FILE).read_text())
    # As if killed after its last epoch's checkpoint, before writing its results.
    (first.folder / RESULTS_FILE).unlink()
    assert (first.folder / CHECKPOINT_FILE).is_file()
    statuses = {r.run_id: r.status for r in plan_runs(load_spec(spec), out)}
    assert statuses[first.run_id] == "interrupted"
    resumed = sweep(spec, out, echo=lambda line: None)
    assert [r.run_id for r in resumed.todo] == [first.run_id]
    again = json.loads((first.folder / RESULTS_FILE).read_text())
    assert again["accuracy"] == reference["accuracy"]
    assert [h["test_loss"] for h in again["history"]] == [
        h["test_loss"] for h in reference["history"]
    ]


def test_sweep_killed_halfway_completes_when_started_again(tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "spikelottery", "sweep", str(spec), "--out", str(out), "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    try:
        while len(_results(out)) < 3 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = _results(out)
    assert 3 <= len(before) < 8, "the sweep was not killed halfway"
    assert main(["sweep", str(spec), "--out", str(out), "-q"]) == 0
    after = _results(out)
    assert len(after) == 8
    assert {k: after[k] for k in before} == before  # finished runs were not run again
    assert not list(out.rglob(FAILED_FILE))
    assert not [p for p in out.rglob("*.tmp")], "a killed write left a temporary file"


def test_failed_run_is_reported_and_retried(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, TINY_SPEC.replace("seed = [0, 1]", "seed = [0]"))
    out = tmp_path / "sweep"
    sweep(spec, out, dry_run=True, echo=lambda line: None)
    assert not out.exists(), "a dry run writes nothing"
    result = sweep(spec, out, echo=lambda line: None, shard=(1, 4))
    bad = result.todo[0]
    (bad.folder / RESULTS_FILE).unlink()
    settings = json.loads((bad.folder / "settings.json").read_text())
    settings["config"]["dataset"] = "cifar10"  # no CIFAR files here: the run raises
    (bad.folder / "settings.json").write_text(json.dumps(settings))
    outcomes = run_local([bad])
    assert outcomes[0].error is not None
    failure = json.loads((bad.folder / FAILED_FILE).read_text())
    assert failure["error"] and "Traceback" in failure["traceback"]
    assert {r.run_id: r.status for r in plan_runs(load_spec(spec), out)}[bad.run_id] == "failed"
    # The next sweep rewrites the settings from the SPEC and runs it again.
    retried = sweep(spec, out, echo=lambda line: None, shard=(1, 4))
    assert [r.run_id for r in retried.todo] == [bad.run_id] and not retried.failed
    assert (bad.folder / RESULTS_FILE).is_file() and not (bad.folder / FAILED_FILE).exists()


def test_two_workers(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, TINY_SPEC.replace("seed = [0, 1]", "seed = [0]"))
    out = tmp_path / "sweep"
    result = sweep(spec, out, workers=2, tensorboard=True, echo=lambda line: None)
    assert len(result.outcomes) == 4 and not result.failed
    assert all(list((r.folder / "tensorboard").glob("events.*")) for r in result.plan)
    serial = tmp_path / "serial"
    sweep(spec, serial, echo=lambda line: None)
    for run in result.plan:
        a = json.loads((run.folder / RESULTS_FILE).read_text())
        b = json.loads((serial / "runs" / run.run_id / RESULTS_FILE).read_text())
        assert a["accuracy"] == b["accuracy"]  # same run, same result, whatever the executor
        # Each worker's auto thread count is its share of the CPUs (unless OMP_NUM_THREADS).
        assert a["threads"]["source"] != "auto" or "2 workers" in a["threads"]["reason"]


@pytest.mark.parametrize("shard", [(1, 3), (2, 3), (3, 3)])
def test_shards_partition_the_plan(tmp_path: Path, shard: tuple[int, int]) -> None:
    spec = write_spec(tmp_path)
    result = sweep(spec, tmp_path / "s", shard=shard, dry_run=True, echo=lambda line: None)
    ids = [r.run_id for r in result.plan]
    assert [r.run_id for r in result.selected] == ids[shard[0] - 1 :: 3]


def test_stale_folder_is_refused(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, TINY_SPEC.replace("seed = [0, 1]", "seed = [0]"))
    out = tmp_path / "sweep"
    sweep(spec, out, echo=lambda line: None, shard=(1, 4))
    first = plan_runs(load_spec(spec), out)[0]
    data = json.loads((first.folder / RESULTS_FILE).read_text())
    data["config"]["pa"] = 0.7
    (first.folder / RESULTS_FILE).write_text(json.dumps(data))
    with pytest.raises(SpikeLotteryError, match="move them away"):
        sweep(spec, out, echo=lambda line: None)


@pytest.mark.slow
def test_readme_digits_sweep_and_report(tmp_path: Path) -> None:
    """The README's sweep and report commands, as written (a few minutes on 2 cores)."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    commands = [
        line.split("#")[0].split()
        for line in readme.splitlines()
        if line.startswith(("spikelottery sweep configs/digits", "spikelottery report runs/digits"))
    ]
    assert len(commands) == 2, commands
    root = Path(__file__).resolve().parents[1]
    for argv in commands:
        argv = [str(root / a) if a.startswith("configs/") else a for a in argv[1:]]
        argv = [str(tmp_path / a) if a.startswith(("runs/", "report/")) else a for a in argv]
        assert main([*argv, "-q"] if argv[0] == "sweep" else argv) == 0
    report = tmp_path / "report" / "digits-reward1"
    rows = (report / "summary.csv").read_text().splitlines()
    assert len(rows) == 1 + 4 * 3  # four methods at three values of pa
    for name in ("accuracy_vs_pa.svg", "energy_per_method.svg", "accuracy_vs_energy.svg"):
        assert (report / name).is_file()
    assert (report / "compare_mpslt_vs_mplt.md").is_file()
