"""What patch pruning saves: Spikformer forward + backward at pb = 0 against pb > 0.

Run: ``python benchmarks/bench_patch.py`` (``--help`` for options).

One process, the same input, the variants timed round-robin (medians), plus the MACs per
image of the blocks after the patch embedding counted by :func:`estimate_energy`, split
into linear layers and token-token attention matmuls. With 64 tokens and pb = 0.3, 45
tokens remain: the linear layers should cost 45/64 = 0.70x and the attention matmuls
(45/64)^2 = 0.49x.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from spikelottery import create_model, estimate_energy, sparsify
from spikelottery.functional import kept_count


def _macs_after_patch_embed(model: torch.nn.Module, x: torch.Tensor) -> tuple[float, float]:
    report = estimate_energy(model, x)
    linear = sum(r.macs for r in report.rows if r.kind == "linear" and r.name.startswith("blocks."))
    attn = sum(r.macs for r in report.rows if r.kind == "matmul")
    return linear, attn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="spikformer_mini", help="a Spikformer of the zoo")
    parser.add_argument("--pb", type=float, nargs="+", default=[0.3, 0.5])
    parser.add_argument("--pa", type=float, default=0.4)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--timesteps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    base = create_model(args.model, timesteps=args.timesteps)
    x = torch.rand(args.batch, 3, 32, 32)
    variants: dict[str, torch.nn.Module] = {}
    for pb in [0.0, *args.pb]:
        model = copy.deepcopy(base)
        sparsify(model, args.pa, pb, mode="mp", filter="patch_embed")
        variants[f"pb={pb:g}"] = model

    def step(model: torch.nn.Module) -> None:
        model.zero_grad(set_to_none=True)
        model(x).sum().backward()

    for model in variants.values():  # warm-up (and compilation, if any)
        step(model)
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for name, model in variants.items():
            t0 = time.perf_counter()
            step(model)
            times[name].append(time.perf_counter() - t0)

    ref_t = statistics.median(times["pb=0"])
    ref_lin, ref_att = _macs_after_patch_embed(variants["pb=0"], x[:2])
    print(
        f"{args.model}, MultiSp (pa={args.pa:g} mp in patch_embed), batch {args.batch}, "
        f"T={args.timesteps}, {args.threads} thread(s), median of {args.rounds} rounds, forward+backward"
    )
    print(
        f"{'variant':<10}{'tokens':>8}{'median ms':>12}{'time ratio':>12}{'linear MACs':>14}{'attn MACs':>12}"
    )
    n = variants["pb=0"].patch_embed.num_patches
    for name, model in variants.items():
        pb = float(name.split("=")[1])
        med = statistics.median(times[name])
        lin, att = _macs_after_patch_embed(model, x[:2])
        tokens = kept_count(n, pb)
        print(
            f"{name:<10}{tokens:>8}{1e3 * med:>12.1f}{med / ref_t:>12.3f}"
            f"{lin / ref_lin:>14.3f}{att / ref_att if ref_att else float('nan'):>12.3f}"
        )


if __name__ == "__main__":
    main()
