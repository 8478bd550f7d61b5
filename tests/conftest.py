"""Suite-wide: internal tokenspy errors fail tests (strict), and every test starts from zero."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

os.environ["TOKENSPY_STRICT"] = "1"
# pytester drives the pytest plugin's tests (tests/pytest_plugin): it must be named here, in the
# top-level conftest, since pytest refuses `pytest_plugins` in a conftest it loads after startup.
pytest_plugins = ["pytester"]

from tokenspy import _instrument  # noqa: E402
from tokenspy_core import PRICES, config, default_tracker  # noqa: E402
from tokenspy_core.tracker import DEFAULT_MAX_RECORDS, set_records_limit  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_tracker() -> Iterator[None]:
    default_tracker().reset()
    yield
    default_tracker().reset()
    PRICES.clear_overrides()
    set_records_limit(DEFAULT_MAX_RECORDS)
    config.capture_content = False
    config.tags = {}
    # The first profile/session patches the SDKs for the rest of the process; a test must not
    # inherit that from whichever test happened to run before it.
    observe = sys.modules.get("tokenspy._observe")
    if observe is not None:
        observe.uninstrument_sdks()
    _instrument._done = False
    _instrument._wanted = False
    _instrument.set_enabled(True)
