"""The README's and the docs' Python examples run exactly as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"```python\n(.*?)```", re.S)


def _blocks(path: Path) -> list[str]:
    return FENCE.findall(path.read_text(encoding="utf-8"))


def test_readme_has_the_three_commands() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert 'pip install -e ".[dev]"' in text
    assert "\npytest" in text
    assert "spikelottery demo" in text


@pytest.mark.parametrize("doc", ["README.md", "docs/concepts.md", "docs/index.md"])
def test_python_examples_run(doc: str) -> None:
    blocks = _blocks(ROOT / doc)
    assert blocks, f"{doc} has no python example"
    namespace: dict[str, object] = {}
    for block in blocks:
        exec(compile(block, doc, "exec"), namespace)


def test_quickstart_examples_run() -> None:
    pytest.importorskip("spikingjelly")
    namespace: dict[str, object] = {}
    for block in _blocks(ROOT / "docs" / "quickstart.md"):
        exec(compile(block, "docs/quickstart.md", "exec"), namespace)
