"""Shared helpers for the LlamaIndex tests: fixed prices, LLM factories, expected numbers."""

from __future__ import annotations

from typing import Any

from llama_index.core.callbacks import CallbackManager
from llama_index.embeddings.openai import OpenAIEmbedding
from llama_index.llms.openai import OpenAI

from tokenspy.testing import FakeProvider
from tokenspy_core import CallRecord

MODEL = "gpt-4o-mini"
EMBED_MODEL = "text-embedding-3-small"
# USD per million tokens (input, output, cached input): fixed here so exact costs do not depend on
# the bundled price data.
PRICES = {MODEL: (0.15, 0.60, 0.075), EMBED_MODEL: (0.02, 0.0, 0.02)}
# The same rates in femto-USD per token (1e15 femto = 1 USD; $0.15 / 1M tokens = 150_000_000 femto).
FEMTO = {MODEL: (150_000_000, 600_000_000, 75_000_000), EMBED_MODEL: (20_000_000, 0, 20_000_000)}
USAGE = {"stream_options": {"include_usage": True}}


def openai_llm(fp: FakeProvider, *, stream_usage: bool = True, handlers: list[Any] | None = None,
               **kwargs: Any) -> OpenAI:
    if handlers is not None:
        kwargs["callback_manager"] = CallbackManager(handlers)
    return OpenAI(model=MODEL, api_base=fp.openai_base_url, api_key="test", max_retries=0,
                  additional_kwargs=USAGE if stream_usage else {}, **kwargs)


def openai_embedding(fp: FakeProvider, **kwargs: Any) -> OpenAIEmbedding:
    return OpenAIEmbedding(model=EMBED_MODEL, api_base=fp.openai_base_url, api_key="test", max_retries=0,
                           **kwargs)


def expected_cost(model: str, input_tokens: int, output_tokens: int, cached: int = 0) -> int:
    rate_in, rate_out, rate_cached = FEMTO[model]
    return (input_tokens - cached) * rate_in + cached * rate_cached + output_tokens * rate_out


def logged(fp: FakeProvider, path: str = "/v1/chat/completions") -> list[dict[str, Any]]:
    """Usage the fake provider computed for each request to `path`, oldest first."""
    return [entry["usage"] for entry in fp.requests if entry["path"] == path]


def assert_matches(record: CallRecord, usage: dict[str, Any], model: str = MODEL) -> None:
    """The record carries exactly the provider's numbers, and the exact cost they imply."""
    if "completion_tokens" in usage:
        cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
        reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
        expected = (usage["prompt_tokens"], usage["completion_tokens"], cached, reasoning)
    else:  # embeddings
        cached, expected = 0, (usage["prompt_tokens"], 0, 0, 0)
    got = (record.input_tokens, record.output_tokens, record.cached_input_tokens, record.reasoning_tokens)
    assert got == expected
    assert record.cost_femto == expected_cost(model, expected[0], expected[1], cached)
