"""LIF neuron: equality with SpikingJelly 2.0, both backends, both step modes, state reset."""

from __future__ import annotations

import copy
import math
import pickle
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch._dynamo.exc import BackendCompilerFailed

from spikelottery import neuron as neuron_mod
from spikelottery.neuron import (
    LIFNeuron,
    atan_surrogate,
    heaviside,
    lif_multistep,
    sigmoid_surrogate,
)

sj_neuron = pytest.importorskip("spikingjelly.activation_based.neuron")
from spikingjelly.activation_based import functional, surrogate  # noqa: E402

# One input shape for every compiled-backend test, so the kernels compile once per variant.
COMPILED_SHAPE = (3, 2, 4, 5)


def _sj_lif(beta: float, threshold: float, step_mode: str, sur: str = "atan", detach=False):
    return sj_neuron.LIFNode(
        tau=1.0 / (1.0 - beta),
        decay_input=False,
        v_threshold=threshold,
        v_reset=0.0,
        surrogate_function=surrogate.ATan() if sur == "atan" else surrogate.Sigmoid(),
        detach_reset=detach,
        step_mode=step_mode,
    )


def _data(shape, seed: int, scale: float = 1.5):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen) * scale + 0.3
    grad = torch.randn(shape, generator=gen)
    return x, grad


def _spikes_and_grad(module, x, grad, steps: str = "m"):
    x = x.clone().requires_grad_()
    if steps == "m":
        out = module(x)
    else:
        out = torch.stack([module(xt) for xt in x])
    out.backward(grad)
    return out.detach(), x.grad


shapes = st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple)


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
    x, grad = _data((t, *rest), seed)
    ours = LIFNeuron(
        beta=beta, threshold=threshold, surrogate=sur, detach_reset=detach, backend="eager"
    )
    ref = _sj_lif(beta, threshold, "m", sur, detach)
    s_ours, g_ours = _spikes_and_grad(ours, x, grad)
    s_ref, g_ref = _spikes_and_grad(ref, x, grad)
    assert torch.equal(s_ours, s_ref)
    torch.testing.assert_close(g_ours, g_ref, atol=1e-5, rtol=1e-5)


@settings(max_examples=20, deadline=None)
@given(
    beta=st.floats(0.05, 0.99),
    threshold=st.floats(0.2, 2.0),
    t=st.integers(1, 5),
    rest=shapes,
    seed=st.integers(0, 2**16),
)
def test_singlestep_equals_spikingjelly(beta, threshold, t, rest, seed):
    x, grad = _data((t, *rest), seed)
    ours = LIFNeuron(beta=beta, threshold=threshold, step_mode="s", backend="eager")
    ref = _sj_lif(beta, threshold, "s")
    s_ours, g_ours = _spikes_and_grad(ours, x, grad, steps="s")
    s_ref, g_ref = _spikes_and_grad(ref, x, grad, steps="s")
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
    x, grad = _data((t, *rest), seed)
    kw = dict(beta=beta, gamma=gamma, threshold=threshold, v_reset=v_reset, backend=backend)
    s_m, g_m = _spikes_and_grad(LIFNeuron(**kw, step_mode="m"), x, grad)
    s_s, g_s = _spikes_and_grad(LIFNeuron(**kw, step_mode="s"), x, grad, steps="s")
    assert torch.equal(s_m, s_s)
    torch.testing.assert_close(g_m, g_s, atol=1e-6, rtol=1e-6)
    if backend != "eager":  # and the fused kernels equal the eager reference
        s_e, g_e = _spikes_and_grad(LIFNeuron(**{**kw, "backend": "eager"}), x, grad)
        assert torch.equal(s_m, s_e)
        torch.testing.assert_close(g_m, g_e, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["auto", "compiled"])
def test_fused_starts_at_v_reset(backend, monkeypatch):
    # Without a start state every implementation starts at rest, v_reset, not at 0.
    monkeypatch.setenv("SPIKELOTTERY_COMPILE", "0")  # "auto": the uncompiled fused kernels
    x, grad = _data(COMPILED_SHAPE, 11)
    x[0] = 0.8  # from -0.5 no neuron fires at t=0; from 0 every one would (threshold 0.7)
    kw = dict(beta=0.9, threshold=0.7, v_reset=-0.5)
    s_e, g_e = _spikes_and_grad(LIFNeuron(**kw, backend="eager"), x, grad)
    assert not s_e[0].any() and s_e.any()
    s_m, g_m = _spikes_and_grad(LIFNeuron(**kw, backend=backend), x, grad)
    s_s, g_s = _spikes_and_grad(LIFNeuron(**kw, backend=backend, step_mode="s"), x, grad, "s")
    for s, g in ((s_m, g_m), (s_s, g_s)):
        assert torch.equal(s, s_e)
        torch.testing.assert_close(g, g_e, atol=1e-5, rtol=1e-5)
    _, v_eager = lif_multistep(x, None, 0.9, 1.0, 0.7, -0.5)
    _, v_fused = lif_multistep(x, None, 0.9, 1.0, 0.7, -0.5, backend=backend)
    torch.testing.assert_close(v_fused, v_eager, atol=1e-6, rtol=1e-6)


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


