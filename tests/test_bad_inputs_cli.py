"""Bad command lines get one line of error (status 2, the flag named), never a traceback.

Each case runs ``spikelottery.cli.main`` in process and checks that it stops before any
work: the output folder is left exactly as it was.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from spikelottery.cli import main

# Quick settings, in case a check let a run through: the tiny VGG on 8x8 digits, 1 batch.
QUICK = [
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


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
    argv = ["run", *QUICK, "--model-kwargs", '{"depht": 4}', "--out", str(tmp_path / "r")]
    line = refused(argv, capsys, tmp_path)
    assert "argument --model-kwargs:" in line and "'depht'" in line and "valid ones:" in line


def test_model_kwargs_key_the_run_sets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["run", *QUICK, "--model-kwargs", '{"num_classes": 3}', "--out", str(tmp_path / "r")]
    line = refused(argv, capsys, tmp_path)
    assert "argument --model-kwargs:" in line and "'num_classes'" in line


def test_config_that_is_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "exp.toml"
    config.write_bytes(b'model = "vgg\xe9"\n')
    line = refused(["run", *QUICK, "--config", str(config)], capsys, tmp_path)
    assert "argument --config:" in line and "exp.toml" in line and "not UTF-8" in line


def test_config_that_is_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = refused(["run", *QUICK, "--config", str(tmp_path)], capsys, tmp_path)
    assert "argument --config:" in line and "is a folder" in line and "does not exist" not in line


def test_config_that_is_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = refused(["run", *QUICK, "--config", str(tmp_path / "no.toml")], capsys, tmp_path)
    assert "argument --config:" in line and "no.toml' does not exist" in line


def test_cifar_without_data_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "run",
        *QUICK,
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
        ["run", *QUICK, "--filter", "conv[", "--out", str(tmp_path / "r")], capsys, tmp_path
    )
    assert "argument --filter:" in line and "'conv[' is not a valid regular expression" in line


def test_resolution_the_model_cannot_take(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", *QUICK, "--resolution", "2", "--out", str(tmp_path / "r")]
    line = refused(argv, capsys, tmp_path)
    assert "argument --resolution:" in line and "'vgg_tiny' takes images of at least 4x4" in line


def test_out_that_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "out").write_text("mine")
    line = refused(["run", *QUICK, "--out", str(tmp_path / "out")], capsys, tmp_path)
    assert "argument --out:" in line and "is a file" in line


def test_out_under_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "out").write_text("mine")
    line = refused(["run", *QUICK, "--out", str(tmp_path / "out" / "run")], capsys, tmp_path)
    assert "argument --out:" in line and "cannot be created" in line


def test_out_holding_another_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "results.json").write_text(json.dumps({"config": {"pa": 0.9}}))
    line = refused(["run", *QUICK, "--out", str(tmp_path)], capsys, tmp_path)
    assert "argument --out:" in line and "already holds a run" in line
    assert "--resume" in line and "--overwrite" in line


def test_resume_onto_another_experiments_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "results.json").write_text(json.dumps({"config": {"pa": 0.9}}))
    line = refused(["run", *QUICK, "--out", str(tmp_path), "--resume"], capsys, tmp_path)
    assert (
        "argument --out:" in line and "different experiment (" in line and "pa: 0.9 -> 0.4" in line
    )


def test_resume_and_overwrite_together(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["run", *QUICK, "--out", str(tmp_path), "--resume", "--overwrite"]
    line = refused(argv, capsys, tmp_path)
    assert "argument --overwrite:" in line and "choose one" in line


@pytest.mark.parametrize("dataset", ["digits", "cifar10_dvs"])
def test_download_of_a_data_set_that_cannot_be_downloaded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], dataset: str
) -> None:
    argv = ["run", *QUICK, "--dataset", dataset, "--download", "--out", str(tmp_path / "r")]
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
