"""Running the model: :func:`count_ops` measures each layer's MACs, firing rate and weight
density, and reads the batch size ``B`` and the time steps ``T``."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .._state import reset_states, split_batch
from .._validation import check_int
from ..errors import LayoutError, SpikeLotteryError
from ._layout import read_layout
from ._recorder import Recorder, Tally
from ._rules import OpMode
from .records import NeuronCount, OpCount, plain_number

__all__ = ["Measurement", "count_ops", "measure"]


@dataclass(frozen=True)
class Measurement:
    """What one run of :func:`measure` found.

    Attributes:
        counts: One :class:`OpCount` per layer, in execution order.
        timesteps: ``T``, given or inferred.
        samples: Samples measured.
        neurons: Membrane updates of each spiking neuron module, in execution order.
        frames: Distinct input frames per sample: ``T`` when the input has a time axis
            whose frames differ (event data), else 1 (a static input, repeated or
            encoded inside the model).
        spiking: A spiking neuron ran.
    """

    counts: tuple[OpCount, ...]
    timesteps: float
    samples: int
    neurons: tuple[NeuronCount, ...] = ()
    frames: float = 1.0
    spiking: bool = False


def count_ops(
    model: nn.Module,
    inputs: Any,
    *,
    timesteps: int | None = None,
    batch_size: int | None = None,
    max_batches: int | None = None,
    synops: bool = True,
) -> list[OpCount]:
    """Run ``model`` on ``inputs`` and count each layer's MACs, firing rate and weight density.

    The model runs under ``torch.no_grad()`` in eval mode (each module's ``training`` flag is
    restored afterwards), called as ``model(x)``; neuron states are reset before every batch
    and after the last (SpikingJelly's ``functional.reset_net`` when installed, else every
    module's ``reset()``).

    ``T`` and ``B`` are read from the spiking neurons (:mod:`._layout`): a multi-step
    neuron (ours, SpikingJelly's ``step_mode="m"``) sees ``[T, B, ...]``, a single-step one
    (SpikingJelly's ``step_mode="s"``, snnTorch's, Norse's cells) sees ``[B, ...]`` once per
    step. Labels of an ``(x, y)`` batch and ``batch_size=`` override ``B``; ``timesteps=``
    must agree with the neurons (give both ``timesteps=`` and ``batch_size=`` to override them). When
    the neurons disagree, a :class:`~spikelottery.errors.LayoutError` asks for
    ``timesteps=`` and ``batch_size=``. Without neurons (an ANN), ``B`` is the labels'
    length or the input's first dim (a 5-D input without labels or ``timesteps=`` is
    ambiguous and raises), and ``T`` is ``timesteps`` or the largest step count of any
    conv (the sample-steps of one call of a multi-step conv, all calls of a single-step
    one), or, in a model without convs, the first layer's ``steps``.

    Each call of a layer processes some sample-steps: a conv's batch dim (multi-step
    layers see ``[T * B, C, ...]``); for linear and matmul ops the output's leading dims
    (``[B, ...]`` is one step per sample, ``[T, B, ...]`` and ``[T * B, ...]`` are ``T``);
    a single-step loop calls the layer ``T`` times. A layer's ``steps`` is its
    sample-steps per sample, capped at ``T`` (token dims can look like time, and a layer
    applied ``k`` times per step has ``k`` times the MACs per step instead).

    Args:
        model: Any ``nn.Module``.
        inputs: One batch (a tensor ``x`` or an ``(x, y)`` pair) or an iterable of batches
            (e.g. a ``DataLoader``).
        timesteps: ``T``; read from the neurons when ``None``.
        batch_size: Samples per batch; read from the labels or the neurons when ``None``.
        max_batches: Stop after this many batches.
        synops: Also count the exact synaptic operations (``OpCount.synops``): one extra
            small conv or matmul per call.

    Returns:
        One :class:`OpCount` per layer, in execution order.

    Raises:
        LayoutError: The neurons disagree on ``T`` or ``B``, or contradict
            ``timesteps=`` (a :class:`SpikeLotteryError`).
        SpikeLotteryError: No conv, linear or matmul ran, ``T`` could not be inferred, or
            an input or a weight holds NaN or infinite values (the message names the
            layer).
        ValueError: ``inputs`` yielded no batch.

    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 16, 10))
    >>> [(c.name, c.macs) for c in count_ops(net, torch.rand(2, 3, 4, 4))]
    [('0', 3456.0), ('2', 1280.0)]
    """
    found = measure(
        model,
        inputs,
        timesteps=timesteps,
        batch_size=batch_size,
        max_batches=max_batches,
        synops=synops,
    )
    return list(found.counts)


def measure(
    model: nn.Module,
    inputs: Any,
    *,
    timesteps: int | None = None,
    batch_size: int | None = None,
    max_batches: int | None = None,
    synops: bool = True,
) -> Measurement:
    """:func:`count_ops`, with the ``T`` and the number of samples it read."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    timesteps = check_int("timesteps", timesteps, optional=True)
    batch_size = check_int("batch_size", batch_size, optional=True)
    max_batches = check_int("max_batches", max_batches, optional=True)
    device = next((t.device for t in [*model.parameters(), *model.buffers()]), None)
    flags = [(m, m.training) for m in model.modules()]
    rec = Recorder(model)
    rec.exact = bool(synops)
    samples = batches = 0
    neuron_t: int | None = None
    inputs_seen: list[tuple[tuple[int, ...], bool, bool]] = []
    try:
        model.eval()
        with torch.no_grad():
            for batch in _batches(inputs):
                x, labels = _split_batch(batch)
                if device is not None:
                    x = x.to(device)
                reset_states(model)
                rec.start_batch()
                with OpMode(rec):
                    model(x)
                layout = read_layout(
                    rec.seen,
                    tuple(x.shape),
                    labels=labels,
                    batch_size=batch_size,
                    timesteps=timesteps,
                )
                b = layout.batch
                if b < 1:
                    raise ValueError(f"batch {batches} has no sample (x of shape {tuple(x.shape)})")
                if rec.seen and layout.timesteps is not None:
                    if neuron_t is not None and layout.timesteps != neuron_t:
                        raise LayoutError(
                            f"batch {batches}: the spiking neurons see T={layout.timesteps}, "
                            f"batch 0 saw T={neuron_t}; measure batches of one T, or pass timesteps="
                        )
                    neuron_t = layout.timesteps
                rec.end_batch(b)
                inputs_seen.append((tuple(x.shape), _same_along(x, 0), _same_along(x, 1)))
                samples += b
                batches += 1
                if max_batches is not None and batches >= max_batches:
                    break  # before the loader prepares another batch
    finally:
        rec.close()
        for m, flag in flags:
            m.training = flag
        if batches:
            reset_states(model)
    if not batches:
        raise ValueError(
            "inputs yielded no batch: pass a tensor, an (x, y) batch or a non-empty iterable of batches"
        )
    if not rec.tallies:
        raise SpikeLotteryError(
            f"no conv, linear or matmul ran in {type(model).__name__}: estimate_energy prices F.conv*, F.linear, "
            "matmul/bmm/einsum and attention calls; check that the model computes with them"
        )
    counts, t = _aggregate(rec, samples, neuron_t if neuron_t is not None else timesteps)
    neurons = tuple(
        NeuronCount(
            name=n.module,
            module=n.module_type,
            units=n.updates / samples / t,
            steps=t,
            updates=n.updates / samples,
            spikes=n.spikes / samples,
        )
        for n in sorted(rec.neurons.values(), key=lambda n: n.seq)
    )
    frames = 1.0
    if _event_frames(inputs_seen[0], rec.batch_sizes[0], t) and _reads_frames(
        rec, inputs_seen[0][0], rec.batch_sizes[0], samples, t
    ):
        frames = t
    return Measurement(tuple(counts), t, samples, neurons, frames, bool(neurons))


