"""A sweep's worker processes see the same entries behind the runs' names as the sweep.

A hardware preset replaced (``overwrite=True``) only in the sweep's process (a notebook, a
``__main__`` block) used to be the built-in one again in every spawned worker: the same
SPEC priced at ``e_mac = 100`` with one worker and at 4.6 with two, silently.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from _sweep_testing import write_spec
from spikelottery.energy.hardware import HARDWARE_PRESETS, HardwarePreset, register_hardware_preset
from spikelottery.errors import SpikeLotteryError
from spikelottery.sweep import sweep
from spikelottery.sweep.registered import check_registered, registered

SPEC = """
[base]
model = "vgg_tiny"
dataset = "digits"
epochs = 1
max_batches = 1
energy_batches = 1
batch_size = 32
energy_preset = "fp32-45nm"

[grid]
seed = [0, 1]
"""


@pytest.fixture
def replaced_preset() -> Iterator[None]:
    """``fp32-45nm`` replaced in this process only, put back afterwards."""
    original = HARDWARE_PRESETS["fp32-45nm"]
    register_hardware_preset(
        HardwarePreset("fp32-45nm", 100.0, 50.0, 32, "replaced in this process"), overwrite=True
    )
    try:
        yield
    finally:
        register_hardware_preset(original, overwrite=True)


def test_the_same_entries_pass_and_a_replaced_one_is_named() -> None:
    mine = registered()
    config = {"model": "vgg_tiny", "dataset": "digits", "energy_preset": "fp32-45nm"}
    check_registered(config, mine)  # the same process: nothing to say
    changed = {**mine, "energy_preset": {**mine["energy_preset"], "fp32-45nm": "another"}}
    with pytest.raises(SpikeLotteryError, match=r"energy_preset 'fp32-45nm' is another"):
        check_registered(config, changed)
    # a name this process does not know is left to the run's own check
    check_registered({"model": "not-registered"}, {"model": {"not-registered": "x"}})


@pytest.mark.usefixtures("replaced_preset")
def test_workers_refuse_an_entry_replaced_only_in_the_sweep(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, SPEC)
    result = sweep(spec, tmp_path / "sweep", workers=2)
    assert len(result.outcomes) == 2
    for outcome in result.outcomes:
        failed = json.loads((outcome.run.folder / "failed.json").read_text(encoding="utf-8"))
        assert "energy_preset 'fp32-45nm' is" in failed["message"]
        assert not (outcome.run.folder / "results.json").exists()
    # one worker (this process) prices with the replaced preset
    one = sweep(spec, tmp_path / "one", workers=1)
    for outcome in one.outcomes:
        results = json.loads((outcome.run.folder / "results.json").read_text(encoding="utf-8"))
        assert results["energy"]["options"]["e_mac"] == 100.0
