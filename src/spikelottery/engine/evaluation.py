"""Measuring a model: test accuracy and loss (:func:`evaluate`), energy per sample."""

from __future__ import annotations

import itertools
import logging
import warnings
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from .._state import finite_or_none, reset_states, split_batch, unwrap
from ..errors import NoSpikingLayerWarning, SpikeLotteryError
from .convention import call_model

__all__ = ["check_labels", "evaluate", "input_and_label", "measure_energy", "model_device"]

logger = logging.getLogger("spikelottery.engine")


def input_and_label(batch: Any) -> tuple[Tensor, Tensor]:
    """``(input, label)`` of a training or test batch; anything else is a data-set problem.

    >>> x, y = input_and_label((torch.zeros(2, 3), torch.tensor([0, 1])))
    >>> y.tolist()
    [0, 1]
    """
    try:
        x, y = split_batch(batch)
    except TypeError:
        y = None
    if not isinstance(y, Tensor):
        raise SpikeLotteryError(
            "a data set must yield (input, label) pairs of tensors; got a batch of type "
            f"{type(batch).__name__}"
        )
    return x, y


def check_labels(y: Tensor, classes: int) -> None:
    """Refuse class labels outside ``0 .. classes - 1``, naming the label (not torch's error).

    Float targets (class probabilities) are left to :func:`torch.nn.functional.cross_entropy`.

    >>> check_labels(torch.tensor([0, 10]), 10)
    Traceback (most recent call last):
    ...
    spikelottery.errors.SpikeLotteryError: a batch holds the label 10, but the model has 10 outputs (labels 0 to 9): ...
    """
    if y.is_floating_point() or y.is_complex() or y.numel() == 0:
        return
    low, high = int(y.min()), int(y.max())
    if low >= 0 and high < classes:
        return
    bad = high if high >= classes else low
    raise SpikeLotteryError(
        f"a batch holds the label {bad}, but the model has {classes} outputs (labels 0 to "
        f"{classes - 1}): check the data set's labels (1-based labels need y - 1) or the "
        "model's number of classes"
    )


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); the CPU for a model without.

    >>> model_device(nn.ReLU())
    device(type='cpu')
    """
    net = unwrap(model)
    first = next(itertools.chain(net.parameters(), net.buffers()), None)
    return first.device if first is not None else torch.device("cpu")


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Any,
    *,
    device: torch.device | str | None = None,
    max_batches: int | None = None,
) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of ``model`` on ``loader``'s ``(x, y)`` batches.

    Neuron states are reset before every batch; under ``torch.distributed`` the counts
    of all processes are summed.

    Args:
        model: The model (a ``DistributedDataParallel`` wrapper is looked through).
        loader: Any iterable of ``(x, y)`` batches, e.g. a ``DataLoader``.
        device: Where the batches go; ``None``: the device of the model's first
            parameter (the CPU for a model without parameters).
        max_batches: Stop after this many batches.

    Returns:
        ``(accuracy, loss)``; accuracy in ``[0, 1]``.

    >>> net = nn.Linear(4, 2)
    >>> with torch.no_grad():
    ...     _ = net.bias.copy_(torch.tensor([1.0, 0.0]))  # class 0 wins on zero input
    >>> evaluate(net, [(torch.zeros(3, 4), torch.zeros(3, dtype=torch.long))])[0]
    1.0
    """
    net = unwrap(model)
    if device is None:
        device = model_device(net)
    was_training = net.training
    net.eval()
    correct = torch.zeros((), dtype=torch.float64, device=device)
    total = torch.zeros((), dtype=torch.float64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    try:
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            x, labels = input_and_label(batch)
            x, y = x.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            reset_states(net)
            logits = call_model(net, x)
            check_labels(labels, logits.shape[-1])
            loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
            correct += (logits.argmax(-1) == y).sum().double()
            total += y.numel()
    finally:
        net.train(was_training)
    if dist.is_available() and dist.is_initialized():
        stats = torch.stack([correct, total, loss_sum])
        dist.all_reduce(stats)
        correct, total, loss_sum = stats
    n = float(total)
    if n == 0:
        return float("nan"), float("nan")
    return float(correct) / n, float(loss_sum) / n


def measure_energy(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    device: torch.device,
    batches: int,
    spiking: bool,
    preset: str = "fp32-45nm",
) -> dict[str, Any] | None:
    """The energy figures of :class:`~spikelottery.engine.Results`, on ``batches`` test batches.

    One convention for every run: the ANN reference is the dense network run once per
    distinct input frame (once on a static image, ``T`` times on event frames), as in
    :func:`~spikelottery.energy.estimate_energy`. A spiking run reports its SNN energy
    and the full report; a run that does not spike reports its own ANN energy and the ANN
    figures only (no SNN view of itself). ``preset`` names the hardware preset that
    prices it.

    Returns ``None`` when there is no batch or the estimate fails (a user model the
    counter cannot follow must not lose the run: the failure is logged).
    """
    from ..energy import estimate_energy

    spiking = getattr(model, "spiking", spiking)
    measured = []
    for i, batch in enumerate(loader):
        if i >= batches:
            break
        x, y = input_and_label(batch)
        measured.append((x.to(device), y.to(device)))
    if not measured:
        return None
    was_training = model.training
    model.eval()
    try:
        reset_states(model)
        with torch.no_grad(), warnings.catch_warnings():
            if not spiking:  # an ANN has no spiking layer, by design
                warnings.simplefilter("ignore", NoSpikingLayerWarning)
            report = estimate_energy(model, measured, preset=preset)
        sparse = report.reprice(density_scaling=True)
    except Exception as exc:
        logger.warning(
            "energy estimate failed (%s: %s); energy_mj is None", type(exc).__name__, exc
        )
        return None
    finally:
        model.train(was_training)
    rate = finite_or_none(report.mean_rate) if spiking else None
    # A spiking run: the whole report (per-layer rows with the formula, exact and
    # memory-aware columns, totals, the three views, the memory parts and assumptions,
    # options and the disclosure line). An ANN run: its ANN figures only.
    summary = report.to_dict() if spiking else report.ann_dict()
    return {
        "energy_mj": report.snn_mj if spiking else report.ann_mj,
        "energy_sparse_mj": sparse.snn_mj if spiking else sparse.ann_mj,
        "ann_reference_mj": report.ann_mj,
        "firing_rate": rate,
        "report": summary,
    }
