"""What the handler reads of the provider's own fields: Anthropic's fast mode, usage that is no usage shape."""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from lc_helpers import anthropic_chat

import tokenspy
from tokenspy.langchain import TokenSpyHandler
from tokenspy.testing import FakeProvider
from tokenspy_core import usage

FAST_MODEL = "claude-opus-4-8"  # genai-prices: $5 / $25 per million, fast mode $10 / $50


def test_anthropic_fast_mode_is_priced_at_its_rates_with_or_without_the_sdk_layer(
        fp: FakeProvider, layers: str, handler: TokenSpyHandler) -> None:
    # langchain-anthropic keeps the raw usage, `speed` included, in response_metadata["usage"].
    model = anthropic_chat(fp, FAST_MODEL, max_tokens=100, model_kwargs={"extra_body": {"speed": "fast"}})
    message = model.invoke("What is the capital of France?", config={"callbacks": [handler]})
    assert message.response_metadata["usage"]["speed"] == "fast"
    (entry,) = fp.requests
    (record,) = handler.calls()
    assert (entry["usage"]["input_tokens"], entry["usage"]["output_tokens"]) == (14, 7)
    assert (record.input_tokens, record.output_tokens, record.usage_source) == (14, 7, "provider")
    assert record.cost == Decimal("0.00049")  # 14 * $10 + 7 * $50 per million: not the standard $0.000245


class _RelayingChat(BaseChatModel):
    """An integration that relays the provider's `llm_output` as it came, with no `usage_metadata`."""

    llm_output: Any = None

    @property
    def _llm_type(self) -> str:
        return "relaying"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": "gpt-4o"}

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content="Hello friend"))],
                          llm_output=self.llm_output)


@pytest.mark.parametrize("llm_output", [{"token_usage": "n/a"}, {"token_usage": 7}, {"usage": [1, 2]},
                                        {"usage": "n/a"}])
def test_a_usage_field_that_is_no_usage_shape_is_read_as_unreported_and_logged_once(
        handler: TokenSpyHandler, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
        llm_output: dict[str, Any]) -> None:
    monkeypatch.setattr(usage, "_dropped_logged", False)  # logged once per process
    with caplog.at_level(logging.WARNING, logger="tokenspy"):
        for _ in range(2):
            _RelayingChat(llm_output=llm_output).invoke("Say hello", config={"callbacks": [handler]})
    records = handler.calls()
    # As with no usage at all: both sides estimated ("Hello friend" is two tokens), none lost.
    assert [(r.status, r.usage_source, r.input_tokens, r.output_tokens) for r in records] == [
        ("finished", "estimated", 9, 2)] * 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "usage must be a usage object or dict" in warnings[0]
    assert tokenspy.calls() == records
