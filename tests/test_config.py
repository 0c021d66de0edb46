"""Tests of ``TrainConfig``: defaults, checks naming the field, config files, runtime fields."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from _engine_testing import tiny
from spikelottery import SpikeLotteryError
from spikelottery.engine import ConfigError, TrainConfig, load_config_file
from spikelottery.engine.config import field_defaults, runtime_fields


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
        ("batch_size", 0, "positive int"),
        ("lr", 0.0, "(0, inf]"),
        ("beta", 1.5, "[0, 1]"),
        ("spiking", "yes", "true or false"),
        ("timesteps", 2.5, "positive int"),
        ("model", "vgg10", "valid names"),
        ("dataset", "mnist", "valid names"),
        ("batchnorm", "off", "keep, nonaffine"),
        ("device", "tpu:x", "device"),
        ("model_kwargs", [1], "table"),
        ("resolution", 0, "positive int or None"),
        ("out", "", "non-empty string or None"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(field: str, value: Any, words: str) -> None:
    with pytest.raises((ValueError, TypeError)) as info:
        TrainConfig(**{field: value})
    message = str(info.value)
    assert field in message and words in message
    assert getattr(info.value, "field", field) == field
    assert isinstance(info.value, ConfigError) and isinstance(info.value, SpikeLotteryError)


def test_config_normalises_values() -> None:
    cfg = TrainConfig(model=" VGG_Tiny ", dataset="digits-dvs", epochs=np.int64(3), out=Path("x"))
    assert (cfg.model, cfg.dataset, cfg.out) == ("vgg_tiny", "digits_dvs", "x")
    assert cfg.epochs == 3 and type(cfg.epochs) is int
    assert TrainConfig(pa=1 / 4).pa == 0.25 and type(TrainConfig(lr=1).lr) is float


def test_config_cross_field_checks() -> None:
    with pytest.raises(ValueError, match="finetune_epochs"):
        TrainConfig(mode="dense", finetune_epochs=1)
    with pytest.raises(ValueError, match="patch_epochs.*pb > 0"):
        TrainConfig(patch_epochs=2)
    with pytest.raises(ConfigError) as info:
        TrainConfig(patch_epochs=2)
    assert info.value.field == "patch_epochs"


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
    with pytest.raises(TypeError, match="mapping"):
        TrainConfig.from_dict([("pa", 0.3)])  # type: ignore[arg-type]


def test_replace_validates_and_copies() -> None:
    cfg = TrainConfig(out=None)
    assert cfg.replace(pa=0.2).pa == 0.2 and cfg.pa == 0.4
    with pytest.raises(ConfigError, match="pa"):
        cfg.replace(pa=2.0)


def test_runtime_fields_and_defaults_come_from_the_declarations() -> None:
    assert runtime_fields() == {
        "resume",
        "progress",
        "out",
        "device",
        "num_workers",
        "data_root",
        "checkpoint",
        "check_ticket",
        "overwrite",
        "download",
        "threads",
    }
    defaults = field_defaults()
    assert list(defaults) == [f.name for f in dataclasses.fields(TrainConfig)]
    assert defaults["pa"] == 0.4 and defaults["model_kwargs"] == {}
    assert TrainConfig(**defaults) == TrainConfig()


def test_field_order_is_the_results_json_order() -> None:
    # results.json's "config" and checkpoints list the fields in declaration order.
    assert list(TrainConfig().to_dict()) == [
        "model",
        "dataset",
        "data_root",
        "method",
        "mode",
        "spiking",
        "pa",
        "pb",
        "timesteps",
        "beta",
        "epochs",
        "patch_epochs",
        "finetune_epochs",
        "lr",
        "weight_lr",
        "weight_decay",
        "batch_size",
        "seed",
        "out",
        "device",
        "num_workers",
        "threads",
        "filter",
        "batchnorm",
        "activations",
        "init",
        "search",
        "scope",
        "anneal_epochs",
        "imp_rounds",
        "imp_fraction",
        "rewind_epoch",
        "search_timesteps",
        "resolution",
        "augment",
        "model_kwargs",
        "resume",
        "overwrite",
        "download",
        "checkpoint",
        "max_batches",
        "energy_batches",
        "energy_preset",
        "deterministic",
        "sync_batchnorm",
        "model_input",
        "compile_lif",
        "check_ticket",
        "progress",
    ]


# --- from test_bad_inputs.py: Bad inputs to the Python API, the engine and the model zoo: each one gets a named error.


@pytest.mark.parametrize(
    ("changes", "field", "match"),
    [
        ({"filter": "features.(0"}, "filter", r"filter='features\.\(0' is not a valid regular"),
        ({"resume": True, "overwrite": True}, "overwrite", r"resume=True .* overwrite=True"),
        ({"download": True}, "download", r"'digits' is embedded: nothing to download"),
        (
            {"download": True, "dataset": "dvs128_gesture"},
            "download",
            r"'dvs128_gesture' cannot be downloaded automatically: put its files in data_root",
        ),
    ],
    ids=["filter-regex", "resume-and-overwrite", "download-digits", "download-dvs"],
)
def test_settings_are_refused_when_built(changes: dict[str, Any], field: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        tiny(**changes)
    assert info.value.field == field


def test_a_folder_as_config_file_is_called_a_folder(tmp_path: Path) -> None:
    with pytest.raises(SpikeLotteryError, match=r"config file '.*' is a folder"):
        load_config_file(tmp_path)


def test_a_config_file_that_is_not_utf8_names_the_byte(tmp_path: Path) -> None:
    path = tmp_path / "exp.toml"
    path.write_bytes(b'pa = 0.4\nmodel = "vgg\xff"\n')
    with pytest.raises(SpikeLotteryError, match=r"exp\.toml' is not UTF-8 text \(byte 0xff"):
        load_config_file(path)
    assert path.read_bytes() == b'pa = 0.4\nmodel = "vgg\xff"\n'
