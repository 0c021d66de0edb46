"""Repository-wide pytest setup: the example notebooks are long end-to-end runs.

They train real models for minutes, so they carry the ``slow`` marker with the other
end-to-end runs: ``pytest`` (the quick suite) deselects them, ``pytest -m slow`` runs them.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.slow)
