"""What the handler reads of a response's `raw`: Anthropic's fast mode, usage that is no usage shape.

llama-index-llms-anthropic does not work with anthropic 2.x: its non-stream `raw` (the dumped Message,
`usage.speed` included) is given here by a CustomLLM, through LlamaIndex's real callbacks.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

import httpx
import pytest
from li_helpers import EMBED_MODEL
from llama_index.core.base.llms.types import CompletionResponse, CompletionResponseGen, LLMMetadata
from llama_index.core.llms import CustomLLM
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.embeddings.openai import OpenAIEmbedding

from tokenspy.llamaindex import TokenSpyHandler
from tokenspy_core import usage

FAST_MODEL = "claude-opus-4-8"  # genai-prices: $5 / $25 per million, fast mode $10 / $50


class RawLLM(CustomLLM):
    """An LLM answering "Hello friend" with the provider payload `raw` it is given."""

    model: str = "gpt-4o-mini"
    raw: Any = None

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=self.model)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text="Hello friend", raw=self.raw)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        raise NotImplementedError


def test_anthropic_fast_mode_in_raw_usage_is_priced_at_its_rates(global_handler: TokenSpyHandler) -> None:
    raw = {"id": "msg_1", "type": "message", "role": "assistant", "model": FAST_MODEL, "stop_reason": "end_turn",
           "content": [{"type": "text", "text": "Hello friend"}],
           "usage": {"input_tokens": 10_000, "output_tokens": 2_000, "cache_creation_input_tokens": 0,
                     "cache_read_input_tokens": 0, "service_tier": "standard", "speed": "fast"}}
    RawLLM(model=FAST_MODEL, raw=raw).complete("Say hello")
    (record,) = global_handler.calls()
    assert (record.model, record.input_tokens, record.output_tokens, record.usage_source) == (
        FAST_MODEL, 10_000, 2_000, "provider")
    assert record.cost == Decimal("0.2")  # fast mode: not the standard $0.10


@pytest.mark.parametrize("raw", [{"usage": "n/a"}, {"usage": 5}, {"usage": [1, 2]}])
def test_a_raw_usage_that_is_no_usage_shape_is_read_as_unreported_and_logged_once(
        global_handler: TokenSpyHandler, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
        raw: dict[str, Any]) -> None:
    monkeypatch.setattr(usage, "_dropped_logged", False)  # logged once per process
    with caplog.at_level(logging.WARNING, logger="tokenspy"):
        for _ in range(2):
            RawLLM(raw=raw).complete("Say hello")
    # As with no usage at all: both sides estimated ("Hello friend" is two tokens), none lost.
    assert [(r.status, r.usage_source, r.output_tokens) for r in global_handler.calls()] == [
        ("finished", "estimated", 2)] * 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "usage must be a usage object or dict" in warnings[0]


def test_an_embedding_whose_usage_is_no_usage_shape_is_estimated_through_the_sdk_layer(
        sdk_layer: None, global_handler: TokenSpyHandler, monkeypatch: pytest.MonkeyPatch) -> None:
    # The SDK layer merges what it read (nothing) into the embedding's record: not a count of 0 tokens.
    def provider(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"object": "list", "model": EMBED_MODEL, "usage": "n/a",
                                         "data": [{"object": "embedding", "index": 0, "embedding": [0.1]}]})

    monkeypatch.setattr(usage, "_dropped_logged", False)
    embedding = OpenAIEmbedding(model=EMBED_MODEL, api_key="test", api_base="http://mock/v1", max_retries=0,
                                http_client=httpx.Client(transport=httpx.MockTransport(provider)))
    embedding.get_text_embedding("hello there")
    (record,) = global_handler.calls()
    assert (record.operation, record.input_tokens, record.output_tokens, record.usage_source) == (
        "embeddings", 2, 0, "estimated")
