"""LlamaIndex `OpenAIResponses` hands a Responses answer the provider marks failed back as an answer,
raising nothing: a `status: "failed"` response, a stream ending with `response.failed`, a stream ending
with an `error` event. The record says it failed (billed, so partial), as the raw SDK's and LangChain's
do. Hand-written payloads over an `httpx.MockTransport`."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from li_helpers import MODEL, expected_cost
from llama_index.core.llms import ChatMessage
from llama_index.llms.openai import OpenAIResponses

import tokenspy
from tokenspy.llamaindex import TokenSpyHandler
from tokenspy_core.tokenizer import count_tokens

SERVED = "gpt-4o-mini-2024-07-18"
USAGE = {"input_tokens": 1200, "input_tokens_details": {"cached_tokens": 400},
         "output_tokens": 600, "output_tokens_details": {"reasoning_tokens": 256}, "total_tokens": 1800}
ERROR = {"code": "server_error", "message": "The model failed"}
MESSAGES = [ChatMessage(role="user", content="What is the capital of France?")]
PROMPT_TOKENS = 14  # the message above, counted for gpt-4o-mini


def _response(status: str, usage: Any = None, error: Any = None) -> dict[str, Any]:
    return {"id": "resp_1", "object": "response", "created_at": 1, "model": SERVED, "status": status,
            "output": [], "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], "usage": usage,
            "incomplete_details": None, "error": error}


def _stream(last: dict[str, Any]) -> httpx.Response:
    events = [
        {"type": "response.created", "response": _response("in_progress")},
        {"type": "response.output_item.added", "output_index": 0,
         "item": {"type": "message", "id": "m1", "role": "assistant", "status": "in_progress", "content": []}},
        {"type": "response.output_text.delta", "item_id": "m1", "output_index": 0, "content_index": 0,
         "delta": "The capital", "logprobs": []},
        last,
    ]
    body = b"".join(f"event: {e['type']}\ndata: {json.dumps({**e, 'sequence_number': n})}\n\n".encode()
                    for n, e in enumerate(events))
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)


def _provider(failure: str) -> Any:
    def answer(request: httpx.Request) -> httpx.Response:
        if not json.loads(request.content).get("stream"):
            status = "failed" if failure != "none" else "completed"
            return httpx.Response(200, json=_response(status, USAGE, ERROR if failure != "none" else None))
        if failure == "error event":
            return _stream({"type": "error", **ERROR, "param": None})
        if failure == "none":
            return _stream({"type": "response.completed", "response": _response("completed", USAGE)})
        return _stream({"type": "response.failed", "response": _response("failed", USAGE, ERROR)})

    return answer


def _llm(failure: str) -> OpenAIResponses:
    transport = httpx.MockTransport(_provider(failure))
    return OpenAIResponses(model=MODEL, api_base="http://mock/v1", api_key="sk-fake", max_retries=0,
                           http_client=httpx.Client(transport=transport),
                           async_http_client=httpx.AsyncClient(transport=transport))


def _only_record() -> tokenspy.CallRecord:
    (record,) = tokenspy.calls()
    return record


def _assert_failed_with_its_usage(record: tokenspy.CallRecord) -> None:
    assert (record.status, record.partial, record.error) == ("failed", True, "server_error: The model failed")
    assert (record.input_tokens, record.output_tokens, record.cached_input_tokens, record.reasoning_tokens,
            record.usage_source) == (1200, 600, 400, 256, "provider")
    assert record.cost_femto == expected_cost(MODEL, 1200, 600, 400)


@pytest.mark.parametrize("with_sdk_layer", [False, True])
def test_failed_response_is_recorded_failed(with_sdk_layer: bool, global_handler: TokenSpyHandler) -> None:
    tokenspy.init(auto_instrument=with_sdk_layer)
    _llm("failed").chat(MESSAGES)  # LlamaIndex raises nothing
    _assert_failed_with_its_usage(_only_record())


@pytest.mark.parametrize("with_sdk_layer", [False, True])
def test_stream_ending_with_response_failed_is_recorded_failed(
    with_sdk_layer: bool, global_handler: TokenSpyHandler
) -> None:
    tokenspy.init(auto_instrument=with_sdk_layer)
    list(_llm("failed").stream_chat(MESSAGES))
    record = _only_record()
    _assert_failed_with_its_usage(record)
    assert record.streamed


async def test_async_stream_ending_with_response_failed_is_recorded_failed(
    sdk_layer: None, global_handler: TokenSpyHandler
) -> None:
    stream = await _llm("failed").astream_chat(MESSAGES)
    async for _ in stream:
        pass
    _assert_failed_with_its_usage(_only_record())


@pytest.mark.parametrize("with_sdk_layer", [False, True])
def test_stream_ending_with_an_error_event_is_failed_with_the_text_streamed(
    with_sdk_layer: bool, global_handler: TokenSpyHandler
) -> None:
    tokenspy.init(auto_instrument=with_sdk_layer)
    list(_llm("error event").stream_chat(MESSAGES))
    record = _only_record()
    assert (record.status, record.partial, record.error) == ("failed", True, "server_error: The model failed")
    assert (record.usage_source, record.input_tokens) == ("estimated", PROMPT_TOKENS)
    assert record.output_tokens == count_tokens("The capital", MODEL) == 2


def test_completed_response_is_still_finished(sdk_layer: None, global_handler: TokenSpyHandler) -> None:
    llm = _llm("none")
    llm.chat(MESSAGES)
    list(llm.stream_chat(MESSAGES))
    asyncio.run(llm.achat(MESSAGES))
    records = tokenspy.calls()
    assert [(r.status, r.partial, r.error, r.output_tokens) for r in records] == [("finished", False, None, 600)] * 3
