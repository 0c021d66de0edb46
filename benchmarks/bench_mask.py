"""Mask recompute per optimizer step over a whole network, against its true bound.

Run: ``python benchmarks/bench_mask.py`` (``--help`` for options; ``--threads 1 2`` is
the default, ``--models vgg9 resnet19`` adds ResNet-19).

After every optimizer step each score-mask layer recomputes its mask and the tensors the
forward needs (the effective weight ``W * M``, and alpha in mode ``"mp"``), once, however
many time steps follow. This times that work for every layer of a zoo network, through
the layers' own path (``layer.effective_weight()`` after a change of the scores: each
round moves every score by about 0.1% of the scores' spread, as an optimizer step
does), by:

* ``native``: the library's default on the CPU, :mod:`spikelottery.native`'s kernels
  (one pass from the last threshold; ``native, no hint`` forgets it every time and
  takes the two histogram passes);

and on the eager path (``SPIKELOTTERY_NATIVE=0``, what other devices and dtypes run)
with the exact selection swapped for each of:

* ``radix``: the library's :func:`~spikelottery.topk_mask` (a histogram of the float
  bits, then one bucket);
* ``kthvalue``: :func:`~spikelottery.masks.topk_mask_kthvalue`, the earlier path and the
  reference the tests compare against;
* ``sort``: :func:`~spikelottery.masks.topk_mask_sorted`, a full stable sort (what the
  layers use while ``torch.compile`` traces them, and what older implementations did).

All give the same masks, bit for bit (checked here before timing). The yardstick
is the true bound of any exact selection: one compare-and-count pass over the scores,
``(scores.abs() > t).sum()`` per layer for a fixed ``t`` (each layer's current
threshold), which must read every score once. ``select`` rows time the selection alone
(the boolean mask), ``recompute`` rows the layers' whole per-step work.

Each round runs every variant once, in an order that rotates from round to round, so a
change of the machine's load hits them alike; printed are the median ms and the median
over rounds of each round's ratio to the bound measured in the same round. The target
(issue 23): the per-step recompute of VGG-9's masks at most 5x one compare-and-count
pass, at one thread.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from collections.abc import Callable, Iterator

import torch

from spikelottery import native, sparsify
from spikelottery import subnet as subnet_module
from spikelottery.functional import kept_count
from spikelottery.layers import SubnetLayer
from spikelottery.masks import float_mask, topk_mask, topk_mask_kthvalue, topk_mask_sorted
from spikelottery.models import create_model

SELECTIONS: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {
    "radix": topk_mask,
    "kthvalue": topk_mask_kthvalue,
    "sort": topk_mask_sorted,
}
TARGET = 5.0


def _layers(name: str, mode: str) -> list[SubnetLayer]:
    torch.manual_seed(0)
    model = sparsify(create_model(name, timesteps=1), 0.4, mode=mode)
    return [m for m in model.modules() if isinstance(m, SubnetLayer)]


def _touch(layers: list[SubnetLayer], steps: list[torch.Tensor]) -> None:
    """What an optimizer step does to the scores: a small move of each, in place."""
    with torch.no_grad():
        for layer, step in zip(layers, steps, strict=True):
            layer.scores.add_(step.roll(int(torch.randint(step.numel(), ()))).view_as(step))


@contextlib.contextmanager
def _native(on: bool) -> Iterator[None]:
    saved = os.environ.get(native.ENV_SWITCH)
    os.environ[native.ENV_SWITCH] = "1" if on else "0"
    try:
        yield
    finally:
        if saved is None:
            del os.environ[native.ENV_SWITCH]
        else:
            os.environ[native.ENV_SWITCH] = saved


def _native_recompute(hint: bool) -> Callable[[list[SubnetLayer]], None]:
    def run(layers: list[SubnetLayer]) -> None:
        with _native(True):
            for layer in layers:
                if not hint:
                    layer.invalidate()  # forgets the last threshold too
                layer.effective_weight()

    return run


def _recompute(selection: Callable[..., torch.Tensor]) -> Callable[[list[SubnetLayer]], None]:
    def select(scores: torch.Tensor, pa: float, *, dtype: torch.dtype = torch.bool) -> torch.Tensor:
        if selection is topk_mask:
            return topk_mask(scores, pa, dtype=dtype)
        mask = selection(scores, pa)  # the others give a bool mask: one conversion more
        return mask if dtype == torch.bool else float_mask(mask, dtype)

    def run(layers: list[SubnetLayer]) -> None:
        saved = subnet_module.topk_mask
        subnet_module.topk_mask = select  # type: ignore[assignment]
        try:
            with _native(False):
                for layer in layers:
                    layer.effective_weight()  # what the next forward does: one recompute
        finally:
            subnet_module.topk_mask = saved

    return run


def _select(selection: Callable[..., torch.Tensor]) -> Callable[[list[SubnetLayer]], None]:
    def run(layers: list[SubnetLayer]) -> None:
        for layer in layers:
            selection(layer.scores, layer.pa)

    return run


def _bound(thresholds: list[float]) -> Callable[[list[SubnetLayer]], None]:
    def run(layers: list[SubnetLayer]) -> None:
        with torch.no_grad():
            for layer, t in zip(layers, thresholds, strict=True):
                (layer.scores.abs() > t).sum()

    return run


def _thresholds(layers: list[SubnetLayer]) -> list[float]:
    out = []
    for layer in layers:
        flat = layer.scores.detach().abs().flatten()
        removed = flat.numel() - kept_count(flat.numel(), layer.pa)
        out.append(float(flat.kthvalue(removed).values) if removed else 0.0)
    return out


def time_model(name: str, mode: str, rounds: int, sort: bool) -> dict[str, list[float]]:
    layers = _layers(name, mode)
    for layer in layers:  # the same masks, bit for bit, before anything is timed
        ref = topk_mask_kthvalue(layer.scores, layer.pa)
        assert torch.equal(topk_mask(layer.scores, layer.pa), ref)
        assert not sort or torch.equal(topk_mask_sorted(layer.scores, layer.pa), ref)
    names = [k for k in SELECTIONS if sort or k != "sort"]
    variants: dict[str, Callable[[list[SubnetLayer]], None]] = {
        "bound": _bound(_thresholds(layers))
    }
    if native.available():
        variants["recompute native"] = _native_recompute(hint=True)
        variants["native, no hint"] = _native_recompute(hint=False)
    steps = [
        1e-3 * layer.scores.detach().std() * torch.randn_like(layer.scores) for layer in layers
    ]
    for key in names:
        variants[f"select {key}"] = _select(SELECTIONS[key])
        variants[f"recompute {key}"] = _recompute(SELECTIONS[key])
    times: dict[str, list[float]] = {k: [] for k in variants}
    order = list(variants)
    for r in range(-1, rounds):  # round -1 warms up
        for key in order[r % len(order) :] + order[: r % len(order)]:
            _touch(layers, steps)
            t0 = time.perf_counter()
            variants[key](layers)
            if r >= 0:
                times[key].append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["vgg9"])
    parser.add_argument("--modes", nargs="+", choices=("lt", "mp"), default=["lt", "mp"])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-sort", action="store_true", help="leave out the full sort")
    args = parser.parse_args()
    print(f"native kernels: {native.available() or native.unavailable_reason()}")
    print(
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, load average "
        f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}; median of {args.rounds} rounds; "
        "ratio: median over rounds of (variant / bound in the same round)"
    )
    print(
        f"{'model':<9}{'mode':<5}{'threads':>7}  {'variant':<20}{'median ms':>10}"
        f"{'range ms':>17}{'x bound':>9}"
    )
    for threads in args.threads:
        torch.set_num_threads(threads)
        for name in args.models:
            for mode in args.modes:
                times = time_model(name, mode, args.rounds, sort=not args.no_sort)
                bound = times["bound"]
                for key, ts in times.items():
                    ratio = statistics.median(t / b for t, b in zip(ts, bound, strict=True))
                    spread = f"{1e3 * min(ts):.1f}-{1e3 * max(ts):.1f}"
                    mark = ""
                    if key in ("recompute radix", "recompute native") and threads == 1:
                        mark = "  ok" if ratio <= TARGET else f"  target <= {TARGET:g}x missed"
                    print(
                        f"{name:<9}{mode:<5}{threads:>7}  {key:<20}"
                        f"{1e3 * statistics.median(ts):>10.1f}{spread:>17}{ratio:>9.2f}{mark}",
                        flush=True,
                    )
    print(f"load average at the end {', '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
