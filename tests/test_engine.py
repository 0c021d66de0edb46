"""Tests of the ticket-search engine: configuration, determinism, resume, results, stages."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from spikelottery import SpikeLotteryError, SubnetLayer
from spikelottery.engine import (
    CHECKPOINT_FILE,
    RESULTS_FILE,
    TICKET_FILE,
    Results,
    TrainConfig,
    Trainer,
    demo_configs,
    evaluate,
    format_table,
    run,
)
from spikelottery.neuron import LIFNeuron

# A tiny, fast experiment: the 8x8 digits, the tiny VGG, the eager LIF loop (no compile).
EAGER = {"neuron_kwargs": {"backend": "eager"}}


def tiny(**changes: Any) -> TrainConfig:
    values: dict[str, Any] = {
        "model": "vgg_tiny",
        "dataset": "digits",
        "resolution": 8,
        "timesteps": 2,
        "epochs": 1,
        "batch_size": 32,
        "max_batches": 3,
        "energy_batches": 1,
        "out": None,
        "progress": False,
        "device": "cpu",
        "model_kwargs": EAGER,
    }
    values.update(changes)
    return TrainConfig(**values)


def subnet_state(model: nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    return {
        name: {
            "scores": m.scores.detach().clone(),
            "mask": m.mask().clone(),
            "weight": m.weight.detach().clone(),
        }
        for name, m in model.named_modules()
        if isinstance(m, SubnetLayer)
    }


def strip_seconds(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in h.items() if k != "seconds"} for h in history]


# --------------------------------------------------------------------------- configuration


def test_config_defaults_roundtrip() -> None:
    cfg = TrainConfig()
    assert cfg.mode == "mp" and cfg.pa == 0.4 and cfg.timesteps == 4 and cfg.beta == 0.99
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("pa", 1.5, "[0, 1)"),
        ("pb", -0.1, "[0, 1)"),
        ("mode", "prune", "dense, lt, mp"),
        ("epochs", -1, ">= 0"),
        ("batch_size", 0, ">= 1"),
        ("lr", 0.0, "(0, inf]"),
        ("beta", 1.5, "[0, 1]"),
        ("spiking", "yes", "true or false"),
        ("timesteps", 2.5, "an int"),
        ("model", "vgg10", "valid names"),
        ("dataset", "mnist", "valid names"),
        ("batchnorm", "off", "keep, nonaffine"),
        ("device", "tpu:x", "device"),
        ("model_kwargs", [1], "table"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(field: str, value: Any, words: str) -> None:
    with pytest.raises((ValueError, TypeError)) as info:
        TrainConfig(**{field: value})
    message = str(info.value)
    assert field in message and words in message
    assert getattr(info.value, "field", field) == field


def test_config_cross_field_checks() -> None:
    with pytest.raises(ValueError, match="finetune_epochs"):
        TrainConfig(mode="dense", finetune_epochs=1)
    with pytest.raises(ValueError, match="patch_epochs.*pb > 0"):
        TrainConfig(patch_epochs=2)


def test_config_from_toml_and_json(tmp_path: Path) -> None:
    toml = tmp_path / "exp.toml"
    toml.write_text(
        'model = "vgg9"\ndataset = "cifar10"\npa = 0.3\nepochs = 5\n[model_kwargs]\nhidden = [64]\n'
    )
    cfg = TrainConfig.from_file(toml, seed=7)
    assert (cfg.model, cfg.dataset, cfg.pa, cfg.epochs, cfg.seed) == ("vgg9", "cifar10", 0.3, 5, 7)
    assert cfg.model_kwargs == {"hidden": [64]}

    js = tmp_path / "exp.json"
    js.write_text(json.dumps({"train": {"mode": "lt", "out": None}}))
    cfg = TrainConfig.from_file(js)
    assert cfg.mode == "lt" and cfg.out is None

    (tmp_path / "typo.toml").write_text("lrr = 0.1\n")
    with pytest.raises(SpikeLotteryError, match=r"typo\.toml.*'lrr'.*valid fields"):
        TrainConfig.from_file(tmp_path / "typo.toml")
    (tmp_path / "bad.toml").write_text("pa = [\n")
    with pytest.raises(SpikeLotteryError, match="not valid TOML"):
        TrainConfig.from_file(tmp_path / "bad.toml")
    (tmp_path / "x.yaml").write_text("pa: 1\n")
    with pytest.raises(SpikeLotteryError, match=r"\.toml or \.json"):
        TrainConfig.from_file(tmp_path / "x.yaml")
    with pytest.raises(SpikeLotteryError, match="does not exist"):
        TrainConfig.from_file(tmp_path / "missing.toml")


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


# --------------------------------------------------------------------------- resume


class _Kill(RuntimeError):
    pass


def _kill_after(n: int):
    def hook(record: dict[str, Any]) -> None:
        if record["epoch"] == n:
            raise _Kill(f"killed after epoch {n}")

    return hook


@pytest.mark.parametrize(
    "changes",
    [
        {"epochs": 2},  # killed in the middle of stage 1
        {"epochs": 1, "finetune_epochs": 1, "mode": "lt"},  # killed at the stage boundary
    ],
    ids=["mid-stage", "stage-boundary"],
)
def test_resume_reaches_the_uninterrupted_result(tmp_path: Path, changes: dict[str, Any]) -> None:
    whole = run(tiny(out=str(tmp_path / "whole"), **changes))

    cut = tiny(out=str(tmp_path / "cut"), **changes)
    with pytest.raises(_Kill):
        Trainer(cut, on_epoch_end=_kill_after(1)).run()
    ckpt = torch.load(tmp_path / "cut" / CHECKPOINT_FILE, weights_only=True)
    assert ckpt["epoch"] == 1 and isinstance(ckpt["rng"]["torch"], torch.Tensor)
    assert not (tmp_path / "cut" / RESULTS_FILE).exists()

    resumed = run(cut.replace(resume=True))
    s1, s2 = subnet_state(whole.model), subnet_state(resumed.model)
    assert s1.keys() == s2.keys()
    for name in s1:
        for key in ("scores", "mask", "weight"):
            assert torch.equal(s1[name][key], s2[name][key]), (name, key)
    for (k1, v1), (k2, v2) in zip(
        whole.model.state_dict().items(), resumed.model.state_dict().items()
    ):
        assert k1 == k2 and torch.equal(v1, v2), k1
    assert resumed.accuracy == whole.accuracy
    assert strip_seconds(resumed.history) == strip_seconds(whole.history)


def test_resume_of_a_finished_run_and_of_nothing(tmp_path: Path) -> None:
    cfg = tiny(out=str(tmp_path / "r"), resume=True)  # no checkpoint yet: starts afresh
    first = run(cfg)
    again = run(cfg)  # every epoch done: only evaluates
    assert again.accuracy == first.accuracy
    assert strip_seconds(again.history) == strip_seconds(first.history)


def test_resume_refuses_a_different_experiment(tmp_path: Path) -> None:
    run(tiny(out=str(tmp_path / "r")))
    with pytest.raises(SpikeLotteryError, match=r"different experiment.*pa: 0.4 -> 0.5"):
        run(tiny(out=str(tmp_path / "r"), pa=0.5, resume=True))


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
        "ann_energy_mj",
        "firing_rate",
        "seconds",
        "config",
        "history",
        "energy",
        "loss",
    }
    assert set(data) == expected
    assert 0.0 <= data["accuracy"] <= 1.0
    # vgg_tiny: conv 1->16 (144), conv 16->32 (4608), head 32*2*2->10 (1280): kept per layer
    assert data["kept_fraction"] == pytest.approx((87 + 2765 + 768) / (144 + 4608 + 1280))
    assert data["energy_mj"] > 0 and data["energy_sparse_mj"] < data["energy_mj"]
    assert data["ann_energy_mj"] > data["energy_mj"]  # spikes are cheap
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


def test_ann_twin_reports_ann_energy() -> None:
    res = run(tiny(spiking=False, mode="lt"))
    assert res.firing_rate is None
    assert res.energy_mj == pytest.approx(res.ann_energy_mj)


def test_out_none_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    run(tiny(out=None))
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- stages


def test_finetune_keeps_masks_and_only_moves_kept_weights() -> None:
    seen: dict[str, Any] = {}

    def remember(record: dict[str, Any]) -> None:
        if record["stage"] == "search":
            seen.update(subnet_state(trainer.model))

    trainer = Trainer(tiny(mode="lt", epochs=1, finetune_epochs=1), on_epoch_end=remember)
    res = trainer.run()
    assert [h["stage"] for h in res.history] == ["search", "finetune"]
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


def test_evaluate_defaults_to_the_model_device() -> None:
    from spikelottery.engine import _model_device

    assert _model_device(nn.Linear(2, 2, device="meta")) == torch.device("meta")
    assert _model_device(nn.ReLU()) == torch.device("cpu")
    if torch.cuda.is_available():
        net = nn.Linear(4, 2).cuda()
        acc, loss = evaluate(net, [(torch.rand(3, 4), torch.zeros(3, dtype=torch.long))])
        assert 0.0 <= acc <= 1.0 and math.isfinite(loss)


def test_sync_batchnorm_conversion_keeps_the_multistep_layout() -> None:
    from spikelottery.engine import _convert_sync_batchnorm, _restore_batchnorm
    from spikelottery.models import create_model
    from spikelottery.multistep import SeqBatchNorm2d

    torch.manual_seed(0)
    net = create_model("vgg_tiny", in_channels=1, img_size=8, timesteps=2, **EAGER)
    x = torch.rand(4, 1, 8, 8)
    keys = list(net.state_dict())
    expected = net(x)
    torch.manual_seed(0)
    again = create_model("vgg_tiny", in_channels=1, img_size=8, timesteps=2, **EAGER)
    converted = _convert_sync_batchnorm(again)
    assert converted and all(isinstance(m, nn.SyncBatchNorm) for m, _ in converted)
    assert all(isinstance(m, SeqBatchNorm2d) for m, _ in converted)
    assert list(again.state_dict()) == keys
    # Without a process group SyncBatchNorm computes plain batch norm: same output, same stats.
    torch.testing.assert_close(again(x), expected)
    _restore_batchnorm(converted)
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in again.modules())
    for (k1, v1), (k2, v2) in zip(net.state_dict().items(), again.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2), k1
    with pytest.raises(ValueError, match="sync_batchnorm"):
        TrainConfig(sync_batchnorm="yes")


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
    once = estimate_energy(res.model, (x, y))  # the paper's ANN: one static pass
    assert once.timesteps == 3
    assert res.energy_mj == pytest.approx(3 * once.ann_mj)
    assert res.ann_energy_mj == pytest.approx(res.energy_mj)
    assert "every time step" in res.energy["conventions"]


def test_evaluate_and_helpers() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        net[1].weight.zero_()
        net[1].bias.copy_(torch.tensor([1.0, 0.0]))
    y = torch.tensor([0, 0, 1, 0])
    acc, loss = evaluate(net, [(torch.rand(4, 4), y)])
    assert acc == 0.75 and loss > 0
    labels = [label for label, _ in demo_configs(None)]
    assert labels == ["dense SNN", "SNN ticket (lt)", "binarised SNN ticket (mp)"]
    table = format_table(
        [{"method": "x", "accuracy": 0.98, "kept_fraction": 0.6, "energy_mj": None, "seconds": 1.0}]
    )
    assert "98.00%" in table and "60.0%" in table and "n/a" in table


def test_rng_state_roundtrip_is_weights_only_safe(tmp_path: Path) -> None:
    import random

    import numpy as np

    from spikelottery.engine import _rng_state, _set_rng_state

    state = _rng_state()
    torch.save(state, tmp_path / "rng.pt")
    draws = (torch.rand(3), np.random.rand(3), random.random())
    _set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(draws[0], again[0])
    assert np.array_equal(draws[1], again[1]) and draws[2] == again[2]


def test_resume_accepts_tuples_in_model_kwargs(tmp_path: Path) -> None:
    kwargs = {"config": (8, "A", 16, "A"), **EAGER}
    first = run(tiny(out=str(tmp_path / "r"), model_kwargs=kwargs))
    again = run(tiny(out=str(tmp_path / "r"), model_kwargs=kwargs, resume=True))
    assert again.accuracy == first.accuracy
