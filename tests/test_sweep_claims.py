"""Two sweeps on one folder split its runs: every run done once, none marked failed."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _sweep_testing import TINY_SPEC, write_spec
from spikelottery.engine import RESULTS_FILE
from spikelottery.errors import SpikeLotteryError
from spikelottery.sweep import FAILED_FILE, load_spec, plan_runs, sweep

_FINISHED = re.compile(r"^\[\d+/\d+\] ([0-9a-f]{12}) .*: accuracy", re.MULTILINE)


def _sweep_cmd(spec: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "spikelottery", "sweep", str(spec), "--out", str(out), *extra]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_two_sweeps_started_together_run_every_run_exactly_once(
    tmp_path: Path, workers: str
) -> None:
    spec = write_spec(tmp_path)
    out = tmp_path / "sweep"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = _sweep_cmd(spec, out, "--no-progress", "--workers", workers)
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    logs = []
    for proc in procs:
        _, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr
        logs.append(stderr)
    ran = [_FINISHED.findall(log) for log in logs]
    plan = plan_runs(load_spec(spec), out)
    assert sorted(ran[0] + ran[1]) == sorted(r.run_id for r in plan), logs  # once each
    assert not list(out.rglob(FAILED_FILE))
    assert not list(out.rglob("claim.lock")), "a finished sweep left a claim"
    for run in plan:
        assert json.loads((run.folder / RESULTS_FILE).read_text())["config"]["seed"] in (0, 1)
    # the sweep that saw another one's runs says so
    if ran[0] and ran[1]:
        assert any("left to another sweep" in log for log in logs), logs


def test_a_claim_names_its_holder_and_dies_with_it(tmp_path: Path) -> None:
    from spikelottery.sweep.claims import CLAIM_FILE, Claim, Holder, claim_run

    folder = tmp_path / "run"
    folder.mkdir()
    code = (
        "import sys, time; from spikelottery.sweep.claims import claim_run; "
        f"c = claim_run({str(folder)!r}); print(type(c).__name__, flush=True); time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "Claim"
        got = claim_run(folder)
        assert isinstance(got, Holder) and got.pid == holder.pid
        assert f"pid {holder.pid}" in got.describe()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (folder / CLAIM_FILE).is_file()  # a crash leaves the file...
    got = claim_run(folder)  # ...which the next sweep takes over
    assert isinstance(got, Claim)
    assert json.loads((folder / CLAIM_FILE).read_text())["pid"] == os.getpid()
    again = claim_run(folder)
    assert isinstance(again, Holder) and again.pid == os.getpid()  # held, even from here
    got.release()
    assert not (folder / CLAIM_FILE).exists()


def test_a_sweep_skips_a_run_another_sweep_holds(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, TINY_SPEC.replace("seed = [0, 1]", "seed = [0]"))
    out = tmp_path / "sweep"
    plan = plan_runs(load_spec(spec), out)
    plan[0].folder.mkdir(parents=True)
    code = (
        "import time; from spikelottery.sweep.claims import claim_run; "
        f"c = claim_run({str(plan[0].folder)!r}); print('held', flush=True); time.sleep(120)"
    )
    other = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == "held"
        result = sweep(spec, out, echo=lines.append)
    finally:
        other.send_signal(signal.SIGKILL)
        other.wait()
    assert [r.run_id for r in result.elsewhere] == [plan[0].run_id]
    assert len(result.outcomes) == 3 and not result.failed
    assert not (plan[0].folder / RESULTS_FILE).exists()
    assert any(f"pid {other.pid}" in line for line in lines), lines
    # the holder gone, the next sweep runs the run it left
    again = sweep(spec, out, echo=lambda line: None)
    assert [o.run.run_id for o in again.outcomes] == [plan[0].run_id]


def test_sweep_in_a_read_only_folder_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = write_spec(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.geteuid() == 0:  # root writes anyway: a read-only file system, as os.open sees it
        real_open = os.open

        def read_only(path: object, flags: int, *args: object) -> int:
            if str(path).startswith(str(locked)) and flags & (os.O_WRONLY | os.O_RDWR):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
            return real_open(path, flags, *args)  # type: ignore[arg-type]

        def no_mkdir(self: Path, *args: object, **kwargs: object) -> None:
            if str(self).startswith(str(locked)) and not self.is_dir():
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

        monkeypatch.setattr(os, "open", read_only)
        monkeypatch.setattr(Path, "mkdir", no_mkdir)
    try:
        with pytest.raises(SpikeLotteryError, match="writable folder"):
            sweep(spec, locked / "sweep", echo=lambda line: None)
        with pytest.raises(SpikeLotteryError, match="writable folder"):
            sweep(spec, locked, echo=lambda line: None)
    finally:
        locked.chmod(0o755)


def test_truncated_results_are_named_not_blamed_on_other_settings(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, TINY_SPEC.replace("seed = [0, 1]", "seed = [0]"))
    out = tmp_path / "sweep"
    sweep(spec, out, echo=lambda line: None, shard=(1, 4))
    first = plan_runs(load_spec(spec), out)[0]
    path = first.folder / RESULTS_FILE
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(SpikeLotteryError, match="not valid JSON") as info:
        sweep(spec, out, echo=lambda line: None)
    assert "other settings" not in str(info.value) and str(path) in str(info.value)


def test_sweep_waits_for_the_plan_lock(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, TINY_SPEC.replace("seed = [0, 1]", "seed = [0]"))
    out = tmp_path / "sweep"
    out.mkdir()
    code = (
        "import time; from spikelottery.sweep.claims import sweep_lock\n"
        f"with sweep_lock({str(out)!r}):\n    print('held', flush=True); time.sleep(2)"
    )
    other = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert other.stdout is not None and other.stdout.readline().strip() == "held"
    lines: list[str] = []
    started = time.monotonic()
    sweep(spec, out, echo=lines.append, shard=(1, 4))
    other.wait()
    assert time.monotonic() - started > 0.5
    assert any(f"waiting for the sweep of pid {other.pid}" in line for line in lines), lines


def test_workers_end_with_a_killed_sweep(tmp_path: Path) -> None:
    # A SIGKILLed sweep cannot stop its workers and its claims die with it; a worker left
    # running would go on writing a run folder that the next sweep claims and runs again.
    spec = write_spec(tmp_path, TINY_SPEC.replace("epochs = 1", "epochs = 200"))
    out = tmp_path / "sweep"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = _sweep_cmd(spec, out, "--no-progress", "--workers", "2")
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True
    )
    group = proc.pid  # the sweep and its workers share this process group
    try:
        deadline = time.monotonic() + 240
        while not list(out.rglob("checkpoint.pt")):  # a worker is training
            assert proc.poll() is None, "the sweep ended before its workers started"
            assert time.monotonic() < deadline, "no run started in 240 s"
            time.sleep(0.2)
        proc.kill()
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while True:
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                break  # every worker has ended
            assert time.monotonic() < deadline, "a worker outlived its killed sweep"
            time.sleep(0.2)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
