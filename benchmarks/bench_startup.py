"""Start-up time of the demo: process start to the end of its first training step.

Run: ``python benchmarks/bench_startup.py`` (``--help`` for options).

Each figure comes from a fresh Python process (this script with ``--child``) that imports
spikelottery, builds the demo's data, model and loaders as ``spikelottery demo`` does
(:func:`spikelottery.demo.demo_configs`, the engine's ``build_*`` functions, the ticket
check, the optimizer), and runs training steps as the engine's loop does. Three settings:

* ``compiled, cold``: the LIF kernels compiled by ``torch.compile`` with an empty cache
  (``TORCHINDUCTOR_CACHE_DIR`` set to a fresh temporary folder);
* ``compiled, warm``: a second process on the same cache folder;
* ``compile off``: ``SPIKELOTTERY_COMPILE=0`` (the uncompiled fused kernels).

The clock starts in this process just before the child is spawned (``time.monotonic`` is
one clock for all processes), so interpreter start-up counts. Printed per setting: the time
to the end of the first step and its parts (interpreter start, imports, data and model,
ticket check, first step), the median step after ``--warmup`` further steps, and the ratios
to compile off (each a median over ``--repeats`` processes per setting, the settings
interleaved); then after how many steps compiling pays for itself. ``--threads N`` runs
every process on N torch threads (the break-even depends on it and on the machine's load:
report both).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

PARTS = ("interpreter", "imports", "build", "check", "first step")
SETTINGS = ("compiled, cold", "compiled, warm", "compile off")


def child(args: argparse.Namespace) -> None:
    """Build the demo and train; print one JSON line of timings (monotonic seconds)."""
    marks = {"spawn": args.t0, "start": time.monotonic()}
    import itertools

    import torch
    import torch.nn.functional as F

    if args.threads:
        torch.set_num_threads(args.threads)
    from spikelottery.demo import demo_configs
    from spikelottery.engine import reset_states, seed_everything
    from spikelottery.engine.build import (
        build_datasets,
        build_loaders,
        build_model,
        check_first_batch,
    )
    from spikelottery.engine.distributed import DistInfo, resolve_device
    from spikelottery.engine.evaluation import input_and_label
    from spikelottery.engine.stages import enter_stage, make_optimizer, stage_plan, train_mode
    from spikelottery.layers import is_subnet

    marks["imported"] = time.monotonic()
    cfg = next(c for _, c in demo_configs(None, progress=False) if c.mode == args.mode)
    dist = DistInfo()
    device = resolve_device(cfg.device, dist)
    seed_everything(cfg.seed)
    train_set, test_set, info = build_datasets(cfg)
    model = build_model(cfg, info).to(device)
    loaders = build_loaders(cfg, train_set, test_set, dist=dist, device=device)
    marks["built"] = time.monotonic()
    if cfg.check_ticket and any(is_subnet(m) for m in model.modules()):
        check_first_batch(model, loaders.test, device)  # as Trainer.run does
    stage = stage_plan(cfg)[0]
    frozen = enter_stage(model, stage.name, pb=cfg.pb)
    opt, sched = make_optimizer(
        model, cfg, stage=stage.name, steps=stage.epochs * loaders.steps_per_epoch
    )
    train_mode(model, frozen)
    marks["checked"] = time.monotonic()

    batches = itertools.chain.from_iterable(itertools.repeat(loaders.train))
    steps: list[float] = []
    for _ in range(1 + args.warmup + args.steps):
        t0 = time.monotonic()
        x, y = input_and_label(next(batches))
        x, y = x.to(device), y.to(device)
        reset_states(model)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        loss.item()  # the engine reads the loss for its progress bar
        steps.append(time.monotonic() - t0)
        if len(steps) == 1:
            marks["first step"] = time.monotonic()
    out = {
        "marks": marks,
        "step": statistics.median(steps[1 + args.warmup :]),
        "threads": torch.get_num_threads(),
        "device": str(device),
    }
    print(json.dumps(out))


def spawn(args: argparse.Namespace, env: dict[str, str]) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--mode", args.mode]
    cmd += ["--warmup", str(args.warmup), "--steps", str(args.steps)]
    cmd += ["--threads", str(args.threads)]
    t0 = time.monotonic()
    proc = subprocess.run(
        [*cmd, "--t0", repr(t0)], env=env, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        sys.exit(f"child failed ({proc.returncode}):\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    m = result["marks"]
    result["parts"] = dict(
        zip(
            PARTS,
            (
                m["start"] - m["spawn"],
                m["imported"] - m["start"],
                m["built"] - m["imported"],
                m["checked"] - m["built"],
                m["first step"] - m["checked"],
            ),
            strict=True,
        )
    )
    result["total"] = m["first step"] - m["spawn"]
    return result


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over the repeats."""
    out = dict(runs[0])
    out["parts"] = {p: statistics.median(r["parts"][p] for r in runs) for p in PARTS}
    for key in ("total", "step"):
        out[key] = statistics.median(r[key] for r in runs)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--mode",
        choices=("dense", "lt", "mp"),
        default="lt",
        help="which of the demo's three runs (default: lt, the SNN ticket search)",
    )
    parser.add_argument("--warmup", type=int, default=5, help="steps before the timed ones")
    parser.add_argument("--steps", type=int, default=30, help="steps for the median step time")
    parser.add_argument("--repeats", type=int, default=3, help="processes per setting")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads in each process (0: torch's default; OMP_NUM_THREADS is passed on)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--t0", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    base = {k: v for k, v in os.environ.items() if k != "SPIKELOTTERY_COMPILE"}
    if args.threads:
        base["OMP_NUM_THREADS"] = str(args.threads)
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in SETTINGS}
    for _ in range(args.repeats):  # the settings interleaved, so load changes hit them alike
        with tempfile.TemporaryDirectory(prefix="inductor-cold-") as cache:
            compiled = {**base, "TORCHINDUCTOR_CACHE_DIR": cache}
            samples["compiled, cold"].append(spawn(args, compiled))
            samples["compiled, warm"].append(spawn(args, compiled))
        with tempfile.TemporaryDirectory(prefix="inductor-off-") as cache:
            off = {**base, "TORCHINDUCTOR_CACHE_DIR": cache, "SPIKELOTTERY_COMPILE": "0"}
            samples["compile off"].append(spawn(args, off))
    runs = {name: _median(rs) for name, rs in samples.items()}

    first = runs["compile off"]
    print(
        f"python {sys.version.split()[0]}, {first['threads']} torch thread(s), device "
        f"{first['device']}, load average at the start {load}, at the end "
        f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}"
    )
    print(
        f"demo network, mode {args.mode!r} (spikelottery demo's 64C3-64C3-AP2-128C3-AP2-FC10, "
        f"8x8 digits, T=4, batch 64); seconds from spawning the process, median of "
        f"{args.repeats} processes per setting"
    )
    cols = (*PARTS, "to 1st step", "ratio", "step ms", "ratio")
    print(f"{'':<16}" + "".join(f"{c:>12}" for c in cols))
    for name, r in runs.items():
        values = [f"{r['parts'][p]:>12.2f}" for p in PARTS]
        values += [f"{r['total']:>12.2f}", f"{r['total'] / first['total']:>12.2f}"]
        values += [f"{1e3 * r['step']:>12.1f}", f"{r['step'] / first['step']:>12.2f}"]
        print(f"{name:<16}" + "".join(values))
    print(f"step ms: median of {args.steps} steps after {args.warmup} warm-up steps")
    for name in ("compiled, cold", "compiled, warm"):
        r = runs[name]
        extra, saved = r["total"] - first["total"], first["step"] - r["step"]
        if extra <= 0:
            verdict = "from the first step (no start-up cost)"
        elif saved <= 0:
            verdict = "never (a compiled step is not faster)"
        else:
            verdict = f"after {extra / saved:,.0f} steps ({extra:.1f} s / {1e3 * saved:.1f} ms)"
            # The same from each repeat's processes alone (they ran next to each other).
            each = [
                (c["total"] - o["total"]) / (o["step"] - c["step"])
                for c, o in zip(samples[name], samples["compile off"], strict=True)
                if o["step"] > c["step"]
            ]
            if each:
                verdict += f"; per repeat {min(each):,.0f}-{max(each):,.0f}"
        print(f"{name}: compiling pays off {verdict}")


if __name__ == "__main__":
    main()
