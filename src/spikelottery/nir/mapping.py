"""Our discrete-time neurons as NIR's continuous-time neuron nodes, and back.

NIR (the Neuromorphic Intermediate Representation, Pedersen et al. 2024) states its
neurons as differential equations. The leaky one with a synaptic current, ``CubaLIF``, is

.. math::

    \\tau_{syn} \\dot I = -I + w_{in} X, \\qquad
    \\tau_{mem} \\dot V = (v_{leak} - V) + r I,

with a spike and a reset of ``V`` to ``v_reset`` where ``V`` crosses ``v_threshold``. The
simulators that read NIR (snnTorch, Norse) integrate it with forward Euler at a time step
``dt``, the current first:

.. math::

    I[n] = I[n-1] + \\tfrac{dt}{\\tau_{syn}}(w_{in} X[n] - I[n-1]), \\qquad
    V[n] = V[n-1] + \\tfrac{dt}{\\tau_{mem}}(v_{leak} - V[n-1] + r I[n]).

The library's neuron (paper Eq. 1-2) is ``V[n] = lambda V[n-1] + gamma X[n]``, a spike
where ``V[n] >= theta``, then ``V = 0``. Choosing

* ``tau_syn = dt`` (the current follows the input within one step: ``I[n] = w_in X[n]``),
* ``tau_mem = dt / (1 - lambda)`` (so ``1 - dt / tau_mem = lambda``),
* ``r = tau_mem / dt = 1 / (1 - lambda)`` (so ``dt r / tau_mem = 1``),
* ``w_in = gamma``, ``v_leak = 0``, ``v_threshold = theta``, ``v_reset = 0``,

turns the Euler step into ``V[n] = lambda V[n-1] + gamma X[n]`` exactly. snnTorch reads it
as ``Synaptic(alpha = 1 - dt / tau_syn = 0, beta = 1 - dt / tau_mem = lambda)`` with its
fixed ``dt = 1e-4`` (the default :data:`DEFAULT_DT` here), Norse as its Euler ``CubaLIF``
with the ``dt`` given to ``norse.torch.from_nir``. A plain NIR ``LIF`` node would do for the
equation too (``tau = dt / (1 - lambda)``, ``r = gamma / (1 - lambda)``), but Norse's reader
ignores ``r`` on ``LIF`` (it assumes ``r = 1``), so ``CubaLIF`` is what both read exactly;
``neuron="lif"`` writes the ``LIF`` node anyway.

A neuron without leak (``lambda = 1``, an integrate-and-fire neuron) is NIR's ``IF``:
``V[n] = V[n-1] + dt r X[n]``, so ``r = gamma / dt``.

The threshold test differs at equality only: ours (and SpikingJelly's) fires at
``V >= theta``, snnTorch and Norse at ``V > theta``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from ..neuron import LIFNeuron
from ._package import nir_package
from .errors import NIRExportError, NIRImportError

__all__ = [
    "DEFAULT_DT",
    "NEURON_NODES",
    "NeuronParams",
    "neuron_from_nir",
    "neuron_params",
    "neuron_to_nir",
]

#: The time step the exported constants are computed for: snnTorch's reader fixes it at
#: 1e-4 s; give the same ``dt`` to Norse's ``from_nir``.
DEFAULT_DT = 1e-4

#: The NIR node kinds a leaky neuron can be written as (``neuron=`` of ``export_nir``).
NEURON_NODES = ("cubalif", "lif")


@dataclass(frozen=True)
class NeuronParams:
    """A discrete neuron ``V[n] = beta V[n-1] + gamma X[n]``, spike at ``V >= threshold``, reset to 0.

    Attributes:
        beta: Membrane decay per step (the paper's lambda), in ``[0, 1]``.
        gamma: Input gain.
        threshold: Firing threshold.
        source: What it was read from (for messages), e.g. ``"LIFNeuron"``.
    """

    beta: float
    gamma: float = 1.0
    threshold: float = 1.0
    source: str = "LIFNeuron"


def _spikingjelly_params(module: nn.Module, where: str) -> NeuronParams | None:
    """A SpikingJelly ``LIFNode`` / ``IFNode`` as :class:`NeuronParams` (``None`` if not one)."""
    try:
        from spikingjelly.activation_based import neuron as sj_neuron
    except ImportError:  # pragma: no cover - SpikingJelly is a dependency of the library
        return None
    kind = type(module)
    if kind not in (sj_neuron.LIFNode, sj_neuron.IFNode):
        return None
    name = kind.__name__
    sj: Any = module  # SpikingJelly keeps its settings as plain attributes
    v_reset = sj.v_reset
    if v_reset is None:
        raise NIRExportError(
            f"{where} ({name}) has a soft reset (v_reset=None: V minus the threshold after a "
            "spike); NIR's neurons reset V to v_reset and the simulators that read NIR reset "
            "to a value, so it cannot be exported exactly; build the neuron with v_reset=0.0"
        )
    if float(v_reset) != 0.0:
        raise NIRExportError(
            f"{where} ({name}) resets to v_reset={float(v_reset)!r} with no matching leak "
            "target; the readers of NIR (snnTorch, Norse) reset to 0: use v_reset=0.0"
        )
    threshold = float(sj.v_threshold)
    if kind is sj_neuron.IFNode:
        return NeuronParams(1.0, 1.0, threshold, source=name)
    tau = float(sj.tau)
    beta = 1.0 - 1.0 / tau
    gamma = 1.0 / tau if sj.decay_input else 1.0
    return NeuronParams(beta, gamma, threshold, source=name)


def neuron_params(module: nn.Module, where: str = "the neuron") -> NeuronParams | None:
    """The discrete update of a neuron module, or ``None`` if ``module`` is not a neuron we know.

    Reads :class:`~spikelottery.neuron.LIFNeuron` and SpikingJelly's ``LIFNode`` (``V += (X - V)
    / tau`` with ``decay_input``, else ``V += -V / tau + X``) and ``IFNode``.

    Raises:
        NIRExportError: A neuron NIR cannot express exactly (soft reset, a reset value other
            than 0); the message names ``where``.

    >>> neuron_params(LIFNeuron(beta=0.9))
    NeuronParams(beta=0.9, gamma=1.0, threshold=1.0, source='LIFNeuron')
    """
    if isinstance(module, LIFNeuron):
        if module.v_reset != 0.0:
            raise NIRExportError(
                f"{where} (LIFNeuron) resets to v_reset={module.v_reset!r}; the readers of "
                "NIR (snnTorch, Norse) reset to 0: use v_reset=0.0"
            )
        return NeuronParams(module.beta, module.gamma, module.threshold)
    return _spikingjelly_params(module, where)


def _full(value: float, shape: tuple[int, ...]) -> np.ndarray:
    return np.full(shape, value, dtype=np.float64)


def neuron_to_nir(
    params: NeuronParams,
    shape: tuple[int, ...],
    *,
    dt: float = DEFAULT_DT,
    node: str = "cubalif",
) -> Any:
    """The NIR node whose Euler step at ``dt`` is ``params``' update (see the module's derivation).

    Args:
        params: The discrete neuron.
        shape: The neurons' shape for one sample (``(C, H, W)`` or ``(D,)``).
        dt: The importer's time step.
        node: ``"cubalif"`` (read exactly by snnTorch and Norse) or ``"lif"``; a neuron
            without leak is always an ``IF`` node.

    >>> n = neuron_to_nir(NeuronParams(beta=0.99), (4,))
    >>> type(n).__name__, round(float(n.tau_mem[0]), 12), round(float(n.r[0]), 9)
    ('CubaLIF', 0.01, 100.0)
    """
    nir = nir_package()

    if not (dt > 0 and math.isfinite(dt)):
        raise ValueError(f"dt must be a positive number of seconds, got dt={dt!r}")
    if node not in NEURON_NODES:
        raise ValueError(f"neuron must be one of {NEURON_NODES}, got neuron={node!r}")
    zeros = _full(0.0, shape)
    threshold = _full(params.threshold, shape)
    if params.beta >= 1.0:
        return nir.IF(r=_full(params.gamma / dt, shape), v_threshold=threshold, v_reset=zeros)
    tau_mem = dt / (1.0 - params.beta)
    if node == "lif":
        return nir.LIF(
            tau=_full(tau_mem, shape),
            r=_full(params.gamma * tau_mem / dt, shape),
            v_leak=zeros,
            v_threshold=threshold,
            v_reset=zeros,
        )
    return nir.CubaLIF(
        tau_syn=_full(dt, shape),
        tau_mem=_full(tau_mem, shape),
        r=_full(tau_mem / dt, shape),
        v_leak=zeros,
        v_threshold=threshold,
        v_reset=zeros,
        w_in=_full(params.gamma, shape),
    )


def _one(node: Any, attr: str, name: str) -> float:
    """The single value of a per-neuron parameter (a layer of identical neurons)."""
    values = np.unique(np.asarray(getattr(node, attr), dtype=np.float64))
    if values.size != 1:
        raise NIRImportError(
            f"NIR node {name!r} ({type(node).__name__}) has {values.size} different {attr} "
            "values; load_nir builds one LIFNeuron per node and needs one value per node"
        )
    return float(values[0])


def neuron_from_nir(node: Any, name: str, *, dt: float = DEFAULT_DT) -> NeuronParams | None:
    """The discrete neuron that a NIR ``CubaLIF`` / ``LIF`` / ``IF`` node is at ``dt`` (inverse of
    :func:`neuron_to_nir`); ``None`` for any other node.

    Raises:
        NIRImportError: A node that no :class:`~spikelottery.neuron.LIFNeuron` reproduces (a
            synaptic time constant longer than ``dt``, a leak target, a reset value, per-neuron
            parameters); the message names the node.
    """
    nir = nir_package()

    kind = type(node).__name__

    def zero(attr: str) -> None:
        if getattr(node, attr, None) is not None and _one(node, attr, name) != 0.0:
            raise NIRImportError(
                f"NIR node {name!r} ({kind}) has {attr} != 0; LIFNeuron leaks to 0 and resets "
                "to 0 (a shifted leak or reset has no equivalent)"
            )

    if isinstance(node, nir.CubaLIF):
        zero("v_leak")
        zero("v_reset")
        if not math.isclose(_one(node, "tau_syn", name), dt, rel_tol=1e-6):
            raise NIRImportError(
                f"NIR node {name!r} (CubaLIF) has tau_syn={_one(node, 'tau_syn', name)!r} but "
                f"dt={dt!r}: a synaptic current that outlasts one step is a second state "
                "LIFNeuron does not have; pass the dt the graph was made for"
            )
        factor = dt / _one(node, "tau_mem", name)
        return NeuronParams(
            1.0 - factor,
            _one(node, "w_in", name) * _one(node, "r", name) * factor,
            _one(node, "v_threshold", name),
            source="CubaLIF",
        )
    if isinstance(node, nir.LIF):
        zero("v_leak")
        zero("v_reset")
        factor = dt / _one(node, "tau", name)
        return NeuronParams(
            1.0 - factor, _one(node, "r", name) * factor, _one(node, "v_threshold", name), "LIF"
        )
    if isinstance(node, nir.IF):
        zero("v_reset")
        return NeuronParams(1.0, _one(node, "r", name) * dt, _one(node, "v_threshold", name), "IF")
    return None
