"""Every benchmark still runs: each script, with its smallest settings, in a fresh process.

The benchmarks are not timed here (the figures live in docs/benchmarks.md); this only
catches a script that no longer runs against the library it measures, as happened when
the mask selection moved module.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

#: The smallest settings of each script (None: only ``--help``, the script is long by
#: nature: it spawns processes or busy loops for a fixed time).
SMALL: dict[str, list[str] | None] = {
    "bench_subnet.py": ["--batch", "2", "--channels", "8", "--size", "4", "--rounds", "1"],
    "bench_mask.py": ["--models", "vgg9", "--threads", "1", "--no-sort", "--rounds", "1"],
    "bench_step.py": [
        *("--models", "vgg9", "--batch", "2", "--size", "8", "--timesteps", "2"),
        *("--warmup", "1", "--rounds", "1", "--threads", "1"),
    ],
    "bench_lif.py": ["--shape", "2", "2", "4", "4", "4", "--threads", "1", "--repeats", "1"],
    "bench_energy.py": [
        *("--model", "vgg_tiny", "--batch", "2", "--timesteps", "2"),
        *("--repeats", "1", "--warmup", "1"),
    ],
    "bench_memory.py": ["--model", "vgg_tiny", "--batch", "2", "--timesteps", "2", "--size", "8"],
    "bench_patch.py": [
        *("--model", "spikformer_micro", "--pb", "0", "0.5", "--batch", "2"),
        *("--timesteps", "1", "--rounds", "1"),
    ],
    "ticket_sizes.py": ["--models", "vgg_tiny"],
    "bench_startup.py": None,
    "bench_threads.py": None,
}


def test_every_benchmark_is_listed() -> None:
    assert sorted(SMALL) == sorted(p.name for p in BENCHMARKS.glob("*.py"))


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(SMALL))
def test_the_benchmark_runs(script: str, tmp_path: Path) -> None:
    args = SMALL[script]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SPIKELOTTERY_COMPILE": "0"}
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *(args if args is not None else ["--help"])],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,  # whatever a script writes stays in the test's folder
    )
    assert proc.returncode == 0, f"{script}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    assert proc.stdout.strip(), f"{script} printed nothing"
