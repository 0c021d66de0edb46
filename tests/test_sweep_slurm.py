"""The SLURM executor through submitit, with fake ``sbatch``/``sacct`` on PATH.

submitit writes the real sbatch script and pickles the real call; the tests check the
array's size and options, then run every array task through submitit's own worker with
the environment SLURM gives it, and check that each task ran its own run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _sweep_testing import (
    ARRAY_JOB_ID,
    SMALL_SPEC,
    array_size,
    install_fake_slurm,
    run_array_task,
    write_spec,
)
from spikelottery.cli import main
from spikelottery.engine import RESULTS_FILE
from spikelottery.report import make_report
from spikelottery.sweep import JOBS_FILE, SlurmOptions, load_spec, plan_runs, sweep

pytest.importorskip("submitit")  # the optional [slurm] extra (in [dev])


@pytest.fixture
def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = install_fake_slurm(tmp_path)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    return tmp_path


def test_array_has_one_task_per_run_and_each_task_runs_its_run(fake_slurm: Path) -> None:
    spec = write_spec(fake_slurm, SMALL_SPEC)
    out = fake_slurm / "sweep"
    options = SlurmOptions(
        partition="gpu",
        cpus_per_task=3,
        mem_gb=16,
        time_min=90,
        array_parallelism=3,
        setup=("module load cuda",),
        extra={"account": "lab"},
    )
    result = sweep(spec, out, executor="slurm", slurm=options, echo=lambda line: None)
    assert len(result.todo) == 4
    script = (fake_slurm / "submitted.sh").read_text()
    assert array_size(script) == (4, 3)
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --cpus-per-task=3",
        "#SBATCH --mem=16GB",
        "#SBATCH --time=90",
        "#SBATCH --account=lab",
        "module load cuda",
    ):
        assert line in script, line
    jobs = json.loads((out / JOBS_FILE).read_text())
    assert jobs[-1]["array_job_id"] == ARRAY_JOB_ID
    tasks = jobs[-1]["tasks"]
    assert sorted(tasks.values()) == sorted(f"{ARRAY_JOB_ID}_{i}" for i in range(4))
    assert set(tasks) == {r.run_id for r in result.plan}
    # Each task, run as SLURM would, runs exactly the run its job id was recorded for.
    for run in result.todo:
        index = int(tasks[run.run_id].split("_")[1])
        assert not (run.folder / RESULTS_FILE).exists()
        run_array_task(script, index)
        data = json.loads((run.folder / RESULTS_FILE).read_text())
        assert data["config"]["method"] == run.axes["method"]
        assert data["config"]["seed"] == run.axes["seed"]
        assert data["config"]["out"] == str(run.folder)
    again = sweep(spec, out, executor="slurm", slurm=options, echo=lambda line: None)
    assert again.todo == [] and again.job_ids == []


def test_failed_task_is_reported_and_resubmitted(fake_slurm: Path) -> None:
    spec = write_spec(fake_slurm, SMALL_SPEC)
    out = fake_slurm / "sweep"
    first = sweep(spec, out, executor="slurm", echo=lambda line: None)
    script = (fake_slurm / "submitted.sh").read_text()
    run_array_task(script, 0)
    # Task 1 fails on the cluster: its data root does not hold the data it needs.
    bad = first.todo[1]
    settings = json.loads((bad.folder / "settings.json").read_text())
    settings["config"]["dataset"] = "cifar10"
    (bad.folder / "settings.json").write_text(json.dumps(settings))
    with pytest.raises(RuntimeError, match="array task 1 failed"):
        run_array_task(script, 1)
    report = make_report([out], fake_slurm / "report", figures=False)
    status = {Path(r["run"]).name: r for r in report.rows}
    assert status[bad.run_id]["status"] == "failed"
    assert status[bad.run_id]["slurm_job"] == f"{ARRAY_JOB_ID}_1"
    assert status[first.todo[0].run_id]["status"] == "done"
    assert sum(r["status"] == "missing" for r in report.rows) == 2
    assert "failed" in report.markdown()
    # The next sweep submits the three unfinished runs again (the failed one included),
    # except those whose job sacct still shows as pending or running.
    (fake_slurm / "sacct_states.txt").write_text(f"{ARRAY_JOB_ID}_2|RUNNING|node1\n")
    second = sweep(spec, out, executor="slurm", echo=lambda line: None)
    assert bad.run_id in {r.run_id for r in second.todo}
    assert [r.run_id for r in second.queued] == [first.todo[2].run_id]
    assert len(second.todo) == 2
    assert array_size((fake_slurm / "submitted.sh").read_text())[0] == 2


def test_several_gpus_start_one_task_per_gpu(fake_slurm: Path) -> None:
    spec = write_spec(fake_slurm, SMALL_SPEC)
    options = SlurmOptions(gpus=4)
    sweep(spec, fake_slurm / "sweep", executor="slurm", slurm=options, echo=lambda line: None)
    script = (fake_slurm / "submitted.sh").read_text()
    assert "#SBATCH --gpus-per-node=4" in script
    assert "#SBATCH --ntasks-per-node=4" in script


def test_cli_slurm_submission(fake_slurm: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write_spec(fake_slurm, SMALL_SPEC)
    out = fake_slurm / "sweep"
    argv = ["sweep", str(spec), "--out", str(out), "--executor", "slurm", "--partition", "p1"]
    assert main([*argv, "--time", "30", "--setup", "source venv/bin/activate"]) == 0
    script = (fake_slurm / "submitted.sh").read_text()
    assert "#SBATCH --partition=p1" in script and "source venv/bin/activate" in script
    assert len(plan_runs(load_spec(spec), out)) == 4
    assert "submitted 4 runs as SLURM array 4242" in capsys.readouterr().err
