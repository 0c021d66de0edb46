"""Time an energy estimate against a plain forward pass of the same model on the same batch.

Run ``python benchmarks/bench_energy.py`` (``--help`` for options; VGG-9, batch 16, T = 4,
one thread by default). Three variants run round-robin in one process (the order rotating,
so background load hits them alike): the model's plain ``no_grad`` forward,
``estimate_energy`` with the exact count (the default) and with ``synops=False``. Printed:
each variant's median and range in ms, the ratio of each estimate to the forward (the
median over rounds of the ratio of neighbouring runs, and the ratio of the fastest runs,
the least disturbed by other processes) and the load average before and after, so a
figure taken on a busy machine says so.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from collections.abc import Callable

import torch

from spikelottery.energy import estimate_energy
from spikelottery.models import create_model


def _variants(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor
) -> dict[str, Callable[[], None]]:
    from spikelottery._state import reset_states

    def forward() -> None:
        reset_states(model)
        with torch.no_grad():
            model(x)

    def exact() -> None:
        estimate_energy(model, (x, y))

    def formula() -> None:
        estimate_energy(model, (x, y), synops=False)

    return {"forward": forward, "estimate": exact, "estimate, synops=False": formula}


def _rounds(
    steps: dict[str, Callable[[], None]], warmup: int, repeats: int
) -> dict[str, list[float]]:
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    order = list(steps)
    for r in range(repeats):
        for name in order[r % len(order) :] + order[: r % len(order)]:
            start = time.perf_counter()
            steps[name]()
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg9")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--timesteps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model(args.model, timesteps=args.timesteps).eval()
    x = torch.rand(args.batch, 3, 32, 32)
    y = torch.zeros(args.batch, dtype=torch.long)
    load_before = os.getloadavg()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        times = _rounds(_variants(model, x, y), args.warmup, args.repeats)
    load_after = os.getloadavg()
    print(
        f"{args.model}, batch {args.batch}, T = {args.timesteps}, {args.threads} thread(s), "
        f"{args.repeats} rounds; torch {torch.__version__}; {os.cpu_count()} CPUs"
    )
    print(
        f"load average (1, 5, 15 min) before {', '.join(f'{v:.2f}' for v in load_before)}; "
        f"after {', '.join(f'{v:.2f}' for v in load_after)}"
    )
    base = times["forward"]
    for name, values in times.items():
        line = (
            f"{name:24s} median {statistics.median(values):8.1f} ms "
            f"(range {min(values):.1f}-{max(values):.1f})"
        )
        if name != "forward":
            ratios = [v / b for v, b in zip(values, base, strict=True)]
            line += (
                f"  {statistics.median(ratios):.2f}x forward (median of round ratios; "
                f"{min(values) / min(base):.2f}x on the fastest runs)"
            )
        print(line)


if __name__ == "__main__":
    main()
