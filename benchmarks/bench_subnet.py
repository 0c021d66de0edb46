"""Training-step cost of a score-mask conv against a dense conv and a full-sort mask.

Run: ``python benchmarks/bench_subnet.py`` (add ``--help`` for options).

A VGG-9-sized layer (512 -> 512, 3x3, input [128, 512, 4, 4]) on one CPU thread. Each
round times forward + backward of all variants back to back, so machine noise hits them
alike; medians and ratios are printed. Variants:

* ``nn.Conv2d``: dense weight, weight gradient (the reference).
* ``SubnetConv``: the library layer; the mask is cached between score changes.
* ``SubnetConv + update``: the scores change every step (an optimizer step), so the mask
  is recomputed with ``kthvalue`` each time: the worst case, one call per step (T = 1).
* ``full sort``: an edge-popup-style mask by ``argsort`` on every call (the baseline).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from spikelottery import SubnetConv
from spikelottery.functional import kept_count


class FullSortConv(nn.Conv2d):
    """Baseline: sort all |scores| on every call (what older implementations do)."""

    def __init__(self, *args, pa: float = 0.5, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.pa = pa
        self.weight.requires_grad_(False)
        self.scores = nn.Parameter(torch.randn_like(self.weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = self.scores.abs().flatten()
        order = flat.argsort()
        removed = flat.numel() - kept_count(flat.numel(), self.pa)
        mask = torch.ones_like(flat)
        mask[order[:removed]] = 0
        mask = mask.view_as(self.scores)
        # straight-through: value of the mask, gradient to |scores|
        ste = mask + self.scores.abs() - self.scores.abs().detach()
        return F.conv2d(x, self.weight * ste, self.bias, self.stride, self.padding)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--channels", type=int, default=512)
    parser.add_argument("--size", type=int, default=4)
    parser.add_argument("--pa", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    c = args.channels
    x = torch.randn(args.batch, c, args.size, args.size, requires_grad=True)

    dense = nn.Conv2d(c, c, 3, padding=1, bias=False)
    subnet = SubnetConv(c, c, 3, padding=1, bias=False, pa=args.pa)
    subnet_upd = SubnetConv(c, c, 3, padding=1, bias=False, pa=args.pa)
    full = FullSortConv(c, c, 3, padding=1, bias=False, pa=args.pa)

    def step(layer: nn.Module, update: bool = False):
        def run() -> None:
            if update:
                with torch.no_grad():
                    layer.scores.add_(1e-3)  # an optimizer step: the mask must follow
            layer(x).sum().backward()

        return run

    variants = {
        "nn.Conv2d": step(dense),
        "SubnetConv": step(subnet),
        "SubnetConv + update": step(subnet_upd, update=True),
        "full sort": step(full),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for fn in variants.values():  # warm-up
        fn()
    for _ in range(args.rounds):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)

    ref = statistics.median(times["nn.Conv2d"])
    print(
        f"conv {c}->{c} 3x3 on [{args.batch}, {c}, {args.size}, {args.size}], pa={args.pa}, "
        f"{args.threads} thread(s), median of {args.rounds} rounds, forward+backward"
    )
    print(f"{'variant':<22}{'median ms':>12}{'ratio to Conv2d':>18}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:<22}{1e3 * med:>12.1f}{med / ref:>18.3f}")


if __name__ == "__main__":
    main()
