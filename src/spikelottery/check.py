"""A guard that a ticket is really computed: :func:`check_ticket`.

``sparsify`` makes every read of a swapped layer's ``weight`` return the effective weight,
but a network can still bypass it (code that reads ``module._parameters["weight"]``, a
custom CUDA op, a module PyTorch will add a fused path to next year). This check does
not trust any mechanism; it measures, on a real input:

1. one forward and backward: every swapped layer that runs must get a score gradient;
2. per swapped layer, its mask redrawn: the output must change the same way with
   gradients on and under ``torch.no_grad()`` (where PyTorch's fused inference paths run);
3. the removed (masked-out) entries of every layer's frozen weight redrawn, and every
   plain tensor a module keeps with the shape of a swapped layer's weight (a copy of the
   weight taken before ``sparsify``, such as ``self.w = self.lin.weight.detach()``)
   redrawn: the output must not change;
4. the model must compute what its :func:`~spikelottery.densify` copy computes;
5. the weight that each swapped layer's convolution or linear map receives must be zero
   wherever the mask removed it (a forward that transforms the weight first, as weight
   standardisation does, makes the removed zeros non-zero:
   :mod:`~spikelottery.weight_operands`).

A layer that runs but gets no gradient, a layer whose mask changes the output only with
gradients on (or only off), a layer whose removed weights change the output, and a model
that differs from its ``densify()`` copy are bypasses: :meth:`TicketCheck.raise_if_failed` raises and names them. A layer whose mask
changes nothing either way is *inactive* on this input (silent neurons, saturated gates),
and a layer that never runs is *unused* (e.g. an auxiliary head in eval mode): both are
listed with a warning, since they are not verified, but are not errors.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ._modules import invalidate_spikingjelly_cache, walk
from ._state import reset_states
from .errors import SpikeLotteryError
from .layers import SubnetLayer, record_weight_reads
from .masks import topk_mask
from .weight_operands import layers_computing_dense_weights

__all__ = ["TicketCheck", "check_ticket"]

_SEED = 1234


@dataclass
class TicketCheck:
    """The outcome of :func:`check_ticket`; ``str()`` of it is a readable verdict.

    Attributes:
        layers: The score-mask layers checked (qualified names).
        no_gradient: Layers that ran, or whose weight was read, but whose scores the
            backward pass never reached.
        ignored_mask: Layers whose redrawn mask changed the output with gradients on but
            not under ``torch.no_grad()``, or the reverse: a separate (fused) path.
        inactive: Layers whose redrawn mask changed the output in neither mode on this
            input (silent neurons, saturated gates): not a bypass, but not verified.
        unused: Layers that did not run and whose weight nobody read on this input.
        fixed: Layers at ``pa = 0`` (nothing removed), whose mask cannot change.
        reads_removed: Layers whose removed (masked-out) weights, redrawn, changed the
            output, and plain tensors kept by a module with the shape of a swapped layer's
            weight whose values change the output (``"net.wt (the shape of fc's
            weight)"``): the network computes with a dense weight somewhere (a tensor
            copied from the layer before ``sparsify``, a custom op on ``frozen_weight``).
        dense_operands: Layers whose forward transforms the effective weight before its
            convolution or linear map so that removed entries are no longer zero (weight
            standardisation: timm's ``StdConv2d``, SpikingJelly's ``WSConv2d``): the
            network computes with a dense weight.
        densify_error: Largest difference between the model's output and its
            ``densify()`` copy's (``None`` if the copy could not be made).
        notes: Anything that limited the check.
    """

    layers: list[str]
    no_gradient: list[str] = field(default_factory=list)
    ignored_mask: list[str] = field(default_factory=list)
    inactive: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)
    reads_removed: list[str] = field(default_factory=list)
    dense_operands: list[str] = field(default_factory=list)
    densify_error: float | None = None
    densify_tolerance: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def densify_mismatch(self) -> bool:
        """True if the model and its ``densify()`` copy disagree beyond the tolerance."""
        return self.densify_error is not None and not self.densify_error <= self.densify_tolerance

    @property
    def ok(self) -> bool:
        """True if no bypass was found."""
        return not (
            self.no_gradient
            or self.ignored_mask
            or self.reads_removed
            or self.dense_operands
            or self.densify_mismatch
        )

    def __str__(self) -> str:
        verdict = "passed" if self.ok else "FAILED"
        lines = [f"check_ticket {verdict}: {len(self.layers)} score-mask layers checked"]
        if self.no_gradient:
            lines.append(
                "  ran, but the scores got no gradient (the forward never used the effective "
                "weight): " + ", ".join(self.no_gradient)
            )
        if self.ignored_mask:
            lines.append(
                "  the mask changes the output with gradients on but not off, or the reverse "
                "(a separate inference path reads another weight): " + ", ".join(self.ignored_mask)
            )
        if self.reads_removed:
            lines.append(
                "  the output changes when removed (masked-out) weights change, so the network "
                "computes with the dense weight (e.g. a tensor copied from the layer before "
                "sparsify, such as `self.w = layer.weight.detach()`): "
                + ", ".join(self.reads_removed)
            )
        if self.dense_operands:
            lines.append(
                "  the forward transforms the weight before its convolution or linear map so "
                "that removed (masked-out) entries are not zero any more (e.g. weight "
                "standardisation): the layer computes with a dense weight: "
                + ", ".join(self.dense_operands)
            )
        if self.densify_mismatch:
            lines.append(
                f"  the model differs from its densify() copy by {self.densify_error:.3g} "
                f"(> {self.densify_tolerance:.3g}): some code reads a weight other than "
                "layer.weight"
            )
        if self.inactive:
            lines.append(
                "  inactive on this input (a redrawn mask left the output unchanged; not "
                "verified): " + ", ".join(self.inactive)
            )
        if self.unused:
            lines.append("  not run on this input (not verified): " + ", ".join(self.unused))
        if self.fixed:
            lines.append("  pa = 0, nothing to verify: " + ", ".join(self.fixed))
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    def raise_if_failed(self) -> TicketCheck:
        """Raise :class:`~spikelottery.SpikeLotteryError` if a bypass was found; warn on
        inactive layers. Returns ``self``."""
        if not self.ok:
            raise SpikeLotteryError(
                f"{self}\nThe ticket is not what the network computes. Make the named "
                "layers' code read `layer.weight` when it runs (not `_parameters['weight']`, "
                "nor a copy of the weight kept from before sparsify), or exclude them with "
                "sparsify(..., filter=...)."
            )
        if self.inactive or self.unused:
            unverified = self.inactive + self.unused
            warnings.warn(
                f"check_ticket: no bypass found, but {len(unverified)} of {len(self.layers)} "
                "score-mask layers are not verified on this input (a redrawn mask left the "
                "output unchanged, e.g. neurons that do not spike yet, or the layer did not "
                "run): " + ", ".join(unverified) + ". Not an error; to verify them, check on "
                "an input that makes them fire (check_ticket(model, x)).",
                stacklevel=2,
            )
        for note in self.notes:
            warnings.warn(f"check_ticket: {note}", stacklevel=2)
        return self


@contextlib.contextmanager
def _batch_statistics(model: nn.Module, enabled: bool) -> Iterator[None]:
    """BatchNorm on the batch's own statistics; running statistics restored afterwards."""
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)] if enabled else []
    saved = [(m, m.training, [b.clone() for b in m.buffers()]) for m in norms]
    try:
        for m in norms:
            m.train()
        yield
    finally:
        for m, training, buffers in saved:
            m.train(training)
            with torch.no_grad():
                for b, old in zip(m.buffers(), buffers):
                    b.copy_(old)


