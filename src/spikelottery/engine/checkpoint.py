"""Checkpoints and random-generator state: what makes a resumed run end where an uninterrupted one does.

``checkpoint.pt`` (format 1) is a dict of tensors and plain values, so it loads with
``torch.load(path, weights_only=True)``: ``format``, ``epoch`` (epochs done), ``stage``,
``model``, ``optimizer`` and ``scheduler`` (state dicts), ``rng`` (:func:`rng_state`),
``config`` and ``history`` (JSON text), ``elapsed`` (seconds).
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._io import atomic_open
from ..errors import SpikeLotteryError
from .config import TrainConfig, field_defaults, runtime_fields

__all__ = [
    "CHECKPOINT_FILE",
    "CHECKPOINT_FORMAT",
    "Checkpoint",
    "checkpoint_path",
    "load_checkpoint",
    "load_for_resume",
    "rng_state",
    "save_checkpoint",
    "seed_everything",
    "seed_worker",
    "set_rng_state",
]

logger = logging.getLogger("spikelottery.engine")

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_FORMAT = 1


# --------------------------------------------------------------------------- random generators


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's global generator and torch (CPU and CUDA).

    >>> seed_everything(0)
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def seed_worker(worker_id: int) -> None:
    """``DataLoader(worker_init_fn=...)``: a distinct, reproducible seed per worker."""
    seed = torch.initial_seed() % 2**32  # derived from the loader's generator
    np.random.seed(seed)
    random.seed(seed)


def rng_state() -> dict[str, Any]:
    """Every random generator's state, as tensors and plain values (``weights_only``-safe)."""
    np_key, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "key": str(np_key),
            "state": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "python": {
            "version": int(py_version),
            "state": torch.tensor(py_state, dtype=torch.int64),
            "gauss": py_gauss,
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the generators from :func:`rng_state`'s output."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        (n["key"], n["state"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- checkpoints


@dataclass(frozen=True)
class Checkpoint:
    """The state after ``epoch`` epochs (of all stages), in stage ``stage``.

    ``config`` and ``history`` are plain dicts here; the file stores them as JSON text.
    """

    epoch: int
    stage: str
    model: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]
    config: dict[str, Any]
    history: list[dict[str, Any]]
    elapsed: float

    def to_state(self) -> dict[str, Any]:
        """The dict written to ``checkpoint.pt`` (the format above)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "epoch": self.epoch,
            "stage": self.stage,
            "model": self.model,
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "rng": self.rng,
            "config": json.dumps(dict(self.config)),
            "history": json.dumps(self.history),
            "elapsed": self.elapsed,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Checkpoint:
        """Read the dict of ``checkpoint.pt``."""
        return cls(
            epoch=int(state["epoch"]),
            stage=str(state["stage"]),
            model=state["model"],
            optimizer=state["optimizer"],
            scheduler=state["scheduler"],
            rng=state["rng"],
            config=json.loads(state["config"]),
            history=json.loads(state["history"]),
            elapsed=float(state["elapsed"]),
        )


def checkpoint_path(config: TrainConfig) -> Path | None:
    """``out/checkpoint.pt``, or ``None`` when the run writes nothing."""
    return Path(config.out) / CHECKPOINT_FILE if config.out is not None else None


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    """Write ``checkpoint`` atomically (a crash never leaves half a file), creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as fh:
        torch.save(checkpoint.to_state(), fh)


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint (``weights_only``).

    Raises:
        SpikeLotteryError: The file is unreadable or not a spikelottery checkpoint.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise SpikeLotteryError(f"cannot read checkpoint {str(path)!r}: {exc}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise SpikeLotteryError(
            f"{str(path)!r} is not a spikelottery checkpoint of format {CHECKPOINT_FORMAT}"
        )
    return Checkpoint.from_state(state)


def load_for_resume(config: TrainConfig) -> Checkpoint | None:
    """The checkpoint a run with ``resume=True`` continues from, or ``None`` to start afresh.

    Raises:
        SpikeLotteryError: The checkpoint was written by a different experiment: a field
            that is not a runtime field (see
            :func:`~spikelottery.engine.config.runtime_fields`) differs.
    """
    path = checkpoint_path(config)
    if path is None or not config.resume:
        return None
    if not path.is_file():
        logger.info("resume: no checkpoint at %s, starting from scratch", path)
        return None
    checkpoint = load_checkpoint(path)
    saved = checkpoint.config
    mine = json.loads(json.dumps(config.to_dict()))  # tuples compare as JSON lists
    # A field newer than the checkpoint had its default when the checkpoint was written.
    defaults = json.loads(json.dumps(field_defaults(type(config))))
    runtime = runtime_fields(type(config))
    diff = sorted(k for k in mine if k not in runtime and saved.get(k, defaults.get(k)) != mine[k])
    if diff:
        changes = ", ".join(f"{k}: {saved.get(k)!r} -> {mine[k]!r}" for k in diff)
        raise SpikeLotteryError(
            f"checkpoint {str(path)!r} was written by a different experiment ({changes}); "
            "resume with the same settings, or use another out folder"
        )
    return checkpoint