def _same_along(x: Tensor, dim: int) -> bool:
    """Every slice of ``x`` along ``dim`` equals the first (``True`` for a missing dim)."""
    if x.dim() <= dim or x.shape[dim] < 2:
        return True
    first = x.narrow(dim, 0, 1)
    return bool(torch.equal(x, first.expand_as(x)))


def _event_frames(seen: tuple[tuple[int, ...], bool, bool], b: int, t: float) -> bool:
    """The input ``[T, B, ...]`` or ``[B, T, ...]`` has frames that differ over time."""
    shape, same0, same1 = seen
    if t <= 1 or len(shape) < 3:
        return False
    axes = []
    if shape[0] == t and shape[1] == b:
        axes.append(same0)
    if shape[0] == b and shape[1] == t:
        axes.append(same1)
    # A static image repeated over T (some candidate time axis is constant) is one frame.
    return bool(axes) and not any(axes)


def _reads_frames(rec: Recorder, shape: tuple[int, ...], b: int, samples: int, t: float) -> bool:
    """The first layer reads less than ``T`` copies of the input: the input's time axis is
    real. A static ``[B, C, H, W]`` image with ``C == T`` (CIFAR at ``T = 3``) has the
    shape of ``[B, T, ...]`` event frames, but a model that repeats it over ``T`` has its
    first layer read ``T`` copies of it: one frame. Only a conv or linear first layer is
    checked."""
    first = min(rec.tallies.values(), key=lambda a: a.seq)
    if first.kind not in ("conv", "linear"):
        return True
    read = first.act_numel / samples
    return read < t * math.prod(shape) / b * (1 - 1e-9)


