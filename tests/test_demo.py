"""Tests of the demo's experiments and table (the demo itself runs in test_cli and test_main_job)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import spikelottery.engine
from spikelottery import demo as demo_module
from spikelottery.demo import DEMO_EPOCHS, DEMO_LAYERS, demo_configs, format_table
from spikelottery.engine import ConfigError


def test_demo_configs() -> None:
    configs = demo_configs("runs/x", epochs=3, seed=2, max_batches=1, progress=False)
    labels = [label for label, _ in configs]
    assert labels == ["dense SNN", "SNN ticket (lt)", "binarised SNN ticket (mp)"]
    assert [cfg.mode for _, cfg in configs] == ["dense", "lt", "mp"]
    for _, cfg in configs:
        assert (cfg.epochs, cfg.seed, cfg.max_batches, cfg.pa) == (3, 2, 1, 0.4)
        assert cfg.model_kwargs == {"config": list(DEMO_LAYERS)}
        assert cfg.out == f"runs/x/{cfg.mode}"
    assert all(cfg.out is None for _, cfg in demo_configs(None))
    assert demo_configs()[0][1].epochs == DEMO_EPOCHS


def test_format_table() -> None:
    table = format_table(
        [{"method": "x", "accuracy": 0.98, "kept_fraction": 0.6, "energy_mj": None, "seconds": 1.0}]
    )
    assert "98.00%" in table and "60.0%" in table and "n/a" in table
    lines = table.splitlines()
    assert len(lines) == 3 and len({len(line) for line in lines}) == 1  # aligned columns
    assert format_table([]).splitlines()[0].startswith("method")


def test_the_demo_is_still_importable_from_the_engine() -> None:
    from spikelottery.engine import DEMO_METHODS, demo

    assert demo is demo_module.demo and DEMO_METHODS is demo_module.DEMO_METHODS
    assert spikelottery.engine.format_table is format_table
    assert {"demo", "demo_configs", "format_table"} <= set(dir(spikelottery.engine))
    namespace: dict[str, object] = {}
    exec("from spikelottery.engine import *", namespace)
    assert set(spikelottery.engine.__all__) <= set(namespace)


def test_an_interrupted_demo_resumes(tmp_path, capsys) -> None:

    import pytest

    from spikelottery.cli import main

    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--epochs", "1", "--max-batches", "1", "--threads", "1"]
    argv += ["--no-progress", "-q"]
    assert main(argv) == 0
    dense = json.loads((out / "dense" / "results.json").read_text())
    # As if killed while the last method ran: its results and the demo's table missing.
    (out / "mp" / "results.json").unlink()
    (out / "results.json").unlink()
    capsys.readouterr()
    with pytest.raises(SystemExit):  # refused, naming the way on
        main(argv)
    assert "--resume" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*argv, "--resume", "--overwrite"])
    assert main([*argv, "--resume"]) == 0
    records = json.loads((out / "results.json").read_text())
    assert [r["mode"] for r in records] == ["dense", "lt", "mp"]
    again = json.loads((out / "dense" / "results.json").read_text())
    assert again["history"] == dense["history"]  # a finished method is not trained again
    assert again["accuracy"] == dense["accuracy"]


# --- from test_bad_inputs.py: Bad inputs to the Python API, the engine and the model zoo: each one gets a named error.


def files_in(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes ({} if the folder does not exist)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


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
