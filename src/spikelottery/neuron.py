"""Leaky integrate-and-fire neuron (paper Eq. 1-2) with surrogate gradients.

The membrane update is

.. math::

    V[n] = \\beta V[n-1] + \\gamma I[n], \\qquad S[n] = H(V[n] - \\theta),

followed by a hard reset of ``V`` to ``v_reset`` wherever ``S[n] = 1``. The Heaviside step
``H`` has no useful derivative, so backward uses a surrogate (arc tangent by default, as in
SpikingJelly; see :mod:`spikelottery.surrogate`).

:func:`lif_multistep` is the update as a function of a whole sequence; :class:`LIFNeuron`
is the module around it. Both run either an eager loop over time that autograd
differentiates, or fused forward and hand-written BPTT kernels compiled with
:func:`torch.compile` (lazily, on the first call; if compiling fails, for instance without
a C compiler, ``backend="auto"`` warns once and falls back to the eager loop).

With ``gamma = 1`` and ``v_reset = 0`` the neuron equals SpikingJelly's
``LIFNode(tau=1 / (1 - beta), decay_input=False, v_reset=0.0)``.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import torch
from torch import Tensor, nn

from ._compat import optional_import
from ._lif_kernels import BACKENDS, LIFParams, resolve_surrogate, run_lif
from .surrogate import SurrogateFn, atan_surrogate, heaviside, sigmoid_surrogate

__all__ = [
    "LIFNeuron",
    "atan_surrogate",
    "heaviside",
    "lif_multistep",
    "reset_states",
    "sigmoid_surrogate",
]

_STEP_MODES = ("s", "m")


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
            to spikes with a surrogate gradient (e.g. :func:`~spikelottery.surrogate.atan_surrogate`).
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
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    name, a, fn = resolve_surrogate(surrogate_fn, alpha)
    beta, gamma, threshold, v_reset = (float(p) for p in (beta, gamma, threshold, v_reset))
    v0 = _prepare_v0(x_seq, v0)
    if backend == "compiled" and name is None:
        raise ValueError(
            "backend='compiled' needs a built-in surrogate ('atan' or 'sigmoid'); "
            "a custom callable runs on backend='eager'"
        )
    params = LIFParams(
        beta=beta,
        gamma=gamma,
        threshold=threshold,
        v_reset=v_reset,
        surrogate_fn=fn,
        surrogate_name=name,
        alpha=a,
        detach_reset=bool(detach_reset),
    )
    return run_lif(x_seq, v0, params, backend)


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
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got backend={backend!r}")
        self._surrogate_name, self._alpha, self._surrogate_fn = resolve_surrogate(surrogate, alpha)
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
        # Built per call: the settings are plain attributes that may change after
        # construction (export_onnx switches the backend to "eager").
        params = LIFParams(
            beta=self.beta,
            gamma=self.gamma,
            threshold=self.threshold,
            v_reset=self.v_reset,
            surrogate_fn=self._surrogate_fn,
            surrogate_name=self._surrogate_name,
            alpha=self._alpha,
            detach_reset=self.detach_reset,
        )
        return run_lif(x_seq, v0, params, self.backend)

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


def reset_states(model: nn.Module) -> None:
    """Forget every neuron's membrane state before a new batch.

    Calls ``reset()`` on the stateful modules only: :class:`~spikelottery.LIFNeuron` and
    SpikingJelly's ``MemoryModule`` subclasses (its neurons and stateful layers), and
    ``reset_mem()`` on snnTorch's neurons (``init_hidden=True`` keeps their state). Other
    modules are never touched, although SpikingJelly's own ``functional.reset_net`` calls
    ``reset()`` on every module that has one: in timm, torchvision-style or user code a
    ``reset()`` method may mean something else entirely (timm's classifier heads take
    ``reset(num_classes)``). A ``DistributedDataParallel`` / ``DataParallel`` wrapper is
    looked through.

    >>> reset_states(nn.Sequential(nn.Linear(2, 2)))  # no neuron: nothing to do
    """
    from ._state import unwrap  # _state imports this module

    stateful: tuple[type, ...] = (LIFNeuron,)
    sj_base = optional_import("spikingjelly.activation_based.base")
    if sj_base is not None:
        stateful += (sj_base.MemoryModule,)
    # snnTorch's neurons keep their state between calls with init_hidden=True; they forget
    # it by reset_mem() (a library the user never imported cannot have made their neurons).
    snn = optional_import("snntorch._neurons.neurons") if "snntorch" in sys.modules else None
    snn_neuron: type | None = getattr(snn, "SpikingNeuron", None)
    for module in unwrap(model).modules():
        if isinstance(module, stateful):
            module.reset()  # type: ignore[operator]
        elif snn_neuron is not None and isinstance(module, snn_neuron):
            reset_mem = getattr(module, "reset_mem", None)
            if callable(reset_mem):
                reset_mem()
