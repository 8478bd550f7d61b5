"""pytest fixture: `pytest_plugins = ["tokenspy.testing.fixtures"]` in a conftest.py enables it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ._server import FakeProvider

__all__ = ["fake_provider"]


@pytest.fixture
def fake_provider() -> Iterator[FakeProvider]:
    """A started `FakeProvider` with default settings, stopped after the test (function scope)."""
    with FakeProvider() as provider:
        yield provider
