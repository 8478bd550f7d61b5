"""Gemini's OpenAI-compatible endpoint, through the real openai SDK: its thoughts are billed as output."""

from __future__ import annotations

import warnings
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

import tokenspy


def _client_answering(usage: dict[str, Any]) -> openai.OpenAI:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={
            "id": "c1", "object": "chat.completion", "created": 1, "model": "gemini-2.5-flash",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
            "usage": usage})

    return tokenspy.observe(openai.OpenAI(
        api_key="test", base_url="http://gemini.test/v1beta/openai", max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(answer))))


@pytest.mark.parametrize(("completion", "reasoning", "cost"), [
    (198, 405, Decimal("0.0015135")),  # 20 x $0.30 + 603 x $2.50 per million
    (0, 60, Decimal("0.000156")),  # a call that only thought
])
def test_gemini_compatible_thoughts_are_billed_as_output(completion: int, reasoning: int, cost: Decimal) -> None:
    client = _client_answering({"prompt_tokens": 20, "completion_tokens": completion,
                                "total_tokens": 20 + completion + reasoning,
                                "completion_tokens_details": {"reasoning_tokens": reasoning}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # priced: no "no price known" warning
        client.chat.completions.create(model="gemini-2.5-flash", messages=[{"role": "user", "content": "hi"}])
    (record,) = tokenspy.calls()
    assert (record.input_tokens, record.output_tokens, record.reasoning_tokens, record.total_tokens) == (
        20, completion + reasoning, reasoning, 20 + completion + reasoning)
    assert (record.usage_source, record.estimated_fields) == ("provider", ())
    assert record.cost == cost