@pytest.mark.parametrize(("sur", "detach"), [("atan", False), ("atan", True), ("sigmoid", False)])
def test_compiled_equals_spikingjelly(sur, detach):
    for seed, (beta, thr) in enumerate([(0.9, 1.0), (0.5, 0.7)]):  # floats: no recompile
        x, grad = _data(COMPILED_SHAPE, seed)
        ours = LIFNeuron(
            beta=beta, threshold=thr, surrogate=sur, detach_reset=detach, backend="compiled"
        )
        s_ours, g_ours = _spikes_and_grad(ours, x, grad)
        s_ref, g_ref = _spikes_and_grad(_sj_lif(beta, thr, "m", sur, detach), x, grad)
        assert torch.equal(s_ours, s_ref)
        torch.testing.assert_close(g_ours, g_ref, atol=1e-5, rtol=1e-5)


def test_compiled_state_gradients_match_eager():
    # Hand-written BPTT against autograd, with a start state and a loss on v_last too.
    # T = 1 with a start state is the single-step kernel: no extra compilation.
    x, grad = _data((1, *COMPILED_SHAPE[1:]), 7)
    gen = torch.Generator().manual_seed(1)
    v0 = torch.rand(COMPILED_SHAPE[1:], generator=gen)
    grads = {}
    for backend in ("eager", "compiled"):
        xr, vr = x.clone().requires_grad_(), v0.clone().requires_grad_()
        spikes, v_last = lif_multistep(xr, vr, 0.8, 1.3, 1.0, 0.1, "atan", backend=backend)
        ((spikes * grad).sum() + (v_last**2).sum()).backward()
        grads[backend] = (spikes.detach(), v_last.detach(), xr.grad, vr.grad)
    for a, b in zip(grads["eager"], grads["compiled"], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_compiled_single_step_equals_spikingjelly():
    x, grad = _data(COMPILED_SHAPE, 3)
    ours = LIFNeuron(beta=0.75, step_mode="s", backend="compiled")
    s_ours, g_ours = _spikes_and_grad(ours, x, grad, steps="s")
    s_ref, g_ref = _spikes_and_grad(_sj_lif(0.75, 1.0, "s"), x, grad, steps="s")
    assert torch.equal(s_ours, s_ref)
    torch.testing.assert_close(g_ours, g_ref, atol=1e-5, rtol=1e-5)


def _failing_compiler(error: Exception):
    """Stands in for ``_compiled``: the compiled kernel raises ``error`` when called."""

    def compiled(which):
        def run(*args):
            raise error

        return run

    return compiled


def _compile_error() -> Exception:
    # What torch.compile raises when inductor cannot build the kernel.
    return BackendCompilerFailed(lambda: None, RuntimeError("no C compiler"), None)


def test_auto_falls_back_once_when_compile_fails(monkeypatch):
    broken = _failing_compiler(_compile_error())

    monkeypatch.setenv("SPIKELOTTERY_COMPILE", "1")  # conftest switches compilation off
    monkeypatch.setattr(neuron_mod, "_compiled", broken)
    monkeypatch.setattr(neuron_mod._CompileState, "failed", {})
    x, grad = _data((3, 2, 3), 0)
    with pytest.warns(RuntimeWarning, match="falling back to the eager loop"):
        s_auto, g_auto = _spikes_and_grad(LIFNeuron(beta=0.9), x, grad)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once: the second call is silent
        _spikes_and_grad(LIFNeuron(beta=0.9), x, grad)
    s_ref, g_ref = _spikes_and_grad(_sj_lif(0.9, 1.0, "m"), x, grad)
    assert torch.equal(s_auto, s_ref)
    torch.testing.assert_close(g_auto, g_ref, atol=1e-5, rtol=1e-5)


def test_compiled_backend_raises_when_compile_fails(monkeypatch):
    monkeypatch.setattr(neuron_mod, "_compiled", _failing_compiler(_compile_error()))
    monkeypatch.setattr(neuron_mod._CompileState, "failed", {})
    with pytest.raises(RuntimeError, match="backend='eager'"):
        LIFNeuron(backend="compiled")(torch.rand(2, 2))


@pytest.mark.parametrize(
    "error",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("The size of tensor a (3) must match the size of tensor b (4)"),
        # out of memory while compiling (autotuning) is still out of memory
        BackendCompilerFailed(lambda: None, torch.OutOfMemoryError("out of memory"), None),
    ],
    ids=["oom", "runtime", "oom-while-compiling"],
)
@pytest.mark.parametrize("backend", ["auto", "compiled"])
def test_runtime_errors_propagate_and_keep_compilation(monkeypatch, error, backend):
    monkeypatch.setenv("SPIKELOTTERY_COMPILE", "1")
    monkeypatch.setattr(neuron_mod, "_compiled", _failing_compiler(error))
    monkeypatch.setattr(neuron_mod._CompileState, "failed", {})
    x = torch.rand(3, 2, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "falling back" warning
        with pytest.raises(type(error)) as info:
            LIFNeuron(backend=backend)(x)
    assert info.value is error
    assert neuron_mod._CompileState.failed == {}
    # the next call still uses the compiled kernel
    calls = []

    def working(which):
        kernel = neuron_mod._fwd_kernel if which == "fwd" else neuron_mod._bwd_kernel
        return lambda *args: calls.append(which) or kernel(*args)

    monkeypatch.setattr(neuron_mod, "_compiled", working)
    LIFNeuron(backend=backend)(x)
    assert calls == ["fwd"]


# --------------------------------------------------------------------------- surrogates


@pytest.mark.parametrize(
    ("ours", "ref", "formula"),
    [
        (atan_surrogate, surrogate.ATan(), lambda x: 1.0 / (1 + (math.pi * x) ** 2)),
        (
            sigmoid_surrogate,
            surrogate.Sigmoid(),
            lambda x: 4 * torch.sigmoid(4 * x) * (1 - torch.sigmoid(4 * x)),
        ),
    ],
)
def test_surrogates_match_spikingjelly(ours, ref, formula):
    x = torch.linspace(-2, 2, 101)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    assert torch.equal(ours(a), ref(b))
    assert torch.equal(ours(a), heaviside(x))
    ours(a).sum().backward()
    ref(b).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(a.grad, formula(x), atol=1e-6, rtol=1e-6)


def test_custom_callable_surrogate_runs_eager():
    x, grad = _data((3, 2, 3), 5)
    ours = LIFNeuron(beta=0.9, surrogate=surrogate.ATan())  # SpikingJelly's object
    s_ours, g_ours = _spikes_and_grad(ours, x, grad)
    s_ref, g_ref = _spikes_and_grad(_sj_lif(0.9, 1.0, "m"), x, grad)
    assert torch.equal(s_ours, s_ref)
    torch.testing.assert_close(g_ours, g_ref, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- state


def test_reset_net_resets_single_step_state():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), LIFNeuron(step_mode="s", backend="eager"))
    lif = net[1]
    net(torch.rand(2, 3))
    assert lif.v is not None and lif.v.shape == (2, 4)
    with pytest.raises(ValueError, match="reset"):
        net(torch.rand(5, 3))  # new batch size without a reset
    functional.reset_net(net)
    assert lif.v is None
    assert net(torch.rand(5, 3)).shape == (5, 4)


