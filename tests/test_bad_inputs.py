"""Bad inputs to the Python API, the engine and the model zoo: each one gets a named error.

Every case asserts the exception type, that the message names the argument, layer, model
or file, and that nothing was changed: the model's state (BatchNorm statistics and
scores included) and the output folder.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import spikelottery._compat
from _engine_testing import EAGER, tiny
from spikelottery import SpikeLotteryError, check_ticket, densify, sparsify, summary
from spikelottery._compat import quiet_cuda_home_probe
from spikelottery.engine import ConfigError, TrainConfig, Trainer, load_config_file
from spikelottery.engine.outputs import check_out
from spikelottery.layers import SubnetConv, SubnetConv1d, SubnetLinear
from spikelottery.models import create_model, min_img_size
from spikelottery.summary import kept_fraction

NEURONS = {"neuron_kwargs": {"backend": "eager"}}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors; a second thread only spin-waits on 2 cores
    yield
    torch.set_num_threads(threads)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert torch.equal(after[k], v), f"{k} changed"


def files_in(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes ({} if the folder does not exist)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


# ----------------------------------------------------------------------------- the zoo

ZOO_CASES: list[tuple[str, dict[str, Any], Callable[[], Any], type[Exception], str]] = [
    # (model, kwargs, input, error, a regex the message must match)
    (
        "vgg_tiny",
        {},
        lambda: torch.rand(2, 1, 16, 16),
        ValueError,
        r"VGG expects in_channels=3.*C=1",
    ),
    (
        "vgg_tiny",
        {},
        lambda: torch.rand(2, 16, 16, 3),  # channels last
        ValueError,
        r"VGG expects in_channels=3.*x\.movedim\(3, 1\)",
    ),
    (
        "vgg_tiny",
        {},
        lambda: torch.rand(2, 3, 32, 32),
        ValueError,
        r"VGG was built for 16x16 images.*is 32x32.*img_size=\(32, 32\)",
    ),
    (
        "vgg_tiny",
        {},
        lambda: torch.rand(3, 16, 16),
        ValueError,
        r"VGG takes \[B, C, H, W\].*3-D tensor.*unsqueeze\(0\)",
    ),
    ("vgg_tiny", {}, lambda: torch.rand(1, 2, 2, 3, 16, 16), ValueError, r"VGG takes.*6-D"),
    ("vgg_tiny", {}, lambda: torch.rand(0, 3, 16, 16), ValueError, r"VGG got an empty input"),
    ("vgg_tiny", {}, lambda: [[0.0]], TypeError, r"VGG takes a torch\.Tensor.*got list"),
    (
        "vgg_tiny",
        {},
        lambda: torch.rand(2, 3, 16, 16, dtype=torch.float64),
        TypeError,
        r"VGG has torch\.float32 parameters but the input is torch\.float64",
    ),
    (
        "vgg_tiny",
        {},
        lambda: torch.rand(2, 3, 16, 16, dtype=torch.complex64),
        TypeError,
        r"VGG takes real-valued input",
    ),
    (
        "vgg_tiny",
        {"in_channels": 2},
        lambda: torch.rand(2, 2, 4, 16, 16),  # [B, C, T, H, W]: T and C swapped
        ValueError,
        r"VGG expects in_channels=2.*\[B, T, C, H, W\].*C=4.*x\.movedim\(1, 2\)",
    ),
    (
        "vgg_tiny",
        {"spiking": False},
        lambda: torch.rand(2, 3, 8, 8),
        ValueError,
        r"VGG was built for 16x16",
    ),
    (
        "resnet_tiny",
        {},
        lambda: torch.rand(2, 2, 16, 16),
        ValueError,
        r"SpikingResNet expects in_channels=3.*C=2",
    ),
    (
        "spikformer_micro",
        {"patch_size": 4},
        lambda: torch.rand(2, 3, 2, 2),
        ValueError,
        r"Spikformer takes images of at least 4x4 \(the patch embedding downsamples by 4\).*2x2",
    ),
    (
        "spikformer_micro",
        {"time_first": True, "in_channels": 2},
        lambda: torch.rand(4, 2, 3, 16, 16),
        ValueError,
        r"Spikformer expects in_channels=2.*read as \[T, B, C, H, W\].*time_first=True",
    ),
]


@pytest.mark.parametrize(
    ("name", "kwargs", "make_input", "error", "match"),
    ZOO_CASES,
    ids=[f"{c[0]}-{i}" for i, c in enumerate(ZOO_CASES)],
)
def test_zoo_models_name_themselves_and_the_shape_they_take(
    name: str,
    kwargs: dict[str, Any],
    make_input: Callable[[], Any],
    error: type[Exception],
    match: str,
) -> None:
    model = create_model(name, img_size=16, timesteps=2, **{**NEURONS, **kwargs}).train()
    before = snapshot(model)  # train mode: a forward that ran would move the BN statistics
    with pytest.raises(error, match=match):
        model(make_input())
    assert_unchanged(model, before)


def test_zoo_input_check_leaves_autocast_and_event_counts_alone() -> None:
    model = create_model("vgg_tiny", img_size=8, timesteps=2, **NEURONS).eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(torch.rand(2, 3, 8, 8, dtype=torch.bfloat16)).shape == (2, 10)
    assert model(torch.rand(2, 2, 3, 8, 8) < 0.5).dtype == torch.float32  # bool events
    assert model.double()(torch.rand(2, 2, 3, 8, 8) < 0.5).dtype == torch.float64


def test_zoo_input_check_adds_no_tracer_warnings() -> None:
    model = create_model("vgg_tiny", img_size=8, timesteps=2, **NEURONS).eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.jit.trace(model, torch.rand(2, 3, 8, 8), check_trace=False)
    mine = [w for w in caught if w.filename.endswith(("_input.py", "blocks.py"))]
    assert mine == []


# ----------------------------------------------------------------------------- swapped layers

LAYER_CASES: list[tuple[Callable[[], nn.Module], Callable[[], torch.Tensor], str]] = [
    (
        lambda: SubnetConv(3, 8, 3, pa=0.4),
        lambda: torch.rand(2, 5, 8, 8),
        r"SubnetConv\(3, 8, .*\) takes in_channels=3 .*shape \(2, 5, 8, 8\)",
    ),
    (
        lambda: SubnetConv(3, 8, 3, pa=0.4),
        lambda: torch.rand(4, 2, 5, 8, 8),  # multi-step
        r"SubnetConv\(3, 8, .*\) takes in_channels=3 .*\[T, B, C, H, W\]",
    ),
    (
        lambda: SubnetConv1d(4, 3, 1, pa=0.4),
        lambda: torch.rand(2, 5, 7),
        r"SubnetConv1d\(4, 3, .*\) takes in_channels=4 on axis -2",
    ),
    (
        lambda: SubnetLinear(4, 3, pa=0.4),
        lambda: torch.rand(2, 5),
        r"SubnetLinear\(in_features=4, .*\) takes in_features=4 on axis -1.*shape \(2, 5\)",
    ),
    (
        lambda: SubnetLinear(4, 3, pa=0.4),
        lambda: torch.rand(2, 4, dtype=torch.float64),
        r"SubnetLinear\(.*\) takes torch\.float32 input.*got torch\.float64",
    ),
]


@pytest.mark.parametrize(("make_layer", "make_input", "match"), LAYER_CASES)
def test_swapped_layers_name_themselves_and_what_they_take(
    make_layer: Callable[[], nn.Module], make_input: Callable[[], torch.Tensor], match: str
) -> None:
    layer = make_layer()
    before = snapshot(layer)
    with pytest.raises(RuntimeError, match=match) as info:  # a RuntimeError, as from nn.Conv2d
        layer(make_input())
    assert "torch: " in str(info.value)  # torch's own words are kept after ours
    assert_unchanged(layer, before)


def test_swapped_layers_pass_other_errors_through_unchanged(monkeypatch) -> None:
    layer = SubnetConv(3, 8, 3, pa=0.4)
    error = RuntimeError("out of memory")
    monkeypatch.setattr(layer, "_conv_forward", lambda *a: (_ for _ in ()).throw(error))
    with pytest.raises(RuntimeError) as info:
        layer(torch.rand(1, 3, 8, 8))  # the input fits: the error is not about it
    assert info.value is error


# ----------------------------------------------------------------------------- API arguments


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda: summary("x"),
            TypeError,
            r"summary\(model\): model must be an nn\.Module, got str",
        ),
        (
            lambda: densify("x"),
            TypeError,
            r"densify\(model\): model must be an nn\.Module, got str",
        ),
        (
            lambda: sparsify(nn.Linear(4, 3), 0.4),
            TypeError,
            r"Linear is itself a layer: wrap it \(nn\.Sequential\(layer\)\)",
        ),
        (
            lambda: create_model("vgg_tiny", depht=3),
            TypeError,
            r"create_model\('vgg_tiny'\): unknown argument\(s\) 'depht' of VGG; valid ones: config",
        ),
        (lambda: min_img_size("vgg11"), ValueError, r"unknown model name 'vgg11'"),
    ],
    ids=[
        "summary-str",
        "densify-str",
        "sparsify-bare-linear",
        "create_model-kwarg",
        "min_img_size",
    ],
)
def test_api_arguments(call: Callable[[], Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call()


def test_bare_linear_is_not_modified_by_sparsify() -> None:
    layer = nn.Linear(4, 3)
    before = snapshot(layer)
    with pytest.raises(TypeError, match="SubnetConv/SubnetLinear.from_dense"):
        sparsify(layer, 0.4)
    assert type(layer) is nn.Linear and not hasattr(layer, "scores")
    assert_unchanged(layer, before)


def test_min_img_size_follows_the_constructor_arguments() -> None:
    assert min_img_size("vgg_small") == 4 and min_img_size("vgg9") == 8
    assert min_img_size("vgg_tiny", config=[8, "A", 8, "A", 8, "M"]) == 8
    assert min_img_size("spikformer_micro") == 1
    assert min_img_size("spikformer_micro", patch_size=8) == 8
    assert min_img_size("resnet19") == 1


# ----------------------------------------------------------------------------- settings


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


# ----------------------------------------------------------------------------- the engine


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


def test_resolution_below_the_models_smallest(tmp_path: Path) -> None:
    cfg = tiny(out=str(tmp_path / "run"), model="vgg_small", resolution=2)
    with pytest.raises(
        ConfigError, match=r"model 'vgg_small' takes images of at least 4x4.*set resolution to 4"
    ) as info:
        Trainer(cfg).run()
    assert info.value.field == "resolution" and not (tmp_path / "run").exists()


def test_demo_refuses_earlier_results_before_training(tmp_path: Path) -> None:
    from spikelottery.demo import demo

    (tmp_path / "results.json").write_text("[]")
    with pytest.raises(ConfigError, match=r"already holds demo results.*--overwrite"):
        demo(tmp_path, epochs=1, max_batches=1, progress=False)
    (tmp_path / "results.json").unlink()
    (tmp_path / "mp").mkdir()
    (tmp_path / "mp" / "results.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"mp' already holds a run"):
        demo(tmp_path, epochs=1, max_batches=1, progress=False)
    assert files_in(tmp_path) == {"mp/results.json": b"{}"}  # the first two never ran


# ----------------------------------------------------------------------------- CUDA log line


def test_the_cuda_home_log_line_is_hidden_until_its_module_is_imported(monkeypatch) -> None:
    # torch.utils.cpp_extension logs "No CUDA runtime is found" when first imported, which
    # a first compile does on a machine without CUDA; a stand-in name plays "not imported".
    name = "spikelottery_test_not_imported"
    monkeypatch.setattr(spikelottery._compat, "_CPP_EXTENSION", name)
    logger = logging.getLogger(name)
    with quiet_cuda_home_probe():
        assert not logger.isEnabledFor(logging.WARNING)
    assert logger.level == logging.NOTSET
    monkeypatch.setitem(sys.modules, name, sys)  # imported: nothing is changed any more
    with quiet_cuda_home_probe():
        assert logger.isEnabledFor(logging.WARNING)


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--timesteps", "100000000000000000000", "timesteps must be at most 4096"),
        ("--resolution", "1000000000", "resolution must be at most 4096"),
    ],
)
def test_huge_sizes_are_refused_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, message: str
) -> None:
    from spikelottery.cli import main

    out = tmp_path / "run"
    with pytest.raises(SystemExit) as info:
        main(["run", flag, value, "--out", str(out)])
    err = capsys.readouterr().err
    assert info.value.code == 2 and message in err and flag in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("example", ["x", 3, None, ("a", 1)])
def test_check_ticket_needs_a_tensor(example: object) -> None:
    net = sparsify(nn.Sequential(nn.Linear(3, 3)), 0.5)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(TypeError, match="example_inputs must hold a tensor"):
        check_ticket(net, example)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_kept_fraction_refuses_non_finite_scores(value: float) -> None:
    net = sparsify(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), 0.5)
    with torch.no_grad():
        net[2].scores[0, 0] = value
    with pytest.raises(SpikeLotteryError, match="layer '2' has NaN or infinite scores"):
        kept_fraction(net)
