"""Tests of the ticket commands of ``spikelottery``: models, datasets, info, evaluate, energy, export.

One tiny engine run makes a real ticket; every command's numbers are checked against the
Python API called directly.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors
import safetensors.torch
import torch
from torch import nn
from torch.utils.data import DataLoader

from _engine_testing import tiny
from spikelottery import sparsify
from spikelottery.cli import main
from spikelottery.data import DATASETS, dataset_info, get_dataset
from spikelottery.engine import Results, TrainConfig, evaluate, run
from spikelottery.engine.build import dataset_split, zoo_model
from spikelottery.models import create_model, list_models
from spikelottery.tickets import load_ticket, read_ticket_info, save_ticket


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Results]:
    """A tiny mp run (3 batches of 32, 1 energy batch) and the ticket it wrote."""
    out = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    res = run(tiny(mode="mp", out=out))
    return out / "ticket.safetensors", res


@pytest.fixture
def ticket(trained: tuple[Path, Results]) -> Path:
    return trained[0]


def _rebuilt(path: Path) -> tuple[TrainConfig, nn.Module]:
    """The ticket loaded through the API, as the documentation says to do it by hand."""
    cfg = TrainConfig.from_dict(json.loads(read_ticket_info(path).metadata["config"]))
    info = dataset_info(cfg.dataset, resolution=cfg.resolution, timesteps=cfg.timesteps)
    return cfg, load_ticket(zoo_model(cfg, info), path)


def _json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> Any:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Exit status and stderr of a command that fails (status 2 raises SystemExit)."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    assert code != 0, captured.out
    return code, captured.err


# ----------------------------------------------------------------------------- listings


def test_models_lists_the_zoo_with_parameter_counts(capsys: pytest.CaptureFixture[str]) -> None:
    rows = _json(["models"], capsys)
    assert [r["name"] for r in rows] == list_models()
    by_name = {r["name"]: r for r in rows}
    for name in ("vgg_tiny", "spikformer_micro", "resnet_tiny"):
        model = create_model(name)
        assert by_name[name]["parameters"] == sum(p.numel() for p in model.parameters())
        assert by_name[name]["class"] == type(model).__name__
        assert by_name[name]["input_shape"] == [3, 32, 32] and by_name[name]["timesteps"] == 4
    assert by_name["vgg9"]["parameters"] == 2_262_474  # the paper's VGG-9 (2.26M)
    assert main(["models"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["model", "class", "parameters", "input", "T", "classes"]
    assert table[2].split()[:4] == ["resnet19", "SpikingResNet", "12,631,114", "3x32x32"]


def test_datasets_lists_shapes_and_split_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    rows = _json(["datasets"], capsys)
    assert [r["name"] for r in rows] == list(DATASETS)
    for r in rows:
        info = dataset_info(r["name"])
        assert r["input_shape"] == list(info.input_shape)
        assert r["num_classes"] == info.num_classes and r["embedded"] == (not info.needs_root)
        assert r["train"] > 0 and r["test"] > 0
    # The sizes are known without reading the data; the embedded data sets check them.
    by_name = {r["name"]: r for r in rows}
    for name in [r["name"] for r in rows if r["embedded"]]:
        for split in ("train", "test"):
            data = get_dataset(name, split=split)
            assert by_name[name][split] == len(data), (name, split)  # type: ignore[arg-type]
    assert main(["datasets"]) == 0
    text = capsys.readouterr().out
    assert "cifar10_dvs" in text and "10x2x128x128" in text and "--data-root" in text


# ----------------------------------------------------------------------------- info


def test_info_says_what_read_ticket_info_says(
    ticket: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    info = read_ticket_info(ticket)
    data = _json(["info", str(ticket)], capsys)
    assert data["layers"] == info.layers and data["metadata"] == info.metadata
    assert (data["pa"], data["pb"], data["mode"]) == (info.pa, info.pb, info.mode)
    assert data["size_bytes"] == ticket.stat().st_size
    kept = sum(layer["kept"] for layer in info.layers)
    assert data["kept"] == kept and data["kept_fraction"] == pytest.approx(0.6, abs=0.01)

    assert main(["info", str(ticket)]) == 0
    text = capsys.readouterr().out
    assert f"{kept:,} of {data['weights']:,} weights" in text and "mp (pa=0.4)" in text
    for layer in info.layers:
        assert layer["name"] in text and f"{layer['kept']:,}" in text
    assert re.search(r"user\.model +vgg_tiny", text) and re.search(r"user\.dataset +digits", text)
    assert re.search(r"user\.model_source +zoo", text)
    assert 'model="vgg_tiny"' in text  # the run config, as its non-default fields


def test_info_shows_patch_pruning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net = create_model("spikformer_micro", in_channels=1, img_size=16, timesteps=2)
    path = save_ticket(sparsify(net, 0.4, 0.25, mode="lt"), tmp_path / "vit.safetensors")
    assert main(["info", str(path)]) == 0
    assert "pb=0.25 after 'patch_embed'" in capsys.readouterr().out
    assert _json(["info", str(path)], capsys)["patch_embed"] == "patch_embed"


# ----------------------------------------------------------------------------- measuring


def test_evaluate_matches_the_api_and_the_run(
    trained: tuple[Path, Results], capsys: pytest.CaptureFixture[str]
) -> None:
    ticket, res = trained
    # The run evaluated 3 batches of 32 (max_batches): the same batches give its accuracy.
    data = _json(["evaluate", str(ticket), "--batches", "3"], capsys)
    assert data["accuracy"] == res.accuracy and data["samples"] == 96
    assert data["recorded_accuracy"] == pytest.approx(res.accuracy, abs=1e-6)
    # The whole test split, against the API called directly.
    cfg, net = _rebuilt(ticket)
    loader = DataLoader(dataset_split(cfg, "test"), batch_size=cfg.batch_size)
    accuracy, loss = evaluate(net, loader)
    data = _json(["evaluate", str(ticket), "--device", "cpu"], capsys)
    assert (data["accuracy"], data["loss"]) == (accuracy, loss)
    assert data["samples"] == 359 and data["dataset"] == "digits"
    assert main(["evaluate", str(ticket), "--batch-size", "100"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"accuracy {100 * accuracy:.2f}% | loss {loss:.4f} | 359 samples")
    assert "the run recorded" in out


def test_energy_matches_the_run(
    trained: tuple[Path, Results], capsys: pytest.CaptureFixture[str]
) -> None:
    ticket, res = trained
    # The run measured energy_batches = 1 batch of 32: the command's default.
    data = _json(["energy", str(ticket)], capsys)
    assert data["samples"] == 32
    assert data["energy_mj"] == res.energy_mj
    assert data["energy_sparse_mj"] == res.energy_sparse_mj
    assert data["ann_reference_mj"] == res.ann_reference_mj
    assert [row["name"] for row in data["report"]["rows"]] == [
        layer["name"] for layer in read_ticket_info(ticket).layers
    ]
    assert main(["energy", str(ticket), "--batches", "2"]) == 0
    text = capsys.readouterr().out
    assert "features.2.conv" in text and "E_SNN" in text and "64 samples" in text


@pytest.mark.parametrize(
    ("changes", "spiking"),
    [
        ({"dataset": "digits_dvs", "resolution": 16, "energy_preset": "int8"}, True),
        ({"dataset": "digits_dvs", "resolution": 16, "spiking": False, "mode": "mp"}, False),
    ],
)
def test_energy_prices_as_the_run_did(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], changes: dict[str, Any], spiking: bool
) -> None:
    """``energy`` used to price every ticket at fp32 whatever the run's ``energy_preset``,
    count an SNN's ANN reference once on event frames (the run counts one pass per frame:
    4x apart), and give an ANN ticket SNN views of itself and a no-spiking-layer warning."""
    torch.manual_seed(0)
    res = run(tiny(out=tmp_path, **changes))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = _json(["energy", str(tmp_path / "ticket.safetensors")], capsys)
    assert data["energy_mj"] == res.energy_mj
    assert data["ann_reference_mj"] == res.ann_reference_mj
    assert data["report"] == json.loads(json.dumps(res.energy))
    assert ("views" in data["report"]) == spiking


# ----------------------------------------------------------------------------- export


def test_export_dense_writes_a_safetensors_state_dict(
    ticket: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "dense.safetensors"
    assert main(["export", str(ticket), "--to", "dense", "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    state = safetensors.torch.load_file(out)  # a safetensors file, not a pickle
    with safetensors.safe_open(out, "pt") as fh:
        meta = fh.metadata()
    assert meta["format"] == "spikelottery.dense" and meta["config"]
    cfg, net = _rebuilt(ticket)
    info = dataset_info(cfg.dataset, resolution=cfg.resolution, timesteps=cfg.timesteps)
    dense = zoo_model(TrainConfig.from_dict(json.loads(meta["config"])), info)
    dense.load_state_dict(state, strict=True)
    x = torch.rand(4, *info.input_shape)
    with torch.no_grad():
        assert torch.equal(dense.eval()(x), net.eval()(x))


def test_export_onnx(ticket: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    out = tmp_path / "ticket.onnx"
    assert main(["export", str(ticket), "--to", "onnx", "--out", str(out)]) == 0
    assert "[1, 1, 8, 8]" in capsys.readouterr().out
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto)
    _, net = _rebuilt(ticket)
    x = torch.rand(1, 1, 8, 8)
    with torch.no_grad():
        want = net.eval()(x).numpy()
    (got,) = ReferenceEvaluator(proto).run(None, {"input": x.numpy()})
    got = np.asarray(got)
    assert got.shape == want.shape and abs(got - want).max() < 1e-4


# ----------------------------------------------------------------------------- errors


def _ticket_of_own_model(path: Path, metadata: dict[str, str] | None = None) -> Path:
    net = sparsify(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), pa=0.4, mode="mp")
    return save_ticket(net, path, metadata=metadata)


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["evaluate", "{missing}"], "TICKET"),
        (["info", "{missing}"], "TICKET"),
        (["energy", "{not_a_ticket}"], "not a valid spikelottery ticket"),
        (["info", "{not_a_ticket}"], "not a valid spikelottery ticket"),
        (["evaluate", "{ticket}", "--dataset", "mnist"], "argument --dataset: unknown dataset"),
        (["evaluate", "{ticket}", "--dataset", "digits_dvs"], "argument --dataset"),
        (["energy", "{ticket}", "--batches", "0"], "argument --batches"),
        (["evaluate", "{ticket}", "--batch-size", "x"], "argument --batch-size"),
        (["evaluate", "{ticket}", "--device", "tpu"], "argument --device"),
        (["export", "{ticket}", "--to", "pickle", "--out", "x"], "argument --to"),
        (["export", "{ticket}", "--out", "x"], "--to"),
        (["export", "{ticket}", "--to", "dense", "--out", "{missing}/x"], "argument --out"),
        (["export", "{ticket}", "--to", "dense", "--out", "{ticket}"], "argument --out"),
    ],
)
def test_bad_arguments_exit_2_naming_them(
    argv: list[str],
    named: str,
    ticket: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    not_a_ticket = tmp_path / "notes.txt"
    not_a_ticket.write_text("hello")
    paths = {"ticket": ticket, "missing": tmp_path / "missing", "not_a_ticket": not_a_ticket}
    code, err = _fails([a.format(**paths) for a in argv], capsys)
    assert code == 2
    assert named in err
    assert "Traceback" not in err and err.rstrip().splitlines()[-1].count("error:") == 1


def test_a_ticket_without_a_run_config_says_how_to_load_it_in_python(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _ticket_of_own_model(tmp_path / "own.safetensors", {"note": "my model"})
    assert main(["info", str(path)]) == 0  # info needs no model
    assert "user.note" in capsys.readouterr().out
    for argv in (["evaluate", str(path)], ["export", str(path), "--to", "dense", "--out", "d"]):
        code, err = _fails(argv, capsys)
        assert code == 2
        assert "argument TICKET" in err and "cannot be rebuilt" in err
        assert "load_ticket(build_my_model()" in err


def test_a_ticket_that_does_not_fit_its_recorded_model_fails_with_status_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A user model trained by the engine records the engine's config, not the model.
    config = json.dumps(tiny().to_dict())
    path = _ticket_of_own_model(tmp_path / "own.safetensors", {"config": config})
    code, err = _fails(["evaluate", str(path)], capsys)
    assert code == 1
    assert err.startswith("spikelottery: error: ") and len(err.strip().splitlines()) == 1
    assert "'vgg_tiny'" in err and "load_ticket(build_my_model(), path)" in err


def test_a_ticket_of_a_users_own_model_is_not_rebuilt_from_the_zoo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = json.dumps(tiny().to_dict())
    meta = {"config": config, "model_source": "user"}
    path = _ticket_of_own_model(tmp_path / "own.safetensors", meta)
    code, err = _fails(["evaluate", str(path)], capsys)
    assert code == 2 and "cannot be rebuilt" in err and "load_ticket(build_my_model()" in err


def test_the_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for command in ("run", "demo", "models", "datasets", "info", "evaluate", "energy", "export"):
        assert command in text


@pytest.mark.parametrize("content", [b"not an onnx graph\n", b"", b'{"accuracy": 0.9}'])
def test_export_onnx_keeps_a_file_it_did_not_write(
    ticket: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    pytest.importorskip("onnx")
    out = tmp_path / "precious.onnx"
    out.write_bytes(content)
    code, err = _fails(["export", str(ticket), "--to", "onnx", "--out", str(out)], capsys)
    assert code == 2 and "not an earlier --to onnx export" in err
    assert out.read_bytes() == content
    # an earlier export of its own is replaced
    fresh = tmp_path / "ticket.onnx"
    assert main(["export", str(ticket), "--to", "onnx", "--out", str(fresh)]) == 0
    assert main(["export", str(ticket), "--to", "onnx", "--out", str(fresh)]) == 0
