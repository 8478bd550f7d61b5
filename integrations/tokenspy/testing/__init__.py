"""A fake OpenAI- and Anthropic-compatible HTTP API for tests, examples and CI: `FakeProvider`.

It answers with real, recomputable token usage (tiktoken counts), streams like the real APIs, and
can fail on demand (flags). Stdlib only: importing it needs neither the SDKs nor pytest; the pytest
fixture `fake_provider` lives in `tokenspy.testing.fixtures` and is imported lazily from here.
See docs/testing.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._server import DEFAULT_REPLY, SETTINGS, FakeProvider
from ._wire import FLAGS

if TYPE_CHECKING:
    from .fixtures import fake_provider

__all__ = ["DEFAULT_REPLY", "FLAGS", "SETTINGS", "FakeProvider", "fake_provider"]


def __getattr__(name: str) -> Any:
    # Lazy so that `import tokenspy.testing` does not import pytest.
    if name == "fake_provider":
        from .fixtures import fake_provider

        return fake_provider
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
