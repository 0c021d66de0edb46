"""Tests of the ``spikelottery`` command line (in process, plus one real subprocess)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

import spikelottery
from spikelottery.cli import add_config_flags, build_parser, flag_of, main
from spikelottery.engine import TrainConfig
from spikelottery.engine.config import field_defaults
from spikelottery.engine.settings import format_default, setting_of

QUICK = ["--max-batches", "2", "--no-progress", "-q"]
EAGER = '{"config": [8, "A", 16, "A"], "neuron_kwargs": {"backend": "eager"}}'


def test_demo_with_a_tiny_budget(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--epochs", "1", "--seed", "1", *QUICK]) == 0
    printed = capsys.readouterr().out
    assert "binarised SNN ticket (mp)" in printed and "energy (mJ)" in printed
    records = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in records] == [
        "dense SNN",
        "SNN ticket (lt)",
        "binarised SNN ticket (mp)",
    ]
    for r in records:
        assert {"method", "accuracy", "kept_fraction", "energy_mj", "seconds"} <= set(r)
        assert 0.0 <= r["accuracy"] <= 1.0 and r["energy_mj"] > 0 and r["seconds"] > 0
    assert records[0]["kept_fraction"] == 1.0
    assert records[1]["kept_fraction"] == pytest.approx(0.6, abs=0.01)
    assert records[2]["kept_fraction"] == records[1]["kept_fraction"]
    for mode in ("dense", "lt", "mp"):
        assert (out / mode / "results.json").is_file()


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["run", "--pa", "1.5"], "--pa"),
        (["run", "--pa", "abc"], "--pa"),
        (["run", "--pb", "-0.2"], "--pb"),
        (["run", "--mode", "prune"], "--mode"),
        (["run", "--epochs", "-1"], "--epochs"),
        (["run", "--batch-size", "0"], "--batch-size"),
        (["run", "--lr", "0"], "--lr"),
        (["run", "--beta", "2"], "--beta"),
        (["run", "--model", "vgg10"], "--model"),
        (["run", "--dataset", "mnist"], "--dataset"),
        (["run", "--timesteps", "x"], "--timesteps"),
        (["run", "--model-kwargs", "[1]"], "--model-kwargs"),
        (["run", "--config", "missing.toml"], "--config"),
        (["run", "--bogus"], "--bogus"),
        (["demo", "--pa", "1"], "--pa"),
        (["demo", "--epochs", "0"], "--epochs"),
        (["demo", "--seed", "-1"], "--seed"),
        (["demo", "--max-batches", "0"], "--max-batches"),
        (["run", "--max-batches", "0"], "--max-batches"),
        (["run", "--ann", "--device", "tpu:x"], "--device"),
        (["frobnicate"], "frobnicate"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and "error" in err


def test_config_file_and_flag_override(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = tmp_path / "exp.toml"
    cfg.write_text(
        f'model = "vgg_tiny"\nresolution = 8\ntimesteps = 2\nepochs = 1\nseed = 3\npa = 0.3\n'
        f"batch_size = 16\nenergy_batches = 1\nout = {json.dumps(str(out))}\n"
        f'device = "cpu"\n[model_kwargs.neuron_kwargs]\nbackend = "eager"\n'
    )
    assert main(["run", "--config", str(cfg), "--seed", "5", "--mode", "lt", *QUICK]) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["config"]["seed"] == 5  # the flag wins
    assert data["config"]["mode"] == "lt"
    assert data["config"]["pa"] == 0.3 and data["config"]["model"] == "vgg_tiny"  # from the file
    assert data["config"]["max_batches"] == 2 and data["config"]["progress"] is False
    assert len(data["history"]) == 1


def test_bad_value_in_config_file_names_file_and_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "exp.json"
    cfg.write_text(json.dumps({"pa": 1.2}))
    with pytest.raises(SystemExit) as info:
        main(["run", "--config", str(cfg)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "exp.json" in err and "pa" in err and "--pa" in err
    # a flag can override the bad value
    cfg.write_text(json.dumps({"pa": 1.2, "unknown_key": 1}))
    with pytest.raises(SystemExit):
        main(["run", "--config", str(cfg), "--pa", "0.4"])
    assert "unknown_key" in capsys.readouterr().err


def test_run_from_flags_and_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r"
    argv = [
        "run",
        "--model",
        "vgg_tiny",
        "--model-kwargs",
        EAGER,
        "--resolution",
        "8",
        "--timesteps",
        "2",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--ann",
        "--mode",
        "mp",
        "--out",
        str(out),
        *QUICK,
    ]
    assert main(argv) == 0
    assert "accuracy" in capsys.readouterr().out
    first = json.loads((out / "results.json").read_text())
    assert first["config"]["spiking"] is False and first["firing_rate"] is None
    assert main([*argv, "--resume"]) == 0  # already finished: evaluates, same result
    second = json.loads((out / "results.json").read_text())
    assert second["accuracy"] == first["accuracy"]
    # a different experiment in the same folder is refused with status 1
    assert main([*argv, "--resume", "--pa", "0.5"]) == 1
    assert "different experiment" in capsys.readouterr().err


def test_parser_lists_both_commands() -> None:
    parser = build_parser()
    help_text = parser.format_help()
    assert "run" in help_text and "demo" in help_text


def test_python_m_spikelottery_help() -> None:
    src = str(Path(spikelottery.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-m", "spikelottery", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert "demo" in proc.stdout and "run" in proc.stdout
    proc = subprocess.run(
        [sys.executable, "-m", "spikelottery", "run", "--pa", "1.5"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 2 and "--pa" in proc.stderr


def test_main_leaves_the_spikelottery_logger_as_it_was(tmp_path: Path) -> None:
    logger = logging.getLogger("spikelottery")
    before = (list(logger.handlers), logger.level, logger.propagate)
    with pytest.raises(SystemExit):  # an argument error after logging was set up
        main(["run", "--pa", "1.5", "-v"])
    assert (list(logger.handlers), logger.level, logger.propagate) == before
    out = tmp_path / "r"
    argv = ["run", "--model", "vgg_tiny", "--model-kwargs", EAGER, "--resolution", "8"]
    argv += ["--timesteps", "2", "--epochs", "0", "--out", str(out), "--sync-batchnorm", *QUICK]
    assert main(argv) == 0  # one process: sync_batchnorm has nothing to synchronise
    assert (list(logger.handlers), logger.level, logger.propagate) == before
    assert json.loads((out / "results.json").read_text())["config"]["sync_batchnorm"] is True


def test_every_field_is_a_flag_whose_help_shows_the_dataclass_default() -> None:
    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    actions = {a.dest: a for a in parser._actions if a.dest != "help"}
    defaults = field_defaults()
    assert set(actions) == set(defaults)
    for f in dataclasses.fields(TrainConfig):
        action = actions[f.name]
        assert action.option_strings == [flag_of(f)], f.name
        assert action.default is argparse.SUPPRESS  # a config file's value stands
        assert action.help is not None and action.help.endswith(
            f"default: {format_default(defaults[f.name])})".replace("%", "%%")
        ), (f.name, action.help)
        # the default is generated, never typed into a help text, where it would drift
        assert "default" not in setting_of(f).help.lower(), f.name
    assert actions["pa"].help.endswith("(default: 0.4)")
    assert actions["out"].help.endswith("(default: runs/run)")
    assert actions["spiking"].option_strings == ["--ann"]
    assert actions["spiking"].help.endswith("(this flag sets spiking=false; default: true)")
    assert actions["checkpoint"].option_strings == ["--no-checkpoint"]
    assert actions["progress"].option_strings == ["--no-progress"]
    assert actions["resume"].option_strings == ["--resume"]


def test_the_run_help_lists_every_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for f in dataclasses.fields(TrainConfig):
        assert flag_of(f) in text, f.name
    assert "--pa PA Fraction of weights REMOVED per layer, in [0, 1)" in text
    assert 'Ignored by "dense". (default: 0.4)' in text
    assert "--config FILE" in text and "spiking neurons:" in text


def test_ratio_flags_say_removed_and_what_biprop_means(capsys: pytest.CaptureFixture[str]) -> None:
    # pa and pb are fractions REMOVED; biprop's prune_rate, the multi-prize reference code's
    # knob, is the fraction KEPT: every flag that takes a ratio says which it is.
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    pa = text[text.index("--pa PA ") : text.index("--pb PB ")]
    assert "REMOVED" in pa and "n - floor(pa * n) (0.4 keeps 60%)" in pa
    assert "biprop's prune_rate, the fraction KEPT (its 0.4 is pa=0.6)" in pa
    start = text.index("--pb PB ")
    pb = text[start : text.index("--timesteps ", start)]
    assert "patches REMOVED" in pb and "N - floor(pb * N) (0.3 keeps 45 of 64)" in pb
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    demo_pa = text[text.index("--pa PA ") : text.index("--max-batches MAX_BATCHES ")]
    assert "REMOVED" in demo_pa and "0.4 keeps 60%" in demo_pa and "prune_rate" in demo_pa


def test_generated_flags_parse_every_field_type() -> None:
    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    argv = ["--model-kwargs", '{"depth": 4}', "--max-batches", "none", "--resolution", "16"]
    argv += ["--filter", "null", "--no-checkpoint", "--ann", "--lr", "0.5", "--data-root", "d"]
    values = vars(parser.parse_args(argv))
    assert values == {
        "model_kwargs": {"depth": 4},
        "max_batches": None,
        "resolution": 16,
        "filter": None,
        "checkpoint": False,
        "spiking": False,
        "lr": 0.5,
        "data_root": "d",
    }
    assert TrainConfig(**values).lr == 0.5
    assert vars(parser.parse_args([])) == {}


def test_demo_help_shows_the_demo_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    from spikelottery.demo import DEMO_EPOCHS

    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"epochs per method (default: {DEMO_EPOCHS})" in text
    assert "(default: runs/demo)" in text and "(default: 0.4)" in text


# --- from test_bad_inputs_cli.py: Bad command lines get one line of error (status 2, the flag named), never a traceback.


# Quick settings, in case a check let a run through: the tiny VGG on 8x8 digits, 1 batch.
TINY_RUN_FLAGS = [
    "--model",
    "vgg_tiny",
    "--resolution",
    "8",
    "--timesteps",
    "2",
    "--epochs",
    "1",
    "--max-batches",
    "1",
    "--energy-batches",
    "1",
    "--no-progress",
    "-q",
]


def files_in(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def refused(argv: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path) -> str:
    """Run ``argv``; it must exit with status 2 before any work. Returns the error line."""
    before = files_in(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"spikelottery {argv[0]}: error: ")
    assert files_in(tmp_path) == before  # nothing written, nothing changed
    return last


def test_unknown_model_kwargs_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "run",
        *TINY_RUN_FLAGS,
        "--model-kwargs",
        '{"depht": 4}',
        "--out",
        str(tmp_path / "r"),
    ]
    line = refused(argv, capsys, tmp_path)
    assert "argument --model-kwargs:" in line and "'depht'" in line and "valid ones:" in line


def test_model_kwargs_key_the_run_sets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "run",
        *TINY_RUN_FLAGS,
        "--model-kwargs",
        '{"num_classes": 3}',
        "--out",
        str(tmp_path / "r"),
    ]
    line = refused(argv, capsys, tmp_path)
    assert "argument --model-kwargs:" in line and "'num_classes'" in line


def test_config_that_is_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "exp.toml"
    config.write_bytes(b'model = "vgg\xe9"\n')
    line = refused(["run", *TINY_RUN_FLAGS, "--config", str(config)], capsys, tmp_path)
    assert "argument --config:" in line and "exp.toml" in line and "not UTF-8" in line


def test_config_that_is_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = refused(["run", *TINY_RUN_FLAGS, "--config", str(tmp_path)], capsys, tmp_path)
    assert "argument --config:" in line and "is a folder" in line and "does not exist" not in line


def test_config_that_is_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = refused(
        ["run", *TINY_RUN_FLAGS, "--config", str(tmp_path / "no.toml")], capsys, tmp_path
    )
    assert "argument --config:" in line and "no.toml' does not exist" in line


def test_cifar_without_data_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "run",
        *TINY_RUN_FLAGS,
        "--dataset",
        "cifar10",
        "--resolution",
        "32",
        "--out",
        str(tmp_path / "r"),
    ]
    line = refused(argv, capsys, tmp_path)
    assert "argument --data-root:" in line and "'cifar10' is read from local files" in line


def test_invalid_filter_regex(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = refused(
        ["run", *TINY_RUN_FLAGS, "--filter", "conv[", "--out", str(tmp_path / "r")],
        capsys,
        tmp_path,
    )
    assert "argument --filter:" in line and "'conv[' is not a valid regular expression" in line


def test_resolution_the_model_cannot_take(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", *TINY_RUN_FLAGS, "--resolution", "2", "--out", str(tmp_path / "r")]
    line = refused(argv, capsys, tmp_path)
    assert "argument --resolution:" in line and "'vgg_tiny' takes images of at least 4x4" in line


def test_out_that_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "out").write_text("mine")
    line = refused(["run", *TINY_RUN_FLAGS, "--out", str(tmp_path / "out")], capsys, tmp_path)
    assert "argument --out:" in line and "is a file" in line


def test_out_under_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "out").write_text("mine")
    line = refused(
        ["run", *TINY_RUN_FLAGS, "--out", str(tmp_path / "out" / "run")], capsys, tmp_path
    )
    assert "argument --out:" in line and "cannot be created" in line


def test_out_holding_another_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "results.json").write_text(json.dumps({"config": {"pa": 0.9}}))
    line = refused(["run", *TINY_RUN_FLAGS, "--out", str(tmp_path)], capsys, tmp_path)
    assert "argument --out:" in line and "already holds a run" in line
    assert "--resume" in line and "--overwrite" in line


def test_resume_onto_another_experiments_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "results.json").write_text(json.dumps({"config": {"pa": 0.9}}))
    line = refused(["run", *TINY_RUN_FLAGS, "--out", str(tmp_path), "--resume"], capsys, tmp_path)
    assert (
        "argument --out:" in line and "different experiment (" in line and "pa: 0.9 -> 0.4" in line
    )


def test_resume_and_overwrite_together(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["run", *TINY_RUN_FLAGS, "--out", str(tmp_path), "--resume", "--overwrite"]
    line = refused(argv, capsys, tmp_path)
    assert "argument --overwrite:" in line and "choose one" in line


@pytest.mark.parametrize("dataset", ["digits", "cifar10_dvs"])
def test_download_of_a_data_set_that_cannot_be_downloaded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], dataset: str
) -> None:
    argv = [
        "run",
        *TINY_RUN_FLAGS,
        "--dataset",
        dataset,
        "--download",
        "--out",
        str(tmp_path / "r"),
    ]
    line = refused(argv, capsys, tmp_path)
    assert "argument --download:" in line and f"'{dataset}'" in line


def test_demo_onto_earlier_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "results.json").write_text("[]")
    argv = ["demo", "--out", str(tmp_path), "--epochs", "1", "--max-batches", "1", "-q"]
    line = refused(argv, capsys, tmp_path)
    assert "argument --out:" in line and "already holds demo results" in line
    assert "--overwrite" in line


def test_cifar_at_another_resolution_is_refused_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as info:
        main(
            [
                "run",
                "--dataset",
                "cifar10",
                "--data-root",
                str(tmp_path),
                "--resolution",
                "16",
                "--out",
                str(out),
            ]
        )
    err = capsys.readouterr().err
    assert info.value.code == 2 and "--resolution" in err and "32x32" in err
    assert "Traceback" not in err and not out.exists()
