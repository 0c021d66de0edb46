"""docs/extending.md: a model, a data set, a search method, a method and a hardware preset
registered from outside the package and run through ``spikelottery run``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "extending.md"


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The page's Python snippets, in order, as the module ``my_plugin``."""
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 5, "the page shows a model, a data set, a search, a method, a preset"
    folder = tmp_path_factory.mktemp("plugin")
    (folder / "my_plugin.py").write_text("\n".join(blocks), encoding="utf-8")
    return folder


def _cli(plugin_dir: Path, *args: str, env: dict[str, str] | None = None) -> str:
    paths = [str(plugin_dir), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]
    full = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    full.pop("SPIKELOTTERY_PLUGINS", None)
    full.update(env or {})
    done = subprocess.run(
        [sys.executable, "-m", "spikelottery", *args],
        capture_output=True,
        text=True,
        env=full,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_plugin_registrations_run_through_spikelottery_run(
    plugin_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    _cli(
        plugin_dir,
        "--plugin", "my_plugin", "run",
        "--model", "my_mlp", "--dataset", "my_blobs", "--method", "my-oneshot",
        "--pa", "0.5", "--energy-preset", "fp32-7nm", "--epochs", "1",
        "--max-batches", "2", "--out", str(out), "--no-progress", "-q",
    )  # fmt: skip
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    cfg = results["config"]
    assert (cfg["model"], cfg["dataset"], cfg["method"]) == ("my_mlp", "my_blobs", "my-oneshot")
    assert (cfg["search"], cfg["mode"], cfg["energy_preset"]) == ("my-magnitude", "lt", "fp32-7nm")
    assert results["kept_fraction"] == pytest.approx(0.5)
    # The run trained what the method says: one stage "train", priced at the 7 nm preset.
    assert [h["stage"] for h in results["history"]] == ["train"]
    assert results["energy"]["options"]["e_mac"] == 1.31
    assert results["energy"]["preset"] == "fp32-7nm"


def test_plugin_names_appear_in_the_cli_lists(plugin_dir: Path) -> None:
    listed = _cli(plugin_dir, "list", "searches", "--plugin=my_plugin")
    assert "my-magnitude: one-shot magnitude pruning" in listed
    hardware = _cli(plugin_dir, "--plugin", "my_plugin", "list", "hardware", "--json")
    rows = {r["name"]: r for r in json.loads(hardware)}
    # The 7 nm preset is a new name; the short name fp32 still means the 45 nm one.
    assert rows["fp32-7nm"]["aliases"] == [] and rows["fp32-45nm"]["aliases"] == ["fp32"]
    models = _cli(plugin_dir, "models", "--json", env={"SPIKELOTTERY_PLUGINS": "my_plugin"})
    assert "my_mlp" in [r["name"] for r in json.loads(models)]
    help_text = _cli(plugin_dir, "--plugin", "my_plugin", "run", "--help")
    assert "my_blobs" in help_text and "my-oneshot" in help_text


def test_a_plugin_that_fails_to_import_is_named(plugin_dir: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [sys.executable, "-m", "spikelottery", "--plugin", "no_such_plugin", "list", "models"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 1
    assert "plugin 'no_such_plugin' (--plugin) failed to import" in done.stderr


def test_an_installed_entry_point_is_loaded_without_a_flag(
    plugin_dir: Path, tmp_path: Path
) -> None:
    # A minimal installed distribution whose spikelottery.plugins entry point is my_plugin.
    info = tmp_path / "my_plugin_dist-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-plugin-dist\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[spikelottery.plugins]\nmine = my_plugin\n")
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), str(plugin_dir), str(ROOT / "src")])}
    listed = _cli(plugin_dir, "list", "models", "--json", env=env)
    assert "my_mlp" in [r["name"] for r in json.loads(listed)]
