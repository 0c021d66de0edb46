"""Mask recompute per optimizer step over a whole network, against its lower bound.

Run: ``python benchmarks/bench_mask.py`` (``--help`` for options).

After every optimizer step each score-mask layer recomputes its mask and the tensors the
forward needs (the effective weight, and alpha in mode ``"mp"``), once, however many
time steps follow. This times that work for every layer of a zoo network, side by side
with its lower bound: ``kthvalue`` of ``|scores|`` and one comparison per layer, which any
exact top-k mask must pay. The variants alternate within each round; medians and the
ratio are printed. The target (issue 17): within 1.2x of the lower bound.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from spikelottery import SubnetLayer, kept_count, sparsify
from spikelottery.models import create_model


def _layers(name: str, mode: str) -> list[SubnetLayer]:
    torch.manual_seed(0)
    model = sparsify(create_model(name, timesteps=1), 0.4, mode=mode)
    return [m for m in model.modules() if isinstance(m, SubnetLayer)]


def _recompute(layers: list[SubnetLayer]) -> None:
    with torch.no_grad():
        for layer in layers:
            layer.scores.add_(0.0)  # what an optimizer step does to the version counter
    for layer in layers:
        layer.effective_weight()  # what the next forward does: one recompute


def _lower_bound(layers: list[SubnetLayer]) -> None:
    with torch.no_grad():
        for layer in layers:
            flat = layer.scores.abs().flatten()
            removed = flat.numel() - kept_count(flat.numel(), layer.pa)
            threshold = flat.kthvalue(removed).values
            flat > threshold  # noqa: B015


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["vgg9", "resnet19"])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"load average {os.getloadavg()}, {args.threads} thread(s), median of {args.rounds}")
    print(f"{'model':<10} {'mode':<4} {'recompute ms':>13} {'lower bound ms':>15} {'ratio':>6}")
    for name in args.models:
        for mode in ("lt", "mp"):
            layers = _layers(name, mode)
            _recompute(layers)
            _lower_bound(layers)
            times: dict[str, list[float]] = {"recompute": [], "bound": []}
            for _ in range(args.rounds):
                for key, fn in (("recompute", _recompute), ("bound", _lower_bound)):
                    t0 = time.perf_counter()
                    fn(layers)
                    times[key].append(time.perf_counter() - t0)
            r, b = statistics.median(times["recompute"]), statistics.median(times["bound"])
            print(f"{name:<10} {mode:<4} {1e3 * r:>13.1f} {1e3 * b:>15.1f} {r / b:>6.2f}")


if __name__ == "__main__":
    main()
