"""Surrogate gradients: the step forward, SpikingJelly's gradients backward."""

from __future__ import annotations

import math

import pytest
import torch

from _lif_testing import needs_sj, sj_surrogate
from spikelottery.surrogate import atan_surrogate, heaviside, sigmoid_surrogate, surrogate_grad


@needs_sj
@pytest.mark.parametrize(
    ("ours", "ref_name", "formula"),
    [
        (atan_surrogate, "ATan", lambda x: 1.0 / (1 + (math.pi * x) ** 2)),
        (
            sigmoid_surrogate,
            "Sigmoid",
            lambda x: 4 * torch.sigmoid(4 * x) * (1 - torch.sigmoid(4 * x)),
        ),
    ],
)
def test_surrogates_match_spikingjelly(ours, ref_name, formula):
    ref = getattr(sj_surrogate, ref_name)()  # SpikingJelly's default alpha
    x = torch.linspace(-2, 2, 101)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    assert torch.equal(ours(a), ref(b))
    assert torch.equal(ours(a), heaviside(x))
    ours(a).sum().backward()
    ref(b).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(a.grad, formula(x), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(
    ("fn", "name", "alpha"),
    [
        (atan_surrogate, "atan", 2.0),
        (atan_surrogate, "atan", 0.5),
        (sigmoid_surrogate, "sigmoid", 4.0),
    ],
)
def test_surrogate_grad_is_the_backward(fn, name, alpha):
    # The fused LIF kernels call surrogate_grad directly: it must be what autograd uses.
    x = torch.linspace(-2, 2, 101, requires_grad=True)
    fn(x, alpha).sum().backward()
    assert torch.equal(x.grad, surrogate_grad(x.detach(), name, alpha))
    assert torch.equal(fn(x, alpha), heaviside(x.detach()))


def test_heaviside_fires_at_zero_and_keeps_dtype():
    out = heaviside(torch.tensor([-1e-6, 0.0, 1e-6], dtype=torch.float64))
    assert out.dtype == torch.float64 and out.tolist() == [0.0, 1.0, 1.0]
