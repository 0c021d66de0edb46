"""The public surface: explicit exports, one version, typed package, doctests."""

from __future__ import annotations

import doctest
import importlib
import importlib.metadata
import logging
import pkgutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import spikelottery
from spikelottery._compat import quiet_cuda_home_probe


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


def test_the_top_level_is_small() -> None:
    assert len(spikelottery.__all__) <= 20
    assert {"sparsify", "densify", "LIFNeuron", "TrainConfig", "run", "save_ticket"} <= set(
        spikelottery.__all__
    )


@pytest.mark.parametrize("name", sorted(spikelottery.MOVED))
def test_moved_names_warn_and_name_their_new_home(name: str) -> None:
    home = spikelottery.MOVED[name]
    with pytest.warns(FutureWarning, match=rf"spikelottery\.{name} moved: use .*0\.2"):
        old = getattr(spikelottery, name)
    assert old is getattr(importlib.import_module(home), name)
    assert name not in spikelottery.__all__


def test_functional_holds_the_pure_tensor_functions() -> None:
    from spikelottery import functional

    for name in functional.__all__:
        obj = getattr(functional, name)
        assert callable(obj) and not isinstance(obj, type), name


# Public names still defined in private modules, in files owned by other work in progress
# (issue 26 item 1: _selection.py; issue 24: energy/_*.py); each entry is to be moved to a
# public module, and then removed from here.
_PRIVATE_HOMES_PENDING: set[tuple[str, str]] = set()


def test_public_names_are_defined_in_public_modules() -> None:
    found = set()
    for module_name in _modules():
        if any(part.startswith("_") for part in module_name.split(".")[1:]):
            continue
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", []):
            home = getattr(getattr(module, name, None), "__module__", None) or ""
            if home.startswith("spikelottery") and any(p.startswith("_") for p in home.split(".")):
                found.add((home, name))
    assert found <= _PRIVATE_HOMES_PENDING, sorted(found - _PRIVATE_HOMES_PENDING)


# --- from test_bad_inputs.py: Bad inputs to the Python API, the engine and the model zoo: each one gets a named error.


def test_the_cuda_home_log_line_is_hidden_until_its_module_is_imported(monkeypatch) -> None:
    # torch.utils.cpp_extension logs "No CUDA runtime is found" when first imported, which
    # a first compile does on a machine without CUDA; a stand-in name plays "not imported".
    name = "spikelottery_test_not_imported"
    monkeypatch.setattr(spikelottery._compat, "_CPP_EXTENSION", name)
    logger = logging.getLogger(name)
    # Levels, not isEnabledFor: another test or library may have raised the root level.
    with quiet_cuda_home_probe():
        assert logger.level == logging.ERROR
        assert not logger.isEnabledFor(logging.WARNING)
    assert logger.level == logging.NOTSET
    monkeypatch.setitem(sys.modules, name, sys)  # imported: nothing is changed any more
    with quiet_cuda_home_probe():
        assert logger.level == logging.NOTSET
