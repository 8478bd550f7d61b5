"""LlamaIndex tests: real llama-index-core objects, llama-index-llms-openai against the fake provider.

Every test leaves LlamaIndex's process-wide state as it found it: the root dispatcher's handlers,
`llama_index.core.global_handler` and `Settings.callback_manager`.
"""

from __future__ import annotations

from collections.abc import Iterator

import llama_index.core
import pytest
from li_helpers import PRICES
from llama_index.core import Settings
from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]

import tokenspy
from tokenspy.llamaindex import TokenSpyHandler, uninstrument
from tokenspy.llamaindex.instrumentation import TAP
from tokenspy.llamaindex.legacy import LEGACY
from tokenspy.testing import FakeProvider
from tokenspy.testing.fixtures import fake_provider  # noqa: F401  (makes the fixture available here)


@pytest.fixture(autouse=True)
def _llamaindex_state() -> Iterator[None]:
    uninstrument()  # a clean slate, whatever ran before
    root = get_dispatcher()
    span_handlers, event_handlers = list(root.span_handlers), list(root.event_handlers)
    global_handler = llama_index.core.global_handler
    for model, (i, o, r) in PRICES.items():
        tokenspy.set_price(model, input=i, output=o, cached_input=r)
    # The SDK layer (patched into the openai classes once any session opened in this process) would
    # merge its exact usage into our calls: off, so each test sees what LlamaIndex alone reports.
    # `sdk_layer` switches it on.
    tokenspy.init(auto_instrument=False)
    yield
    tokenspy.init(auto_instrument=True)
    # What LlamaIndex swallowed from our dispatcher handlers (strict mode re-raises into it).
    errors = list(TAP.internal_errors)
    TAP.internal_errors.clear()
    tokenspy.set_handler(None)
    uninstrument()
    Settings._callback_manager = None
    assert root.span_handlers == span_handlers and root.event_handlers == event_handlers
    assert llama_index.core.global_handler is global_handler
    assert not errors, f"tokenspy internal errors inside LlamaIndex handlers: {errors!r}"
    assert not TAP._open and not TAP._llm and not TAP._refused and not LEGACY.drain()


@pytest.fixture
def fp(fake_provider: FakeProvider) -> FakeProvider:  # noqa: F811
    return fake_provider


@pytest.fixture
def sdk_layer() -> None:
    """The openai SDK layer intercepts the requests too (as it does under a profile or session)."""
    tokenspy.init(auto_instrument=True)


@pytest.fixture
def handler() -> TokenSpyHandler:
    return TokenSpyHandler()


@pytest.fixture
def global_handler(handler: TokenSpyHandler) -> TokenSpyHandler:
    tokenspy.set_handler(handler)
    return handler
