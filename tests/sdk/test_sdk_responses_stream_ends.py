"""Responses API streams that end before their final event, and background responses whose usage comes
later: a background stream stopped early (the response runs on at the provider and is billed whole), one
asked for through `extra_body`, a retrieve cancelled while the response runs. Hand-written event streams
over an `httpx.MockTransport`, as the API sends them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from test_sdk_openai_chat import only_record

import tokenspy
import tokenspy.openai as tokenspy_openai
from tokenspy_core.tokenizer import count_tokens

MODEL, SERVED = "o4-mini", "o4-mini-2025-04-16"
USAGE = {"input_tokens": 1000, "input_tokens_details": {"cached_tokens": 200},
         "output_tokens": 500, "output_tokens_details": {"reasoning_tokens": 100}, "total_tokens": 1500}
# genai-prices' o4-mini rates, USD per million tokens: $1.10 in, $0.275 cached, $4.40 out.
BILL = (800 * Decimal("1.10") + 200 * Decimal("0.275") + 500 * Decimal("4.40")) / 1_000_000  # $0.003135
PROMPT = "What is the capital of France?"
PROMPT_TOKENS = 14  # PROMPT as one user message, counted for o4-mini
WORDS = ["Par", "is", "."]


@pytest.fixture(autouse=True)
def _no_pending_background() -> Iterator[None]:
    yield
    tokenspy_openai._background.clear()


def _response(status: str, *, done: bool = False) -> dict[str, Any]:
    output = [{"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
               "content": [{"type": "output_text", "text": "".join(WORDS), "annotations": []}]}] if done else []
    return {"id": "resp_bg", "object": "response", "created_at": 1, "model": SERVED, "status": status,
            "output": output, "parallel_tool_calls": True, "tool_choice": "auto", "tools": [], "background": True,
            "usage": USAGE if done else None, "incomplete_details": None, "error": None}


def _events(*, final: bool = True) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": _response("queued")},
        {"type": "response.in_progress", "response": _response("in_progress")},
        {"type": "response.output_item.added", "output_index": 0,
         "item": {"type": "message", "id": "msg_1", "role": "assistant", "status": "in_progress", "content": []}},
        *({"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0, "content_index": 0,
           "delta": word, "logprobs": []} for word in WORDS),
    ]
    if final:
        events.append({"type": "response.completed", "response": _response("completed", done=True)})
    return [{**event, "sequence_number": n} for n, event in enumerate(events)]


def _sse(events: list[dict[str, Any]]) -> list[bytes]:
    return [f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events]


class _Events(httpx.SyncByteStream, httpx.AsyncByteStream):
    """The events, then (`cut_after`) a dropped connection."""

    def __init__(self, events: list[dict[str, Any]], cut_after: int | None = None) -> None:
        self.chunks = _sse(events)
        self.cut_after = cut_after

    def __iter__(self) -> Iterator[bytes]:
        for n, chunk in enumerate(self.chunks):
            if n == self.cut_after:
                raise httpx.RemoteProtocolError("peer closed connection")
            yield chunk

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self:
            yield chunk


class _Provider:
    """A background response: created streamed (`cut_after`: the connection drops after that many
    events), retrieved whole or streamed from a cursor (`starting_after`), cancelled."""

    def __init__(self, cut_after: int | None = None, final: bool = True) -> None:
        self.cut_after = cut_after
        self.final = final
        self.requests: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(f"{request.method} {request.url.path}")
        if request.method == "POST" and request.url.path == "/v1/responses":
            body = json.loads(request.content)
            if not body.get("stream"):
                return httpx.Response(200, json=_response("queued"))
            return _streamed(_events(final=self.final), self.cut_after)
        if request.url.path.endswith("/cancel"):
            return httpx.Response(200, json={**_response("cancelled", done=True), "status": "cancelled"})
        if request.url.params.get("stream") == "true":
            after = int(request.url.params.get("starting_after", "-1"))
            return _streamed([e for e in _events() if e["sequence_number"] > after])
        return httpx.Response(200, json=_response("completed", done=True))


def _streamed(events: list[dict[str, Any]], cut_after: int | None = None) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=_Events(events, cut_after))


def _client(provider: _Provider) -> openai.OpenAI:
    return tokenspy.observe(openai.OpenAI(base_url="http://mock/v1", api_key="sk-fake", max_retries=0,
                                          http_client=httpx.Client(transport=httpx.MockTransport(provider))))


def _async_client(provider: Any) -> openai.AsyncOpenAI:
    return tokenspy.observe(openai.AsyncOpenAI(
        base_url="http://mock/v1", api_key="sk-fake", max_retries=0,
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(provider))))


def _assert_billed_whole(record: tokenspy.CallRecord, status: str = "finished") -> None:
    assert (record.status, record.usage_source, record.model, record.request_model) == (
        status, "provider", SERVED, MODEL)
    assert (record.input_tokens, record.output_tokens, record.cached_input_tokens, record.reasoning_tokens) == (
        1000, 500, 200, 100)
    assert record.cost == BILL == Decimal("0.003135")


# -- background streams stopped before their final event ----------------------------------------------


def test_background_stream_cut_then_resumed_from_its_cursor_records_the_whole_response() -> None:
    client = _client(_Provider(cut_after=5))  # created, in_progress, item added, two deltas: then dropped
    cursor = -1
    with tokenspy.session("research") as session:
        with pytest.raises(httpx.RemoteProtocolError):
            for event in client.responses.create(model=MODEL, input=PROMPT, background=True, stream=True):
                cursor = event.sequence_number
        assert tokenspy.calls() == []  # the response runs on: nothing billed yet is known
        resumed = list(client.responses.retrieve("resp_bg", stream=True, starting_after=cursor))
    assert cursor == 4 and resumed[-1].type == "response.completed"
    record = only_record()
    _assert_billed_whole(record)
    assert record.span_path == ("research",) and record.streamed and not record.partial
    assert Decimal(session.stats()["total_cost_usd_exact"]) == BILL  # the session total, exact
    assert not tokenspy_openai._background


def test_background_stream_broken_out_of_then_polled_records_the_whole_response() -> None:
    provider = _Provider()
    client = _client(provider)
    with tokenspy.session("poll") as session:
        stream = client.responses.create(model=MODEL, input=PROMPT, background=True, stream=True)
        for event in stream:
            if event.type == "response.output_text.delta":
                break
        stream.close()
        assert tokenspy.calls() == []
        assert client.responses.retrieve("resp_bg").status == "completed"
        client.responses.retrieve("resp_bg")  # polled again: counted once
    _assert_billed_whole(only_record())
    assert Decimal(session.stats()["total_cost_usd_exact"]) == BILL  # the session total, exact
    assert provider.requests == ["POST /v1/responses", "GET /v1/responses/resp_bg", "GET /v1/responses/resp_bg"]


async def test_async_background_stream_broken_out_of_then_polled_records_the_whole_response() -> None:
    client = _async_client(_Provider())
    stream = await client.responses.create(model=MODEL, input=PROMPT, background=True, stream=True)
    async for event in stream:
        if event.type == "response.output_text.delta":
            break
    await stream.close()
    assert tokenspy.calls() == []
    await client.responses.retrieve("resp_bg")
    _assert_billed_whole(only_record())


def test_background_stream_broken_out_of_then_cancelled_is_aborted_with_the_usage_billed() -> None:
    client = _client(_Provider())
    stream = client.responses.create(model=MODEL, input=PROMPT, background=True, stream=True)
    for _ in stream:
        break
    stream.close()
    client.responses.cancel("resp_bg")
    _assert_billed_whole(only_record(), "aborted")


def test_background_stream_read_to_its_final_event_is_recorded_at_once() -> None:
    client = _client(_Provider())
    list(client.responses.create(model=MODEL, input=PROMPT, background=True, stream=True))
    _assert_billed_whole(only_record())
    assert not tokenspy_openai._background


def test_background_stream_given_up_unretrieved_is_recorded_as_the_stream_showed_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tokenspy_openai, "MAX_PENDING", 0)  # no room: given up as soon as it is set aside
    client = _client(_Provider())
    stream = client.responses.create(model=MODEL, input=PROMPT, background=True, stream=True)
    for event in stream:
        if event.type == "response.output_text.delta":
            break
    stream.close()
    record = only_record()
    assert (record.status, record.partial, record.usage_source) == ("aborted", True, "estimated")
    assert (record.input_tokens, record.output_tokens) == (PROMPT_TOKENS, count_tokens(WORDS[0], MODEL))
    assert not tokenspy_openai._background


# -- background through extra_body ------------------------------------------------------------------


def test_background_asked_through_extra_body_is_recorded_at_its_terminal_retrieve() -> None:
    client = _client(_Provider())
    queued = client.responses.create(model=MODEL, input=PROMPT, extra_body={"background": True})
    assert queued.status == "queued" and tokenspy.calls() == []
    client.responses.retrieve(queued.id)
    _assert_billed_whole(only_record())


def test_background_false_in_extra_body_wins_over_the_body() -> None:
    def answers_at_once(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=_response("completed", done=True))

    client = tokenspy.observe(openai.OpenAI(
        base_url="http://mock/v1", api_key="sk-fake", max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(answers_at_once))))
    client.responses.create(model=MODEL, input=PROMPT, background=True, extra_body={"background": False})
    _assert_billed_whole(only_record())
    assert not tokenspy_openai._background


# -- a retrieve cancelled while the response runs --------------------------------------------------


async def test_cancelled_retrieve_leaves_the_background_response_waiting() -> None:
    provider = _Provider()
    polls = 0

    async def slow_first_poll(request: httpx.Request) -> httpx.Response:
        nonlocal polls
        if request.method == "GET":
            polls += 1
            if polls == 1:
                await asyncio.sleep(10)
        return provider(request)

    client = _async_client(slow_first_poll)
    queued = await client.responses.create(model=MODEL, input=PROMPT, background=True)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(client.responses.retrieve(queued.id), 0.1)
    assert tokenspy.calls() == []  # the poll was cancelled, not the response
    await client.responses.retrieve(queued.id)
    _assert_billed_whole(only_record())


# -- a Responses stream that ends without its final event ----------------------------------------


def test_responses_stream_ending_without_its_final_event_is_partial() -> None:
    def cut_short(request: httpx.Request) -> httpx.Response:
        return _streamed(_events(final=False))  # the connection closes cleanly after the text

    client = tokenspy.observe(openai.OpenAI(base_url="http://mock/v1", api_key="sk-fake", max_retries=0,
                                            http_client=httpx.Client(transport=httpx.MockTransport(cut_short))))
    events = list(client.responses.create(model=MODEL, input=PROMPT, stream=True))
    assert [e.type for e in events][-1] == "response.output_text.delta"
    record = only_record()
    assert (record.status, record.partial, record.usage_source) == ("aborted", True, "estimated")
    assert (record.input_tokens, record.output_tokens) == (PROMPT_TOKENS, count_tokens("".join(WORDS), MODEL))


async def test_async_responses_stream_ending_without_its_final_event_is_partial() -> None:
    def cut_short(request: httpx.Request) -> httpx.Response:
        return _streamed(_events(final=False))

    client = _async_client(cut_short)
    stream = await client.responses.create(model=MODEL, input=PROMPT, stream=True)
    async for _ in stream:
        pass
    record = only_record()
    assert (record.status, record.partial) == ("aborted", True)
    assert record.output_tokens == count_tokens("".join(WORDS), MODEL)


def test_background_stream_ending_without_its_final_event_waits_for_its_retrieve() -> None:
    client = _client(_Provider(final=False))
    list(client.responses.create(model=MODEL, input=PROMPT, background=True, stream=True))
    assert tokenspy.calls() == []
    client.responses.retrieve("resp_bg")
    _assert_billed_whole(only_record())