def _args(example_inputs: Any) -> tuple[Any, ...]:
    return example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)


def _tensors(out: Any) -> list[Tensor]:
    """Every tensor in a model's output (a tensor, or nested tuples, lists and dicts)."""
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in _tensors(v)]
    if isinstance(out, (tuple, list)):
        return [t for v in out for t in _tensors(v)]
    return []


def _run(model: nn.Module, args: tuple[Any, ...]) -> list[Tensor]:
    # Same neuron state and same random numbers (Poisson encoders, dropout left on) for
    # every run, so outputs differ only where the weights do.
    reset_states(model)
    torch.manual_seed(_SEED)
    out = _tensors(model(*args))
    if not out:
        raise SpikeLotteryError(
            "check_ticket: the model's output holds no tensor, so nothing can be compared"
        )
    return out


def _same(a: list[Tensor], b: list[Tensor]) -> bool:
    return len(a) == len(b) and all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(a, b))


def _max_diff(a: list[Tensor], b: list[Tensor]) -> float:
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b)):
        return float("inf")
    return max(
        float((x.double() - y.double()).abs().max()) if x.numel() else 0.0 for x, y in zip(a, b)
    )


def _other_mask_scores(scores: Tensor, pa: float) -> Tensor:
    """Scores whose top-k mask differs from that of ``scores`` (the ranking reversed)."""
    flipped = 1.0 / (scores.detach().abs() + 1e-12)
    if torch.equal(topk_mask(flipped, pa), topk_mask(scores, pa)):  # all tied: shuffle
        flipped = flipped.flatten()[torch.randperm(flipped.numel(), device=flipped.device)]
        flipped = flipped.view_as(scores) + torch.rand_like(scores) * 1e-3
    return flipped


