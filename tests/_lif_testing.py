"""Shared by the LIF tests: SpikingJelly's reference neuron and small data helpers.

SpikingJelly is an optional extra: tests that compare against it are marked ``needs_sj``
and skipped one by one when it is missing.
"""

from __future__ import annotations

import pytest
import torch

from spikelottery._compat import optional_import

sj_neuron = optional_import("spikingjelly.activation_based.neuron")
sj_surrogate = optional_import("spikingjelly.activation_based.surrogate")
sj_functional = optional_import("spikingjelly.activation_based.functional")

needs_sj = pytest.mark.skipif(
    sj_neuron is None, reason="needs SpikingJelly (pip install spikelottery[spikingjelly])"
)

# One input shape for every compiled-backend test, so the kernels compile once per variant.
COMPILED_SHAPE = (3, 2, 4, 5)


def sj_lif(beta: float, threshold: float, step_mode: str, sur: str = "atan", detach=False):
    """SpikingJelly's ``LIFNode`` configured as ``LIFNeuron(beta, threshold, ...)``."""
    assert sj_neuron is not None and sj_surrogate is not None
    return sj_neuron.LIFNode(
        tau=1.0 / (1.0 - beta),
        decay_input=False,
        v_threshold=threshold,
        v_reset=0.0,
        surrogate_function=sj_surrogate.ATan() if sur == "atan" else sj_surrogate.Sigmoid(),
        detach_reset=detach,
        step_mode=step_mode,
    )


def sj_atan():
    """SpikingJelly's ``surrogate.ATan()`` (a custom callable to us), or None without it."""
    return None if sj_surrogate is None else sj_surrogate.ATan()


def data(shape, seed: int, scale: float = 1.5):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen) * scale + 0.3
    grad = torch.randn(shape, generator=gen)
    return x, grad


def spikes_and_grad(module, x, grad, steps: str = "m"):
    x = x.clone().requires_grad_()
    if steps == "m":
        out = module(x)
    else:
        out = torch.stack([module(xt) for xt in x])
    out.backward(grad)
    return out.detach(), x.grad
