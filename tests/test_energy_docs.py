"""docs/energy.md holds what its script prints (issue 24, item 5): every generated block of
the page equals the output of ``python docs/_scripts/energy_views.py``, and the page's
code examples give the values their comments say."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import torch

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "energy.md"
SCRIPT = ROOT / "docs" / "_scripts" / "energy_views.py"
BLOCK = re.compile(r"<!-- energy_views.py: (\w+) -->\n(.*?)\n<!-- end -->", re.S)


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("energy_views", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _page_blocks() -> dict[str, str]:
    found = BLOCK.findall(PAGE.read_text(encoding="utf-8"))
    names = [name for name, _ in found]
    assert len(names) == len(set(names)), f"a block appears twice on the page: {names}"
    return dict(found)


def test_every_generated_block_of_the_page_is_what_the_script_prints() -> None:
    printed = _script().blocks()
    on_page = _page_blocks()
    assert sorted(on_page) == sorted(printed), "the page and the script name other blocks"
    for name, text in printed.items():
        assert on_page[name] == text, (
            f"docs/energy.md block {name!r} is stale: run python docs/_scripts/energy_views.py "
            "and paste its output"
        )


def test_the_page_says_which_command_makes_its_figures() -> None:
    text = PAGE.read_text(encoding="utf-8")
    assert "python docs/_scripts/energy_views.py" in text
    assert "0.708 mJ / 4.6 pJ" in _page_blocks()["macs"]  # the paper's arithmetic, generated


def test_the_conv_synops_example_of_the_page() -> None:
    from spikelottery.energy import conv_synops

    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 0, 0] = x[0, 0, 1, 2] = 1  # 2 spikes
    mask = torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 1, 0]])  # 5 kept taps
    assert "tensor([2.]): 1 + 1" in PAGE.read_text(encoding="utf-8")
    assert conv_synops(x, mask.view(1, 1, 3, 3), padding=1, stride=2).tolist() == [2.0]
