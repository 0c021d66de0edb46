"""The public surface: explicit exports, one version, typed package, doctests."""

from __future__ import annotations

import doctest
import importlib
import importlib.metadata
import pkgutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import spikelottery


def test_all_exports_resolve() -> None:
    for name in spikelottery.__all__:
        assert hasattr(spikelottery, name), name


def test_version_single_source() -> None:
    assert importlib.metadata.version("spikelottery") == spikelottery.__version__
    root = Path(__file__).resolve().parents[1]
    mentions = [
        p
        for p in (root / "src").rglob("*.py")
        if '__version__ = "' in p.read_text(encoding="utf-8")
    ]
    assert [p.name for p in mentions] == ["_version.py"]


def test_py_typed_shipped() -> None:
    assert (Path(spikelottery.__file__).parent / "py.typed").exists()


def _modules() -> list[str]:
    names = ["spikelottery"]
    for info in pkgutil.walk_packages(spikelottery.__path__, "spikelottery."):
        if info.name.endswith("__main__"):
            continue
        names.append(info.name)
    return names


@pytest.mark.parametrize("name", _modules())
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    # Docstring examples assume `import torch`, `from torch import nn`, `import numpy as np`.
    result = doctest.testmod(
        module,
        extraglobs={"torch": torch, "nn": nn, "np": np},
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
        verbose=False,
    )
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"
