"""The training loop: :class:`Trainer` runs one :class:`~spikelottery.engine.TrainConfig`.

A run builds its state once (:class:`RunState`: device, processes, model, loaders) and
passes it on; each stage gets its own :class:`StageRun` (the wrapped model, optimizer and
schedule). Nothing about a run is stored on the trainer but that one state, which
:attr:`Trainer.model` and :attr:`Trainer.history` read.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from .._lif_kernels import lif_compilation
from .._state import finite_or_none, reset_states
from ..layers import SubnetLayer
from ..sparsify import kept_fraction
from ..threads import ThreadChoice, current_choice, thread_scope
from .build import Loaders, build_datasets, build_loaders, build_model, check_first_batch
from .checkpoint import (
    Checkpoint,
    checkpoint_path,
    load_for_resume,
    restore_optimizer,
    rng_state,
    save_checkpoint,
    seed_everything,
    set_rng_state,
)
from .config import COMPILE_MIN_STEPS, ConfigError, TrainConfig
from .convention import call_model, engine_view
from .distributed import (
    DistInfo,
    convert_sync_batchnorm,
    process_group,
    resolve_device,
    restore_batchnorm,
)
from .environment import describe_environment
from .evaluation import check_labels, evaluate, input_and_label, measure_energy
from .outputs import check_out
from .results import RESULTS_FILE, TICKET_FILE, Results, write_json
from .search import SearchSteps
from .stages import Stage, enter_stage, make_optimizer, stage_plan, train_mode
from .threads import settle_by_timing, timing_key

__all__ = ["RunState", "StageRun", "Trainer", "run"]

logger = logging.getLogger("spikelottery.engine")

EpochHook = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class RunState:
    """What one run works with, built once when it starts.

    Attributes:
        dist: This process's rank and the number of processes.
        device: Where the model and the batches live.
        model: The model being trained (never the ``DistributedDataParallel`` wrapper).
        net: What the engine calls: ``model``, or a
            :class:`~spikelottery.engine.convention.TimeFirst` view of it.
        loaders: The training and test data of this process.
        started: ``time.perf_counter()`` when this session started.
        elapsed_before: Seconds spent by the sessions before a resume.
        history: One record per epoch done; the run appends one after each epoch.
        threads: The intra-op CPU threads of this session and how they were chosen.
    """

    dist: DistInfo
    device: torch.device
    model: nn.Module
    net: nn.Module
    loaders: Loaders
    started: float
    elapsed_before: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    threads: ThreadChoice | None = None

    def elapsed(self) -> float:
        """Seconds of the whole run so far (all sessions)."""
        return self.elapsed_before + time.perf_counter() - self.started


@dataclass(frozen=True)
class StageRun:
    """One stage in progress: the model as it trains (wrapped for DDP), its optimizer."""

    stage: Stage
    net: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    frozen: str | None = None  # a module the stage keeps in eval mode


@contextlib.contextmanager
def _deterministic(enabled: bool) -> Iterator[None]:
    """``torch.use_deterministic_algorithms(True)`` if ``enabled``; always restored afterwards."""
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    cublas = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    try:
        if enabled:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        if cublas is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = cublas


class Trainer:
    """Runs one :class:`~spikelottery.engine.TrainConfig` (paper Algorithm 1).

    See :mod:`spikelottery.engine` for the stages, the outputs and distributed runs.

    Args:
        config: The experiment.
        model: Use this model instead of building ``config.model`` from the zoo (it is
            sparsified in place unless ``mode="dense"``).
        train_set: Use this training set instead of ``config.dataset``.
        test_set: Use this test set instead of ``config.dataset``.
        on_epoch_end: Called on every process after each epoch (and its checkpoint) with
            that epoch's history record.

    With your own data sets and no ``model``, the zoo model is still shaped for
    ``config.dataset`` (classes, channels, image size): pick a ``dataset`` of the same
    shape or pass your own model.

    >>> Trainer(TrainConfig(epochs=1, max_batches=1, out=None)).run()  # doctest: +SKIP
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        model: nn.Module | None = None,
        train_set: Dataset | None = None,
        test_set: Dataset | None = None,
        on_epoch_end: EpochHook | None = None,
    ) -> None:
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        self.config = config.replace()  # validated copy: later edits by the caller do not leak in
        self.on_epoch_end = on_epoch_end
        self._user_model = model
        self._train_set = train_set
        self._test_set = test_set
        self._state: RunState | None = None  # of the current (or last) run

    @property
    def model(self) -> nn.Module | None:
        """The model of the current (or last) run; ``None`` before :meth:`run`."""
        return self._state.model if self._state is not None else None

    @property
    def history(self) -> list[dict[str, Any]]:
        """The epoch records of the current (or last) run (see :class:`Results`)."""
        return self._state.history if self._state is not None else []

    # -- the run ---------------------------------------------------------------------
    def run(self) -> Results:
        """Train, evaluate, measure the energy, write the results; return them.

        For reproducibility the run seeds python's ``random``, numpy's global generator and
        torch's (CPU and CUDA) with ``config.seed`` (see
        :func:`~spikelottery.engine.seed_everything`); their states are not restored
        afterwards. ``torch.use_deterministic_algorithms`` and ``CUBLAS_WORKSPACE_CONFIG``,
        which ``deterministic=True`` sets, are restored, and so is torch's intra-op thread
        count, which the run sets from ``config.threads`` (:mod:`spikelottery.threads`).
        """
        cfg = self.config
        started = time.perf_counter()
        check_out(cfg)  # before any work: a bad out would fail only after the first epoch
        with process_group(cfg.device) as info, _deterministic(cfg.deterministic), thread_scope():
            threads = current_choice(cfg.threads)  # settled by timing once the model exists
            torch.set_num_threads(min(threads.candidates or (threads.count,)))
            device = resolve_device(cfg.device, info)
            sync_bn = cfg.sync_batchnorm and info.enabled
            if sync_bn and device.type != "cuda":
                raise ConfigError(
                    "sync_batchnorm",
                    f"sync_batchnorm=True needs CUDA (nn.SyncBatchNorm has no {device.type} "
                    "kernel); set sync_batchnorm=False for a distributed run on "
                    f"{device.type}",
                )
            seed_everything(cfg.seed)
            train_set, test_set, data_info = build_datasets(cfg, self._train_set, self._test_set)
            model = build_model(cfg, data_info, self._user_model).to(device)
            converted = convert_sync_batchnorm(model) if sync_bn else []
            try:
                loaders = build_loaders(cfg, train_set, test_set, dist=info, device=device)
                planned = sum(st.epochs for st in stage_plan(cfg)) * loaders.steps_per_epoch
                with lif_compilation(compile_decision(cfg.compile_lif, planned)):
                    net = engine_view(
                        model, cfg.model_input, timesteps=cfg.timesteps, event=data_info.is_event
                    )
                    if cfg.check_ticket and any(
                        isinstance(m, SubnetLayer) for m in model.modules()
                    ):
                        check_first_batch(net, loaders.test, device)
                    if not info.enabled:  # W processes would each time their own
                        key = timing_key(cfg.to_dict()) if self._user_model is None else None
                        # uncompiled LIF kernels: a compiled kernel would be compiled
                        # again at each count timed, and the compile timed with it
                        with lif_compilation(False):
                            threads = settle_by_timing(threads, net, loaders.test, device, key=key)
                    torch.set_num_threads(threads.count)
                    logger.info("threads: %d, %s", threads.count, threads.reason)
                    resume = load_for_resume(cfg, model=model)
                    self._state = RunState(
                        dist=info,
                        device=device,
                        model=model,
                        net=net,
                        loaders=loaders,
                        started=started,
                        elapsed_before=resume.elapsed if resume is not None else 0.0,
                        history=list(resume.history) if resume is not None else [],
                        threads=threads,
                    )
                    steps = SearchSteps(cfg, event=data_info.is_event, main=info.main)
                    return self._run_stages(self._state, resume, steps)
            finally:
                restore_batchnorm(converted)  # the caller gets the model's own classes back

    def _run_stages(
        self, state: RunState, resume: Checkpoint | None, steps: SearchSteps
    ) -> Results:
        cfg = self.config
        plan = stage_plan(cfg)
        done = resume.epoch if resume is not None else 0
        if resume is not None:
            logger.info("resuming %s after epoch %d of %d", cfg.out, done, plan[-1].last_epoch)
        for stage in plan:
            frozen = enter_stage(state.model, stage.name, pb=cfg.pb)
            # The search method's part (IMP rounds, random masks, T).
            loaded = steps.enter(
                state, stage, done=done, checkpoint_model=resume.model if resume else None
            )
            if done >= stage.last_epoch:  # finished before the restart: only replay its setup
                continue
            opt, sched = make_optimizer(
                state.model,
                cfg,
                stage=stage.name,
                steps=stage.epochs * state.loaders.steps_per_epoch,
            )
            if resume is not None and done > 0:
                # Weights and RNG carry over; a checkpoint inside this stage also holds its
                # optimizer (one that closed the previous stage does not).
                if not loaded:
                    state.model.load_state_dict(resume.model)
                    steps.after_load(state)
                if resume.stage == stage.name and done > stage.first_epoch:
                    restore_optimizer(checkpoint_path(cfg), resume, opt, sched)
                set_rng_state(resume.rng)
            resume = None
            current = StageRun(stage, self._wrap(state), opt, sched, frozen)
            for epoch in range(max(done, stage.first_epoch), stage.last_epoch):
                steps.before_epoch(state, stage, epoch)
                record = self._train_epoch(state, current, epoch)
                steps.after_epoch(state, stage, epoch, record)
                state.history.append(record)
                self._save_checkpoint(state, current, epochs_done=epoch + 1)
                if state.dist.enabled:
                    dist.barrier()
                if self.on_epoch_end is not None:
                    self.on_epoch_end(record)
            done = stage.last_epoch
        if resume is not None:  # every epoch was done before this session
            state.model.load_state_dict(resume.model)
            steps.after_load(state)
        return self._finish(state, plan, steps)

    def _finish(self, state: RunState, plan: list[Stage], steps: SearchSteps) -> Results:
        """Measure the final model, write the outputs, return the results."""
        cfg = self.config
        if plan[-1].last_epoch == 0:
            logger.info("epochs=0: evaluating the untrained network")
        early_time, ends_with_search = steps.finish(state)  # Early-Time: back at `timesteps`
        last = state.history[-1] if state.history else None
        if early_time is not None and ends_with_search:
            # The last epoch was evaluated at search_timesteps; its record holds T's figures.
            accuracy, loss = early_time["accuracy"], early_time["loss"]
        elif (
            last is not None
            and last["stage"] == plan[-1].name
            and last["test_accuracy"] is not None
        ):
            # The final model, already evaluated: no stage was entered after that epoch.
            accuracy, loss = last["test_accuracy"], last["test_loss"]
        else:
            # No epoch yet, or a stage without epochs (pb > 0 with patch_epochs = 0) changed
            # the model after the last evaluation.
            accuracy, loss = evaluate(
                state.net, state.loaders.test, device=state.device, max_batches=cfg.max_batches
            )
        energy = None
        if state.dist.main:
            energy = measure_energy(
                state.net,
                state.loaders.test,
                device=state.device,
                batches=cfg.energy_batches,
                spiking=cfg.spiking,
                preset=cfg.energy_preset,
            )
        results = Results(
            accuracy=accuracy,
            loss=finite_or_none(loss),
            kept_fraction=kept_fraction(state.model),
            energy_mj=energy["energy_mj"] if energy else None,
            energy_sparse_mj=energy["energy_sparse_mj"] if energy else None,
            ann_reference_mj=energy["ann_reference_mj"] if energy else None,
            firing_rate=energy["firing_rate"] if energy else None,
            seconds=state.elapsed(),
            config=cfg.to_dict(),
            history=list(state.history),
            energy=energy["report"] if energy else None,
            early_time=early_time,
            threads=state.threads.to_dict() if state.threads is not None else None,
            environment=describe_environment(state.device, threads=torch.get_num_threads()),
            model=state.model,
        )
        if state.dist.main:
            self._write_outputs(state.model, results)
        logger.info(
            "done: accuracy %.4f, kept %.4f, energy %s mJ, %.1f s",
            results.accuracy,
            results.kept_fraction,
            "n/a" if results.energy_mj is None else f"{results.energy_mj:.6f}",
            results.seconds,
        )
        return results

    def _wrap(self, state: RunState) -> nn.Module:
        if not state.dist.enabled:
            return state.net
        ids = [state.device.index] if state.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(state.net, device_ids=ids)

    def _train_epoch(self, state: RunState, current: StageRun, epoch: int) -> dict[str, Any]:
        cfg, device, stage = self.config, state.device, current.stage
        t0 = time.perf_counter()
        steps = state.loaders.steps_per_epoch
        state.loaders.sampler.set_epoch(epoch)
        state.loaders.generator.manual_seed(cfg.seed * 100_003 + epoch)
        train_mode(state.model, current.frozen)
        stage_epoch = epoch - stage.first_epoch + 1
        show = cfg.progress and state.dist.main and sys.stderr.isatty()
        bar = _progress(steps, f"{stage.name} {stage_epoch}/{stage.epochs}", show)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.float64, device=device)
        seen = torch.zeros((), dtype=torch.float64, device=device)
        opt = current.optimizer
        lr = opt.param_groups[0]["lr"]
        try:
            for i, batch in enumerate(state.loaders.train):
                if i >= steps:
                    break
                x, labels = input_and_label(batch)
                x, y = x.to(device, non_blocking=True), labels.to(device, non_blocking=True)
                reset_states(state.model)
                logits = call_model(current.net, x)
                check_labels(labels, logits.shape[-1])  # on the loader's copy: no device sync
                loss = F.cross_entropy(logits, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                current.scheduler.step()
                with torch.no_grad():
                    loss_sum += loss.detach().double() * y.numel()
                    correct += (logits.argmax(-1) == y).sum().double()
                    seen += y.numel()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss.item():.3f}")
        finally:
            if bar is not None:
                bar.close()
        if state.dist.enabled:
            stats = torch.stack([loss_sum, correct, seen])
            dist.all_reduce(stats)
            loss_sum, correct, seen = stats
            for buf in state.model.buffers():  # evaluate with rank 0's BatchNorm statistics
                dist.broadcast(buf, 0)
        test_acc, test_loss = evaluate(
            state.net, state.loaders.test, device=device, max_batches=cfg.max_batches
        )
        n = float(seen)
        record = {
            "epoch": epoch + 1,
            "stage": stage.name,
            "stage_epoch": stage_epoch,
            "train_loss": float(loss_sum) / n if n else None,
            "train_accuracy": float(correct) / n if n else None,
            "test_loss": finite_or_none(test_loss),
            "test_accuracy": finite_or_none(test_acc),
            "lr": lr,
            "seconds": time.perf_counter() - t0,
        }
        if state.dist.main:
            logger.info(
                "epoch %d (%s %d): train loss %.4f acc %.4f | test loss %.4f acc %.4f | %.1f s",
                record["epoch"],
                stage.name,
                stage_epoch,
                record["train_loss"] or float("nan"),
                record["train_accuracy"] or float("nan"),
                test_loss,
                test_acc,
                record["seconds"],
            )
        return record

    def _save_checkpoint(self, state: RunState, current: StageRun, *, epochs_done: int) -> None:
        cfg = self.config
        path = checkpoint_path(cfg)
        if path is None or not cfg.checkpoint or not state.dist.main:
            return
        checkpoint = Checkpoint(
            epoch=epochs_done,
            stage=current.stage.name,
            model=state.model.state_dict(),
            optimizer=current.optimizer.state_dict(),
            scheduler=current.scheduler.state_dict(),
            rng=rng_state(),
            config=cfg.to_dict(),
            history=list(state.history),
            elapsed=state.elapsed(),
        )
        save_checkpoint(path, checkpoint)

    def _write_outputs(self, model: nn.Module, results: Results) -> None:
        cfg = self.config
        if cfg.out is None:
            return
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)  # no checkpoint made it yet when epochs = 0
        if cfg.mode != "dense":
            from ..tickets import save_ticket

            save_ticket(
                model,
                out / TICKET_FILE,
                metadata={
                    # A user's own model cannot be rebuilt from the config: say whose it is.
                    "model": cfg.model if self._user_model is None else type(model).__qualname__,
                    "model_source": "zoo" if self._user_model is None else "user",
                    "dataset": cfg.dataset,
                    "seed": str(cfg.seed),
                    "accuracy": f"{results.accuracy:.6f}",
                    "config": json.dumps(cfg.to_dict()),
                },
            )
        write_json(out / RESULTS_FILE, results.to_dict())


