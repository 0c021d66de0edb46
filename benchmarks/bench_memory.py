"""Training state held per weight of the masked layers: ticket search against dense training.

Run: ``python benchmarks/bench_memory.py`` (``--help`` for options).

Measured, not computed by formula: a spiking VGG-9 (32x32, the zoo's ``vgg9``) takes one
training step with Adam, then every tensor that belongs to the layers ``sparsify`` masks is
summed: their parameters, the parameters' ``.grad``, the optimizer state of those
parameters, and the tensors the layer holds in its ``__dict__`` (the mask and
effective-weight cache, found by walking attributes, tuples, lists and dicts). Each storage
is counted once (by ``untyped_storage().data_ptr()``), so views are not counted twice. The
sum is divided by the number of masked weights.

Configurations: dense training (Adam on every parameter; the reference, 16 bytes per
weight: weight 4 + grad 4 + Adam 8), the search (``sparsify(model, pa, mode=...)``, Adam on
the trainable parameters) for ``"lt"`` and ``"mp"``, and fine-tuning a found ticket (one
search step, then ``scores.requires_grad_(False)``, ``frozen_weight.requires_grad_(True)``
and a fresh Adam, as the engine's fine-tuning stage does; a ``.grad`` the search left on
the scores is listed). The target of issue 17: at most 24 bytes per weight during a search.
The state does not depend on the batch size; the step only has to run once.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spikelottery import create_model, sparsify
from spikelottery.layers import SubnetLayer

CATEGORIES = ("parameters", "grads", "optimizer", "cache")
_MODULE_DICTS = ("_parameters", "_buffers", "_modules")


def _tensors(value: Any, path: str) -> Iterator[tuple[str, Tensor]]:
    """Every tensor in ``value``, looking inside tuples, lists, dicts and slotted objects."""
    if isinstance(value, Tensor):
        yield path, value
    elif isinstance(value, (tuple, list)):
        for i, item in enumerate(value):
            yield from _tensors(item, f"{path}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _tensors(item, f"{path}[{key!r}]")
    elif hasattr(type(value), "__slots__"):  # a small record object, like a layer's cache
        for slot in type(value).__slots__:
            yield from _tensors(getattr(value, slot, None), f"{path}.{slot}")


def _held(layer: nn.Module) -> Iterator[tuple[str, Tensor]]:
    """Tensors the layer holds besides its parameters: its buffers and plain attributes."""
    for name, buf in layer._buffers.items():
        if buf is not None:
            yield name, buf
    for name, value in vars(layer).items():
        if name not in _MODULE_DICTS:
            yield from _tensors(value, name)


def measure(
    layers: list[nn.Module], opt: torch.optim.Optimizer
) -> tuple[dict[str, int], dict[str, int], int]:
    """Bytes per category; bytes per cache attribute and per stale grad; the number of weights."""
    seen: set[int] = set()

    def size(t: Tensor) -> int:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr in seen or storage.nbytes() == 0:
            return 0
        seen.add(ptr)
        return storage.nbytes()

    total = dict.fromkeys(CATEGORIES, 0)
    cache: dict[str, int] = {}
    stale: dict[str, int] = {}
    weights = 0
    for layer in layers:
        frozen = layer.frozen_weight if isinstance(layer, SubnetLayer) else layer.weight
        weights += frozen.numel()
        for pname, p in layer._parameters.items():
            if p is None:
                continue
            total["parameters"] += size(p)
            if p.grad is not None:
                n = size(p.grad)
                total["grads"] += n
                if not p.requires_grad:  # left over from an earlier stage
                    key = f"{pname}.grad, not trained"
                    stale[key] = stale.get(key, 0) + n
            for _, t in _tensors(opt.state.get(p, {}), "state"):
                total["optimizer"] += size(t)
        for name, t in _held(layer):
            n = size(t)
            total["cache"] += n
            key = f"{name} ({t.dtype})".replace("torch.", "")
            cache[key] = cache.get(key, 0) + n
    return total, {**cache, **stale}, weights


def train_step(model: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    opt.step()


def adam(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)


def run_config(
    name: str, args: argparse.Namespace, x: Tensor, y: Tensor
) -> tuple[dict[str, int], dict[str, int], int]:
    torch.manual_seed(0)
    model = create_model(args.model, spiking=True, img_size=args.size, timesteps=args.timesteps)
    model.train()
    if name == "dense":
        layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        opt = adam(model)
        train_step(model, opt, x, y)
        return measure(layers, opt)
    stage, mode = name.split()
    sparsify(model, args.pa, mode=mode)
    layers = [m for m in model.modules() if isinstance(m, SubnetLayer)]
    opt = adam(model)
    train_step(model, opt, x, y)
    if stage == "finetune":
        for layer in layers:
            layer.scores.requires_grad_(False)
            layer.frozen_weight.requires_grad_(True)
        del opt  # the search's optimizer state goes with it
        opt = adam(model)
        train_step(model, opt, x, y)
    return measure(layers, opt)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vgg9", help="a zoo model (spikelottery.list_models())")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--timesteps", type=int, default=4)
    parser.add_argument("--size", type=int, default=32, help="input height and width")
    parser.add_argument("--pa", type=float, default=0.4)
    args = parser.parse_args()
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), load average {load}")
    torch.manual_seed(1)
    x = torch.rand(args.batch, 3, args.size, args.size)
    y = torch.randint(0, 10, (args.batch,))
    configs = ("dense", "search lt", "search mp", "finetune lt", "finetune mp")
    results = {name: run_config(name, args, x, y) for name in configs}
    weights = results["dense"][2]
    print(
        f"{args.model} (spiking, {args.size}x{args.size}, T={args.timesteps}), pa={args.pa}: "
        f"{weights:,} weights in the masked layers; bytes per weight after one Adam step"
    )
    print(f"{'':<14}" + "".join(f"{c:>12}" for c in (*CATEGORIES, "total")))
    for name, (total, _, n) in results.items():
        assert n == weights, (name, n, weights)
        row = [total[c] / n for c in CATEGORIES]
        print(f"{name:<14}" + "".join(f"{v:>12.2f}" for v in (*row, sum(row))))
    print("targets (issue 17): dense reference 16, search at most 24 bytes per weight")
    print("cache attributes and grads of parameters that no longer train (bytes per weight):")
    for name, (_, cache, n) in results.items():
        parts = ", ".join(f"{k} {v / n:.2f}" for k, v in cache.items() if v) or "none"
        print(f"  {name:<12}{parts}")


if __name__ == "__main__":
    main()
