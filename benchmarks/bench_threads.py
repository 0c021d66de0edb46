"""The thread policy on a busy and on an idle machine: ``spikelottery run`` at auto, 1 and 2 threads.

Run: ``python benchmarks/bench_threads.py`` (``--help`` for options).

Beside ``--hogs`` busy single-thread processes (``python -c "while True: pass"``, started
for the busy half and always killed at its end), then without them, it times the same
``spikelottery run`` (default: ``--model vgg_tiny --dataset digits --method mpslt
--epochs 3``) as a fresh process, wall clock from spawn to exit, with:

* ``auto``: the library's own choice (``--threads`` not given, ``OMP_NUM_THREADS`` unset);
* ``1 thread``: ``--threads 1``;
* ``2 threads``: ``--threads 2`` (PyTorch's default on 2 cores: what the CLI did before).

The settings are interleaved, ``--repeats`` times each (``--settings`` picks some).
Printed: the median wall time of each setting, the ratios of ``auto`` to the 1-thread run
(busy) and to the best fixed count (idle), the counts and reasons that ``auto`` recorded
in ``results.json``, the load average, and the targets of issue 23 (busy: auto at most
1.15x the 1-thread run; idle: auto within 5% of the best fixed count).

``--blind-load`` hides the load average from the policy (as a container's host load
is hidden from it), so that ``auto`` must time 1 and 2 threads on the model to choose:
the policy's second line of defence, measured on its own.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SETTINGS = {"auto": [], "1 thread": ["--threads", "1"], "2 threads": ["--threads", "2"]}
# `spikelottery run` with the policy's load reading removed (--blind-load).
BLIND = (
    "import dataclasses, sys, spikelottery.threads as t; read = t.read_cpus; "
    "t.read_cpus = lambda: dataclasses.replace(read(), load=None); "
    "from spikelottery.cli import main; sys.exit(main(sys.argv[1:]))"
)


def _run_once(command: list[str], extra: list[str], out: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    full = [*command, *extra, "--out", str(out), "--overwrite", "--no-progress", "-q"]
    start = time.perf_counter()
    subprocess.run(full, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    data = json.loads((out / "results.json").read_text())
    return {"wall": wall, "threads": data["threads"], "run_seconds": data["seconds"]}


def _start_hogs(n: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def _stop_hogs(hogs: list[subprocess.Popen[bytes]]) -> None:
    for p in hogs:
        p.kill()
    for p in hogs:
        p.wait()


def measure(
    command: list[str],
    repeats: int,
    folder: Path,
    hogs: int,
    settle: float,
    settings: list[str],
) -> dict[str, list[dict[str, Any]]]:
    """``repeats`` interleaved rounds of ``settings``, beside ``hogs`` busy processes."""
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in settings}
    started = _start_hogs(hogs)
    try:  # the hogs are killed however this ends (an error, Ctrl-C, SIGTERM)
        if hogs:
            time.sleep(settle)  # let the load average see them, as on a machine busy for long
        for r in range(repeats):
            order = settings if r % 2 == 0 else settings[::-1]
            for name in order:
                rec = _run_once(command, SETTINGS[name], folder / name.replace(" ", "-"))
                rec["load"] = os.getloadavg()[0]
                results[name].append(rec)
                print(
                    f"  {'busy' if hogs else 'idle'} {r + 1}/{repeats} {name:9s}: "
                    f"{rec['wall']:6.2f} s, {rec['threads']['reason']}",
                    file=sys.stderr,
                    flush=True,
                )
    except KeyboardInterrupt:
        print("  interrupted: the rounds so far", file=sys.stderr)
    finally:
        _stop_hogs(started)
    return {name: recs for name, recs in results.items() if recs}


def _median(records: list[dict[str, Any]]) -> float:
    return statistics.median(r["wall"] for r in records)


def report(label: str, results: dict[str, list[dict[str, Any]]], busy: bool) -> bool:
    """Print one condition's table; return whether its target is met."""
    if "auto" not in results or len(results) < 2:
        print(f"\n### {label}: too few settings ran ({', '.join(results)})")
        return False
    med = {name: _median(recs) for name, recs in results.items()}
    loads = [r["load"] for recs in results.values() for r in recs]
    chosen = collections.Counter(r["threads"]["count"] for r in results["auto"])
    print(f"\n### {label} (load average {min(loads):.1f} to {max(loads):.1f})\n")
    print("| setting | median wall (s) | runs (s) |")
    print("|---|---|---|")
    for name, recs in results.items():
        runs = ", ".join(f"{r['wall']:.1f}" for r in recs)
        print(f"| {name} | {med[name]:.2f} | {runs} |")
    counts = ", ".join(f"{c} thread(s) {n}x" for c, n in sorted(chosen.items()))
    print(f"\nauto chose: {counts}; e.g. `{results['auto'][-1]['threads']['reason']}`")
    if "1 thread" in med and "2 threads" in med:
        print(f"2 threads / 1 thread: {med['2 threads'] / med['1 thread']:.2f}")
    if busy and "1 thread" in med:
        ratio = med["auto"] / med["1 thread"]
        print(f"auto / 1 thread: {ratio:.2f} (target <= 1.15: {_verdict(ratio <= 1.15)})")
        return ratio <= 1.15
    best = min(v for k, v in med.items() if k != "auto")
    ratio = med["auto"] / best
    print(f"auto / best fixed count: {ratio:.2f} (target <= 1.05: {_verdict(ratio <= 1.05)})")
    return ratio <= 1.05


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per setting and condition")
    parser.add_argument("--hogs", type=int, default=3, help="busy processes in the busy half")
    parser.add_argument(
        "--settle", type=float, default=20.0, help="seconds the hogs run before the first run"
    )
    parser.add_argument("--skip-idle", action="store_true", help="only the busy half")
    parser.add_argument("--skip-busy", action="store_true", help="only the idle half")
    parser.add_argument(
        "--settings",
        default=",".join(SETTINGS),
        help=f"comma-separated, of: {', '.join(SETTINGS)} (default: all)",
    )
    parser.add_argument(
        "--blind-load", action="store_true", help="hide the load average from the policy"
    )
    parser.add_argument(
        "--run",
        default="--model vgg_tiny --dataset digits --method mpslt --epochs 3",
        help="the spikelottery run flags",
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally: kill the hogs
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with &
    settings = [name.strip() for name in args.settings.split(",")]
    unknown = [name for name in settings if name not in SETTINGS]
    if unknown:
        parser.error(f"--settings: unknown {', '.join(unknown)}; choose from {', '.join(SETTINGS)}")
    runner = ["-c", BLIND] if args.blind_load else ["-m", "spikelottery"]
    command = [sys.executable, *runner, "run", *args.run.split()]
    print(
        f"spikelottery run {args.run}; {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.1f} at the start; {args.repeats} runs per setting"
        + ("; the load average hidden from the policy" if args.blind_load else ""),
        file=sys.stderr,
    )
    ok = []
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_busy:
            busy = measure(command, args.repeats, Path(tmp), args.hogs, args.settle, settings)
            ok.append(report(f"Beside {args.hogs} busy processes", busy, busy=True))
        if not args.skip_idle:
            if not args.skip_busy:
                time.sleep(args.settle)  # the load average decays after the hogs stop
            idle = measure(command, args.repeats, Path(tmp), 0, 0.0, settings)
            ok.append(report("Without them", idle, busy=False))
    print(f"\ntargets: {'all met' if all(ok) else 'missed'}")


if __name__ == "__main__":
    main()
