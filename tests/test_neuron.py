"""LIF neuron: equality with SpikingJelly 2.0, both step modes, state reset, arguments."""

from __future__ import annotations

import copy
import importlib
import pickle

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from _lif_testing import (
    COMPILED_SHAPE,
    data,
    needs_sj,
    sj_atan,
    sj_functional,
    sj_lif,
    spikes_and_grad,
)
from spikelottery.neuron import LIFNeuron, atan_surrogate, lif_multistep

shapes = st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple)


@needs_sj
@settings(max_examples=30, deadline=None)
@given(
    beta=st.floats(0.05, 0.99),
    threshold=st.floats(0.2, 2.0),
    t=st.integers(1, 6),
    rest=shapes,
    seed=st.integers(0, 2**16),
    sur=st.sampled_from(["atan", "sigmoid"]),
    detach=st.booleans(),
)
def test_multistep_equals_spikingjelly(beta, threshold, t, rest, seed, sur, detach):
    x, grad = data((t, *rest), seed)
    ours = LIFNeuron(
        beta=beta, threshold=threshold, surrogate=sur, detach_reset=detach, backend="eager"
    )
    ref = sj_lif(beta, threshold, "m", sur, detach)
    s_ours, g_ours = spikes_and_grad(ours, x, grad)
    s_ref, g_ref = spikes_and_grad(ref, x, grad)
    assert torch.equal(s_ours, s_ref)
    torch.testing.assert_close(g_ours, g_ref, atol=1e-5, rtol=1e-5)


@needs_sj
@settings(max_examples=20, deadline=None)
@given(
    beta=st.floats(0.05, 0.99),
    threshold=st.floats(0.2, 2.0),
    t=st.integers(1, 5),
    rest=shapes,
    seed=st.integers(0, 2**16),
)
def test_singlestep_equals_spikingjelly(beta, threshold, t, rest, seed):
    x, grad = data((t, *rest), seed)
    ours = LIFNeuron(beta=beta, threshold=threshold, step_mode="s", backend="eager")
    ref = sj_lif(beta, threshold, "s")
    s_ours, g_ours = spikes_and_grad(ours, x, grad, steps="s")
    s_ref, g_ref = spikes_and_grad(ref, x, grad, steps="s")
    assert torch.equal(s_ours, s_ref)
    torch.testing.assert_close(g_ours, g_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.v, ref.v, atol=1e-6, rtol=1e-6)


@settings(max_examples=25, deadline=None)
@given(
    beta=st.floats(0.0, 1.0),
    gamma=st.floats(0.1, 2.0),
    threshold=st.floats(0.2, 2.0),
    v_reset=st.floats(-0.8, 0.1),
    t=st.integers(1, 5),
    rest=shapes,
    seed=st.integers(0, 2**16),
    backend=st.sampled_from(["eager", "auto"]),  # "auto": uncompiled fused kernels here
)
def test_single_and_multi_step_agree(beta, gamma, threshold, v_reset, t, rest, seed, backend):
    x, grad = data((t, *rest), seed)
    kw = dict(beta=beta, gamma=gamma, threshold=threshold, v_reset=v_reset, backend=backend)
    s_m, g_m = spikes_and_grad(LIFNeuron(**kw, step_mode="m"), x, grad)
    s_s, g_s = spikes_and_grad(LIFNeuron(**kw, step_mode="s"), x, grad, steps="s")
    assert torch.equal(s_m, s_s)
    torch.testing.assert_close(g_m, g_s, atol=1e-6, rtol=1e-6)
    if backend != "eager":  # and the fused kernels equal the eager reference
        s_e, g_e = spikes_and_grad(LIFNeuron(**{**kw, "backend": "eager"}), x, grad)
        assert torch.equal(s_m, s_e)
        torch.testing.assert_close(g_m, g_e, atol=1e-5, rtol=1e-5)


def test_equations_by_hand():
    # Eq. 1-2 with gamma != 1 and v_reset != 0, checked against a scalar loop.
    beta, gamma, thr, v_reset = 0.5, 0.8, 1.0, -0.25
    x = torch.tensor([[1.0], [0.9], [2.0], [-0.3], [1.4]])
    spikes, v_last = lif_multistep(x, None, beta, gamma, thr, v_reset)
    v, expected = v_reset, []
    for xt in x[:, 0].tolist():
        v = beta * v + gamma * xt
        fired = v >= thr
        expected.append(float(fired))
        v = v_reset if fired else v
    assert spikes[:, 0].tolist() == expected
    assert v_last.item() == pytest.approx(v)


# --------------------------------------------------------------------------- compiled


@needs_sj
@pytest.mark.parametrize(("sur", "detach"), [("atan", False), ("atan", True), ("sigmoid", False)])
def test_compiled_equals_spikingjelly(sur, detach):
    for seed, (beta, thr) in enumerate([(0.9, 1.0), (0.5, 0.7)]):  # floats: no recompile
        x, grad = data(COMPILED_SHAPE, seed)
        ours = LIFNeuron(
            beta=beta, threshold=thr, surrogate=sur, detach_reset=detach, backend="compiled"
        )
        s_ours, g_ours = spikes_and_grad(ours, x, grad)
        s_ref, g_ref = spikes_and_grad(sj_lif(beta, thr, "m", sur, detach), x, grad)
        assert torch.equal(s_ours, s_ref)
        torch.testing.assert_close(g_ours, g_ref, atol=1e-5, rtol=1e-5)