def _split_batch(batch: Any) -> tuple[Tensor, int | None]:
    """``x`` and the number of labels of a batch (``None`` without labels)."""
    try:
        x, y = split_batch(batch)
    except TypeError as exc:
        raise TypeError(f"{exc}; the model is called as model(x)") from None
    return x, (int(y.shape[0]) if isinstance(y, Tensor) and y.dim() >= 1 else None)


def _batches(inputs: Any) -> Iterator[Any]:
    if isinstance(inputs, Mapping):
        raise TypeError(
            f"inputs must be a tensor, an (x, y) batch or an iterable of batches (e.g. a DataLoader), "
            f"got a {type(inputs).__name__} (iterating it gives its keys); pass inputs[key] instead"
        )
    if isinstance(inputs, (Tensor, tuple)):
        yield inputs
        return
    if (
        isinstance(inputs, list)
        and len(inputs) == 2
        and all(isinstance(t, Tensor) for t in inputs)
        and inputs[1].dim() < inputs[0].dim()
    ):
        yield inputs  # one [x, y] batch, as a DataLoader yields it
        return
    if not isinstance(inputs, Iterable):
        raise TypeError(
            f"inputs must be a tensor, an (x, y) batch or an iterable of batches (e.g. a DataLoader), "
            f"got {type(inputs).__name__}"
        )
    yield from inputs


def _near_int(v: float) -> float:
    r = round(v)
    return float(r) if abs(v - r) < 1e-6 * max(1.0, abs(v)) else v


def _aggregate(rec: Recorder, samples: int, timesteps: int | None) -> tuple[list[OpCount], float]:
    tallies = sorted(rec.tallies.values(), key=lambda a: a.seq)

    def per_sample(a: Tally, t: float) -> float:
        from_leads = sum(
            calls * _lead_sample_steps(dims, rec.batch_sizes[i], t)
            for (dims, i), calls in a.leads.items()
        )
        return (a.sample_steps + from_leads) / samples

    batches = max(rec.batch_id + 1, 1)

    def conv_steps(a: Tally) -> float:
        # A multi-step conv sees [T * B, ...] on each call, a single-step loop calls it T
        # times with [B, ...]: a module applied k times per step (weight tying) has k
        # times the sample-steps, but its calls still show T.
        total = per_sample(a, 1.0)
        per_call = _near_int(total * batches / a.calls) if a.calls else total
        return per_call if per_call > 1 else total

    if timesteps is None:
        convs = [conv_steps(a) for a in tallies if a.kind == "conv"]
        t_est = max(convs) if convs else per_sample(tallies[0], 1.0)
        t_round = _near_int(t_est)
        if t_round != round(t_round) or t_round < 1:
            raise SpikeLotteryError(
                f"could not infer the number of time steps: layer {_name(rec, tallies[0])!r} processed "
                f"{t_est:g} time steps per sample with {samples} samples; pass timesteps= (and batch_size= or (x, y) "
                "batches when the input is [T, B, ...])"
            )
        t = t_round
    else:
        t = float(timesteps)

    def steps_of(a: Tally) -> float:
        # At most T: a layer applied k times per step has k times the MACs per step.
        return min(t, _near_int(per_sample(a, t)))

    def to_count(a: Tally, name: str, steps: float, module: str) -> OpCount:
        macs = _near_int(a.macs / samples / steps) if steps else 0.0
        shape = a.shape
        if a.base_macs and macs and abs(macs / a.base_macs - 1) > 1e-9:
            shape = f"{plain_number(macs / a.base_macs)}x ({shape})"
        if a.binary:
            rate = a.spike_sum / a.spike_numel if a.spike_numel else 0.0
        else:
            rate = a.act_sum / a.act_numel if a.act_numel else 0.0
        density = a.w_nnz / a.w_numel if a.w_nnz is not None and a.w_numel else 1.0
        synops, values, per_step, values_per_step = _exact_counts(a, rec.batch_sizes, samples, t)
        return OpCount(
            name=name,
            kind=a.kind,
            module=module,
            shape=shape,
            macs=macs,
            steps=steps,
            rate=rate,
            binary=a.binary,
            density=density,
            spike_operand=a.spike_operand if a.binary else "",
            calls=a.calls,
            synops=synops,
            synops_values=values,
            synops_per_step=per_step,
            synops_values_per_step=values_per_step,
            binarised=a.w_binarised,
            pool_area=a.pool_area,
            weights=a.weights,
            neurobench=a.neurobench,
            taps=a.taps / samples,
        )

    counts: dict[tuple[str, str], OpCount] = {}
    for a in tallies:
        counts[(a.module, a.label)] = to_count(a, _name(rec, a), steps_of(a), a.module_type)
    for (k1, k2), pair in rec.pairs.items():
        a1, a2 = rec.tallies[k1], rec.tallies[k2]
        if pair.other is None or pair.calls != a1.calls or pair.calls != a2.calls:
            continue  # paired on some calls only: no consistent alternative
        other = "kv_first" if pair.run_order == "qk_first" else "qk_first"
        for key, alt in ((k1, pair.other[0]), (k2, pair.other[1])):
            c = counts[key]
            alt_count = to_count(alt, c.name, c.steps, c.module)
            counts[key] = dataclasses.replace(c, alternatives={pair.run_order: c, other: alt_count})
    return list(counts.values()), t


