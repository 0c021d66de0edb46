"""SPEC files: tables, axes, zipped axes, several grids, errors that name the key; run ids."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _sweep_testing import write_spec
from spikelottery.engine import TrainConfig
from spikelottery.sweep import (
    SpecError,
    SweepSpec,
    expand,
    load_spec,
    parse_shard,
    plan_runs,
    run_id,
)
from spikelottery.sweep.plan import select_shard


def test_grid_crosses_and_zip_varies_together(tmp_path: Path) -> None:
    spec = load_spec(
        write_spec(
            tmp_path,
            """
            [base]
            epochs = 1
            [grid]
            method = ["mplt", "mpslt"]
            seed = [0, 1, 2]
            [[zip]]
            timesteps = [1, 4]
            beta = [0.9, 0.5]
            """,
        )
    )
    points = expand(spec)
    assert len(points) == 2 * 3 * 2
    assert {(p["timesteps"], p["beta"]) for p in points} == {(1, 0.9), (4, 0.5)}
    assert all(p["epochs"] == 1 for p in points)
    assert spec.axes == ["method", "seed", "timesteps", "beta"]


def test_several_grids_are_a_union(tmp_path: Path) -> None:
    spec = load_spec(
        write_spec(
            tmp_path,
            """
            [base]
            model = "spikformer_micro"
            [[grid]]
            method = ["pepsp-lt", "pepsp-slt"]
            [[grid]]
            method = ["multisp-lt", "multisp-slt"]
            pb = [0.1, 0.3]
            """,
        )
    )
    runs = plan_runs(spec, tmp_path / "out")
    assert len(runs) == 2 + 4
    assert {(r.config.method, r.config.pb) for r in runs} >= {
        ("pepsp-lt", 0.0),
        ("multisp-slt", 0.3),
    }


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[grid]\npa = 0.4\n", "pa must be a non-empty list"),
        ("[grid]\npa = []\n", "pa must be a non-empty list"),
        ("[grid]\nalpha = [1]\n", "unknown setting.*'alpha'"),
        ("[base]\nlearning_rate = 1\n", r"\[base\] has unknown setting"),
        ("[grids]\npa = [0.1]\n", "unknown table.*'grids'"),
        ("[[zip]]\npa = [0.1, 0.2]\nseed = [1]\n", "must have one length"),
        ("[grid]\npa = [0.1]\n[[zip]]\npa = [0.2]\n", "more than one axis"),
        ("[base]\nout = 'x'\n", "the sweep sets out"),
        ("[grid]\npa = [0.2, 1.5]\n", r"run pa=1.5: pa must be"),
        ("[grid]\nmethod = ['mpslt', 'nope']\n", "run method=nope: unknown method"),
        ("[base]\nmode='lt'\n[grid]\nmethod = ['mpslt']\n", "method 'mpslt' sets mode='mp'"),
        ("[grid]\nmethod=['multisp-slt']\npb=[0.0]\n", "prunes patches: pb must be > 0"),
        ("[sweep]\ntitle = 'x'\n", r"\[sweep\] knows 'name' and 'description'"),
        ("[grid\n", "is not valid TOML"),
        ("", "the SPEC sets nothing"),
        ("[sweep]\nname = 'empty'\n[base]\n[grid]\n", "the SPEC sets nothing"),
        ("zip = 5\n", r"\[zip\] must be a table of lists.*got zip = 5"),
        ("grid = 5\n", r"\[grid\] must be a table of lists.*got grid = 5"),
        ("grid = [5]\n", r"\[grid\] must be a table of lists"),
        ("base = 5\n", r"\[base\] must be a table, got base = 5"),
    ],
)
def test_bad_specs_name_the_key(tmp_path: Path, text: str, match: str) -> None:
    path = write_spec(tmp_path, text)
    with pytest.raises(SpecError, match=match) as info:
        plan_runs(load_spec(path), tmp_path / "out")
    assert str(path) in str(info.value)
    assert not (tmp_path / "out").exists()


def test_missing_folder_and_binary_specs(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "nope.toml")
    with pytest.raises(SpecError, match="is a folder"):
        load_spec(tmp_path)
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe[grid]")
    with pytest.raises(SpecError, match="not UTF-8"):
        load_spec(tmp_path / "bin.toml")


def test_run_id_ignores_runtime_settings_and_defaults() -> None:
    a = TrainConfig(pa=0.3, out=None)
    assert run_id(a) == run_id(TrainConfig(pa=0.3, out="x", device="cpu", num_workers=2))
    assert run_id(a) == run_id(TrainConfig(pa=0.3, seed=0, beta=0.99, out=None))  # defaults
    assert run_id(a) != run_id(TrainConfig(pa=0.3, seed=1, out=None))
    assert run_id(TrainConfig.for_method("mpslt", out=None)) != run_id(TrainConfig(out=None))


def test_run_ids_are_stable_across_sessions() -> None:
    # A hash that changed between releases would rerun every finished sweep.
    # The id is the SHA-256 of the sorted JSON of the settings that differ from the defaults.
    assert run_id(TrainConfig(out=None)) == hashlib.sha256(b"{}").hexdigest()[:12]
    expected = hashlib.sha256(b'{"pa":0.5,"seed":3}').hexdigest()[:12]
    assert run_id(TrainConfig(seed=3, pa=0.5, out=None)) == expected
    assert run_id(TrainConfig.for_method("slt", pa=0.5, out=None)) == run_id(
        TrainConfig(method="slt", mode="lt", pa=0.5, out=None)
    )


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 40), st.integers(1, 7))
def test_shards_cover_the_plan_once(n_runs: int, n: int) -> None:
    runs = [object() for _ in range(n_runs)]
    shares = [select_shard(runs, (i, n)) for i in range(1, n + 1)]  # type: ignore[arg-type]
    flat = [id(r) for share in shares for r in share]
    assert sorted(flat) == sorted(id(r) for r in runs)


@pytest.mark.parametrize("text", ["0/2", "3/2", "1", "a/b", "1/0"])
def test_bad_shards(text: str) -> None:
    with pytest.raises(Exception, match="--shard"):
        parse_shard(text)


def test_spec_from_python() -> None:
    spec = SweepSpec(base={"epochs": 1}, grids=[{"seed": [0, 1]}], zips=[{"pa": [0.1, 0.2]}])
    assert len(expand(spec)) == 4
