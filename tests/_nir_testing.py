"""Run a NIR graph in other simulators through their own NIR readers and record spikes.

Each reader's model is driven one time step at a time with the same input at every step
(the zoo's direct encoding). snnTorch and Norse build ``torch.nn.Flatten(start_dim,
end_dim)`` from NIR's Flatten literally, and NIR counts those dims over one sample, so
they run one sample at a time without a batch axis (NIR's own convention); SpikingJelly's
reader shifts the dims by the batch axis and runs the whole batch.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

import nir
import norse.torch
import snntorch.utils
import torch
from snntorch.import_nir import import_from_nir as snntorch_from_nir
from spikingjelly.activation_based import functional
from spikingjelly.activation_based.nir_exchange.from_nir import import_from_nir as sj_from_nir
from torch import Tensor, nn

from spikelottery.nir import DEFAULT_DT

Record = tuple[Tensor, dict[str, Tensor]]


def _hooks(model: nn.Module, names: list[str], rec: dict[str, list[Tensor]]) -> list[Any]:
    wanted = {n.replace(".", "_") for n in names}
    hooks = []
    for name, module in model.named_modules():
        if name in wanted:

            def hook(_m: nn.Module, _i: Any, out: Any, name: str = name) -> None:
                rec.setdefault(name, []).append(
                    (out[0] if isinstance(out, tuple) else out).detach()
                )

            hooks.append(module.register_forward_hook(hook))
    assert len(hooks) == len(wanted), f"reader model lacks neurons {sorted(wanted)}"
    return hooks


def _per_sample(
    model: nn.Module, x: Tensor, steps: int, names: list[str], reset: Callable[[], None]
) -> Record:
    outs, spikes = [], {}
    for b in range(x.shape[0]):
        reset()
        rec: dict[str, list[Tensor]] = {}
        hooks = _hooks(model, names, rec)
        state, ys = None, []
        with torch.no_grad():
            for _ in range(steps):
                y, state = model(x[b], state)
                ys.append(y)
        for h in hooks:
            h.remove()
        outs.append(torch.stack(ys))
        for n, seq in rec.items():
            spikes.setdefault(n, []).append(torch.stack(seq))
    return torch.stack(outs, 1), {n: torch.stack(v, 1) for n, v in spikes.items()}


def run_snntorch(graph: nir.NIRGraph, x: Tensor, steps: int, names: list[str]) -> Record:
    """snnTorch 1.0's ``import_from_nir`` (its dt is fixed at 1e-4 s)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = snntorch_from_nir(graph)
    return _per_sample(model, x, steps, names, lambda: snntorch.utils.reset(model))


def run_norse(
    graph: nir.NIRGraph, x: Tensor, steps: int, names: list[str], dt: float = DEFAULT_DT
) -> Record:
    """Norse's ``norse.torch.from_nir`` at ``dt``."""
    logging.getLogger().setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = norse.torch.from_nir(graph, dt=dt)
    return _per_sample(model, x, steps, names, lambda: None)


def run_spikingjelly(
    graph: nir.NIRGraph, x: Tensor, steps: int, names: list[str], dt: float = DEFAULT_DT
) -> Record:
    """SpikingJelly's ``nir_exchange.import_from_nir`` in single-step mode, the whole batch."""
    model = sj_from_nir(graph, dt=dt, step_mode="s")
    functional.reset_net(model)
    rec: dict[str, list[Tensor]] = {}
    hooks = _hooks(model, names, rec)
    state, ys = None, []
    with torch.no_grad():
        for _ in range(steps):
            out = model(x, state)
            y, state = out if isinstance(out, tuple) else (out, state)
            ys.append(y)
    for h in hooks:
        h.remove()
    return torch.stack(ys), {n: torch.stack(seq) for n, seq in rec.items()}


READERS = {"snntorch": run_snntorch, "norse": run_norse, "spikingjelly": run_spikingjelly}


def own_spikes(model: nn.Module, x: Tensor, kinds: tuple[type, ...], prefix: str = "") -> Record:
    """The model's output and its neurons' spikes ``[T, B, ...]`` by their NIR node names
    (module paths without ``prefix``)."""
    rec: dict[str, Tensor] = {}
    hooks = [
        m.register_forward_hook(
            lambda _m, _i, out, n=n: rec.__setitem__(
                n.removeprefix(prefix).replace(".", "_"), out.detach()
            )
        )
        for n, m in model.named_modules()
        if isinstance(m, kinds)
    ]
    with torch.no_grad():
        y = model(x)
    for h in hooks:
        h.remove()
    return y, rec
