"""Output that arrives outside an answer's text: a legacy function call, an audio answer's transcript,
reasoning an OpenAI-compatible provider streams as text, the input a model writes for a hosted tool.
A stream cut short before its usage counts what arrived of it (and its first arrival is the first
token), as a whole response without usage counts all of it. The provider is an `httpx.MockTransport`
replaying the events: the fake provider sends none of these."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from sdk_helpers import MESSAGES
from test_sdk_openai_chat import only_record

import tokenspy
from tokenspy_core.tokenizer import count_tokens

MODEL = "gpt-4o"
NO_USAGE: dict[str, Any] = {"include_usage": False}
FUNCTIONS = [{"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]


def _client(body: bytes | httpx.SyncByteStream, content_type: str = "text/event-stream") -> openai.OpenAI:
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(body, bytes):
            return httpx.Response(200, headers={"content-type": content_type}, content=body)
        return httpx.Response(200, headers={"content-type": content_type}, stream=body)

    return tokenspy.observe(openai.OpenAI(base_url="http://provider/v1", api_key="test", max_retries=0,
                                          http_client=httpx.Client(transport=httpx.MockTransport(handler))))


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(body)}\n\n".encode()


def _chat_stream(chunks: list[bytes], **kwargs: Any) -> openai.Stream[Any]:
    client = _client(b"".join(chunks) + b"data: [DONE]\n\n")
    return client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True, stream_options=NO_USAGE,
                                          **kwargs)


def _read(stream: Any, chunks: int) -> None:
    """Reads `chunks` items of the stream, then leaves it."""
    with stream:
        for seen, _ in enumerate(stream, start=1):
            if seen == chunks:
                break


def _assert_estimated(record: tokenspy.CallRecord, status: str, text: str) -> None:
    assert (record.status, record.partial, record.usage_source) == (status, status == "aborted", "estimated")
    assert record.output_tokens == count_tokens(text, MODEL)
    assert record.ttft_s is not None


# -- Chat Completions: a stream cut short ------------------------------------------------------------------
def test_legacy_function_call_stream_stopped_in_arguments_counts_name_and_arguments() -> None:
    # `functions=` (before tools): the call streams in `delta.function_call`, the name first.
    chunks = [_chunk({"role": "assistant", "content": None, "function_call": {"name": "get_weather", "arguments": ""}}),
              _chunk({"function_call": {"arguments": '{"city":'}}),
              _chunk({"function_call": {"arguments": ' "Paris"}'}}), _chunk({}, "function_call")]
    _read(_chat_stream(chunks, functions=FUNCTIONS), 2)
    record = only_record()
    _assert_estimated(record, "aborted", 'get_weather{"city":')
    assert record.output_tokens == 5


@pytest.mark.parametrize(("chunks", "text"), [(2, ""), (4, "Hello there my friend")])
def test_audio_stream_stopped_counts_the_transcript_read(chunks: int, text: str) -> None:
    # An audio answer streams `delta.audio` (a field the SDK does not declare): the audio before its
    # transcript is the first output, with no text to count; the transcript is counted as text.
    stream = [_chunk({"role": "assistant", "content": None, "audio": {"id": "a1", "transcript": "", "data": ""}}),
              _chunk({"audio": {"data": "UklGRiQAAABXQVZF"}}),
              _chunk({"audio": {"transcript": "Hello there"}}), _chunk({"audio": {"transcript": " my friend"}}),
              _chunk({"audio": {"transcript": " how are you"}}), _chunk({}, "stop")]
    _read(_chat_stream(stream, modalities=["text", "audio"], audio={"voice": "alloy", "format": "pcm16"}), chunks)
    _assert_estimated(only_record(), "aborted", text)


REASONING = ["Okay", ",", " the", " user", " asks", " about", " France", "."]
ANSWER = ["Paris", "."]


def _reasoning_chunks(*fields: str) -> list[bytes]:
    """A reasoning model behind an OpenAI-compatible API: its reasoning streamed as text in `fields`,
    then the answer."""
    return [_chunk({"role": "assistant", "content": None, **dict.fromkeys(fields, "")}),
            *(_chunk({"content": None, **dict.fromkeys(fields, word)}) for word in REASONING),
            *(_chunk({"content": word, **dict.fromkeys(fields)}) for word in ANSWER), _chunk({}, "stop")]


@pytest.mark.parametrize("fields", [("reasoning_content",), ("reasoning",), ("reasoning_content", "reasoning")])
def test_reasoning_streamed_as_text_is_output(fields: tuple[str, ...]) -> None:
    # DeepSeek's `reasoning_content`; `reasoning` (vLLM, OpenRouter, Groq); a server sending both the
    # same text: counted once.
    _read(_chat_stream(_reasoning_chunks(*fields)), 5)  # the role chunk, then four words of reasoning
    _assert_estimated(only_record(), "aborted", "".join(REASONING[:4]))
    tokenspy.reset()

    _read(_chat_stream(_reasoning_chunks(*fields)), 100)
    _assert_estimated(only_record(), "finished", "".join(REASONING + ANSWER))


class _Slow(httpx.SyncByteStream):
    """The events, with a pause after the first `pause_after`."""

    def __init__(self, events: list[bytes], pause_after: int, pause: float) -> None:
        self._events, self._pause_after, self._pause = events, pause_after, pause

    def __iter__(self) -> Iterator[bytes]:
        for index, event in enumerate(self._events):
            if index == self._pause_after:
                time.sleep(self._pause)
            yield event


def test_raw_read_ttft_is_the_first_reasoning_delta() -> None:
    # A body read as bytes: the first event carrying output is the first reasoning delta, which arrives
    # a pause before the answer's text.
    pause = 0.05
    events = [*_reasoning_chunks("reasoning_content"), b"data: [DONE]\n\n"]
    client = _client(_Slow(events, pause_after=1 + len(REASONING), pause=pause))
    with client.chat.completions.with_streaming_response.create(
        model=MODEL, messages=MESSAGES, stream=True, stream_options=NO_USAGE
    ) as response:
        for _ in response.iter_lines():
            pass
    record = only_record()
    assert record.status == "finished" and record.ttft_s is not None
    assert record.latency_s - record.ttft_s >= pause  # not the answer's first text, after the pause
    assert record.output_tokens == count_tokens("".join(REASONING + ANSWER), MODEL)


# -- Chat Completions: a whole answer without usage --------------------------------------------------------
@pytest.mark.parametrize(("message", "text"), [
    ({"content": None, "function_call": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
     'get_weather{"city":"Paris"}'),
    ({"content": None, "refusal": "I can't help with that."}, "I can't help with that."),
    ({"content": None, "audio": {"id": "a1", "data": "UklGRiQA", "expires_at": 0, "transcript": "Hello there"}},
     "Hello there"),
    ({"content": "Paris.", "reasoning_content": "The user asks about France."}, "The user asks about France.Paris."),
], ids=["function_call", "refusal", "audio", "reasoning_content"])
def test_chat_answer_without_usage_counts_every_output(message: dict[str, Any], text: str) -> None:
    body = {"id": "c1", "object": "chat.completion", "created": 0, "model": MODEL,
            "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": "stop"}]}
    _client(json.dumps(body).encode(), "application/json").chat.completions.create(model=MODEL, messages=MESSAGES)
    record = only_record()
    assert (record.status, record.usage_source) == ("finished", "estimated")
    assert record.output_tokens == count_tokens(text, MODEL)


# -- Responses API: a hosted tool's input ------------------------------------------------------------------
def _event(kind: str, **fields: Any) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, 'sequence_number': 0, **fields})}\n\n".encode()


CREATED = _event("response.created", response={
    "id": "resp_1", "object": "response", "created_at": 0, "model": "o4-mini", "status": "in_progress", "output": [],
    "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], "usage": None})
CODE = [_event("response.output_item.added", output_index=0, item={
            "type": "code_interpreter_call", "id": "ci_1", "status": "in_progress", "code": "", "container_id": "c",
            "outputs": None}),
        _event("response.code_interpreter_call_code.delta", item_id="ci_1", output_index=0, delta="import math\n"),
        _event("response.code_interpreter_call_code.delta", item_id="ci_1", output_index=0,
               delta="print(math.factorial(20))")]
MCP = [_event("response.output_item.added", output_index=0, item={
           "type": "mcp_call", "id": "mcp_1", "name": "search_docs", "server_label": "docs", "arguments": ""}),
       _event("response.mcp_call_arguments.delta", item_id="mcp_1", output_index=0, delta='{"q": "tokens'),
       _event("response.mcp_call_arguments.delta", item_id="mcp_1", output_index=0, delta=' pricing"}')]


@pytest.mark.parametrize(("events", "read", "text"), [
    (CODE, 1, ""), (CODE, 3, "import math\nprint(math.factorial(20))"),
    (MCP, 1, "search_docs"), (MCP, 2, 'search_docs{"q": "tokens'),
], ids=["code-started", "code", "mcp-named", "mcp-arguments"])
def test_responses_stream_stopped_in_a_hosted_tool_call_counts_its_input(events: list[bytes], read: int,
                                                                        text: str) -> None:
    # The code the model writes for the code interpreter, an MCP tool's name and arguments: output. A
    # code interpreter call's start names nothing: no output yet.
    client = _client(CREATED + b"".join(events))
    _read(client.responses.create(model="o4-mini", input="Solve it", stream=True), 1 + read)
    record = only_record()
    assert (record.status, record.usage_source) == ("aborted", "estimated")
    assert record.output_tokens == count_tokens(text, "o4-mini")
    assert (record.ttft_s is not None) == bool(text)


def test_responses_answer_without_usage_counts_summary_code_and_mcp_call() -> None:
    output = [
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Thinking it over."}]},
        {"type": "code_interpreter_call", "id": "ci_1", "status": "completed", "code": "print(6 * 7)",
         "container_id": "c", "outputs": None},
        {"type": "mcp_call", "id": "mcp_1", "name": "search_docs", "server_label": "docs", "arguments": '{"q":"x"}'},
        {"type": "message", "id": "m1", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": "42", "annotations": []}]},
    ]
    body = {"id": "resp_1", "object": "response", "created_at": 0, "model": "o4-mini", "status": "completed",
            "output": output, "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], "usage": None}
    _client(json.dumps(body).encode(), "application/json").responses.create(model="o4-mini", input="Solve it")
    record = only_record()
    assert (record.status, record.usage_source) == ("finished", "estimated")
    assert record.output_tokens == count_tokens('Thinking it over.print(6 * 7)search_docs{"q":"x"}42', "o4-mini")