def check_ticket(
    model: nn.Module,
    example_inputs: Any,
    *,
    rtol: float = 1e-4,
    atol: float = 1e-5,
    densify_check: bool = True,
    batch_statistics: bool = True,
) -> TicketCheck:
    """Verify on a real input that every score-mask layer's mask shapes the output.

    Runs one forward and backward, two forwards per score-mask layer with its mask
    redrawn (gradients on and off), one with every layer's removed weights redrawn (and
    one per layer if that changed the output), and a comparison with the model's
    :func:`~spikelottery.densify` copy.
    The model is put in eval mode for the check (no dropout), its neuron states are reset
    and the random generators reseeded before each forward (so a stochastic encoder draws
    the same numbers every time), and everything is restored afterwards: every module's
    training flag, scores, BatchNorm statistics, ``requires_grad`` flags, ``.grad`` (the
    scores' gradients are taken with :func:`torch.autograd.grad`, not accumulated) and the
    random generators' states. Neuron states are left reset (a new sequence starts).
    The check runs in eval mode: a bypass that exists only in training mode is not seen.

    Args:
        model: A model after :func:`~spikelottery.sparsify`.
        example_inputs: One input, or a tuple of forward arguments. A small batch (2-8
            samples) is enough; the cost is about ``3 + 2 * layers`` forwards.
        rtol: Relative tolerance of the ``densify()`` comparison (a finite number >= 0).
        atol: Absolute tolerance of the ``densify()`` comparison (a finite number >= 0).
        densify_check: Also compare with the ``densify()`` copy (needs a deep copy of
            the model).
        batch_statistics: BatchNorm layers normalise with the example batch's own
            statistics (give at least 2 samples). At initialisation the running statistics
            are those of no data, and a spiking network normalised by them is often
            silent, which would leave every layer unverified. The running statistics
            are restored afterwards.

    Returns:
        A :class:`TicketCheck`; call :meth:`~TicketCheck.raise_if_failed` to turn a
        bypass into an error.

    Raises:
        TypeError: ``model`` is not a module, or ``example_inputs`` holds no tensor.
        ValueError: ``example_inputs`` holds NaN or infinity, or ``rtol``/``atol`` is
            negative or not finite.
        SpikeLotteryError: ``model`` has no score-mask layer, or its output has no tensor
            or holds NaN or infinity (nothing could be compared).

    >>> from spikelottery import sparsify
    >>> net = sparsify(nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)), pa=0.5)
    >>> check_ticket(net, torch.randn(4, 8)).ok
    True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    # One entry per masked weight tensor and set of scores (tied layers: one).
    layers: dict[int, tuple[str, SubnetLayer]] = {}
    params: dict[int, str] = {}
    for name, module in model.named_modules():
        if isinstance(module, SubnetLayer):
            for param in module.masked_names:
                label = name or "(model)"
                label = label if param == "weight" else f"{label}.{param}"
                key = id(module.scores_of(param))
                if key not in layers:
                    layers[key] = (label, module)
                    params[key] = param
    if not layers:
        raise SpikeLotteryError(
            "check_ticket(model): the model has no score-mask layer; call sparsify(model, pa) first"
        )
    for tol_name, tol in (("rtol", rtol), ("atol", atol)):
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 <= tol < math.inf:
            raise ValueError(f"check_ticket: {tol_name} must be a finite number >= 0, got {tol!r}")
    args = _args(example_inputs)
    if not _tensors(list(args)):
        raise TypeError(
            "check_ticket: example_inputs must hold a tensor (an input batch, or a tuple of "
            f"forward arguments with one), got {type(example_inputs).__name__}"
        )
    _check_finite_inputs(args)
    result = TicketCheck(layers=[name for name, _ in layers.values()])
    modes = [(m, m.training) for m in model.modules()]  # per module: frozen BN, MC dropout
    flags = [
        (layer.scores_of(params[key]), layer.scores_of(params[key]).requires_grad)
        for key, (_, layer) in layers.items()
    ]
    ran: set[int] = set()  # the layers whose forward ran (keys of `layers`)
    hooks = [
        layer.register_forward_pre_hook(lambda m, a, key=key: ran.add(key))
        for key, (_, layer) in layers.items()
    ]
    model.eval()
    restore = contextlib.ExitStack()
    devices = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    restore.enter_context(torch.random.fork_rng(devices=devices))  # the caller's RNG untouched
    restore.enter_context(_batch_statistics(model, batch_statistics))
    try:
        for scores, _ in flags:
            scores.requires_grad_(True)
        with torch.enable_grad(), record_weight_reads() as reads:
            out = _run(model, args)
            loss = sum(t.float().pow(2).sum() for t in out if t.is_floating_point())
            if not isinstance(loss, Tensor) or not loss.requires_grad:
                grads: list[Tensor | None] = [None] * len(flags)
            else:
                grads = list(torch.autograd.grad(loss, [s for s, _ in flags], allow_unused=True))
            base_grad = [t.detach() for t in out]
        with torch.no_grad():
            base = _run(model, args)
        _check_finite_outputs(base)
        for (key, (name, layer)), grad in zip(layers.items(), grads):
            if grad is None:
                used = key in ran or id(layer) in reads
                (result.no_gradient if used else result.unused).append(name)
                continue
            scores = layer.scores_of(params[key])
            if layer.kept_of(params[key]) == scores.numel():
                result.fixed.append(name)
                continue
            saved = scores.detach().clone()
            try:
                with torch.no_grad():
                    scores.copy_(_other_mask_scores(saved, layer.pa))
                    changed_off = not _same(_run(model, args), base)
                with torch.enable_grad():
                    changed_on = not _same([t.detach() for t in _run(model, args)], base_grad)
            finally:
                with torch.no_grad():
                    scores.copy_(saved)
            if changed_on != changed_off:
                result.ignored_mask.append(name)
            elif not changed_on:
                result.inactive.append(name)
        with torch.no_grad():
            movable = [(n, layer) for n, layer in layers.values() if n not in result.fixed]
            result.reads_removed = _layers_reading_removed_weights(model, args, base, movable)
            result.reads_removed += _weight_copies_read(model, args, base)
            watched = {name: layer for name, layer in layers.values() if name not in result.fixed}
            result.dense_operands = layers_computing_dense_weights(
                model, lambda: _run(model, args), watched
            )
        if densify_check:
            with torch.no_grad():
                _compare_with_densified(model, args, base, result, rtol, atol, batch_statistics)
    finally:
        restore.close()
        for handle in hooks:
            handle.remove()
        for scores, flag in flags:
            scores.requires_grad_(flag)
        for module, training in modes:
            module.training = training
        reset_states(model)
    return result


def _check_finite_inputs(args: tuple[Any, ...]) -> None:
    for k, t in enumerate(_tensors(list(args))):
        if t.is_floating_point() or t.is_complex():
            bad = int((~torch.isfinite(t)).sum())
            if bad:
                raise ValueError(
                    f"check_ticket: example_inputs tensor {k} holds {bad} NaN or infinite "
                    f"value(s) of {t.numel()}; outputs computed from them cannot be compared "
                    "(NaN never equals itself), so nothing would be verified: give a real "
                    "input batch"
                )


def _check_finite_outputs(out: list[Tensor]) -> None:
    bad = sum(int((~torch.isfinite(t)).sum()) for t in out if t.is_floating_point())
    if bad:
        raise SpikeLotteryError(
            f"check_ticket: the model's output on example_inputs holds {bad} NaN or infinite "
            "value(s), so redrawn masks cannot be compared and nothing would be verified; "
            "check the input's scale and the model on it (e.g. model(x).isfinite().all())"
        )


def _redraw_removed(layer: SubnetLayer, removed: Tensor, generator: torch.Generator) -> Tensor:
    """Give the ``removed`` entries of ``layer``'s frozen weight new values; return the old."""
    weight = layer.frozen_weight
    saved = weight.detach().clone()
    noise = torch.randn(weight.shape, generator=generator, dtype=torch.float32)
    scale = float(saved.float().abs().max()) + 1.0
    new = -3.0 * saved.float() + scale * noise.to(weight.device)
    weight.copy_(torch.where(removed, new.to(weight.dtype), saved))
    return saved