@pytest.mark.parametrize("surrogate_arg", ["atan", "sigmoid", atan_surrogate, surrogate.ATan()])
def test_pickle_and_torch_save_round_trip(tmp_path, surrogate_arg):
    lif = LIFNeuron(beta=0.8, surrogate=surrogate_arg, alpha=3.0)
    clone = pickle.loads(pickle.dumps(lif))
    assert repr(clone) == repr(lif)
    x, grad = _data((3, 2, 4), 2)
    s_a, g_a = _spikes_and_grad(lif, x, grad)
    s_b, g_b = _spikes_and_grad(clone, x, grad)
    assert torch.equal(s_a, s_b) and torch.equal(g_a, g_b)  # same surrogate and alpha

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), LIFNeuron(beta=0.8, surrogate=surrogate_arg))
    torch.save(model, tmp_path / "model.pt")
    loaded = torch.load(tmp_path / "model.pt", weights_only=False)
    assert torch.equal(loaded(x), model(x))


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
    functional.reset_net(twin)
    assert twin[1].v is None


def test_multistep_calls_are_independent():
    lif = LIFNeuron(beta=0.9, backend="eager")
    x = torch.rand(4, 2, 3) * 2
    assert torch.equal(lif(x), lif(x))  # no state leaks between sequences
    assert lif(torch.rand(4, 7, 3)).shape == (4, 7, 3)


def test_set_step_mode_from_spikingjelly():
    net = torch.nn.Sequential(LIFNeuron())
    functional.set_step_mode(net, "s")
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
        ({"backend": "compiled", "surrogate": surrogate.ATan()}, "compiled"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        LIFNeuron(**kwargs)


def test_multistep_needs_time_dimension():
    with pytest.raises(ValueError, match=r"\[T, B"):
        LIFNeuron()(torch.rand(5))


def test_compile_switch_keeps_auto_uncompiled(monkeypatch):
    def broken(which):
        raise AssertionError("must not compile when SPIKELOTTERY_COMPILE=0")

    monkeypatch.setenv("SPIKELOTTERY_COMPILE", "0")
    monkeypatch.setattr(neuron_mod, "_compiled", broken)
    x, grad = _data((3, 2, 3), 1)
    s_auto, g_auto = _spikes_and_grad(LIFNeuron(beta=0.9), x, grad)
    s_ref, g_ref = _spikes_and_grad(LIFNeuron(beta=0.9, backend="eager"), x, grad)
    assert torch.equal(s_auto, s_ref)
    torch.testing.assert_close(g_auto, g_ref, atol=1e-5, rtol=1e-5)
