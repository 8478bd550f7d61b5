"""Suite-wide: internal tokenspy errors fail tests (strict), and every test starts from zero."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

os.environ["TOKENSPY_STRICT"] = "1"

from tokenspy_core import PRICES, config, default_tracker  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_tracker() -> Iterator[None]:
    default_tracker().reset()
    yield
    default_tracker().reset()
    PRICES.clear_overrides()
    config.capture_content = False
    config.tags = {}