def compile_decision(setting: str, planned_steps: int) -> bool:
    """Whether to compile the LIF kernels for a run of ``planned_steps`` training steps.

    ``"auto"`` compiles from :data:`~spikelottery.engine.config.COMPILE_MIN_STEPS` steps on,
    unless the environment switches compiling off (``SPIKELOTTERY_COMPILE=0``).

    >>> compile_decision("auto", 100), compile_decision("on", 1), compile_decision("off", 10**6)
    (False, True, False)
    """
    if setting == "auto":
        enabled = os.environ.get("SPIKELOTTERY_COMPILE", "1") != "0"
        return enabled and planned_steps >= COMPILE_MIN_STEPS
    return setting == "on"


def _progress(total: int, desc: str, show: bool) -> Any:
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)


def run(
    config: TrainConfig | None = None,
    *,
    train_set: Dataset | None = None,
    test_set: Dataset | None = None,
    on_epoch_end: EpochHook | None = None,
    **fields: Any,
) -> Results:
    """Run one experiment and return its :class:`~spikelottery.engine.Results` (see :class:`Trainer`).

    Like :meth:`Trainer.run`, it seeds python's, numpy's and torch's global generators
    with ``seed`` (for reproducibility) and leaves them so.

    Args:
        config: The experiment; ``None`` builds a :class:`~spikelottery.engine.TrainConfig`
            from ``fields``.
        train_set: Use this training set instead of ``config.dataset``.
        test_set: Use this test set instead of ``config.dataset``.
        on_epoch_end: Called after each epoch with its history record.
        **fields: :class:`~spikelottery.engine.TrainConfig` fields (they override
            ``config``'s). ``model`` may also be an ``nn.Module`` to train instead of a
            zoo model.

    >>> res = run(model="vgg_tiny", epochs=1, max_batches=1, out=None, progress=False)  # doctest: +SKIP
    """
    instance = fields.pop("model") if isinstance(fields.get("model"), nn.Module) else None
    if config is None:
        config = TrainConfig(**fields)
    elif fields:
        config = config.replace(**fields)
    trainer = Trainer(
        config, model=instance, train_set=train_set, test_set=test_set, on_epoch_end=on_epoch_end
    )
    return trainer.run()