def _removed_entries(model: nn.Module) -> dict[int, Tensor]:
    """Per frozen weight (by ``id``): the entries that every layer using it removes."""
    removed: dict[int, Tensor] = {}
    for module in model.modules():
        if isinstance(module, SubnetLayer):
            w = module.frozen_weight
            out = ~module.mask().to(device=w.device, dtype=torch.bool)
            key = id(w)
            removed[key] = removed[key] & out if key in removed else out
    return removed


def _layers_reading_removed_weights(
    model: nn.Module,
    args: tuple[Any, ...],
    base: list[Tensor],
    layers: list[tuple[str, SubnetLayer]],
) -> list[str]:
    """The layers whose removed weights, redrawn, change the output (all at once, then each).

    A weight shared by several layers (tied) is redrawn only where all of them remove it.
    """
    removed = _removed_entries(model)

    def changes(chosen: list[tuple[str, SubnetLayer]]) -> bool:
        generator = torch.Generator().manual_seed(_SEED)
        saved: dict[int, tuple[SubnetLayer, Tensor]] = {}
        try:
            for _, layer in chosen:
                key = id(layer.frozen_weight)
                if key not in saved and bool(removed[key].any()):
                    saved[key] = (layer, _redraw_removed(layer, removed[key], generator))
            return bool(saved) and not _same(_run(model, args), base)
        finally:
            for layer, weight in saved.values():
                layer.frozen_weight.copy_(weight)

    if not layers or not changes(layers):
        return []
    named = [name for name, layer in layers if changes([(name, layer)])]
    return named or [name for name, _ in layers]  # only together: name them all


