"""What a run found (:class:`Results`) and how it is written (``results.json``)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn

from .._io import atomic_write_bytes

__all__ = ["RESULTS_FILE", "TICKET_FILE", "Results", "json_default", "write_json"]

RESULTS_FILE = "results.json"
TICKET_FILE = "ticket.safetensors"


@dataclass
class Results:
    """What :func:`~spikelottery.engine.run` found; :meth:`to_dict` is ``results.json``.

    Attributes:
        accuracy: Test accuracy of the final model, in ``[0, 1]``.
        kept_fraction: Fraction of the masked weights kept (1.0 for ``"dense"``).
        energy_mj: Energy per sample in mJ (paper Eq. 3-4: ``E_SNN`` for a spiking
            model, ``E_ANN`` for the ReLU twin, charged for every time step it ran: ``T``
            on event frames, one on a static image); ``None`` if it could not be measured.
        energy_sparse_mj: The same with every layer's FLOPs scaled by its weight density
            (pruned weights do no work).
        ann_reference_mj: ``E_ANN`` of the same network as a dense ANN, one pass per
            distinct input frame (once on a static image, as in the paper; ``T`` passes on
            event frames): the reference of the "% of ANN" ratios, the same convention
            for a spiking run and for the ReLU twin (where it equals ``energy_mj``). A
            ``results.json`` written before this name held ``ann_energy_mj`` instead (an
            SNN's reference counted once even on event frames); the report reads it under
            that name.
        firing_rate: Mean input firing rate of the binary-input layers (``None`` for an ANN).
        seconds: Wall time of the whole run (all sessions of a resumed run).
        config: The :class:`~spikelottery.engine.TrainConfig` as a dict.
        history: One dict per epoch: ``epoch``, ``stage``, ``stage_epoch``,
            ``train_loss``, ``train_accuracy``, ``test_loss``, ``test_accuracy``, ``lr``,
            ``seconds``.
        energy: The energy report. A spiking run:
            :meth:`~spikelottery.energy.EnergyReport.to_dict` (the per-layer ``rows``
            with the paper formula, exact synaptic operations and memory-aware columns,
            ``totals``, the three ``views`` against a dense fp32 and an int8 ANN,
            ``memory`` parts and assumptions, ``neurons``, ``per_step_synops``,
            ``options`` and the disclosure line ``conventions``); a run that does not
            spike: :meth:`~spikelottery.energy.EnergyReport.ann_dict` (its ANN figures
            only).
        loss: Mean test cross-entropy of the final model (``None`` if not finite).
        early_time: For an Early-Time ticket (``search_timesteps``), the found ticket
            right after the search: ``search_accuracy`` / ``search_loss`` at
            ``search_timesteps``, ``accuracy`` / ``loss`` at ``timesteps``, the
            ``search_epochs`` and their ``search_seconds``, the measured ``time_ratio``
            of one evaluation at ``timesteps`` to one at ``search_timesteps``, the
            estimate ``search_seconds_at_timesteps`` (``search_seconds * time_ratio``)
            and ``seconds_saved``; ``None`` otherwise.
        threads: The intra-op CPU threads of the run and how they were chosen
            (:meth:`~spikelottery.threads.ThreadChoice.to_dict`: ``count``, ``source``,
            ``reason``, ``timings``); of the last session of a resumed run.
        environment: What decides the numbers besides the settings
            (:func:`~spikelottery.engine.environment.describe_environment`: library, torch,
            numpy and Python versions, platform, CPU, device, threads, deterministic flags).
        model: The trained model (not serialised).
    """

    accuracy: float
    kept_fraction: float
    energy_mj: float | None
    energy_sparse_mj: float | None
    ann_reference_mj: float | None
    firing_rate: float | None
    seconds: float
    config: dict[str, Any]
    history: list[dict[str, Any]]
    energy: dict[str, Any] | None = None
    loss: float | None = None
    early_time: dict[str, Any] | None = None
    threads: dict[str, Any] | None = None
    environment: dict[str, Any] | None = None
    model: nn.Module | None = field(default=None, repr=False, compare=False)

    @property
    def ann_energy_mj(self) -> float | None:
        """:attr:`ann_reference_mj` under the name it had before (read-only)."""
        return self.ann_reference_mj

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of everything but the model."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "model"}
        return json.loads(json.dumps(out, default=json_default))


def json_default(value: Any) -> Any:
    """``json.dumps(..., default=json_default)``: numpy and one-element torch scalars, paths.

    >>> json.dumps({"n": np.int64(3)}, default=json_default)
    '{"n": 3}'
    """
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically, creating the folder (no NaN allowed)."""
    text = json.dumps(data, indent=2, default=json_default, allow_nan=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, text.encode("utf-8"))
