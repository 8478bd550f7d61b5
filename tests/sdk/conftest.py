"""SDK adapter tests: real openai / anthropic clients (max_retries=0) against the fake provider."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import openai
import pytest

from tokenspy import _instrument
from tokenspy._observe import instrument_sdks
from tokenspy.testing import FakeProvider
from tokenspy.testing.fixtures import fake_provider  # noqa: F401  (makes the fixture available here)


@pytest.fixture(autouse=True)
def _sdk_test_state() -> Iterator[None]:
    instrument_sdks()  # the SDKs are imported: patched now (what the first profile would do)
    yield
    _instrument.set_enabled(True)


@pytest.fixture
def fp(fake_provider: FakeProvider) -> FakeProvider:  # noqa: F811
    """Non-zero cache numbers, so every cost assertion also proves the cached-token rates."""
    fake_provider.cached_tokens = 4
    fake_provider.cache_write_tokens = 2
    return fake_provider


@pytest.fixture
def oai(fp: FakeProvider) -> openai.OpenAI:
    return openai.OpenAI(base_url=fp.openai_base_url, api_key="sk-fake", max_retries=0)


@pytest.fixture
def aoai(fp: FakeProvider) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=fp.openai_base_url, api_key="sk-fake", max_retries=0)


@pytest.fixture
def ant(fp: FakeProvider) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=fp.anthropic_base_url, api_key="sk-ant-fake", max_retries=0)


@pytest.fixture
def aant(fp: FakeProvider) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=fp.anthropic_base_url, api_key="sk-ant-fake", max_retries=0)
