"""Checkpoints and random-generator state: what makes a resumed run end where an uninterrupted one does.

``checkpoint.pt`` (format 1) is a dict of tensors and plain values, so it loads with
``torch.load(path, weights_only=True)``: ``format``, ``epoch`` (epochs done), ``stage``,
``model``, ``optimizer`` and ``scheduler`` (state dicts), ``rng`` (:func:`rng_state`),
``config`` and ``history`` (JSON text), ``elapsed`` (seconds).

Nothing in a checkpoint is trusted: :func:`load_checkpoint` checks every key and type,
and :func:`load_for_resume` that its epoch, stage and history fit the run's plan and
(given the model) that its weights fit the model, before anything is changed.
"""

from __future__ import annotations

import io
import json
import logging
import math
import pickle
import random
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._io import atomic_write_bytes, remove_stale_temps
from ..errors import SpikeLotteryError
from .config import TrainConfig, field_defaults, runtime_fields
from .stages import stage_plan

__all__ = [
    "CHECKPOINT_FILE",
    "CHECKPOINT_FORMAT",
    "Checkpoint",
    "checkpoint_path",
    "load_checkpoint",
    "load_for_resume",
    "restore_optimizer",
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
    # Serialise in memory first: torch's zip writer turns a failed write (a full disk)
    # into a RuntimeError without the path; the atomic write names it.
    buffer = io.BytesIO()
    torch.save(checkpoint.to_state(), buffer)
    atomic_write_bytes(path, buffer.getbuffer())


def _damaged(path: Path | None, what: str) -> SpikeLotteryError:
    return SpikeLotteryError(
        f"checkpoint {str(path)!r} is damaged: {what}. Delete it (or use another out folder) "
        "to train from scratch"
    )


def _read_error(exc: Exception) -> str:
    """Why torch could not read a file, without its advice to load with ``weights_only=False``."""
    if isinstance(exc, pickle.UnpicklingError):
        # torch's message suggests weights_only=False, which would run any code in the file.
        return (
            "it is not a file of tensors and plain values (damaged, or not written by "
            "spikelottery); spikelottery never unpickles other Python objects"
        )
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    if "weights_only" in first:
        return "it is not a torch checkpoint"
    return first


# (key, accepted types, what it is) of every entry of a format-1 checkpoint.
_SCHEMA: tuple[tuple[str, tuple[type, ...], str], ...] = (
    ("epoch", (int,), "an int"),
    ("stage", (str,), "a stage name"),
    ("model", (dict,), "a state_dict"),
    ("optimizer", (dict,), "an optimizer state_dict"),
    ("scheduler", (dict,), "a scheduler state_dict"),
    ("rng", (dict,), "the random generators' state"),
    ("config", (str,), "JSON text"),
    ("history", (str,), "JSON text"),
    ("elapsed", (int, float), "a number of seconds"),
)

# (path in the rng dict, accepted types) that set_rng_state reads.
_RNG_SCHEMA: tuple[tuple[tuple[str, ...], tuple[type, ...]], ...] = (
    (("torch",), (torch.Tensor,)),
    (("numpy", "key"), (str,)),
    (("numpy", "state"), (torch.Tensor,)),
    (("numpy", "pos"), (int,)),
    (("numpy", "has_gauss"), (int,)),
    (("numpy", "gauss"), (int, float)),
    (("python", "version"), (int,)),
    (("python", "state"), (torch.Tensor,)),
    (("python", "gauss"), (int, float, type(None))),
)


def _check_schema(path: Path, state: Mapping[str, Any]) -> None:
    """Every key of the format is there with the right type; names the first that is not."""
    for key, types, what in _SCHEMA:
        if key not in state:
            raise _damaged(path, f"the key {key!r} ({what}) is missing")
        value = state[key]
        if isinstance(value, bool) or not isinstance(value, types):
            raise _damaged(path, f"{key!r} is a {type(value).__name__}, not {what}")
    bad = [k for k, v in state["model"].items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise _damaged(path, f"'model' entry {bad[0]!r} is not a tensor")
    for key in ("state", "param_groups"):
        if key not in state["optimizer"]:
            raise _damaged(path, f"the key 'optimizer.{key}' is missing")
    _check_rng(path, state["rng"])
    if not math.isfinite(state["elapsed"]) or state["elapsed"] < 0:
        raise _damaged(path, f"'elapsed' is {state['elapsed']!r} seconds")
    for key, kind in (("config", dict), ("history", list)):
        try:
            parsed = json.loads(state[key])
        except (ValueError, RecursionError) as exc:  # ValueError: JSONDecodeError, huge ints
            raise _damaged(path, f"{key!r} is not valid JSON ({type(exc).__name__})") from None
        if not isinstance(parsed, kind):
            raise _damaged(path, f"{key!r} holds a {type(parsed).__name__}, not a {kind.__name__}")
        if kind is list and not all(isinstance(h, dict) for h in parsed):
            raise _damaged(path, f"{key!r} holds a record that is not an object")


def _check_rng(path: Path, rng: Mapping[str, Any]) -> None:
    """The generator states hold what :func:`set_rng_state` reads."""
    for keys, types in _RNG_SCHEMA:
        name = ".".join(("rng", *keys))
        node: Any = rng
        for k in keys:
            if not isinstance(node, Mapping) or k not in node:
                raise _damaged(path, f"the key {name!r} is missing")
            node = node[k]
        if isinstance(node, bool) or not isinstance(node, types):
            raise _damaged(path, f"{name!r} is a {type(node).__name__}")


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint (``weights_only``: nothing in it can run code) and check its schema.

    Raises:
        SpikeLotteryError: The file is unreadable, not a spikelottery checkpoint, or lacks
            a key or has one of the wrong type (the message names the key).
    """
    try:
        with warnings.catch_warnings():
            # A file pickled by hand gets torch's "please file an issue": not the user's task.
            warnings.filterwarnings("ignore", message=r".*pickle protocol", category=UserWarning)
            state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise  # cannot open or read it: the error names the file
    except Exception as exc:
        raise SpikeLotteryError(
            f"cannot read checkpoint {str(path)!r}: {_read_error(exc)}. Delete it (or use "
            "another out folder) to train from scratch"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise SpikeLotteryError(
            f"{str(path)!r} is not a spikelottery checkpoint of format {CHECKPOINT_FORMAT}"
        )
    _check_schema(path, state)
    return Checkpoint.from_state(state)


def _check_progress(path: Path, checkpoint: Checkpoint, config: TrainConfig) -> None:
    """The checkpoint's epoch, stage and history fit the run's stage plan."""
    plan = stage_plan(config)
    total = plan[-1].last_epoch
    epoch = checkpoint.epoch
    if not 1 <= epoch <= total:
        raise _damaged(
            path,
            f"it says {epoch} epochs were done, but this run plans 1 to {total} "
            f"({', '.join(f'{st.name}: {st.epochs}' for st in plan)})",
        )
    stage = next(st for st in plan if st.first_epoch < epoch <= st.last_epoch)
    if checkpoint.stage != stage.name:
        raise _damaged(
            path,
            f"epoch {epoch} belongs to stage {stage.name!r}, but it says stage "
            f"{checkpoint.stage!r}",
        )
    epochs = [h.get("epoch") for h in checkpoint.history]
    if epochs != list(range(1, epoch + 1)):
        shown = epochs if len(epochs) <= 8 else [*epochs[:8], "..."]
        raise _damaged(
            path, f"after {epoch} epochs its history should hold epochs 1..{epoch}, not {shown}"
        )


def _check_model(path: Path, checkpoint: Checkpoint, model: nn.Module) -> None:
    """The checkpoint's weights fit ``model``: the same keys, the same shapes."""
    want = model.state_dict()
    have = checkpoint.model
    missing = sorted(set(want) - set(have))
    unexpected = sorted(set(have) - set(want))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"it lacks the model's {', '.join(map(repr, missing[:5]))}")
        if unexpected:
            parts.append(f"it has {', '.join(map(repr, unexpected[:5]))} the model lacks")
        raise _damaged(path, "its model weights do not fit: " + "; ".join(parts))
    for key, tensor in want.items():
        if tuple(have[key].shape) != tuple(tensor.shape):
            raise _damaged(
                path,
                f"'model' entry {key!r} has shape {tuple(have[key].shape)}, the model's "
                f"{tuple(tensor.shape)}",
            )


def restore_optimizer(
    path: Path | None, checkpoint: Checkpoint, optimizer: torch.optim.Optimizer, scheduler: Any
) -> None:
    """Load the checkpoint's optimizer and scheduler state, naming them if they do not fit.

    Args:
        path: The checkpoint's file, for the message.
        checkpoint: What :func:`load_for_resume` returned.
        optimizer: The stage's optimizer.
        scheduler: Its learning-rate scheduler.

    Raises:
        SpikeLotteryError: The optimizer or scheduler state does not fit (edited file).
    """
    for what, target, state in (
        ("optimizer", optimizer, checkpoint.optimizer),
        ("scheduler", scheduler, checkpoint.scheduler),
    ):
        try:
            target.load_state_dict(state)
        except (KeyError, ValueError, TypeError, IndexError, RuntimeError) as exc:
            raise _damaged(
                path,
                f"its {what} state does not fit the run's {type(target).__name__} "
                f"({type(exc).__name__}: {exc})",
            ) from None


def load_for_resume(config: TrainConfig, *, model: nn.Module | None = None) -> Checkpoint | None:
    """The checkpoint a run with ``resume=True`` continues from, or ``None`` to start afresh.

    Called when a run starts, it also removes the temporary files that a killed run left
    in the out folder (``.checkpoint.pt.<hex>.tmp`` and the like: only names of
    spikelottery's own atomic writes).

    Args:
        config: The run's settings.
        model: The run's model; when given, the checkpoint's weights must fit it (the
            same keys and shapes), checked before anything is changed.

    Raises:
        SpikeLotteryError: The checkpoint is damaged (a key missing or of the wrong type,
            an epoch outside the run's plan, a history that does not match its epoch,
            weights that do not fit ``model``), or was written by a different experiment:
            a field that is not a runtime field (see
            :func:`~spikelottery.engine.config.runtime_fields`) differs.
    """
    path = checkpoint_path(config)
    if path is None:
        return None
    for stale in remove_stale_temps(path.parent):
        logger.info("removed %s, left by an interrupted write", stale)
    if not config.resume:
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
    _check_progress(path, checkpoint, config)
    if model is not None:
        _check_model(path, checkpoint, model)
    return checkpoint
