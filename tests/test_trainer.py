"""Tests of the training loop: determinism, results, stages, user models, global settings."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from _engine_testing import EAGER, strip_seconds, subnet_state, tiny
from _model_state import assert_unchanged, snapshot
from spikelottery import SpikeLotteryError
from spikelottery.engine import (
    CHECKPOINT_FILE,
    RESULTS_FILE,
    TICKET_FILE,
    ConfigError,
    Results,
    TrainConfig,
    Trainer,
    evaluate,
    run,
)
from spikelottery.engine.outputs import check_out
from spikelottery.engine.stages import stage_plan
from spikelottery.layers import SubnetLayer
from spikelottery.models import create_model
from spikelottery.neuron import LIFNeuron

# --------------------------------------------------------------------------- determinism


def test_same_seed_same_result_and_other_seed_differs() -> None:
    a = run(tiny(seed=3))
    b = run(tiny(seed=3))
    c = run(tiny(seed=4))
    sa, sb, sc = (subnet_state(r.model) for r in (a, b, c))
    for name in sa:
        assert torch.equal(sa[name]["scores"], sb[name]["scores"]), name
        assert torch.equal(sa[name]["mask"], sb[name]["mask"]), name
    assert a.accuracy == b.accuracy
    assert strip_seconds(a.history) == strip_seconds(b.history)
    assert any(not torch.equal(sa[n]["mask"], sc[n]["mask"]) for n in sa)


def test_search_learns_above_chance() -> None:
    # A search that followed the wrong score gradient would end below chance (10%).
    res = run(tiny(mode="mp", timesteps=4, epochs=2, max_batches=None, batch_size=64, lr=0.1))
    assert res.accuracy > 0.5
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]


# --------------------------------------------------------------------------- results


def test_results_json_schema_and_files(tmp_path: Path) -> None:
    out = tmp_path / "mp"
    res = run(tiny(out=str(out), mode="mp", epochs=2))
    assert isinstance(res, Results)
    data = json.loads((out / RESULTS_FILE).read_text())
    assert data == res.to_dict()
    expected = {
        "accuracy",
        "kept_fraction",
        "energy_mj",
        "energy_sparse_mj",
        "ann_reference_mj",
        "firing_rate",
        "seconds",
        "config",
        "history",
        "energy",
        "loss",
        "early_time",
        "threads",
        "environment",
    }
    assert set(data) == expected
    assert 0.0 <= data["accuracy"] <= 1.0
    # vgg_tiny: conv 1->16 (144), conv 16->32 (4608), head 32*2*2->10 (1280): kept per layer
    assert data["kept_fraction"] == pytest.approx((87 + 2765 + 768) / (144 + 4608 + 1280))
    assert data["energy_mj"] > 0 and data["energy_sparse_mj"] < data["energy_mj"]
    assert data["ann_reference_mj"] > data["energy_mj"]  # spikes are cheap
    # vgg_tiny's later layers read average-pooled spikes, which are not binary: no rate
    assert data["firing_rate"] is None or 0.0 < data["firing_rate"] < 1.0
    assert data["config"] == res.config and data["config"]["mode"] == "mp"
    assert [h["epoch"] for h in data["history"]] == [1, 2]
    for h in data["history"]:
        assert set(h) == {
            "epoch",
            "stage",
            "stage_epoch",
            "train_loss",
            "train_accuracy",
            "test_loss",
            "test_accuracy",
            "lr",
            "seconds",
        }
        assert h["stage"] == "search" and math.isfinite(h["train_loss"])
    assert data["history"][-1]["test_accuracy"] == data["accuracy"]
    assert data["history"][-1]["test_loss"] == data["loss"]
    assert data["history"][1]["lr"] < data["history"][0]["lr"]  # cosine schedule
    assert (out / TICKET_FILE).is_file()
    ckpt = torch.load(out / CHECKPOINT_FILE, weights_only=True)
    assert set(ckpt) >= {"model", "optimizer", "scheduler", "epoch", "stage", "rng", "config"}
    assert json.loads(ckpt["config"]) == res.config


def test_dense_baseline_trains_weights(tmp_path: Path) -> None:
    res = run(tiny(mode="dense", out=str(tmp_path / "d")))
    assert res.kept_fraction == 1.0
    assert not any(isinstance(m, SubnetLayer) for m in res.model.modules())
    assert not (tmp_path / "d" / TICKET_FILE).exists()
    assert res.energy_mj is not None and res.energy_sparse_mj == pytest.approx(res.energy_mj)


def test_dense_nonaffine_freezes_batchnorm() -> None:
    res = run(tiny(mode="dense", batchnorm="nonaffine"))
    norms = [m for m in res.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms
    for m in norms:
        assert not m.weight.requires_grad and torch.all(m.weight == 1) and torch.all(m.bias == 0)


def test_ann_twin_reports_ann_energy() -> None:
    res = run(tiny(spiking=False, mode="lt"))
    assert res.firing_rate is None
    assert res.energy_mj == pytest.approx(res.ann_reference_mj)


def test_out_none_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    run(tiny(out=None))
    assert list(tmp_path.iterdir()) == []


def test_ann_twin_on_event_frames_pays_every_frame() -> None:
    from spikelottery.data import get_dataset
    from spikelottery.energy import estimate_energy

    cfg = tiny(dataset="digits_dvs", spiking=False, mode="dense", timesteps=3, max_batches=1)
    res = run(cfg)
    x, y = next(
        iter(
            torch.utils.data.DataLoader(
                get_dataset("digits_dvs", split="test", resolution=8, timesteps=3), batch_size=8
            )
        )
    )
    with pytest.warns(UserWarning, match="no spiking neuron ran"):
        reference = estimate_energy(res.model, (x, y))  # one ANN pass per input frame
    assert reference.timesteps == 3 and reference.frames == 3
    assert res.energy_mj == pytest.approx(reference.ann_mj)
    once = reference.reprice(ann_every_step=False)  # one static pass
    assert res.energy_mj == pytest.approx(3 * once.ann_mj)
    assert res.ann_reference_mj == pytest.approx(res.energy_mj)
    assert "one pass per distinct input frame" in res.energy["conventions"]
    # No SNN view of an ANN run in results.json.
    assert res.energy["spiking"] is False and "views" not in res.energy


# --------------------------------------------------------------------------- stages


def test_stage_plan() -> None:
    plan = stage_plan(TrainConfig(mode="lt", pb=0.2, epochs=2, patch_epochs=3, finetune_epochs=1))
    assert [(s.name, s.first_epoch, s.last_epoch) for s in plan] == [
        ("search", 0, 2),
        ("patch", 2, 5),
        ("finetune", 5, 6),
    ]
    assert [s.name for s in stage_plan(TrainConfig(mode="dense", epochs=0))] == ["train"]


def test_finetune_keeps_masks_and_only_moves_kept_weights() -> None:
    seen: dict[str, Any] = {}

    def remember(record: dict[str, Any]) -> None:
        if record["stage"] == "search":
            seen.update(subnet_state(trainer.model))

    trainer = Trainer(tiny(mode="lt", epochs=1, finetune_epochs=1), on_epoch_end=remember)
    assert trainer.model is None and trainer.history == []
    res = trainer.run()
    assert [h["stage"] for h in res.history] == ["search", "finetune"]
    assert trainer.model is res.model and trainer.history == res.history
    after = subnet_state(res.model)
    moved = 0
    for name, before in seen.items():
        mask = before["mask"]
        assert torch.equal(after[name]["mask"], mask), name
        assert torch.equal(after[name]["scores"], before["scores"]), name
        assert torch.equal(after[name]["weight"][~mask], before["weight"][~mask]), name
        moved += int((after[name]["weight"][mask] != before["weight"][mask]).sum())
    assert moved > 0


def test_patch_stage_freezes_the_sparse_patch_embedding() -> None:
    seen: dict[str, Any] = {}
    stats: dict[str, torch.Tensor] = {}

    def remember(record: dict[str, Any]) -> None:
        if record["stage"] == "search":
            seen.update(subnet_state(trainer.model))
            stats.update({k: v.clone() for k, v in trainer.model.state_dict().items()})

    cfg = tiny(
        model="spikformer_micro",
        resolution=16,
        filter="patch_embed",
        pb=0.25,
        epochs=1,
        patch_epochs=1,
        max_batches=2,
    )
    trainer = Trainer(cfg, on_epoch_end=remember)
    res = trainer.run()
    assert [h["stage"] for h in res.history] == ["search", "patch"]
    assert seen and all(name.startswith("patch_embed") for name in seen)
    after = subnet_state(res.model)
    for name, before in seen.items():
        assert torch.equal(after[name]["scores"], before["scores"]), name
    selectors = [m for n, m in res.model.named_modules() if n.endswith("patch_selector")]
    assert selectors and selectors[0].pb == 0.25
    # The fixed ConvPEP keeps its BatchNorm statistics; the BatchNorms after it still learn.
    final = res.model.state_dict()
    bn_stats = [k for k in final if k.endswith(("running_mean", "running_var"))]
    embed = [k for k in bn_stats if k.startswith("patch_embed.")]
    rest = [k for k in bn_stats if not k.startswith("patch_embed.")]
    assert embed and rest
    for key in embed:
        assert torch.equal(final[key], stats[key]), key
    assert any(not torch.equal(final[key], stats[key]) for key in rest)


def test_patch_selector_without_patch_epochs_is_in_the_reported_accuracy() -> None:
    # pb > 0 with patch_epochs = 0 attaches the selector after the last epoch's
    # evaluation: the reported figures must be those of the pruned model.
    from spikelottery.data import get_dataset

    cfg = tiny(
        model="spikformer_micro",
        resolution=16,
        filter="patch_embed",
        pb=0.6,
        epochs=1,
        patch_epochs=0,
        max_batches=3,
        lr=0.05,  # rates at which the untrained logits already depend on the kept patches
        weight_lr=0.01,
    )
    res = run(cfg)
    assert [h["stage"] for h in res.history] == ["search"]
    assert any(n.endswith("patch_selector") for n, _ in res.model.named_modules())
    test_set = get_dataset("digits", split="test", resolution=16)
    loader = torch.utils.data.DataLoader(test_set, batch_size=cfg.batch_size)
    acc, loss = evaluate(res.model, loader, max_batches=cfg.max_batches)
    assert (res.accuracy, res.loss) == (acc, loss)
    assert res.loss != res.history[-1]["test_loss"]  # the selector did change the model


def test_pb_on_a_model_without_patch_embedding_fails_before_training() -> None:
    epochs: list[dict[str, Any]] = []
    with pytest.raises(SpikeLotteryError, match="patch embedding") as info:
        Trainer(tiny(pb=0.3, patch_epochs=1), on_epoch_end=epochs.append).run()
    assert epochs == []  # not a single epoch of stage 1 was spent
    assert "pb=0.3" in str(info.value) and "pb=0" in str(info.value)


# --------------------------------------------------------------------------- inputs and settings


def test_user_model_and_datasets() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(64, 32)
            self.lif = LIFNeuron(backend="eager")
            self.fc2 = nn.Linear(32, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seq = x.flatten(1).unsqueeze(0).expand(2, -1, -1)
            return self.fc2(self.lif(self.fc1(seq))).mean(0)

    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(40, 1, 8, 8, generator=g), torch.randint(0, 10, (40,), generator=g)
    data = torch.utils.data.TensorDataset(x, y)
    res = run(tiny(mode="mp", batch_size=8), model=Net(), train_set=data, test_set=data)
    assert isinstance(res.model.fc1, SubnetLayer)
    assert res.energy_mj is not None and res.kept_fraction < 1.0


def test_a_data_set_without_labels_is_refused() -> None:
    data = torch.utils.data.TensorDataset(torch.rand(8, 1, 8, 8))
    with pytest.raises(SpikeLotteryError, match=r"\(input, label\) pairs"):
        run(tiny(batch_size=4), train_set=data, test_set=data)


def test_trainer_copies_and_checks_its_config() -> None:
    cfg = tiny()
    trainer = Trainer(cfg)
    cfg.pa = 0.9  # a later edit by the caller does not leak in
    assert trainer.config.pa == 0.4
    with pytest.raises(TypeError, match="TrainConfig"):
        Trainer({"pa": 0.4})  # type: ignore[arg-type]


def test_run_restores_the_deterministic_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = torch.are_deterministic_algorithms_enabled()
    try:
        run(tiny(deterministic=True, epochs=0))
        assert torch.are_deterministic_algorithms_enabled() == before
        assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
        monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
        with pytest.raises(SpikeLotteryError):  # restored on the error path too
            run(tiny(deterministic=True, pb=0.3))
        assert torch.are_deterministic_algorithms_enabled() == before
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
    finally:
        torch.use_deterministic_algorithms(before)


def test_a_bypassed_layer_stops_the_run_before_training() -> None:
    class Bypass(nn.Linear):
        def forward(self, x: torch.Tensor) -> torch.Tensor:  # ignores the mask
            return F.linear(x, self._parameters["weight"], self.bias)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = nn.Linear(64, 32)
            self.fc2 = Bypass(32, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(torch.relu(self.fc1(x.flatten(1))))

    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(16, 1, 8, 8, generator=g), torch.randint(0, 10, (16,), generator=g)
    data = torch.utils.data.TensorDataset(x, y)
    epochs: list[Any] = []
    trainer = Trainer(tiny(mode="lt", batch_size=8), model=Net(), train_set=data, test_set=data)
    trainer.on_epoch_end = epochs.append
    with pytest.raises(SpikeLotteryError, match=r"no gradient.*fc2"):
        trainer.run()
    assert epochs == []  # stopped before the first epoch
    res = run(
        tiny(mode="lt", batch_size=8, check_ticket=False),
        model=Net(),
        train_set=data,
        test_set=data,
    )
    assert isinstance(res.model.fc2, SubnetLayer)  # the check is opt-out


def test_short_runs_do_not_compile_the_lif_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    import spikelottery._lif_kernels as kernels
    from spikelottery.engine.trainer import compile_decision

    monkeypatch.delenv("SPIKELOTTERY_COMPILE", raising=False)  # tests switch it off
    assert compile_decision("auto", 10_000) and not compile_decision("auto", 10)
    assert compile_decision("on", 1) and not compile_decision("off", 10_000)
    seen: list[bool] = []
    real = kernels.compile_allowed
    monkeypatch.setattr(kernels, "compile_allowed", lambda: seen.append(real()) or seen[-1])
    # the zoo's default fused backend, so the kernels ask whether they may compile
    run(tiny(model_kwargs={}, epochs=1, max_batches=2))
    assert seen and not any(seen)  # 2 planned steps: never compiled


def test_a_users_own_model_is_recorded_as_such_in_the_ticket(tmp_path: Path) -> None:
    from spikelottery import read_ticket_info

    class Mine(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.flatten(1))

    run(tiny(out=str(tmp_path / "mine"), model_kwargs={}), model=Mine())
    meta = read_ticket_info(tmp_path / "mine" / TICKET_FILE).metadata
    assert meta["model_source"] == "user" and meta["model"].endswith("Mine")
    run(tiny(out=str(tmp_path / "zoo")))
    meta = read_ticket_info(tmp_path / "zoo" / TICKET_FILE).metadata
    assert meta["model_source"] == "zoo" and meta["model"] == "vgg_tiny"


# --- from test_bad_inputs.py: Bad inputs to the Python API, the engine and the model zoo: each one gets a named error.


NEURONS = {"neuron_kwargs": {"backend": "eager"}}


def files_in(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes ({} if the folder does not exist)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def run_refused(
    cfg: TrainConfig, error: type[Exception], match: str, **trainer: Any
) -> BaseException:
    """Run ``cfg`` with a model of our own; it must fail with ``error`` and touch nothing."""
    model = trainer.pop("model", None)
    if model is None:
        model = create_model("vgg_tiny", in_channels=1, img_size=8, timesteps=2, **NEURONS)
    before = snapshot(model)
    out = Path(cfg.out) if cfg.out is not None else None
    files = files_in(out) if out is not None and out.is_dir() else None
    with pytest.raises(error, match=match) as info:
        Trainer(cfg, model=model, **trainer).run()
    assert type(model).__name__ == "VGG" and not any(hasattr(m, "scores") for m in model.modules())
    assert_unchanged(model, before)  # not even sparsified: the check came first
    if out is not None and files is not None:
        assert files_in(out) == files
    return info.value


def test_out_that_is_a_file(tmp_path: Path) -> None:
    path = tmp_path / "results"
    path.write_text("mine")
    error = run_refused(tiny(out=str(path)), ConfigError, r"out='.*results' is a file")
    assert error.field == "out" and path.read_text() == "mine"


def test_out_under_a_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("mine")
    run_refused(
        tiny(out=str(path / "run")), ConfigError, r"cannot be created: '.*notes\.txt' is a file"
    )
    assert path.read_text() == "mine"


def test_out_in_a_folder_that_cannot_be_written(tmp_path: Path, monkeypatch) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.access(locked, os.W_OK):  # root writes anywhere: ask the check as another user would
        real = os.access
        monkeypatch.setattr(
            os, "access", lambda p, mode: False if Path(p) == locked else real(p, mode)
        )
    try:
        run_refused(
            tiny(out=str(locked / "run")),
            ConfigError,
            r"out='.*locked/run' cannot be written: no permission to write in '.*locked'",
        )
        assert not (locked / "run").exists()
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize(
    "found",
    [("results.json",), ("checkpoint.pt",), ("results.json", "checkpoint.pt")],
    ids=["results", "checkpoint", "both"],
)
def test_out_holding_a_run_is_refused(tmp_path: Path, found: tuple[str, ...]) -> None:
    out = tmp_path / "run"
    out.mkdir()
    for name in found:
        (out / name).write_text("an earlier run")
    error = run_refused(
        tiny(out=str(out)),
        ConfigError,
        rf"out folder '.*run' already holds a run \({', '.join(found)}\); continue it with "
        r"resume=True \(--resume\), replace it with overwrite=True \(--overwrite\)",
    )
    assert error.field == "out"


def test_resume_onto_results_of_another_experiment_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.json").write_text(json.dumps({"config": tiny(pa=0.7).to_dict()}))
    run_refused(
        tiny(out=str(out), resume=True),
        ConfigError,
        r"holds results\.json of a different experiment \(pa: 0\.7 -> 0\.4\); replace it with "
        r"overwrite=True",
    )


def test_overwrite_replaces_an_earlier_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.json").write_text("an earlier run")
    with pytest.raises(ConfigError):
        check_out(tiny(out=str(out)))
    Trainer(tiny(out=str(out), overwrite=True, epochs=0, model_kwargs=EAGER)).run()
    assert (out / "results.json").read_text() != "an earlier run"


def test_cifar_without_data_root(tmp_path: Path) -> None:
    error = run_refused(
        tiny(dataset="cifar10", resolution=None, out=str(tmp_path / "run")),
        ConfigError,
        r"'cifar10' is read from local files: set data_root \(--data-root\)",
        model=create_model("vgg_tiny", img_size=8, timesteps=2, **NEURONS),
    )
    assert error.field == "data_root" and not (tmp_path / "run").exists()


@pytest.mark.parametrize("split", ["training", "test"])
def test_empty_data_sets_are_refused_before_training(tmp_path: Path, split: str) -> None:
    full = TensorDataset(torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,)))
    empty = TensorDataset(torch.rand(0, 1, 8, 8), torch.zeros(0, dtype=torch.long))
    sets = (
        {"train_set": empty, "test_set": full}
        if split == "training"
        else {
            "train_set": full,
            "test_set": empty,
        }
    )
    origin = "train_set" if split == "training" else "test_set"
    run_refused(
        tiny(out=str(tmp_path / "run")),
        SpikeLotteryError,
        rf"the {split} set \(the {origin} given\) is empty",
        **sets,
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"nope": 1}, r"cannot build model 'vgg_tiny'.*unknown argument\(s\) 'nope'"),
        ({"img_size": 4}, r"model_kwargs sets 'img_size', which a run sets itself"),
        ({"config": [8, "Q"]}, r"cannot build model 'vgg_tiny'.*got 'Q'"),
    ],
    ids=["unknown", "set-by-the-run", "bad-value"],
)
def test_model_kwargs_are_named(tmp_path: Path, kwargs: dict[str, Any], match: str) -> None:
    cfg = tiny(out=str(tmp_path / "run"), model_kwargs={**EAGER, **kwargs})
    with pytest.raises(ConfigError, match=match) as info:
        Trainer(cfg).run()
    assert info.value.field == "model_kwargs" and not (tmp_path / "run").exists()
