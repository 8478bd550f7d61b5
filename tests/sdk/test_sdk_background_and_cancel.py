"""Raw reads left unfinished when the response closes, cancellations while the SDK waits to retry, and
Responses API background mode (the call ends at the retrieve that finds the response terminal)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest
from sdk_helpers import GPT_4O, HAIKU_MODEL, MESSAGES, cost
from test_sdk_openai_chat import PROMPT_ESTIMATE, only_record

import tokenspy
import tokenspy.openai as tokenspy_openai
from tokenspy.testing import FakeProvider
from tokenspy_core.tokenizer import count_tokens


@pytest.fixture(autouse=True)
def _no_pending_background() -> Iterator[None]:
    yield
    tokenspy_openai._background.clear()


def _sse_text(lines: list[str]) -> str:
    """The text deltas of the Chat Completions SSE lines read."""
    text = []
    for line in lines:
        if line.startswith("data: {"):
            for choice in json.loads(line[len("data: "):])["choices"]:
                text.append(choice["delta"].get("content") or "")
    return "".join(text)


# -- raw reads left unfinished when the response closes -------------------------------------------


async def test_async_raw_read_stopped_inside_async_with_counts_the_text_read_once(
    aoai: openai.AsyncOpenAI, fp: FakeProvider
) -> None:
    tokenspy.observe(aoai)
    fp.set_flags("slow")
    lines: list[str] = []
    async with aoai.chat.completions.with_streaming_response.create(
        model="gpt-4o", messages=MESSAGES, stream=True
    ) as response:
        async for line in response.iter_lines():  # an async generator: not closed at `break`
            lines.append(line)
            if len(lines) == 8:
                break
    await asyncio.sleep(0.05)  # the event loop finalizes the abandoned read: it must add nothing
    record = only_record()
    text = _sse_text(lines)
    assert text and len(text) < len(fp.reply)
    assert (record.status, record.partial, record.usage_source) == ("aborted", True, "estimated")
    assert (record.input_tokens, record.output_tokens) == (PROMPT_ESTIMATE, count_tokens(text, "gpt-4o"))


async def test_async_anthropic_raw_read_stopped_inside_async_with_matches_the_sync_record(
    ant: anthropic.Anthropic, aant: anthropic.AsyncAnthropic, fp: FakeProvider
) -> None:
    tokenspy.observe(ant)
    tokenspy.observe(aant)
    fp.set_flags("slow")
    stop_at = 18  # message_start (exact input), then a few text deltas
    with ant.messages.with_streaming_response.create(
        model=HAIKU_MODEL, max_tokens=100, messages=MESSAGES, stream=True
    ) as response:
        for i, _line in enumerate(response.iter_lines(), 1):
            if i == stop_at:
                break
    async with aant.messages.with_streaming_response.create(
        model=HAIKU_MODEL, max_tokens=100, messages=MESSAGES, stream=True
    ) as aresponse:
        i = 0
        async for _line in aresponse.iter_lines():
            i += 1
            if i == stop_at:
                break
    sync, async_ = tokenspy.calls()

    def summary(r: tokenspy.CallRecord) -> tuple[Any, ...]:
        return r.status, r.partial, r.usage_source, r.input_tokens, r.output_tokens, r.cost

    assert summary(async_) == summary(sync)
    assert async_.usage_source == "mixed" and async_.output_tokens > 0  # message_start's input, text read


def test_sync_raw_read_kept_unfinished_is_accounted_when_the_response_closes(
    oai: openai.OpenAI, fp: FakeProvider
) -> None:
    tokenspy.observe(oai)
    fp.set_flags("slow")
    with oai.chat.completions.with_streaming_response.create(
        model="gpt-4o", messages=MESSAGES, stream=True
    ) as response:
        reader = response.iter_lines()
        lines = [next(reader) for _ in range(8)]  # `reader` is kept: the read has not ended at close
    record = only_record()
    text = _sse_text(lines)
    assert text
    assert (record.status, record.partial) == ("aborted", True)
    assert record.output_tokens == count_tokens(text, "gpt-4o")
    del reader  # the read's own end now: nothing more
    assert only_record() is record and record.output_tokens == count_tokens(text, "gpt-4o")


# -- a cancellation while the SDK waits to retry ----------------------------------------------------

PROMPT = [{"role": "user", "content": "What is the capital of France? " * 20}]


def _error_500(request: Any) -> Any:
    return httpx.Response(500, headers={"retry-after": "5"}, json={"error": {"message": "boom"}})


def _async_openai(handler: Callable[[httpx.Request], Any], max_retries: int) -> openai.AsyncOpenAI:
    return tokenspy.observe(openai.AsyncOpenAI(
        base_url="http://mock/v1", api_key="sk-fake", max_retries=max_retries,
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler))))


async def _cancel_after(seconds: float, call: Awaitable[Any]) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(call, seconds)


async def test_cancel_while_waiting_to_retry_records_no_tokens_but_in_flight_estimates_the_prompt() -> None:
    tokenspy.set_price("gpt-4o", input=1, output=2)

    async def never_answers(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(10)
        raise AssertionError("cancelled before")

    # In flight: the provider may have the prompt (and bill it): estimated, as before.
    in_flight = _async_openai(never_answers, max_retries=3)
    await _cancel_after(0.2, in_flight.chat.completions.create(model="gpt-4o", messages=PROMPT))
    (flying,) = tokenspy.calls()
    assert (flying.status, flying.usage_source) == ("aborted", "estimated") and flying.input_tokens > 0
    tokenspy.reset()

    # Between attempts: the one before answered 500 (nothing billed), the next is not sent.
    retrying = _async_openai(_error_500, max_retries=3)
    await _cancel_after(0.2, retrying.chat.completions.create(model="gpt-4o", messages=PROMPT))
    record = only_record()
    assert (record.status, record.input_tokens, record.output_tokens, record.cost) == ("aborted", 0, 0, 0)
    assert record.estimated_fields == ()


async def test_anthropic_cancel_while_waiting_to_retry_records_no_tokens() -> None:
    def overloaded(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(529, headers={"retry-after": "5"},
                               json={"type": "error", "error": {"type": "overloaded_error", "message": "busy"}})

    client = tokenspy.observe(anthropic.AsyncAnthropic(
        base_url="http://mock", api_key="sk-ant-fake", max_retries=2,
        http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(overloaded))))
    await _cancel_after(0.2, client.messages.create(model=HAIKU_MODEL, max_tokens=10, messages=PROMPT))
    record = only_record()
    assert (record.status, record.input_tokens, record.output_tokens, record.cost) == ("aborted", 0, 0, 0)


def test_keyboard_interrupt_while_waiting_to_retry_records_no_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    client = tokenspy.observe(openai.OpenAI(
        base_url="http://mock/v1", api_key="sk-fake", max_retries=2,
        http_client=httpx.Client(transport=httpx.MockTransport(_error_500))))
    monkeypatch.setattr(time, "sleep", interrupted)  # the SDK's sync retry sleep
    with pytest.raises(KeyboardInterrupt):
        client.chat.completions.create(model="gpt-4o", messages=PROMPT)
    record = only_record()
    assert (record.status, record.input_tokens, record.output_tokens, record.cost) == ("aborted", 0, 0, 0)


# -- Responses API background mode ----------------------------------------------------------------

USAGE = {"input_tokens": 1000, "input_tokens_details": {"cached_tokens": 200},
         "output_tokens": 500, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 1500}


def _response(status: str, response_id: str = "resp_1") -> dict[str, Any]:
    done = status in ("completed", "incomplete", "failed", "cancelled")
    output = [{"type": "message", "id": "m1", "role": "assistant", "status": "completed",
               "content": [{"type": "output_text", "text": "Paris.", "annotations": []}]}] if done else []
    return {"id": response_id, "object": "response", "created_at": 1, "model": "gpt-4o-2024-08-06",
            "status": status, "output": output, "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
            "usage": USAGE if done else None, "incomplete_details": None, "background": True,
            "error": {"code": "server_error", "message": "it broke"} if status == "failed" else None}


class _Background:
    """A provider whose background responses are queued at create and answer retrieves with the given
    statuses in turn (an int: that HTTP error instead)."""

    def __init__(self, *polls: str | int) -> None:
        self.polls = list(polls)
        self.created = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/v1/responses":
            self.created += 1
            return httpx.Response(200, json=_response("queued", f"resp_{self.created}"))
        response_id = request.url.path.split("/")[3]
        if request.url.path.endswith("/cancel"):
            return httpx.Response(200, json=_response("cancelled", response_id))
        poll = self.polls.pop(0)
        if isinstance(poll, int):
            return httpx.Response(poll, json={"error": {"message": "poll failed"}})
        return httpx.Response(200, json=_response(poll, response_id))


def _client(provider: _Background) -> openai.OpenAI:
    return tokenspy.observe(openai.OpenAI(base_url="http://mock/v1", api_key="sk-fake", max_retries=0,
                                          http_client=httpx.Client(transport=httpx.MockTransport(provider))))


def _assert_exact_background(record: tokenspy.CallRecord, status: str = "finished") -> None:
    assert (record.status, record.usage_source, record.input_tokens, record.output_tokens,
            record.cached_input_tokens) == (status, "provider", 1000, 500, 200)
    assert record.model == "gpt-4o-2024-08-06" and record.request_model == "gpt-4o"
    assert record.cost == cost(GPT_4O, input=1000, output=500, cached=200)


def test_background_response_is_recorded_once_at_its_terminal_retrieve_in_its_span() -> None:
    client = _client(_Background(500, "in_progress", "completed", "completed"))
    with tokenspy.session("research"):
        queued = client.responses.create(model="gpt-4o", input="What is the capital of France?", background=True)
    assert queued.status == "queued"
    assert tokenspy.calls() == []  # not run yet: no estimated "finished" call
    with pytest.raises(openai.InternalServerError):
        client.responses.retrieve(queued.id)  # a failed poll ends nothing
    assert client.responses.retrieve(queued.id).status == "in_progress"
    assert tokenspy.calls() == []
    assert client.responses.retrieve(queued.id).status == "completed"
    record = only_record()
    _assert_exact_background(record)
    assert record.span_path == ("research",)  # where it was created, though retrieved outside
    client.responses.retrieve(queued.id)  # polled again: counted once
    assert tokenspy.calls() == [record]
    assert not tokenspy_openai._background


@pytest.mark.parametrize(("terminal", "status"), [("failed", "failed"), ("incomplete", "finished")])
def test_background_response_failed_or_incomplete_is_recorded_with_its_usage(terminal: str, status: str) -> None:
    client = _client(_Background(terminal))
    queued = client.responses.create(model="gpt-4o", input="Hi", background=True)
    client.responses.retrieve(queued.id)
    record = only_record()
    _assert_exact_background(record, status)
    assert (record.error is not None) == (status == "failed")


def test_background_response_cancelled_is_recorded_aborted_at_the_cancel() -> None:
    client = _client(_Background())
    queued = client.responses.create(model="gpt-4o", input="Hi", background=True)
    assert tokenspy.calls() == []
    assert client.responses.cancel(queued.id).status == "cancelled"
    record = only_record()
    _assert_exact_background(record, "aborted")


def test_background_response_created_through_with_streaming_response_is_recorded_at_retrieve() -> None:
    client = _client(_Background("completed"))
    with client.responses.with_streaming_response.create(model="gpt-4o", input="Hi", background=True) as raw:
        queued = raw.parse()
    assert tokenspy.calls() == []  # not at the close either
    client.responses.retrieve(queued.id)
    _assert_exact_background(only_record())


async def test_async_background_response_is_recorded_at_its_terminal_retrieve() -> None:
    provider = _Background("queued", "completed")
    client = tokenspy.observe(openai.AsyncOpenAI(
        base_url="http://mock/v1", api_key="sk-fake", max_retries=0,
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(provider))))
    queued = await client.responses.create(model="gpt-4o", input="Hi", background=True)
    await client.responses.retrieve(queued.id)
    assert tokenspy.calls() == []
    await client.responses.retrieve(queued.id)
    _assert_exact_background(only_record())


def test_background_responses_pending_are_bounded_the_oldest_given_up_as_estimated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tokenspy_openai, "MAX_PENDING", 2)
    client = _client(_Background("completed", "completed"))
    ids = [client.responses.create(model="gpt-4o", input="Hi", background=True).id for _ in range(3)]
    (given_up,) = tokenspy.calls()  # the oldest: its usage will never be read
    assert (given_up.status, given_up.usage_source) == ("aborted", "estimated")
    assert list(tokenspy_openai._background) == ids[1:]
    client.responses.retrieve(ids[0])  # no longer pending: nothing
    client.responses.retrieve(ids[2])
    assert len(tokenspy.calls()) == 2
    _assert_exact_background(tokenspy.calls()[1])


# -- a cancellation after the provider's final usage ----------------------------------------------------

def _chunk(data: dict[str, Any]) -> bytes:
    base = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "gpt-4o-2024-08-06"}
    return f"data: {json.dumps({**base, **data})}\n\n".encode()


async def test_a_stream_cancelled_after_its_final_usage_is_finished_not_partial() -> None:
    tokenspy.set_price("gpt-4o", input=1, output=2)
    hanging = asyncio.Event()

    class UsageThenHang(httpx.AsyncByteStream):
        async def __aiter__(self) -> Any:
            yield _chunk({"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Paris"},
                                       "finish_reason": None}]})
            yield _chunk({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            yield _chunk({"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}})
            hanging.set()
            await asyncio.sleep(10)  # the provider is slow to close the stream
            yield b"data: [DONE]\n\n"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=UsageThenHang())

    client = _async_openai(handler, max_retries=0)

    async def consume() -> None:
        stream = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        async for _ in stream:
            pass

    task = asyncio.create_task(consume())
    await hanging.wait()
    await asyncio.sleep(0.05)  # the consumer has the usage chunk and waits for the next
    task.cancel()  # a request timeout, a client gone
    with pytest.raises(asyncio.CancelledError):
        await task
    record = only_record()
    assert (record.status, record.partial, record.usage_source) == ("finished", False, "provider")
    assert (record.input_tokens, record.output_tokens) == (11, 3)
    assert record.cost_usd == pytest.approx((11 * 1 + 3 * 2) / 1e6)