def _weight_copies_read(model: nn.Module, args: tuple[Any, ...], base: list[Tensor]) -> list[str]:
    """Plain tensors (not parameters nor buffers) of a swapped layer's weight shape that the
    output depends on: each is replaced by a redrawn copy for one forward, then put back."""
    shapes: dict[torch.Size, list[str]] = {}
    for name, module in model.named_modules():
        if isinstance(module, SubnetLayer):
            shapes.setdefault(module.frozen_weight.shape, []).append(name or "(model)")
    found = []
    generator = torch.Generator().manual_seed(_SEED)
    for prefix, module in model.named_modules():
        if isinstance(module, SubnetLayer):  # its own caches (and a replica's weight)
            continue
        for attr, value in list(vars(module).items()):
            if not isinstance(value, Tensor) or isinstance(value, nn.Parameter):
                continue
            if value.shape not in shapes or not value.is_floating_point():
                continue
            noise = torch.randn(value.shape, generator=generator, dtype=torch.float32)
            scale = float(value.detach().float().abs().max()) + 1.0
            redrawn = (-3.0 * value.detach().float() + scale * noise.to(value.device)).to(
                value.dtype
            )
            vars(module)[attr] = redrawn
            try:
                changed = not _same(_run(model, args), base)
            finally:
                vars(module)[attr] = value
            if changed:
                where = f"{prefix}.{attr}" if prefix else attr
                found.append(
                    f"{where} (a tensor the shape of {', '.join(shapes[value.shape])}'s weight)"
                )
    return found


def _compare_with_densified(
    model: nn.Module,
    args: tuple[Any, ...],
    base: list[Tensor],
    result: TicketCheck,
    rtol: float,
    atol: float,
    batch_statistics: bool,
) -> None:
    """Swap the dense layers in, run, and swap the score-mask layers back, in place.

    No deep copy: models that hold non-leaf tensors (neuron states, attention-bias caches)
    cannot be deep-copied, and the comparison must not be skipped for them.
    """
    from .sparsify import densify  # sparsify.py imports this module

    refs = [r for r in walk(model) if isinstance(r.module, SubnetLayer)]
    reset_states(model)
    try:
        densify(model)
        with _batch_statistics(model, batch_statistics):
            other = _run(model, args)
    except Exception as exc:  # say so: the comparison is then not verified
        result.notes.append(f"densify() copy not compared: {type(exc).__name__}: {exc}")
        return
    finally:
        for ref in refs:
            setattr(ref.parent, ref.attr, ref.module)
        invalidate_spikingjelly_cache(model)
    result.densify_error = _max_diff(base, other)
    scale = max((float(t.double().abs().max()) for t in base if t.numel()), default=0.0)
    result.densify_tolerance = atol + rtol * scale
