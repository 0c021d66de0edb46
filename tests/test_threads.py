"""The thread policy: the pure choice, the system readings, and what run/demo/evaluate do with it."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import spikelottery.threads as th
from _engine_testing import strip_seconds, subnet_state, tiny
from spikelottery.cli import main
from spikelottery.engine import TrainConfig, run
from spikelottery.errors import SpikeLotteryError

# ------------------------------------------------------------------ the pure choice

cpus_strategy = st.builds(
    th.Cpus,
    machine=st.integers(1, 256),
    affinity=st.none() | st.integers(1, 256),
    quota=st.none() | st.floats(0.1, 300.0),
    slurm=st.none() | st.integers(1, 256),
    load=st.none() | st.floats(0.0, 500.0),
    own_load=st.floats(0.0, 8.0),
)


@given(
    cpus=cpus_strategy,
    workers=st.integers(1, 64),
    torch_threads=st.none() | st.integers(1, 256),
)
def test_auto_never_exceeds_the_usable_share(
    cpus: th.Cpus, workers: int, torch_threads: int | None
) -> None:
    choice = th.choose_threads(
        "auto", cpus, workers=workers, torch_threads=torch_threads, torch_initial=torch_threads
    )
    assert choice.source == "auto" and choice.count >= 1
    assert choice.count <= max(1, th.usable_cpus(cpus) // workers)
    assert torch_threads is None or choice.count <= torch_threads
    assert choice.candidates == ((1, choice.count) if choice.count > 1 else (1,))
    assert choice.reason.startswith("auto (") and choice.reason.endswith(f"-> {choice.count})")
    # The load is read only where the process may use the whole machine.
    whole = th.usable_cpus(cpus) >= cpus.machine and cpus.quota is None
    if cpus.load is not None and whole and choice.count > 1:
        assert cpus.machine - max(0.0, cpus.load - cpus.own_load) >= th.MIN_FREE_FOR_MORE


@given(cpus=cpus_strategy)
def test_usable_cpus_is_the_smallest_limit(cpus: th.Cpus) -> None:
    limits = [v for v in (cpus.machine, cpus.affinity, cpus.quota, cpus.slurm) if v is not None]
    assert th.usable_cpus(cpus) == max(1, math.floor(min(limits)))


@given(
    cpus=cpus_strategy,
    setting=st.integers(1, 512),
    omp=st.none() | st.integers(1, 64).map(str),
    torch_threads=st.integers(1, 64),
    torch_initial=st.integers(1, 64),
)
def test_explicit_counts_win_in_order(
    cpus: th.Cpus, setting: int, omp: str | None, torch_threads: int, torch_initial: int
) -> None:
    common = {"omp": omp, "torch_threads": torch_threads, "torch_initial": torch_initial}
    # 1. the setting (--threads N), whatever else is set
    chosen = th.choose_threads(setting, cpus, **common)
    assert (chosen.count, chosen.source, chosen.candidates) == (setting, "setting", ())
    # 2. torch.set_num_threads called before the run, 3. OMP_NUM_THREADS
    auto = th.choose_threads("auto", cpus, **common)
    if torch_threads != torch_initial:
        assert (auto.count, auto.source) == (torch_threads, "torch.set_num_threads")
    elif omp is not None:
        assert (auto.count, auto.source) == (int(omp), "OMP_NUM_THREADS")
    else:
        assert auto.source == "auto"


def test_busy_machine_gets_one_thread_and_says_why() -> None:
    busy = th.choose_threads("auto", th.Cpus(machine=2, affinity=2, load=3.1))
    assert (busy.count, busy.reason, busy.needs_timing) == (
        1,
        "auto (affinity 2, load 3.1 -> 1)",
        False,
    )
    idle = th.choose_threads("auto", th.Cpus(machine=2, affinity=2, load=0.1))
    assert idle.candidates == (1, 2) and idle.needs_timing
    # A load of 0.7 (a command that just ended, the machine's daemons) leaves more than a
    # CPU free: timed, not one thread outright (the demo took 1.6x as long on one).
    after = th.choose_threads("auto", th.Cpus(machine=2, affinity=2, load=0.7))
    assert after.candidates == (1, 2) and after.needs_timing
    one_busy = th.choose_threads("auto", th.Cpus(machine=2, affinity=2, load=1.2))
    assert one_busy.candidates == (1,)
    wide = th.choose_threads("auto", th.Cpus(machine=8, affinity=8, load=5.5))
    assert wide.candidates == (1, 3)  # 2.5 CPUs free: rounded up, then timed
    # Our own part of the load is not someone else's work.
    ours = th.choose_threads("auto", th.Cpus(machine=2, affinity=2, load=2.0, own_load=1.9))
    assert ours.candidates == (1, 2)
    # In a container (a quota) or an allocation (affinity), the load is the host's: ignored.
    host = th.choose_threads("auto", th.Cpus(machine=64, affinity=4, load=80.0))
    assert host.candidates == (1, 4) and "load" not in host.reason
    shared = th.choose_threads("auto", th.Cpus(machine=8, affinity=8), workers=4)
    assert shared.count == 2 and "4 workers" in shared.reason


@pytest.mark.parametrize(
    ("timings", "count"),
    [({1: 0.010, 2: 0.0098}, 1), ({1: 0.010, 2: 0.006}, 2), ({1: 0.004, 2: 0.030}, 1)],
)
def test_settle_keeps_more_threads_only_when_clearly_faster(
    timings: dict[int, float], count: int
) -> None:
    choice = th.choose_threads("auto", th.Cpus(machine=2, affinity=2, load=0.0)).settle(timings)
    assert choice.count == count and choice.reason.endswith(f"-> {count})")
    assert choice.to_dict()["timings"] == {str(c): t for c, t in timings.items()}


@pytest.mark.parametrize("bad", [0, -1, "x", "", 1.5, True, None, "0"])
def test_bad_threads_values_name_the_setting(bad: object) -> None:
    with pytest.raises(ValueError, match="threads must be 'auto' or a number of CPU threads"):
        th.check_threads("threads", bad)
    with pytest.raises(ValueError, match="threads"):
        TrainConfig(threads=bad)


@pytest.mark.parametrize(("text", "count"), [("4", 4), ("4,2", 4), (" 1 ", 1), ("", None)])
def test_omp_num_threads_is_read_as_openmp_does(text: str, count: int | None) -> None:
    choice = th.choose_threads("auto", th.Cpus(machine=8), omp=text)
    assert choice.count == (count or 8) and choice.source == (
        "OMP_NUM_THREADS" if count else "auto"
    )


@pytest.mark.parametrize("text", ["x", "0", "-2"])
def test_bad_omp_num_threads_is_named(text: str) -> None:
    with pytest.raises(SpikeLotteryError, match="OMP_NUM_THREADS"):
        th.choose_threads("auto", th.Cpus(machine=2), omp=text)
    assert th.choose_threads(1, th.Cpus(machine=2), omp=text).count == 1  # --threads wins


# ------------------------------------------------------------------ reading the system


@pytest.mark.parametrize(
    ("files", "quota"),
    [
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu.max": "150000 100000\n"}, 1.5),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "200000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 2.0),
        ({}, None),
    ],
)
def test_cgroup_quota_v1_and_v2(tmp_path: Path, files: dict[str, str], quota: float | None) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert th._read_quota(tmp_path) == quota


def test_read_cpus_sees_slurm_and_the_sweep_share(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(th, "_INITIAL_THREADS", torch.get_num_threads())
    cpus = th.read_cpus()
    assert cpus.slurm == 1 and cpus.machine >= 1
    assert th.current_choice().count == 1 and "slurm 1" in th.current_choice().reason
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    monkeypatch.setattr(th, "read_cpus", lambda: th.Cpus(machine=4, affinity=4))
    monkeypatch.setattr(th, "_share", 4)
    assert th.current_choice().reason.startswith("auto (affinity 4, 4 workers")


def test_time_counts_restores_the_thread_count() -> None:
    before = torch.get_num_threads()
    seen: list[int] = []
    timings = th.time_counts(lambda: seen.append(torch.get_num_threads()), [1, 2], rounds=2)
    assert set(timings) == {1, 2} and set(seen) == {1, 2}
    assert torch.get_num_threads() == before


def test_a_thrashing_count_costs_one_step() -> None:
    # Beside busy processes a second thread can make a step 30x slower: its first call is
    # the verdict, not one of several timed rounds.
    calls: list[int] = []

    def step() -> None:
        calls.append(torch.get_num_threads())
        time.sleep(0.002 if torch.get_num_threads() == 1 else 0.02)

    timings = th.time_counts(step, [1, 2])
    assert calls == [1, 2] and timings[2] > 1.5 * timings[1]


# ------------------------------------------------------------------ run, demo, evaluate


@pytest.fixture
def idle_two_cpus(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An idle 2-CPU machine, no OMP_NUM_THREADS, torch's count as at import."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(th, "read_cpus", lambda: th.Cpus(machine=2, affinity=2, load=0.0))
    monkeypatch.setattr(th, "_INITIAL_THREADS", 2)
    monkeypatch.setattr(th, "_timed", {})
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("verdict", [1, 2])
def test_timing_does_not_change_what_the_run_computes(
    idle_two_cpus: None, monkeypatch: pytest.MonkeyPatch, verdict: int
) -> None:
    # The timing runs on a copy of the model with the generators restored: the auto run
    # equals, bit for bit, a run pinned to the count the timing chose.
    real = th.time_counts

    def timed(step: Callable[[], object], counts: Sequence[int], **_: Any) -> dict[int, float]:
        real(step, counts, rounds=1)  # the real steps run; the verdict is forced
        return {c: 0.001 if c == verdict else 0.002 for c in counts}

    monkeypatch.setattr(th, "time_counts", timed)
    auto = run(tiny(method="mpslt"))
    assert auto.threads is not None and auto.threads["count"] == verdict
    assert auto.threads["source"] == "auto" and auto.threads["timings"] is not None
    pinned = run(tiny(method="mpslt", threads=verdict))
    assert pinned.threads == {
        "count": verdict,
        "source": "setting",
        "reason": f"threads={verdict} (the threads setting, --threads)",
        "timings": None,
    }
    assert strip_seconds(auto.history) == strip_seconds(pinned.history)
    a, b = subnet_state(auto.model), subnet_state(pinned.model)
    assert all(torch.equal(a[n][k], b[n][k]) for n in a for k in a[n])
    assert torch.get_num_threads() == 2  # restored after each run


def test_the_timing_runs_uncompiled_kernels_in_a_compiled_run(
    idle_two_cpus: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A compiled LIF kernel is compiled again at each thread count (inductor's C++ kernels
    # fix their thread count): timed, a 2-thread step took 174 ms against 34 at 1 in the
    # demo, which then ran 1.8x slower on one thread. The timing sees uncompiled kernels.
    import spikelottery._lif_kernels as kernels

    seen: list[bool] = []
    real = th.time_counts

    def timed(step: Callable[[], object], counts: Sequence[int], **kw: Any) -> dict[int, float]:
        seen.append(kernels.compile_allowed())
        return real(step, counts, rounds=1)

    monkeypatch.setattr(th, "time_counts", timed)
    # an ANN ticket: compile_lif="on" holds for the run, and no kernel is compiled here
    result = run(tiny(method="mplt-relu", spiking=False, compile_lif="on"))
    assert seen == [False] and result.threads is not None and result.threads["timings"]


TINY_RUN = ["run", "--model", "vgg_tiny", "--epochs", "1", "--max-batches", "2"]
TINY_RUN += ["--energy-batches", "1", "-q"]


def _results(out: Path) -> dict[str, Any]:
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def ticket(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("threads") / "run"
    assert main([*TINY_RUN, "--threads", "1", "--out", str(out)]) == 0
    return str(out / "ticket.safetensors")


def test_run_records_threads_and_environment(tmp_path: Path) -> None:
    before = torch.get_num_threads()
    out = tmp_path / "run"
    assert main([*TINY_RUN, "--threads", "2", "--out", str(out)]) == 0
    data = _results(out)
    assert data["threads"]["count"] == 2 and data["threads"]["source"] == "setting"
    assert data["config"]["threads"] == 2
    env = data["environment"]
    assert env["threads"] == 2 and env["torch"] == torch.__version__ and env["device"] == "cpu"
    assert set(env) >= {"python", "numpy", "platform", "cpu", "deterministic", "spikelottery"}
    assert torch.get_num_threads() == before  # main() gives the caller its count back


def test_omp_num_threads_is_respected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(th, "_INITIAL_THREADS", torch.get_num_threads())
    assert main([*TINY_RUN, "--out", str(tmp_path / "omp")]) == 0
    assert _results(tmp_path / "omp")["threads"] == {
        "count": 1,
        "source": "OMP_NUM_THREADS",
        "reason": "OMP_NUM_THREADS=1",
        "timings": None,
    }
    # --threads wins over it.
    assert main([*TINY_RUN, "--threads", "2", "--out", str(tmp_path / "flag")]) == 0
    assert _results(tmp_path / "flag")["threads"]["count"] == 2


@pytest.mark.parametrize("command", ["evaluate", "energy"])
def test_evaluate_and_energy_say_their_threads(
    command: str, ticket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = torch.get_num_threads()
    assert main([command, ticket, "--batches", "1", "--threads", "2", "--json"]) == 0
    threads = json.loads(capsys.readouterr().out)["threads"]
    assert threads["count"] == 2 and threads["source"] == "setting"
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("command", ["run", "demo", "sweep", "evaluate", "energy"])
@pytest.mark.parametrize("bad", ["0", "-1", "x"])
def test_bad_threads_flag_is_named(
    command: str, bad: str, ticket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = {
        "run": ["run"],
        "demo": ["demo"],
        "sweep": ["sweep", "spec.toml", "--out", str(tmp_path)],
        "evaluate": ["evaluate", ticket],
        "energy": ["energy", ticket],
    }[command]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--threads", bad])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --threads: threads must be 'auto' or a number of CPU threads" in err
