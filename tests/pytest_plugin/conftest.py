"""The plugin is tested by running pytest on small test files (pytester, enabled in tests/conftest.py)."""

from __future__ import annotations

import pytest
from plugin_files import COSTS, LEAN


@pytest.fixture(autouse=True)
def _lean_inner_runs(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    # After pytester is made: it clears PYTEST_ADDOPTS so that the outer run's cannot leak in.
    monkeypatch.setenv("PYTEST_ADDOPTS", LEAN)


@pytest.fixture
def costs(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester directory holding test_costs.py (see plugin_files.py)."""
    pytester.makepyfile(test_costs=COSTS)
    return pytester
