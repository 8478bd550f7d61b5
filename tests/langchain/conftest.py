"""LangChain tests: real langchain-core runnables and chat models against the fake provider."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from langchain_core.globals import set_llm_cache
from lc_helpers import PRICES

import tokenspy
from tokenspy import _instrument
from tokenspy.langchain import TokenSpyHandler
from tokenspy.testing import FakeProvider
from tokenspy.testing.fixtures import fake_provider  # noqa: F401  (makes the fixture available here)


@pytest.fixture(autouse=True)
def _langchain_test_state() -> Iterator[None]:
    for model, (i, o, r, w) in PRICES.items():
        tokenspy.set_price(model, input=i, output=o, cached_input=r, cache_write=w)
    yield
    tokenspy.set_handler(None)
    set_llm_cache(None)


@pytest.fixture
def fp(fake_provider: FakeProvider) -> FakeProvider:  # noqa: F811
    return fake_provider


@pytest.fixture
async def aio() -> AsyncIterator[httpx.AsyncClient]:
    """An async HTTP client for this test's event loop, closed in it.

    langchain-openai's cached default client is bound to the first loop that used it, and every
    async test runs in a loop of its own (reference §4.5). At most 16 connections: the stdlib fake
    server keeps a short queue of connections waiting to be accepted.
    """
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=16)) as client:
        yield client


@pytest.fixture
def handler() -> TokenSpyHandler:
    return TokenSpyHandler()


@pytest.fixture
def no_sdk_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only LangChain's callbacks: tokenspy's SDK interception is off (`init(auto_instrument=False)`)."""
    monkeypatch.setattr(_instrument, "_enabled", False)


@pytest.fixture
def sdk_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    """tokenspy's SDK interception on too: the SDK call merges into the handler's record."""
    monkeypatch.setattr(_instrument, "_enabled", True)
    _instrument.auto_instrument()


@pytest.fixture(params=["langchain_only", "with_sdk_layer"])
def layers(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways a LangChain call is seen; either way it must make one record with the same numbers."""
    monkeypatch.setattr(_instrument, "_enabled", request.param == "with_sdk_layer")
    _instrument.auto_instrument()
    return str(request.param)
