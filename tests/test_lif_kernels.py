"""LIF kernels: fused against eager, and the torch.compile machinery with its fallback."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
from torch._dynamo.exc import BackendCompilerFailed

from _lif_testing import COMPILED_SHAPE, data, needs_sj, sj_lif, spikes_and_grad
from spikelottery import _lif_kernels as kernels
from spikelottery.neuron import LIFNeuron, lif_multistep
from spikelottery.surrogate import sigmoid_surrogate


@pytest.mark.parametrize("backend", ["auto", "compiled"])
def test_fused_starts_at_v_reset(backend, monkeypatch):
    # Without a start state every implementation starts at rest, v_reset, not at 0.
    monkeypatch.setenv("SPIKELOTTERY_COMPILE", "0")  # "auto": the uncompiled fused kernels
    x, grad = data(COMPILED_SHAPE, 11)
    x[0] = 0.8  # from -0.5 no neuron fires at t=0; from 0 every one would (threshold 0.7)
    kw = dict(beta=0.9, threshold=0.7, v_reset=-0.5)
    s_e, g_e = spikes_and_grad(LIFNeuron(**kw, backend="eager"), x, grad)
    assert not s_e[0].any() and s_e.any()
    s_m, g_m = spikes_and_grad(LIFNeuron(**kw, backend=backend), x, grad)
    s_s, g_s = spikes_and_grad(LIFNeuron(**kw, backend=backend, step_mode="s"), x, grad, "s")
    for s, g in ((s_m, g_m), (s_s, g_s)):
        assert torch.equal(s, s_e)
        torch.testing.assert_close(g, g_e, atol=1e-5, rtol=1e-5)
    _, v_eager = lif_multistep(x, None, 0.9, 1.0, 0.7, -0.5)
    _, v_fused = lif_multistep(x, None, 0.9, 1.0, 0.7, -0.5, backend=backend)
    torch.testing.assert_close(v_fused, v_eager, atol=1e-6, rtol=1e-6)


def test_compiled_state_gradients_match_eager():
    # Hand-written BPTT against autograd, with a start state and a loss on v_last too.
    # T = 1 with a start state is the single-step kernel: no extra compilation.
    x, grad = data((1, *COMPILED_SHAPE[1:]), 7)
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


@needs_sj
def test_auto_falls_back_once_when_compile_fails(monkeypatch):
    broken = _failing_compiler(_compile_error())

    monkeypatch.setenv("SPIKELOTTERY_COMPILE", "1")  # conftest switches compilation off
    monkeypatch.setattr(kernels, "_compiled", broken)
    monkeypatch.setattr(kernels._CompileState, "failed", {})
    x, grad = data((3, 2, 3), 0)
    with pytest.warns(RuntimeWarning, match="falling back to the eager loop"):
        s_auto, g_auto = spikes_and_grad(LIFNeuron(beta=0.9), x, grad)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once: the second call is silent
        spikes_and_grad(LIFNeuron(beta=0.9), x, grad)
    s_ref, g_ref = spikes_and_grad(sj_lif(0.9, 1.0, "m"), x, grad)
    assert torch.equal(s_auto, s_ref)
    torch.testing.assert_close(g_auto, g_ref, atol=1e-5, rtol=1e-5)


def test_compiled_backend_raises_when_compile_fails(monkeypatch):
    monkeypatch.setattr(kernels, "_compiled", _failing_compiler(_compile_error()))
    monkeypatch.setattr(kernels._CompileState, "failed", {})
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
    monkeypatch.setattr(kernels, "_compiled", _failing_compiler(error))
    monkeypatch.setattr(kernels._CompileState, "failed", {})
    x = torch.rand(3, 2, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "falling back" warning
        with pytest.raises(type(error)) as info:
            LIFNeuron(backend=backend)(x)
    assert info.value is error
    assert kernels._CompileState.failed == {}
    # the next call still uses the compiled kernel
    calls = []

    def working(which):
        kernel = kernels._fwd_kernel if which == "fwd" else kernels._bwd_kernel
        return lambda *args: calls.append(which) or kernel(*args)

    monkeypatch.setattr(kernels, "_compiled", working)
    LIFNeuron(backend=backend)(x)
    assert calls == ["fwd"]


def test_compile_switch_keeps_auto_uncompiled(monkeypatch):
    def broken(which):
        raise AssertionError("must not compile when SPIKELOTTERY_COMPILE=0")

    monkeypatch.setenv("SPIKELOTTERY_COMPILE", "0")
    monkeypatch.setattr(kernels, "_compiled", broken)
    x, grad = data((3, 2, 3), 1)
    s_auto, g_auto = spikes_and_grad(LIFNeuron(beta=0.9), x, grad)
    s_ref, g_ref = spikes_and_grad(LIFNeuron(beta=0.9, backend="eager"), x, grad)
    assert torch.equal(s_auto, s_ref)
    torch.testing.assert_close(g_auto, g_ref, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- parameters


def test_params_are_one_frozen_keyword_value():
    name, alpha, fn = kernels.resolve_surrogate("atan", None)
    params = kernels.LIFParams(
        beta=0.9,
        gamma=1.0,
        threshold=1.0,
        v_reset=0.0,
        surrogate_fn=fn,
        surrogate_name=name,
        alpha=alpha,
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.beta = 0.5
    with pytest.raises(TypeError):
        kernels.LIFParams(0.9, 1.0, 1.0, 0.0, fn)
    x = data((3, 2, 4), 4)[0]
    for backend in ("auto", "compiled"):  # "auto": the uncompiled fused kernels here
        s_f, v_f = kernels.run_lif(x, None, params, backend)
        s_e, v_e = kernels.run_lif(x, None, params, "eager")
        assert torch.equal(s_f, s_e)
        torch.testing.assert_close(v_f, v_e, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(
    ("surrogate", "alpha", "expected"),
    [
        ("atan", None, ("atan", 2.0)),
        ("Sigmoid", 1.5, ("sigmoid", 1.5)),
        (sigmoid_surrogate, None, ("sigmoid", 4.0)),  # our own function: the fused path
        (torch.sigmoid, 3.0, (None, None)),  # any other callable: the eager loop, as given
    ],
)
def test_resolve_surrogate(surrogate, alpha, expected):
    name, a, fn = kernels.resolve_surrogate(surrogate, alpha)
    assert (name, a) == expected
    x = torch.linspace(-1, 1, 5)
    if name is None:
        assert fn is surrogate
    else:
        assert torch.equal(fn(x), (x >= 0).to(x.dtype))
        assert fn.keywords == {"alpha": a}  # a picklable partial


@pytest.mark.parametrize("call", ["module", "function"])
def test_fallback_warning_points_at_the_public_module(monkeypatch, call):
    # Users may filter the warning by module: it stays attributed to spikelottery.neuron.
    monkeypatch.setenv("SPIKELOTTERY_COMPILE", "1")
    monkeypatch.setattr(kernels, "_compiled", _failing_compiler(_compile_error()))
    monkeypatch.setattr(kernels._CompileState, "failed", {})
    x = torch.rand(3, 2, 3)
    with pytest.warns(RuntimeWarning, match="falling back") as record:
        LIFNeuron()(x) if call == "module" else lif_multistep(x, backend="auto")
    assert record[0].filename.endswith("neuron.py")


@pytest.mark.parametrize(
    "gamma,v_reset,detach", [(1.0, 0.0, False), (0.7, 0.0, True), (1.0, -0.3, False)]
)
def test_eager_loop_is_bit_identical_to_the_textbook_update(gamma, v_reset, detach):
    from spikelottery._lif_kernels import LIFParams, resolve_surrogate, run_lif

    name, alpha, fn = resolve_surrogate("atan", None)
    params = LIFParams(
        beta=0.8,
        gamma=gamma,
        threshold=1.0,
        v_reset=v_reset,
        surrogate_fn=fn,
        surrogate_name=name,
        alpha=alpha,
        detach_reset=detach,
    )
    x = (torch.randn(5, 3, 7, generator=torch.Generator().manual_seed(0)) * 2).requires_grad_()
    spikes, v_last = run_lif(x, None, params, "eager")
    (spikes.sum() + v_last.pow(2).sum()).backward()
    got = (spikes.detach(), v_last.detach(), x.grad.clone())

    x.grad = None
    v: torch.Tensor | float = v_reset
    ref = []
    for xt in x:  # paper Eq. 1-2, written out
        h = 0.8 * v + gamma * xt
        s = fn(h - 1.0)
        sr = s.detach() if detach else s
        v = sr * v_reset + (1 - sr) * h
        ref.append(s)
    (torch.stack(ref).sum() + v.pow(2).sum()).backward()
    assert torch.equal(got[0], torch.stack(ref).detach()) and torch.equal(got[1], v.detach())
    assert torch.equal(got[2], x.grad)