def _exact_counts(
    a: Tally, sizes: list[int], samples: int, t: float
) -> tuple[float | None, float | None, tuple[float, ...], tuple[float, ...]]:
    """``(synops, synops_values, synops_per_step, synops_values_per_step)`` per sample of
    a tally (``None`` and ``()`` when some call could not be counted exactly)."""
    if a.syn_missing or not a.syn_steps or a.syn_values is None:
        return None, None, (), ()
    steps = max(round(t), 1)
    profiles = []
    for counts in (a.syn_steps, a.syn_value_steps):
        profile = torch.zeros(steps, dtype=torch.float64)
        for (index, _shape, i), events in counts.items():
            cpu = events.detach().to("cpu", torch.float64)
            profile += step_profile(cpu, index, sizes[i], steps)
        profiles.append(profile / samples)
    synops = float(profiles[0].sum())
    values = float(a.syn_values) / samples
    events_steps, value_steps = (tuple(float(v) for v in p) for p in profiles)
    return synops, values, events_steps, value_steps


def step_profile(events: Tensor, index: int, b: int, t: int) -> Tensor:
    """Split the counts of one call over ``t`` time steps.

    ``events`` holds the counts per leading row of the call: ``[T, B]`` or ``[T * B]``
    (a multi-step layer, time first) are split by their time index; anything else
    (``[B]``, tokens, a scalar) is one step, the ``index``-th call of the layer in its
    batch (a single-step loop calls it once per step).

    >>> step_profile(torch.tensor([1.0, 2.0, 3.0, 4.0]), 0, 2, 2).tolist()  # [T * B]
    [3.0, 7.0]
    >>> step_profile(torch.tensor([5.0, 6.0]), 1, 2, 3).tolist()  # [B], second call
    [0.0, 11.0, 0.0]
    """
    out = torch.zeros(t, dtype=torch.float64)
    shape = tuple(events.shape)
    if t > 1 and shape and (shape[0] == t * b or (len(shape) >= 2 and shape[:2] == (t, b))):
        return out + events.reshape(t, -1).sum(dim=1)
    out[index % t] = events.sum()
    return out


def _lead_sample_steps(lead: tuple[int, ...], b: int, t: float) -> float:
    """Sample-steps in one call whose output has leading dims ``lead`` in a batch of ``b``.

    With ``T > 1`` known, ``[T, B, ...]`` and ``[T * B, ...]`` are read first (so ``B == T``
    is not mistaken for tokens); then ``[B, ...]`` is one step, ``[X, B, ...]`` is X steps
    and ``[k * B, ...]`` is k.

    >>> _lead_sample_steps((4, 3), 3, 4.0), _lead_sample_steps((3, 7), 3, 1.0)
    (12.0, 3.0)
    """
    if not lead:
        return float(b)
    if t > 1:
        if len(lead) >= 2 and lead[0] == t and lead[1] == b:
            return t * b
        if lead[0] == t * b:
            return t * b
    if lead[0] == b:
        return float(b)
    if len(lead) >= 2 and lead[1] == b:
        return float(lead[0] * b)
    if lead[0] % b == 0:
        return float(lead[0])
    return float(b)


def _name(rec: Recorder, a: Tally) -> str:
    if not a.custom_label and rec.leaf.get(a.module, False) and a.module:
        siblings = sum(1 for b in rec.tallies.values() if b.module == a.module)
        if siblings == 1:
            return a.module
    return f"{a.module}.{a.label}" if a.module else a.label