@needs_sj
def test_compiled_single_step_equals_spikingjelly():
    x, grad = data(COMPILED_SHAPE, 3)
    ours = LIFNeuron(beta=0.75, step_mode="s", backend="compiled")
    s_ours, g_ours = spikes_and_grad(ours, x, grad, steps="s")
    s_ref, g_ref = spikes_and_grad(sj_lif(0.75, 1.0, "s"), x, grad, steps="s")
    assert torch.equal(s_ours, s_ref)
    torch.testing.assert_close(g_ours, g_ref, atol=1e-5, rtol=1e-5)


@needs_sj
def test_custom_callable_surrogate_runs_eager():
    x, grad = data((3, 2, 3), 5)
    ours = LIFNeuron(beta=0.9, surrogate=sj_atan())  # SpikingJelly's object
    s_ours, g_ours = spikes_and_grad(ours, x, grad)
    s_ref, g_ref = spikes_and_grad(sj_lif(0.9, 1.0, "m"), x, grad)
    assert torch.equal(s_ours, s_ref)
    torch.testing.assert_close(g_ours, g_ref, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- state


@needs_sj
def test_reset_net_resets_single_step_state():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), LIFNeuron(step_mode="s", backend="eager"))
    lif = net[1]
    net(torch.rand(2, 3))
    assert lif.v is not None and lif.v.shape == (2, 4)
    with pytest.raises(ValueError, match="reset"):
        net(torch.rand(5, 3))  # new batch size without a reset
    sj_functional.reset_net(net)
    assert lif.v is None
    assert net(torch.rand(5, 3)).shape == (5, 4)


@pytest.mark.parametrize(
    "surrogate_arg",
    ["atan", "sigmoid", atan_surrogate, pytest.param(sj_atan(), id="ATan()", marks=needs_sj)],
)
def test_pickle_and_torch_save_round_trip(tmp_path, surrogate_arg):
    lif = LIFNeuron(beta=0.8, surrogate=surrogate_arg, alpha=3.0)
    clone = pickle.loads(pickle.dumps(lif))
    assert repr(clone) == repr(lif)
    x, grad = data((3, 2, 4), 2)
    s_a, g_a = spikes_and_grad(lif, x, grad)
    s_b, g_b = spikes_and_grad(clone, x, grad)
    assert torch.equal(s_a, s_b) and torch.equal(g_a, g_b)  # same surrogate and alpha

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), LIFNeuron(beta=0.8, surrogate=surrogate_arg))
    torch.save(model, tmp_path / "model.pt")
    loaded = torch.load(tmp_path / "model.pt", weights_only=False)
    assert torch.equal(loaded(x), model(x))


@needs_sj
@pytest.mark.parametrize("backend", ["eager", "auto"])
@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_copy_after_single_step_continues_the_sequence(backend, how):
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(3, 4), LIFNeuron(beta=0.9, v_reset=-0.1, step_mode="s", backend=backend)
    )
    x = torch.rand(3, 2, 3) * 2
    out0 = net(x[0].clone().requires_grad_())
    lif = net[1]
    assert lif.v.grad_fn is not None  # the state carries the graph
    twin = copy.deepcopy(net) if how == "deepcopy" else pickle.loads(pickle.dumps(net))
    assert lif.v.grad_fn is not None  # copying did not detach the original's state
    assert twin[1].v is not lif.v and twin[1].v.grad_fn is None
    assert not twin[1].v.requires_grad
    assert torch.equal(twin[1].v, lif.v.detach())
    for xt in x[1:]:
        assert torch.equal(twin(xt), net(xt))
    out0.sum().backward()  # the original's graph still works
    sj_functional.reset_net(twin)
    assert twin[1].v is None


def test_multistep_calls_are_independent():
    lif = LIFNeuron(beta=0.9, backend="eager")
    x = torch.rand(4, 2, 3) * 2
    assert torch.equal(lif(x), lif(x))  # no state leaks between sequences
    assert lif(torch.rand(4, 7, 3)).shape == (4, 7, 3)


@needs_sj
def test_set_step_mode_from_spikingjelly():
    net = torch.nn.Sequential(LIFNeuron())
    sj_functional.set_step_mode(net, "s")
    assert net[0].step_mode == "s"
    with pytest.raises(ValueError, match="step_mode"):
        net[0].step_mode = "x"


# --------------------------------------------------------------------------- API


def test_extra_repr():
    text = repr(LIFNeuron(beta=0.5, threshold=0.75, surrogate="sigmoid", step_mode="s"))
    for part in ("beta=0.5", "threshold=0.75", "surrogate=sigmoid(alpha=4)", "step_mode=s"):
        assert part in text


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"beta": 1.5}, "beta"),
        ({"threshold": float("nan")}, "threshold"),
        ({"surrogate": "relu"}, "surrogate"),
        ({"surrogate": 3}, "surrogate"),
        ({"alpha": -1.0}, "alpha"),
        ({"step_mode": "x"}, "step_mode"),
        ({"backend": "cuda"}, "backend"),
        pytest.param({"backend": "compiled", "surrogate": sj_atan()}, "compiled", marks=needs_sj),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        LIFNeuron(**kwargs)


def test_multistep_needs_time_dimension():
    with pytest.raises(ValueError, match=r"\[T, B"):
        LIFNeuron()(torch.rand(5))


def test_names_stay_importable_from_neuron():
    # The surrogates moved to spikelottery.surrogate; the old import path still works.
    neuron = importlib.import_module("spikelottery.neuron")
    surrogate = importlib.import_module("spikelottery.surrogate")
    for name in ("LIFNeuron", "atan_surrogate", "heaviside", "lif_multistep", "sigmoid_surrogate"):
        assert name in neuron.__all__ and hasattr(neuron, name)
    for name in ("atan_surrogate", "heaviside", "sigmoid_surrogate", "SurrogateFn"):
        assert getattr(neuron, name) is getattr(surrogate, name)
