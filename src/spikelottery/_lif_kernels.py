"""The LIF update over a sequence: eager loop, fused kernels and their compilation.

Not public API: :func:`spikelottery.neuron.lif_multistep` and
:class:`spikelottery.neuron.LIFNeuron` check their arguments, build one
:class:`LIFParams` and call :func:`run_lif`.

Two implementations share the semantics of paper Eq. 1-2 (hard reset, start at rest,
``V[0] = v_reset``):

* the eager reference: a Python loop over time that autograd differentiates step by step
  (works with any surrogate callable);
* a fused one: a custom autograd function whose forward runs the time loop and whose
  backward runs the reverse-time loop (BPTT) by hand, both compiled with
  :func:`torch.compile`. Compilation happens lazily on the first call; if compiling fails
  (no C compiler, an unsupported operation) ``backend="auto"`` warns once and falls back
  to the eager loop. Errors of the computation itself, such as running out of memory,
  propagate. The environment variable ``SPIKELOTTERY_COMPILE=0``, or
  :func:`lif_compilation` ``(False)`` (what the engine does for short runs), keeps
  ``"auto"`` on the uncompiled fused kernels.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache, partial
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ._compat import quiet_cuda_home_probe
from .surrogate import SurrogateFn, atan_surrogate, sigmoid_surrogate, surrogate_grad

__all__ = [
    "BACKENDS",
    "LIFParams",
    "compile_allowed",
    "lif_compilation",
    "resolve_surrogate",
    "run_lif",
]

# Set by lif_compilation(): whether backend="auto" may compile in this context (None: the
# environment decides, SPIKELOTTERY_COMPILE=0 switching it off).
_ALLOW_COMPILE: contextvars.ContextVar[bool | None] = contextvars.ContextVar(
    "spikelottery_allow_compile", default=None
)


def compile_allowed() -> bool:
    """Whether ``backend="auto"`` compiles the fused kernels here and now."""
    allowed = _ALLOW_COMPILE.get()
    if allowed is None:
        return os.environ.get("SPIKELOTTERY_COMPILE", "1") != "0"
    return allowed


@contextlib.contextmanager
def lif_compilation(enabled: bool) -> Iterator[None]:
    """Let ``backend="auto"`` compile (``True``) or keep it on the uncompiled fused kernels.

    The training engine uses it to compile only runs long enough to repay the compile
    time; ``backend="compiled"`` and ``"eager"`` are not affected.
    """
    token = _ALLOW_COMPILE.set(bool(enabled))
    try:
        yield
    finally:
        _ALLOW_COMPILE.reset(token)


BACKENDS = ("auto", "eager", "compiled")

_DEFAULT_ALPHA = {"atan": 2.0, "sigmoid": 4.0}
_BUILTIN_FNS: dict[Callable[..., Tensor], str] = {
    atan_surrogate: "atan",
    sigmoid_surrogate: "sigmoid",
}


@dataclass(frozen=True, kw_only=True)
class LIFParams:
    """The settings of one LIF update, passed as one value down to the kernels.

    Args:
        beta: Membrane decay per step.
        gamma: Input gain.
        threshold: Firing threshold.
        v_reset: Potential after a spike, and at rest.
        surrogate_fn: Maps ``V - threshold`` to spikes with a surrogate gradient (the eager
            loop calls it).
        surrogate_name: ``"atan"`` or ``"sigmoid"`` when ``surrogate_fn`` is a built-in
            surrogate, whose gradient the fused kernels compute themselves; ``None`` for
            any other callable, which runs on the eager loop only.
        alpha: Sharpness of the built-in surrogate; ``None`` with a custom callable.
        detach_reset: Treat the reset as a constant in backward.
    """

    beta: float
    gamma: float
    threshold: float
    v_reset: float
    surrogate_fn: SurrogateFn
    surrogate_name: str | None = None
    alpha: float | None = None
    detach_reset: bool = False


def resolve_surrogate(
    surrogate: str | SurrogateFn, alpha: float | None
) -> tuple[str | None, float | None, SurrogateFn]:
    """Return ``(built-in name or None, alpha, callable)`` for a surrogate argument.

    >>> resolve_surrogate("sigmoid", None)[:2]
    ('sigmoid', 4.0)
    """
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
            return resolve_surrogate(builtin, alpha)
        return None, None, surrogate
    raise TypeError(
        f"surrogate must be 'atan', 'sigmoid' or a callable, got {type(surrogate).__name__}"
    )


def run_lif(
    x_seq: Tensor, v0: Tensor | None, params: LIFParams, backend: str
) -> tuple[Tensor, Tensor]:
    """Spikes ``[T, ...]`` and the last membrane potential, on the backend's implementation.

    Args:
        x_seq: Input current ``[T, ...]``, ``T >= 1``.
        v0: Start potential of shape ``x_seq.shape[1:]``; ``None`` starts at rest.
        params: The neuron's settings.
        backend: ``"eager"``, or ``"auto"`` / ``"compiled"`` for the fused kernels (a
            custom surrogate callable always runs on the eager loop).

    >>> name, alpha, fn = resolve_surrogate("atan", None)
    >>> p = LIFParams(beta=0.9, gamma=1.0, threshold=1.0, v_reset=0.0, surrogate_fn=fn,
    ...               surrogate_name=name, alpha=alpha)
    >>> spikes, v_last = run_lif(torch.ones(3, 2), None, p, "eager")
    >>> spikes.shape, v_last.shape
    (torch.Size([3, 2]), torch.Size([2]))
    """
    if backend != "eager" and params.surrogate_name is not None:
        return _lif_fused(x_seq, v0, params, backend)
    return _lif_eager(x_seq, v0, params)


# --------------------------------------------------------------------------- eager reference


def _lif_eager(x_seq: Tensor, v0: Tensor | None, params: LIFParams) -> tuple[Tensor, Tensor]:
    # The same arithmetic as `h = beta * v + gamma * x; v = s * v_reset + (1 - s) * h`, with
    # the operations that cannot change a bit left out: `gamma * x` for gamma = 1, and for
    # v_reset = 0 the reset `h - h * s` (s is 0 or 1, so both forms are exact and have the
    # same gradients). Each step then launches 6 kernels instead of 9.
    beta, gamma, threshold, v_reset = params.beta, params.gamma, params.threshold, params.v_reset
    fn = params.surrogate_fn
    v: Tensor | float = v_reset if v0 is None else v0
    spikes = []
    for x in x_seq:
        current = x if gamma == 1.0 else gamma * x
        h = current if isinstance(v, float) and v == 0.0 else beta * v + current
        s = fn(h - threshold)
        s_reset = s.detach() if params.detach_reset else s
        v = h - h * s_reset if v_reset == 0.0 else s_reset * v_reset + (1 - s_reset) * h
        spikes.append(s)
    return torch.stack(spikes), v  # type: ignore[return-value]


# --------------------------------------------------------------------------- fused kernels
# Plain tensor functions over a flattened [T, N] layout. torch.compile unrolls the time
# loop into one pointwise kernel (each element's T values stay in registers), which is
# where the speed-up over a step-by-step loop comes from. They take the parameters as
# separate floats, not a LIFParams: top-level floats are what dynamic=True turns into
# kernel arguments (see _compiled).


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
        sg = surrogate_grad(h - threshold, name, alpha)
        keep = (h < threshold).to(h.dtype)  # dV/dH of the reset, spikes held constant
        dv_dh = keep + reset_grad * (v_reset - h) * sg
        gh = grad_s[t] * sg + gv * dv_dh
        grads.append(gamma * gh)
        gv = beta * gh
    grads.reverse()
    return torch.stack(grads), gv


# --------------------------------------------------------------------------- compilation


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
    if backend == "auto" and not compile_allowed():
        return eager_fn(*args)  # compilation switched off (short jobs, tests)
    if torch.compiler.is_compiling() or device_type in _CompileState.failed:
        return eager_fn(*args)  # an outer torch.compile traces the plain function
    try:
        compiled = _compiled(which)
    except Exception as exc:  # torch.compile itself is unavailable here
        return _compile_failed(exc, which, backend, device_type, args)
    try:
        with quiet_cuda_home_probe():
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
        # Past _run_kernel, _FusedLIF.forward, _lif_fused and run_lif to their caller in
        # spikelottery.neuron: warning filters by module name keep working.
        stacklevel=6,
    )
    eager_fn = _fwd_kernel if which == "fwd" else _bwd_kernel
    return eager_fn(*args)


# --------------------------------------------------------------------------- fused autograd


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
        ctx: Any, x: Tensor, v0: Tensor | None, params: LIFParams, backend: str
    ) -> tuple[Tensor, Tensor]:
        p = params
        spikes, v_last = _run_kernel(
            "fwd",
            backend,
            x.device.type,
            _plain(x),
            _plain(v0),
            p.beta,
            p.gamma,
            p.threshold,
            p.v_reset,
        )
        ctx.save_for_backward(x, v0)
        ctx.params = params
        ctx.backend = backend
        return spikes, v_last

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_s: Tensor, grad_v: Tensor) -> tuple[Tensor | None, ...]:
        x, v0 = ctx.saved_tensors
        p: LIFParams = ctx.params
        grad_x, grad_v0 = _run_kernel(
            "bwd",
            ctx.backend,
            x.device.type,
            _plain(grad_s.contiguous()),
            _plain(grad_v.contiguous()),
            _plain(x),
            _plain(v0),
            p.beta,
            p.gamma,
            p.threshold,
            p.v_reset,
            p.alpha,
            p.surrogate_name,
            0.0 if p.detach_reset else 1.0,
        )
        return grad_x, grad_v0 if v0 is not None else None, None, None


def _lif_fused(
    x_seq: Tensor, v0: Tensor | None, params: LIFParams, backend: str
) -> tuple[Tensor, Tensor]:
    shape = x_seq.shape
    # Flatten to [T, N] so every input of the same size reuses one compiled kernel.
    x = x_seq.reshape(shape[0], -1).contiguous()
    v = None if v0 is None else v0.reshape(-1).contiguous()
    spikes, v_last = _FusedLIF.apply(x, v, params, backend)
    return spikes.view(shape), v_last.view(shape[1:])
