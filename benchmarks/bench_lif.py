"""Time LIF forward + backward: spikelottery (eager, compiled) against SpikingJelly's LIFNode.

Run ``python benchmarks/bench_lif.py`` (``--help`` for options; 1 and 2 threads by
default). Every variant runs in the same process on the same input, round-robin;
compilation and other warm-up are excluded from the timings. Printed: medians and ranges,
and each speed-up as the median over rounds of the ratio of neighbouring runs. On CUDA,
SpikingJelly picks its own CUDA/Triton kernels automatically.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch

from spikelottery.neuron import LIFNeuron


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_interleaved(
    steps: dict[str, Callable[[], None]], device: torch.device, warmup: int, repeats: int
) -> dict[str, list[float]]:
    """Run the variants round-robin (the order rotating), so background load hits them alike."""
    for step in steps.values():
        for _ in range(warmup):  # includes compilation for the compiled variant
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    order = list(steps)
    for r in range(repeats):
        for name in order[r % len(order) :] + order[: r % len(order)]:  # rotated order
            _sync(device)
            start = time.perf_counter()
            steps[name]()
            _sync(device)
            times[name].append((time.perf_counter() - start) * 1e3)
    return times


def _make_step(neuron: torch.nn.Module, x: torch.Tensor, grad: torch.Tensor) -> Callable[[], None]:
    reset = getattr(neuron, "reset", None)

    def step() -> None:
        if reset is not None:
            reset()  # SpikingJelly's multi-step state carries over between calls otherwise
        x.grad = None
        spikes = neuron(x)
        spikes.backward(grad)

    return step


def _variants(beta: float) -> dict[str, torch.nn.Module]:
    variants: dict[str, torch.nn.Module] = {
        "spikelottery eager": LIFNeuron(beta=beta, backend="eager"),
        "spikelottery compiled": LIFNeuron(beta=beta, backend="compiled"),
    }
    try:
        from spikingjelly.activation_based import neuron, surrogate
    except ImportError:
        print("spikingjelly not installed: comparing our two backends only")
    else:
        variants["spikingjelly LIFNode"] = neuron.LIFNode(
            tau=1.0 / (1.0 - beta),
            decay_input=False,
            v_reset=0.0,
            surrogate_function=surrogate.ATan(),
            step_mode="m",
        )
    return variants


def run(shape: tuple[int, ...], device: torch.device, warmup: int, repeats: int) -> None:
    torch.manual_seed(0)
    x = (torch.randn(shape, device=device) * 1.5).requires_grad_()
    grad = torch.randn(shape, device=device)
    variants = _variants(beta=0.99)
    steps = {name: _make_step(neuron.to(device), x, grad) for name, neuron in variants.items()}
    times = _time_interleaved(steps, device, warmup, repeats)
    threads = torch.get_num_threads() if device.type == "cpu" else "-"
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"\nshape {list(shape)}  device {device}  threads {threads}  repeats {repeats}  "
        f"load average {load}"
    )
    print(f"{'variant':<24}{'median fwd+bwd ms':>20}{'range ms':>20}")
    for name, t in times.items():
        spread = f"{min(t):.1f}-{max(t):.1f}"
        print(f"{name:<24}{statistics.median(t):>20.2f}{spread:>20}")
    if "spikingjelly LIFNode" in times:
        sj = times["spikingjelly LIFNode"]
        for name in ("spikelottery eager", "spikelottery compiled"):
            # Each round's ratio of neighbouring runs: a change of the load cancels out.
            ratios = [s / t for s, t in zip(sj, times[name], strict=True)]
            print(
                f"speed-up of {name} over SpikingJelly: {statistics.median(ratios):.2f}x "
                f"(median of the rounds' ratios; range {min(ratios):.2f}-{max(ratios):.2f})"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--shape",
        type=int,
        nargs="+",
        default=[4, 64, 128, 16, 16],
        help="input shape [T, B, C, H, W] (default: 4 64 128 16 16)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[1, 2],
        help="CPU thread counts to run; 0 means torch's default (default: 1 2)",
    )
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"torch {torch.__version__}")
    if device.type == "cuda":
        run(tuple(args.shape), device, args.warmup, args.repeats)
        return
    default_threads = torch.get_num_threads()
    for threads in args.threads:
        torch.set_num_threads(threads or default_threads)
        run(tuple(args.shape), device, args.warmup, args.repeats)
    torch.set_num_threads(default_threads)


if __name__ == "__main__":
    main()
