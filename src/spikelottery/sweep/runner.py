"""``sweep``: plan a SPEC's runs under a folder, then run what is not done yet.

>>> sweep("configs/digits/reward1.toml", "runs/reward1", dry_run=True)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._io import atomic_write_bytes
from .._table import format_rows
from ..engine import RESULTS_FILE
from ..errors import SpikeLotteryError
from .claims import Claim, Holder, claim_run, sweep_lock
from .local import Outcome, run_local
from .plan import (
    PLAN_FILE,
    SETTINGS_FILE,
    PlannedRun,
    describe,
    plan_runs,
    results_problem,
    run_status,
    select_shard,
    settings_record,
    status_counts,
)
from .slurm import SlurmOptions, queued_runs, submit_slurm
from .spec import SweepSpec, load_spec

__all__ = ["EXECUTORS", "SweepResult", "sweep"]

EXECUTORS = ("local", "slurm")


@dataclass
class SweepResult:
    """What :func:`sweep` did.

    Attributes:
        plan: Every run of the SPEC (all shards), with its status before this sweep.
        selected: The runs of this shard.
        todo: The runs this sweep ran or submitted.
        outcomes: How the local runs ended (empty for a dry run or SLURM).
        job_ids: The SLURM job ids (one per run of ``todo``).
        queued: Runs skipped because their SLURM job is still pending or running.
        elsewhere: Runs skipped because another sweep process was running them (its
            claim named it), or had finished them by the time this one got there.
    """

    plan: list[PlannedRun]
    selected: list[PlannedRun]
    todo: list[PlannedRun]
    outcomes: list[Outcome] = field(default_factory=list)
    job_ids: list[str] = field(default_factory=list)
    queued: list[PlannedRun] = field(default_factory=list)
    elsewhere: list[PlannedRun] = field(default_factory=list)

    @property
    def failed(self) -> list[Outcome]:
        """The local runs that raised."""
        return [o for o in self.outcomes if o.error is not None]


def _write_plan(out: Path, spec: SweepSpec, plan: list[PlannedRun]) -> None:
    try:
        _write_plan_files(out, spec, plan)
    except OSError as exc:
        raise SpikeLotteryError(
            f"cannot write the sweep's plan under {str(out)!r}: {exc.strerror or exc}"
            + (f" ({exc.filename})" if exc.filename else "")
            + "; give --out a folder this process can write"
        ) from None


def _write_plan_files(out: Path, spec: SweepSpec, plan: list[PlannedRun]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for r in plan:
        r.folder.mkdir(parents=True, exist_ok=True)
        text = json.dumps(settings_record(r, spec), indent=2, sort_keys=True) + "\n"
        target = r.folder / SETTINGS_FILE
        if not target.is_file() or target.read_text(encoding="utf-8") != text:
            atomic_write_bytes(target, text.encode("utf-8"))
    record = {
        "name": spec.name,
        "description": spec.description,
        "spec": spec.source,
        "axes": spec.axes,
        "runs": [{"run_id": r.run_id, "axes": dict(r.axes)} for r in plan],
    }
    atomic_write_bytes(out / PLAN_FILE, (json.dumps(record, indent=2) + "\n").encode("utf-8"))


def plan_table(plan: list[PlannedRun], selected: list[PlannedRun]) -> list[str]:
    """The plan as a text table: id, status, axis values, and whether this shard runs it."""
    chosen = {r.run_id for r in selected}
    rows = [
        [r.run_id, r.status, "yes" if r.run_id in chosen else "-", describe(r.axes)] for r in plan
    ]
    return format_rows(["run", "status", "this shard", "settings"], rows)


def sweep(
    spec: str | os.PathLike[str] | SweepSpec,
    out: str | os.PathLike[str],
    *,
    executor: str = "local",
    workers: int = 1,
    shard: tuple[int, int] | None = None,
    dry_run: bool = False,
    runtime: Mapping[str, Any] | None = None,
    slurm: SlurmOptions | None = None,
    tensorboard: bool = False,
    echo: Callable[[str], None] | None = None,
    progress: bool = True,
) -> SweepResult:
    """Run (or submit) every run of ``spec`` under ``out`` that is not done yet.

    Started again, it skips finished runs, resumes interrupted ones from their
    checkpoints, retries failed ones, and adds only the new points of a grown SPEC.

    Args:
        spec: A SPEC file (see :mod:`spikelottery.sweep.spec`) or a parsed one.
        out: The sweep's folder ``DIR``: ``sweep.json`` (the plan) and ``runs/<id>/``.
        executor: ``"local"`` (here) or ``"slurm"`` (one job array through submitit).
        workers: Local worker processes (``1``: one run after another, in this process).
        shard: ``(i, n)``: run only the ``i``-th of ``n`` shares of the plan (1-based).
        dry_run: Plan and print, run nothing, write nothing.
        runtime: Runtime settings for every run (``device``, ``data_root``,
            ``num_workers``): they do not change a run's id.
        slurm: What each SLURM task asks for (``executor="slurm"``).
        tensorboard: Also write each run's TensorBoard event files (from its results).
        echo: Where the plan and the per-run lines go (default: stderr).
        progress: Show one overall progress bar (local runs, on a terminal).

    Raises:
        SpikeLotteryError: A bad SPEC or option (naming it), a run folder that holds
            the results of other settings (``stale``) or unreadable results
            (``damaged``), or a folder this process cannot write.

    Two sweeps on one folder split its runs: each claims a run just before running it
    (:mod:`~spikelottery.sweep.claims`) and leaves the runs another sweep holds to it
    (:attr:`SweepResult.elsewhere`), so that no run runs twice.
    """
    say = echo or (lambda line: print(line, file=sys.stderr, flush=True))
    if executor not in EXECUTORS:
        raise SpikeLotteryError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise SpikeLotteryError(f"workers must be an int >= 1, got {workers!r}")
    parsed = spec if isinstance(spec, SweepSpec) else load_spec(spec)
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise SpikeLotteryError(f"--out {str(folder)!r} is a file; give a folder for the sweep")
    if dry_run:
        return _plan(parsed, folder, runtime, shard, executor, dry_run, say)
    # one sweep at a time writes the plan (and submits to SLURM); the runs themselves
    # are claimed one by one as they start, so that concurrent sweeps split them
    with sweep_lock(folder, say=say):
        result = _plan(parsed, folder, runtime, shard, executor, dry_run, say)
        _write_plan(folder, parsed, result.plan)
        if not result.todo:
            say("nothing to run: every run of this shard is done")
            return result
        if executor == "slurm":
            busy = {r.run_id: h for r in result.todo if isinstance(h := _holder(r), Holder)}
            result.elsewhere = [r for r in result.todo if r.run_id in busy]
            result.todo = [r for r in result.todo if r.run_id not in busy]
            for r in result.elsewhere:
                say(
                    f"{r.run_id}: not submitted, a local sweep runs it ({busy[r.run_id].describe()})"
                )
            if result.todo:
                result.job_ids = submit_slurm(
                    result.todo, folder, slurm or SlurmOptions(), runtime=dict(runtime or {})
                )
                say(
                    f"submitted {len(result.todo)} runs as SLURM array "
                    f"{result.job_ids[0].split('_')[0]}; job ids in {folder / 'slurm_jobs.json'}"
                )
            return result
    result.outcomes = _run_here(result, workers, dict(runtime or {}), tensorboard, say, progress)
    return result


def _holder(run: PlannedRun) -> Holder | None:
    """Who runs ``run`` now (another sweep's claim), or ``None``."""
    got = claim_run(run.folder)
    if isinstance(got, Claim):
        got.release()
        return None
    return got


def _refuse_unusable(selected: list[PlannedRun]) -> None:
    stale = [r for r in selected if r.status == "stale"]
    if stale:
        raise SpikeLotteryError(
            "these run folders hold the results of other settings (a changed library "
            "default?): " + ", ".join(str(r.folder) for r in stale) + "; move them away and "
            "sweep again"
        )
    damaged = [r for r in selected if r.status == "damaged"]
    if damaged:
        raise SpikeLotteryError(
            "these results files cannot be read: "
            + "; ".join(
                f"{r.folder / RESULTS_FILE} {results_problem(r.folder) or 'is unreadable'}"
                for r in damaged
            )
            + ". Delete them (or their run folders) to run those runs again"
        )


def _plan(
    parsed: SweepSpec,
    folder: Path,
    runtime: Mapping[str, Any] | None,
    shard: tuple[int, int] | None,
    executor: str,
    dry_run: bool,
    say: Callable[[str], None],
) -> SweepResult:
    """The plan, this shard's share, what is left to do; the summary line (and table) said."""
    plan = plan_runs(parsed, folder, runtime=runtime)
    selected = select_shard(plan, shard)
    _refuse_unusable(selected)
    todo = [r for r in selected if r.status != "done"]
    queued: list[PlannedRun] = []
    if executor == "slurm" and not dry_run:
        alive = queued_runs(folder, todo)
        queued = [r for r in todo if r.run_id in alive]
        todo = [r for r in todo if r.run_id not in alive]
    counts = status_counts(selected)
    name = f" {parsed.name}" if parsed.name else ""
    say(
        f"sweep{name}: {len(plan)} runs"
        + (f", shard {shard[0]}/{shard[1]}: {len(selected)}" if shard else "")
        + ": "
        + ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        + (f"; {len(queued)} still queued on SLURM" if queued else "")
    )
    if dry_run:
        say("\n".join(plan_table(plan, selected)))
    return SweepResult(plan, selected, todo, queued=queued)


def _run_here(
    result: SweepResult,
    workers: int,
    runtime: dict[str, Any],
    tensorboard: bool,
    say: Callable[[str], None],
    progress: bool,
) -> list[Outcome]:
    from tqdm.auto import tqdm

    todo = result.todo
    bar = tqdm(
        total=len(todo), desc="sweep", unit="run", disable=not (progress and sys.stderr.isatty())
    )
    started = time.perf_counter()
    finished = 0
    holders: dict[str, Holder] = {}

    def show(line: str) -> None:
        if bar.disable:
            say(line)
        else:
            bar.write(line)

    def claim(run: PlannedRun) -> Callable[[], None] | None:
        got = claim_run(run.folder)
        if isinstance(got, Holder):
            holders[run.run_id] = got
        elif run_status(run.folder, run.config) in ("done", "stale", "damaged"):
            got.release()  # another sweep finished it after this one made its plan
        else:
            return got.release
        result.elsewhere.append(run)
        bar.update(1)
        return None

    def on_done(o: Outcome) -> None:
        nonlocal finished
        finished += 1
        bar.update(1)
        head = f"[{finished}/{len(todo)}] {o.run.run_id} {describe(o.run.axes)}"
        if o.error is None:
            line = f"{head}: accuracy {100 * (o.accuracy or 0.0):.2f}% in {o.seconds or 0.0:.1f} s"
        else:
            line = f"{head}: FAILED {o.error} (see {o.run.folder / 'failed.json'})"
        show(line)

    try:
        outcomes = run_local(
            todo,
            workers=workers,
            runtime=runtime,
            tensorboard=tensorboard,
            on_done=on_done,
            claim=claim,
        )
    finally:
        bar.close()
    failed = sum(o.error is not None for o in outcomes)
    say(
        f"sweep finished {len(outcomes)} runs in {time.perf_counter() - started:.1f} s"
        + (f"; {failed} failed: run the sweep again to retry them" if failed else "")
    )
    if result.elsewhere:
        running = sorted({h.process() for h in holders.values()})
        say(
            f"{len(result.elsewhere)} runs left to another sweep on this folder: "
            f"{len(holders)} running there"
            + (f" ({'; '.join(running)})" if running else "")
            + f", {len(result.elsewhere) - len(holders)} finished there meanwhile"
        )
    return outcomes
