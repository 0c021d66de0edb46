"""Helpers of the sweep tests: a tiny SPEC on the digits, and fake SLURM commands on PATH.

The fake ``sbatch`` records each submission script and answers as SLURM does; the fake
``sacct`` reports the states a test writes into a file. The array tasks themselves are
run by :func:`run_array_task`, with the environment SLURM would give them, through
submitit's own worker entry point (``python -m submitit.core._submit``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

TINY_SPEC = """
[sweep]
name = "tiny"
description = "2 x 2 x 2 runs of a tiny VGG on the digits"

[base]
model = "vgg_tiny"
dataset = "digits"
epochs = 1
max_batches = 2
energy_batches = 1
batch_size = 32

[grid]
method = ["mplt", "mpslt"]
pa = [0.2, 0.4]
seed = [0, 1]
"""

#: 2 x 2 runs: enough for the SLURM tests, which start one process per task.
SMALL_SPEC = TINY_SPEC.replace("pa = [0.2, 0.4]\n", "")

ARRAY_JOB_ID = "4242"


def write_spec(folder: Path, text: str = TINY_SPEC, name: str = "spec.toml") -> Path:
    """Write a SPEC file and return its path."""
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def install_fake_slurm(folder: Path) -> Path:
    """Write fake ``sbatch``, ``sacct`` and ``srun`` into ``folder/bin``; return that folder."""
    bin_dir = folder / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    log = folder / "sbatch.log"
    states = folder / "sacct_states.txt"
    (bin_dir / "sbatch").write_text(
        f"#!{sys.executable}\n"
        "import shutil, sys\n"
        f"shutil.copy(sys.argv[-1], {str(folder / 'submitted.sh')!r})\n"
        f"open({str(log)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
        f"print('Submitted batch job {ARRAY_JOB_ID}')\n"
    )
    (bin_dir / "sacct").write_text(
        f"#!{sys.executable}\n"
        "import os\n"
        "print('JobID|State|NodeList')\n"
        f"path = {str(states)!r}\n"
        "if os.path.exists(path):\n"
        "    print(open(path).read().strip())\n"
    )
    # submitit looks for srun to decide that this is a SLURM cluster; the tasks run
    # through run_array_task, so this one only has to exist.
    (bin_dir / "srun").write_text('#!/bin/sh\nexec "$@"\n')
    for tool in ("sbatch", "sacct", "srun"):
        (bin_dir / tool).chmod(0o755)
    return bin_dir


def array_size(script: str) -> tuple[int, int]:
    """``#SBATCH --array=0-7%4`` -> ``(8, 4)``: the tasks and how many run at once."""
    match = re.search(r"#SBATCH --array=0-(\d+)%(\d+)", script)
    assert match, f"no --array line in the sbatch script:\n{script}"
    return int(match.group(1)) + 1, int(match.group(2))


def worker_folder(script: str) -> str:
    """The folder argument of submitit's worker command in an sbatch script."""
    match = re.search(r"-m submitit\.core\._submit (\S+)", script)
    assert match, f"no submitit worker command in the sbatch script:\n{script}"
    return match.group(1).strip("'\"")


def run_array_task(script: str, index: int, *, env: dict[str, str] | None = None) -> None:
    """Run array task ``index`` of ``script`` as SLURM would: its worker command, SLURM's variables."""
    job_env = {
        **os.environ,
        "SLURM_JOB_ID": str(9000 + index),
        "SLURM_ARRAY_JOB_ID": ARRAY_JOB_ID,
        "SLURM_ARRAY_TASK_ID": str(index),
        "SLURM_NTASKS": "1",
        "SLURM_JOB_NUM_NODES": "1",
        "SLURM_NODEID": "0",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_JOB_NODELIST": "localhost",
        # the script's own exports (submitit's SUBMITIT_EXECUTOR=slurm among them)
        **dict(re.findall(r"^export (\w+)=(\S+)$", script, flags=re.MULTILINE)),
        **(env or {}),
    }
    done = subprocess.run(
        [sys.executable, "-u", "-m", "submitit.core._submit", worker_folder(script)],
        env=job_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError(f"array task {index} failed:\n{done.stdout}\n{done.stderr}")
