"""Leaky integrate-and-fire neuron (paper Eq. 1-2) with surrogate gradients.

The membrane update is

.. math::

    V[n] = \\beta V[n-1] + \\gamma I[n], \\qquad S[n] = H(V[n] - \\theta),

followed by a hard reset of ``V`` to ``v_reset`` wherever ``S[n] = 1``. The Heaviside step
``H`` has no useful derivative, so backward uses a surrogate (arc tangent by default, as in
SpikingJelly).

Two implementations share these semantics:

* the eager reference :func:`lif_multistep`: a Python loop over time that autograd
  differentiates step by step (works with any surrogate callable);
* a fused one: a custom autograd function whose forward runs the time loop and whose
  backward runs the reverse-time loop (BPTT) by hand, both compiled with
  :func:`torch.compile`. Compilation happens lazily on the first call; if compiling fails
  (no C compiler, an unsupported operation) the neuron warns once and falls back to the
  eager loop. Errors of the computation itself, such as running out of memory, propagate.

With ``gamma = 1`` and ``v_reset = 0`` the neuron equals SpikingJelly's
``LIFNode(tau=1 / (1 - beta), decay_input=False, v_reset=0.0)``.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from functools import cache, partial
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

__all__ = [
    "LIFNeuron",
    "atan_surrogate",
    "heaviside",
    "lif_multistep",
    "sigmoid_surrogate",
]

SurrogateFn = Callable[[Tensor], Tensor]

_DEFAULT_ALPHA = {"atan": 2.0, "sigmoid": 4.0}
_STEP_MODES = ("s", "m")
_BACKENDS = ("auto", "eager", "compiled")


# --------------------------------------------------------------------------- surrogates


def heaviside(x: Tensor) -> Tensor:
    """Unit step: 1 where ``x >= 0``, else 0, in the dtype of ``x`` (no surrogate).

    >>> heaviside(torch.tensor([-0.5, 0.0, 2.0]))
    tensor([0., 1., 1.])
    """
    return (x >= 0).to(x.dtype)


def _surrogate_grad(x: Tensor, name: str, alpha: float) -> Tensor:
    # Same expressions as SpikingJelly's surrogate kernels, so gradients agree to rounding.
    if name == "atan":
        z = x * (math.pi / 2 * alpha)
        return (alpha / 2) / (1 + z * z)
    s = torch.sigmoid(x * alpha)
    return (1 - s) * s * alpha


class _SpikeFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, name: str, alpha: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.name = name
        ctx.alpha = alpha
        return heaviside(x)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, None, None]:
        (x,) = ctx.saved_tensors
        return grad_output * _surrogate_grad(x, ctx.name, ctx.alpha), None, None


def atan_surrogate(x: Tensor, alpha: float = 2.0) -> Tensor:
    """Heaviside forward, arc-tangent surrogate gradient backward.

    The gradient is ``alpha / 2 / (1 + (pi / 2 * alpha * x) ** 2)``, SpikingJelly's
    ``surrogate.ATan(alpha=2.0)``.

    Args:
        x: Membrane potential minus threshold, any shape.
        alpha: Sharpness; larger is closer to the true step.

    Returns:
        Spikes (0/1) with the shape and dtype of ``x``.

    >>> x = torch.tensor([-1.0, 0.5], requires_grad=True)
    >>> atan_surrogate(x).sum().backward()
    >>> x.grad.shape
    torch.Size([2])
    """
    return _SpikeFunction.apply(x, "atan", float(alpha))


def sigmoid_surrogate(x: Tensor, alpha: float = 4.0) -> Tensor:
    """Heaviside forward, sigmoid-derivative surrogate gradient backward.

    The gradient is ``alpha * sigmoid(alpha * x) * (1 - sigmoid(alpha * x))``,
    SpikingJelly's ``surrogate.Sigmoid(alpha=4.0)``.

    Args:
        x: Membrane potential minus threshold, any shape.
        alpha: Sharpness; larger is closer to the true step.

    Returns:
        Spikes (0/1) with the shape and dtype of ``x``.

    >>> sigmoid_surrogate(torch.tensor([-1.0, 0.5]))
    tensor([0., 1.])
    """
    return _SpikeFunction.apply(x, "sigmoid", float(alpha))


_BUILTIN_FNS: dict[Callable[..., Tensor], str] = {
    atan_surrogate: "atan",
    sigmoid_surrogate: "sigmoid",
}


def _resolve_surrogate(
    surrogate: str | SurrogateFn, alpha: float | None
) -> tuple[str | None, float | None, SurrogateFn]:
    """Return ``(builtin name or None, alpha, callable)`` for a surrogate argument."""
    if isinstance(surrogate, str):
        name = surrogate.lower()
        if name not in _DEFAULT_ALPHA:
            raise ValueError(
                f"surrogate must be 'atan', 'sigmoid' or a callable, got {surrogate!r}"
            )
        a = _DEFAULT_ALPHA[name] if alpha is None else float(alpha)
        if not math.isfinite(a) or a <= 0:
            raise ValueError(f"alpha must be a positive finite number, got alpha={alpha!r}")
        fn = atan_surrogate if name == "atan" else sigmoid_surrogate
        # A partial of a module-level function, not a lambda: the neuron must pickle
        # (torch.save(model), multiprocessing spawn).
        return name, a, partial(fn, alpha=a)
    if callable(surrogate):
        # By identity, so unhashable callables work too.
        builtin = next((n for f, n in _BUILTIN_FNS.items() if f is surrogate), None)
        if builtin is not None:  # our own function passed by reference: keep the fast path
            return _resolve_surrogate(builtin, alpha)
        return None, None, surrogate
    raise TypeError(
        f"surrogate must be 'atan', 'sigmoid' or a callable, got {type(surrogate).__name__}"
    )


# --------------------------------------------------------------------------- eager reference


def lif_multistep(
    x_seq: Tensor,
    v0: Tensor | float | None = None,
    beta: float = 0.99,
    gamma: float = 1.0,
    threshold: float = 1.0,
    v_reset: float = 0.0,
    surrogate_fn: str | SurrogateFn = atan_surrogate,
    detach_reset: bool = False,
    *,
    alpha: float | None = None,
    backend: str = "eager",
) -> tuple[Tensor, Tensor]:
    """Run the LIF neuron over a whole sequence.

    ``V[n] = beta * V[n-1] + gamma * x[n]``; a spike where ``V[n] >= threshold``; ``V`` is
    then reset to ``v_reset`` where it spiked (hard reset).

    Args:
        x_seq: Input current, time first: ``[T, ...]``.
        v0: Membrane potential before the first step, broadcastable to ``x_seq[0]``;
            ``None`` starts at rest (``v_reset``).
        beta: Membrane decay per step (the paper's lambda).
        gamma: Input gain.
        threshold: Firing threshold.
        v_reset: Potential after a spike.
        surrogate_fn: ``"atan"``, ``"sigmoid"`` or a callable mapping ``V - threshold``
            to spikes with a surrogate gradient (e.g. :func:`atan_surrogate`).
        detach_reset: Treat the reset as a constant in backward.
        alpha: Surrogate sharpness for a named surrogate (default 2 for atan, 4 for sigmoid).
        backend: ``"eager"`` (autograd through the loop), ``"compiled"`` (fused forward and
            hand-written BPTT, compiled) or ``"auto"`` (compiled when it works).

    Returns:
        ``(spikes, v_last)``: spikes ``[T, ...]`` in the dtype of ``x_seq`` and the
        membrane potential after the last step, shape ``x_seq.shape[1:]``.

    >>> spikes, v = lif_multistep(torch.rand(4, 2, 3) * 2)
    >>> spikes.shape, v.shape
    (torch.Size([4, 2, 3]), torch.Size([2, 3]))
    """
    if not isinstance(x_seq, Tensor) or x_seq.ndim < 1 or x_seq.shape[0] == 0:
        raise ValueError(
            "x_seq must be a tensor with time first, [T, ...], T >= 1; got "
            f"{type(x_seq).__name__} of shape {tuple(getattr(x_seq, 'shape', ()))}"
        )
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    name, a, fn = _resolve_surrogate(surrogate_fn, alpha)
    beta, gamma, threshold, v_reset = (float(p) for p in (beta, gamma, threshold, v_reset))
    v0 = _prepare_v0(x_seq, v0)
    if backend != "eager":
        if name is None:
            if backend == "compiled":
                raise ValueError(
                    "backend='compiled' needs a built-in surrogate ('atan' or 'sigmoid'); "
                    "a custom callable runs on backend='eager'"
                )
        else:
            assert a is not None  # a named surrogate always has its alpha
            return _lif_fused(
                x_seq, v0, beta, gamma, threshold, v_reset, name, a, detach_reset, backend
            )
    return _lif_eager(x_seq, v0, beta, gamma, threshold, v_reset, fn, detach_reset)


def _prepare_v0(x_seq: Tensor, v0: Tensor | float | None) -> Tensor | None:
    if v0 is None or isinstance(v0, (int, float)):
        return None if v0 is None else torch.full_like(x_seq[0], float(v0))
    if v0.shape != x_seq.shape[1:]:
        try:
            v0 = v0.expand(x_seq.shape[1:])
        except RuntimeError:
            raise ValueError(
                f"v0 of shape {tuple(v0.shape)} does not match one time step of x_seq "
                f"{tuple(x_seq.shape[1:])}; call reset() between sequences of different shape"
            ) from None
    return v0


def _lif_eager(
    x_seq: Tensor,
    v0: Tensor | None,
    beta: float,
    gamma: float,
    threshold: float,
    v_reset: float,
    fn: SurrogateFn,
    detach_reset: bool,
) -> tuple[Tensor, Tensor]:
    v: Tensor | float = v_reset if v0 is None else v0
    spikes = []
    for x in x_seq:
        h = beta * v + gamma * x
        s = fn(h - threshold)
        s_reset = s.detach() if detach_reset else s
        v = s_reset * v_reset + (1 - s_reset) * h
        spikes.append(s)
    return torch.stack(spikes), v  # type: ignore[return-value]


# --------------------------------------------------------------------------- fused kernels
# Plain tensor functions over a flattened [T, N] layout. torch.compile unrolls the time
# loop into one pointwise kernel (each element's T values stay in registers), which is
# where the speed-up over a step-by-step loop comes from.


def _fwd_kernel(
    x: Tensor, v0: Tensor | None, beta: float, gamma: float, threshold: float, v_reset: float
) -> tuple[Tensor, Tensor]:
    v = v0
    spikes = []
    for t in range(x.shape[0]):
        # Without a start state the neuron starts at rest (v_reset), as the eager loop does.
        h = beta * v_reset + gamma * x[t] if v is None else beta * v + gamma * x[t]
        s = (h >= threshold).to(x.dtype)
        spikes.append(s)
        # Exact hard reset (s is 0 or 1), written arithmetically so v_reset stays a kernel
        # argument; torch.where with a Python scalar would bake it in and recompile.
        v = h * (1 - s) + v_reset * s
    assert v is not None  # T >= 1 is checked by the callers
    return torch.stack(spikes), v


def _bwd_kernel(
    grad_s: Tensor,
    grad_v: Tensor,
    x: Tensor,
    v0: Tensor | None,
    beta: float,
    gamma: float,
    threshold: float,
    v_reset: float,
    alpha: float,
    name: str,
    reset_grad: float,
) -> tuple[Tensor, Tensor]:
    # reset_grad is 0.0 for detach_reset (a float, not a bool, so toggling it does not
    # recompile). Recompute the charged potentials instead of saving them: one pass over x
    # is cheaper than writing and re-reading a [T, N] buffer, and memory is the same (x is
    # saved).
    hs = []
    v = v0
    for t in range(x.shape[0]):
        h = beta * v_reset + gamma * x[t] if v is None else beta * v + gamma * x[t]
        hs.append(h)
        s = (h >= threshold).to(x.dtype)
        v = h * (1 - s) + v_reset * s
    gv = grad_v
    grads = []
    for t in range(x.shape[0] - 1, -1, -1):
        h = hs[t]
        sg = _surrogate_grad(h - threshold, name, alpha)
        keep = (h < threshold).to(h.dtype)  # dV/dH of the reset, spikes held constant
        dv_dh = keep + reset_grad * (v_reset - h) * sg
        gh = grad_s[t] * sg + gv * dv_dh
        grads.append(gamma * gh)
        gv = beta * gh
    grads.reverse()
    return torch.stack(grads), gv


class _CompileState:
    """Remembers, per device type, that compilation failed, so we warn once."""

    failed: dict[str, str] = {}  # noqa: RUF012 (process-wide on purpose)


@cache
def _compiled(which: str) -> Callable[..., tuple[Tensor, Tensor]]:
    fn = _fwd_kernel if which == "fwd" else _bwd_kernel
    # dynamic=True: sizes and the float parameters are kernel arguments, so new shapes or
    # a new beta reuse the kernel (only T, unrolled, and the surrogate name specialise).
    return torch.compile(fn, fullgraph=True, dynamic=True)


def _run_kernel(which: str, backend: str, device_type: str, *args: Any) -> tuple[Tensor, Tensor]:
    eager_fn = _fwd_kernel if which == "fwd" else _bwd_kernel
    if backend == "auto" and os.environ.get("SPIKELOTTERY_COMPILE", "1") == "0":
        return eager_fn(*args)  # compilation switched off (e.g. short CPU jobs, tests)
    if torch.compiler.is_compiling() or device_type in _CompileState.failed:
        return eager_fn(*args)  # an outer torch.compile traces the plain function
    try:
        compiled = _compiled(which)
    except Exception as exc:  # torch.compile itself is unavailable here
        return _compile_failed(exc, which, backend, device_type, args)
    try:
        return compiled(*args)
    except Exception as exc:
        if not _is_compile_failure(exc):
            raise  # out of memory, or an error of the computation itself: not ours to hide
        return _compile_failed(exc, which, backend, device_type, args)


@cache
def _compile_error_types() -> tuple[type[BaseException], ...]:
    from torch._dynamo import exc as dynamo_exc
    from torch._inductor import exc as inductor_exc

    types: list[type[BaseException]] = [
        dynamo_exc.TorchDynamoException,  # BackendCompilerFailed, InductorError, Unsupported
        OSError,  # no C compiler, unwritable cache directory
        ImportError,  # triton or another compiler dependency missing
    ]
    # getattr: private modules whose contents change between torch releases.
    for module, name in (
        (dynamo_exc, "FailOnRecompileLimitHit"),
        (dynamo_exc, "TritonUnavailableError"),
        (inductor_exc, "CppCompileError"),
        (inductor_exc, "InvalidCxxCompiler"),
        (inductor_exc, "OperatorIssue"),
        (inductor_exc, "SubgraphLoweringException"),
    ):
        error_type = getattr(module, name, None)
        if isinstance(error_type, type) and issubclass(error_type, BaseException):
            types.append(error_type)
    return tuple(types)


def _is_compile_failure(exc: BaseException) -> bool:
    """Whether ``exc`` says the kernel could not be compiled (not that running it failed)."""
    from torch._dynamo import exc as dynamo_exc

    chain: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None and len(chain) < 16:  # bounded: cause chains can loop
        chain.append(link)
        link = getattr(link, "inner_exception", None) or link.__cause__
    if any(isinstance(link, torch.OutOfMemoryError) for link in chain):
        return False  # even while compiling (autotuning): the eager loop would not help
    # TorchRuntimeError is the computation itself failing on fake tensors while tracing:
    # a user error that the eager kernel raises too, so compilation stays enabled.
    if isinstance(exc, dynamo_exc.TorchRuntimeError):
        return False
    return isinstance(exc, _compile_error_types())


def _compile_failed(
    exc: Exception, which: str, backend: str, device_type: str, args: tuple[Any, ...]
) -> tuple[Tensor, Tensor]:
    """Raise for ``backend="compiled"``; else warn once, remember, and run eagerly."""
    if backend == "compiled":
        raise RuntimeError(
            f"LIF backend='compiled' failed to compile on {device_type}: {exc}. "
            "Use backend='eager' (or 'auto' to fall back automatically)."
        ) from exc
    _CompileState.failed[device_type] = repr(exc)
    warnings.warn(
        f"torch.compile of the LIF kernels failed on {device_type} ({type(exc).__name__}: "
        f"{str(exc).splitlines()[0] if str(exc) else ''}); falling back to the eager "
        "loop for the rest of this process.",
        RuntimeWarning,
        stacklevel=5,
    )
    eager_fn = _fwd_kernel if which == "fwd" else _bwd_kernel
    return eager_fn(*args)


def _plain(t: Tensor | None) -> Tensor | None:
    # The compiled kernels guard on requires_grad, on view bases and (by duck sizing) on
    # storage offsets; handing them detached, offset-free tensors avoids recompiling per
    # time step in single-step mode.
    if t is None:
        return None
    t = t.detach()
    return t if t.storage_offset() == 0 else t.clone()


class _FusedLIF(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        v0: Tensor | None,
        beta: float,
        gamma: float,
        threshold: float,
        v_reset: float,
        alpha: float,
        name: str,
        detach_reset: bool,
        backend: str,
    ) -> tuple[Tensor, Tensor]:
        spikes, v_last = _run_kernel(
            "fwd", backend, x.device.type, _plain(x), _plain(v0), beta, gamma, threshold, v_reset
        )
        ctx.save_for_backward(x, v0)
        ctx.params = (beta, gamma, threshold, v_reset, alpha, name, detach_reset, backend)
        return spikes, v_last

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_s: Tensor, grad_v: Tensor) -> tuple[Tensor | None, ...]:
        x, v0 = ctx.saved_tensors
        beta, gamma, threshold, v_reset, alpha, name, detach_reset, backend = ctx.params
        grad_x, grad_v0 = _run_kernel(
            "bwd",
            backend,
            x.device.type,
            _plain(grad_s.contiguous()),
            _plain(grad_v.contiguous()),
            _plain(x),
            _plain(v0),
            beta,
            gamma,
            threshold,
            v_reset,
            alpha,
            name,
            0.0 if detach_reset else 1.0,
        )
        return (grad_x, grad_v0 if v0 is not None else None, *([None] * 8))


def _lif_fused(
    x_seq: Tensor,
    v0: Tensor | None,
    beta: float,
    gamma: float,
    threshold: float,
    v_reset: float,
    name: str,
    alpha: float,
    detach_reset: bool,
    backend: str,
) -> tuple[Tensor, Tensor]:
    shape = x_seq.shape
    # Flatten to [T, N] so every input of the same size reuses one compiled kernel.
    x = x_seq.reshape(shape[0], -1).contiguous()
    v = None if v0 is None else v0.reshape(-1).contiguous()
    spikes, v_last = _FusedLIF.apply(
        x, v, beta, gamma, threshold, v_reset, alpha, name, bool(detach_reset), backend
    )
    return spikes.view(shape), v_last.view(shape[1:])


# --------------------------------------------------------------------------- module


class LIFNeuron(nn.Module):
    """Leaky integrate-and-fire neuron with hard reset and a surrogate gradient.

    ``V[n] = beta * V[n-1] + gamma * I[n]``, a spike where ``V[n] >= threshold``, then
    ``V = v_reset`` where it spiked (paper Eq. 1-2).

    In multi-step mode (``step_mode="m"``) the input is a whole sequence ``[T, B, ...]``
    and each call starts at rest, so no reset is needed between batches. In single-step
    mode (``"s"``) each call is one time step ``[B, ...]`` and the membrane potential
    ``v`` is kept between calls (gradients flow through it); call :meth:`reset` (or
    SpikingJelly's ``functional.reset_net(model)``) before a new sequence. A copy
    (``copy.deepcopy``, pickle, ``torch.save``) keeps ``v`` detached from the graph, so it
    continues the sequence from the same potential.

    Args:
        beta: Membrane decay per step (the paper's lambda), in ``[0, 1]``.
        gamma: Input gain.
        threshold: Firing threshold.
        v_reset: Potential after a spike.
        surrogate: ``"atan"`` (SpikingJelly's ``ATan``), ``"sigmoid"`` or any callable
            mapping ``V - threshold`` to spikes with a surrogate gradient (such a callable
            always runs on the eager loop).
        alpha: Sharpness of a named surrogate; ``None`` uses its default (2 for atan,
            4 for sigmoid, as in SpikingJelly).
        detach_reset: Treat the reset as a constant in backward.
        step_mode: ``"m"`` (multi-step) or ``"s"`` (single-step).
        backend: ``"auto"`` (fused and compiled when possible, else eager; the
            environment variable ``SPIKELOTTERY_COMPILE=0`` keeps it on the uncompiled
            fused kernels, which saves the one-off compile time of short CPU jobs),
            ``"compiled"`` or ``"eager"``.

    Example:
        >>> lif = LIFNeuron(beta=0.9)
        >>> lif(torch.rand(4, 2, 8, 5, 5) * 2).shape
        torch.Size([4, 2, 8, 5, 5])
    """

    def __init__(
        self,
        beta: float = 0.99,
        gamma: float = 1.0,
        threshold: float = 1.0,
        v_reset: float = 0.0,
        surrogate: str | SurrogateFn = "atan",
        alpha: float | None = None,
        detach_reset: bool = False,
        step_mode: str = "m",
        backend: str = "auto",
    ) -> None:
        super().__init__()
        beta = float(beta)
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta (membrane decay) must be in [0, 1], got beta={beta!r}")
        for pname, value in (("gamma", gamma), ("threshold", threshold), ("v_reset", v_reset)):
            if not math.isfinite(float(value)):
                raise ValueError(f"{pname} must be a finite number, got {pname}={value!r}")
        if backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {_BACKENDS}, got backend={backend!r}")
        self._surrogate_name, self._alpha, self._surrogate_fn = _resolve_surrogate(surrogate, alpha)
        if backend == "compiled" and self._surrogate_name is None:
            raise ValueError(
                "backend='compiled' needs surrogate='atan' or 'sigmoid'; "
                "a custom surrogate callable runs on backend='eager'"
            )
        self.beta = beta
        self.gamma = float(gamma)
        self.threshold = float(threshold)
        self.v_reset = float(v_reset)
        self.surrogate = surrogate
        self.detach_reset = bool(detach_reset)
        self.backend = backend
        self.step_mode = step_mode
        self.v: Tensor | None = None

    @property
    def step_mode(self) -> str:
        """``"m"`` (input ``[T, B, ...]``) or ``"s"`` (input ``[B, ...]``, state kept)."""
        return self._step_mode

    @step_mode.setter
    def step_mode(self, value: str) -> None:
        # A property so SpikingJelly's functional.set_step_mode is validated too.
        if value not in _STEP_MODES:
            raise ValueError(f"step_mode must be 's' or 'm', got step_mode={value!r}")
        self._step_mode = value

    def reset(self) -> None:
        """Forget the membrane potential (start of a new sequence)."""
        self.v = None

    def __getstate__(self) -> dict[str, Any]:
        # Used by pickle and copy.deepcopy. After a single-step forward ``v`` is part of an
        # autograd graph, which neither can copy; a copy keeps its value, detached, so it
        # continues the sequence (without gradients into the original's past steps).
        state = super().__getstate__()
        if isinstance(state.get("v"), Tensor):
            state["v"] = state["v"].detach().clone()
        return state

    def _run(self, x_seq: Tensor, v0: Tensor | None) -> tuple[Tensor, Tensor]:
        if self.backend != "eager" and self._surrogate_name is not None:
            return _lif_fused(
                x_seq,
                v0,
                self.beta,
                self.gamma,
                self.threshold,
                self.v_reset,
                self._surrogate_name,
                self._alpha,  # type: ignore[arg-type]
                self.detach_reset,
                self.backend,
            )
        return _lif_eager(
            x_seq,
            v0,
            self.beta,
            self.gamma,
            self.threshold,
            self.v_reset,
            self._surrogate_fn,
            self.detach_reset,
        )

    def forward(self, x: Tensor) -> Tensor:
        """Spikes with the shape of ``x``: ``[T, B, ...]`` in mode "m", ``[B, ...]`` in "s"."""
        if self._step_mode == "m":
            if x.ndim < 2 or x.shape[0] == 0:
                raise ValueError(
                    f"LIFNeuron(step_mode='m') expects input [T, B, ...], got shape "
                    f"{tuple(x.shape)}; use step_mode='s' for one time step"
                )
            spikes, _ = self._run(x, None)
            return spikes
        v0 = self.v
        if v0 is not None and v0.shape != x.shape:
            raise ValueError(
                f"LIFNeuron(step_mode='s') holds a membrane state of shape {tuple(v0.shape)} "
                f"but got input of shape {tuple(x.shape)}; call reset() (or "
                "functional.reset_net(model)) before a new sequence"
            )
        if v0 is None:
            # Materialised (not None) so the compiled kernel has one variant for every step.
            v0 = torch.full_like(x, self.v_reset)
        spikes, self.v = self._run(x.unsqueeze(0), v0)
        return spikes[0]

    def extra_repr(self) -> str:
        if self._surrogate_name is None:
            surrogate = getattr(self.surrogate, "__name__", type(self.surrogate).__name__)
        else:
            surrogate = f"{self._surrogate_name}(alpha={self._alpha:g})"
        parts = [f"beta={self.beta:g}"]
        if self.gamma != 1.0:
            parts.append(f"gamma={self.gamma:g}")
        parts.append(f"threshold={self.threshold:g}")
        if self.v_reset != 0.0:
            parts.append(f"v_reset={self.v_reset:g}")
        parts.append(f"surrogate={surrogate}")
        if self.detach_reset:
            parts.append("detach_reset=True")
        parts.append(f"step_mode={self._step_mode}")
        if self.backend != "auto":
            parts.append(f"backend={self.backend}")
        return ", ".join(parts)
