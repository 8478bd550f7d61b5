"""Streams whose bytes the caller reads: what reaches them unchanged (no usage chunk they did not ask
for), what is recorded (a tracked stream's body read raw is still accounted), and when (the time to
first token is the first output's arrival, not the end of the read).

Times are checked by ordering, never against a budget: the fake provider waits `chunk_delay` before
each event after the first, and the caller notes when it sees the first and the last text. `ttft_s`
must come after the events that carry no output, and no later than the caller saw the first text:
`latency_s - ttft_s` is then at least the time between the caller's first and last text.
"""

from __future__ import annotations

import gc
import json
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anthropic
import openai
import pytest
from sdk_helpers import GPT_4O, HAIKU, HAIKU_MODEL, MESSAGES, anthropic_expected, assert_exact, openai_expected
from test_sdk_openai_chat import PROMPT_ESTIMATE, only_record

import tokenspy
from tokenspy.testing import FakeProvider
from tokenspy_core.tokenizer import count_tokens

INSTRUCT = "gpt-3.5-turbo-instruct"
PROMPT = "Say hello"
ANTHROPIC_ARGS: dict[str, Any] = {"model": HAIKU_MODEL, "max_tokens": 100, "messages": MESSAGES}


def _data(lines: list[str]) -> list[dict[str, Any]]:
    """The JSON events of SSE lines, as a relay forwarding them decodes them."""
    return [json.loads(line[6:]) for line in lines if line.startswith("data: ") and line != "data: [DONE]"]


# -- a raw response's stream is not asked for usage ------------------------------------------------------

RawLines = Callable[[openai.OpenAI, str, dict[str, Any]], list[str]]


def _streaming_response_lines(client: openai.OpenAI, path: str, kwargs: dict[str, Any]) -> list[str]:
    resource: Any = client.chat.completions if path == "chat" else client.completions
    with resource.with_streaming_response.create(stream=True, **kwargs) as response:
        return list(response.iter_lines())


def _raw_response_lines(client: openai.OpenAI, path: str, kwargs: dict[str, Any]) -> list[str]:
    resource: Any = client.chat.completions if path == "chat" else client.completions
    raw = resource.with_raw_response.create(stream=True, **kwargs)
    return list(raw.http_response.iter_lines())


READERS: dict[str, RawLines] = {"with_streaming_response": _streaming_response_lines,
                                "with_raw_response": _raw_response_lines}
REQUESTS: dict[str, dict[str, Any]] = {"chat": {"model": "gpt-4o", "messages": MESSAGES},
                                       "completions": {"model": INSTRUCT, "prompt": PROMPT}}


@pytest.mark.parametrize("path", list(REQUESTS))
@pytest.mark.parametrize("reader", list(READERS))
def test_raw_stream_bytes_have_no_usage_chunk_the_caller_did_not_ask_for(
    oai: openai.OpenAI, fp: FakeProvider, reader: str, path: str
) -> None:
    tokenspy.observe(oai)
    events = _data(READERS[reader](oai, path, REQUESTS[path]))
    assert fp.requests[0]["stream_options"] is None  # not asked: the bytes are the provider's own
    assert events and all(event["choices"] for event in events)  # a relay's `["choices"][0]` holds
    record = only_record()
    assert (record.status, record.partial, record.usage_source) == ("finished", False, "estimated")
    model = REQUESTS[path]["model"]
    prompt = PROMPT_ESTIMATE if path == "chat" else count_tokens(PROMPT, INSTRUCT)
    assert (record.input_tokens, record.output_tokens) == (prompt, count_tokens(fp.reply, model))


async def test_async_raw_stream_bytes_have_no_usage_chunk_the_caller_did_not_ask_for(
    aoai: openai.AsyncOpenAI, fp: FakeProvider
) -> None:
    tokenspy.observe(aoai)
    async with aoai.completions.with_streaming_response.create(model=INSTRUCT, prompt=PROMPT, stream=True) as response:
        events = _data([line async for line in response.iter_lines()])
    assert fp.requests[0]["stream_options"] is None
    assert events and all(event["choices"] for event in events)
    record = only_record()
    assert (record.status, record.usage_source) == ("finished", "estimated")
    assert (record.input_tokens, record.output_tokens) == (count_tokens(PROMPT, INSTRUCT),
                                                          count_tokens(fp.reply, INSTRUCT))


def test_raw_response_parsed_stream_is_not_asked_for_usage_and_estimated(
    oai: openai.OpenAI, fp: FakeProvider
) -> None:
    # Its `parse()` could as well have been bytes: nothing is asked, and the parsed stream is estimated.
    tokenspy.observe(oai)
    raw = oai.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES, stream=True)
    chunks = list(raw.parse())
    assert fp.requests[0]["stream_options"] is None and all(chunk.choices for chunk in chunks)
    record = only_record()
    assert (record.status, record.partial, record.usage_source) == ("finished", False, "estimated")
    assert (record.input_tokens, record.output_tokens) == (PROMPT_ESTIMATE, count_tokens(fp.reply, "gpt-4o"))


def test_raw_stream_with_include_usage_from_the_caller_is_exact(oai: openai.OpenAI, fp: FakeProvider) -> None:
    tokenspy.observe(oai)
    kwargs = {**REQUESTS["chat"], "stream_options": {"include_usage": True}}
    events = _data(_streaming_response_lines(oai, "chat", kwargs))
    assert events[-1]["choices"] == [] and events[-1]["usage"] == fp.requests[0]["usage"]  # theirs, as asked
    assert_exact(only_record(), openai_expected(fp.requests[0]["usage"]), GPT_4O)


# -- a tracked stream's body read as bytes ----------------------------------------------------------------


def test_anthropic_stream_read_through_raw_events_records_exact_usage(
    ant: anthropic.Anthropic, fp: FakeProvider
) -> None:
    tokenspy.observe(ant)
    s = ant.messages.create(**ANTHROPIC_ARGS, stream=True)
    events = list(anthropic.Stream.raw_events(s.response))  # e.g. to forward them to a browser
    assert [event.event for event in events][-1] == "message_stop"
    assert_exact(only_record(), anthropic_expected(fp.requests[0]["usage"]), HAIKU)


async def test_async_anthropic_stream_read_through_raw_events_records_exact_usage(
    aant: anthropic.AsyncAnthropic, fp: FakeProvider
) -> None:
    tokenspy.observe(aant)
    s = await aant.messages.create(**ANTHROPIC_ARGS, stream=True)
    events = [event async for event in anthropic.AsyncStream.raw_events(s.response)]
    assert [event.event for event in events][-1] == "message_stop"
    assert_exact(only_record(), anthropic_expected(fp.requests[0]["usage"]), HAIKU)


def test_openai_stream_response_read_as_lines_records_exact_usage(oai: openai.OpenAI, fp: FakeProvider) -> None:
    # Asked for usage (nothing said the bytes would be read): the chunk is in these bytes, and counted.
    tokenspy.observe(oai)
    s = oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
    events = _data(list(s.response.iter_lines()))
    assert events[-1]["usage"] == fp.requests[0]["usage"]
    assert_exact(only_record(), openai_expected(fp.requests[0]["usage"]), GPT_4O)


def test_anthropic_stream_raw_read_stopped_early_is_partial(ant: anthropic.Anthropic, fp: FakeProvider) -> None:
    tokenspy.observe(ant)
    fp.set_flags("slow")
    s = ant.messages.create(**ANTHROPIC_ARGS, stream=True)
    read = []
    for event in anthropic.Stream.raw_events(s.response):
        read.append(event)
        if event.event == "content_block_delta":
            break
    s.close()
    record = only_record()
    assert (record.status, record.partial) == ("aborted", True)
    assert record.output_tokens == count_tokens(json.loads(read[-1].data)["delta"]["text"], HAIKU_MODEL)


def test_iterated_stream_leaves_nothing_on_its_response(oai: openai.OpenAI, fp: FakeProvider) -> None:
    # The reader for raw reads goes with the first close: nothing keeps the tracker alive from the
    # response (an httpx response sits in a reference cycle).
    gc.disable()
    try:
        tokenspy.observe(oai)
        s = oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        assert "iter_bytes" in vars(s.response)
        for _ in s:
            pass
        assert "iter_bytes" not in vars(s.response) and "close" not in vars(s.response)
        tracker = weakref.ref(s._tokenspy_stream)  # type: ignore[attr-defined]
        del s
        assert tracker() is None
    finally:
        gc.enable()
    assert_exact(only_record(), openai_expected(fp.requests[0]["usage"]), GPT_4O)


# -- time to first token of a body read as bytes ----------------------------------------------------------

DELAY = 0.03
REPLY = "Zebras cross the road at noon."
FIRST, LAST = "Zebras", "noon."
# Events the fake sends before the first text: the OpenAI role chunk; response.created, .in_progress,
# .output_item.added, .content_part.added; message_start, content_block_start, ping.
EMPTY_EVENTS_BEFORE_TEXT = {"chat": 1, "responses": 4, "anthropic": 3}


class Seen:
    """When the caller saw the first and the last word of the reply in the lines it read."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.last: float | None = None

    def line(self, line: str) -> None:
        if self.first is None and FIRST in line:
            self.first = time.perf_counter()
        if LAST in line:
            self.last = time.perf_counter()

    def lines(self, lines: Iterator[str]) -> None:
        for line in lines:
            self.line(line)

    async def alines(self, lines: AsyncIterator[str]) -> None:
        async for line in lines:
            self.line(line)


def _assert_ttft_is_the_first_output(record: tokenspy.CallRecord, seen: Seen, api: str) -> None:
    assert record.status == "finished" and record.ttft_s is not None
    assert seen.first is not None and seen.last is not None
    assert record.ttft_s >= EMPTY_EVENTS_BEFORE_TEXT[api] * DELAY  # not the first byte
    assert record.latency_s - record.ttft_s >= seen.last - seen.first  # not the end of the read
    assert seen.last - seen.first >= DELAY


@pytest.fixture
def slow(fp: FakeProvider) -> FakeProvider:
    fp.reply = REPLY
    fp.chunk_delay = DELAY
    return fp


def test_raw_read_ttft_is_the_first_output_openai_chat(oai: openai.OpenAI, slow: FakeProvider) -> None:
    tokenspy.observe(oai)
    seen = Seen()
    with oai.chat.completions.with_streaming_response.create(
        model="gpt-4o", messages=MESSAGES, stream=True
    ) as response:
        seen.lines(response.iter_lines())
    _assert_ttft_is_the_first_output(only_record(), seen, "chat")


def test_raw_read_ttft_is_the_first_output_openai_responses(oai: openai.OpenAI, slow: FakeProvider) -> None:
    tokenspy.observe(oai)
    seen = Seen()
    with oai.responses.with_streaming_response.create(model="gpt-4o", input="hi", stream=True) as response:
        seen.lines(line for line in response.iter_lines() if "output_text.delta" in line)
    _assert_ttft_is_the_first_output(only_record(), seen, "responses")


def test_raw_read_ttft_is_the_first_output_anthropic_raw_events(ant: anthropic.Anthropic, slow: FakeProvider) -> None:
    tokenspy.observe(ant)
    seen = Seen()
    s = ant.messages.create(**ANTHROPIC_ARGS, stream=True)
    seen.lines(event.data for event in anthropic.Stream.raw_events(s.response))
    _assert_ttft_is_the_first_output(only_record(), seen, "anthropic")


async def test_async_raw_read_ttft_is_the_first_output_openai_chat(
    aoai: openai.AsyncOpenAI, slow: FakeProvider
) -> None:
    tokenspy.observe(aoai)
    seen = Seen()
    async with aoai.chat.completions.with_streaming_response.create(
        model="gpt-4o", messages=MESSAGES, stream=True
    ) as response:
        await seen.alines(response.iter_lines())
    _assert_ttft_is_the_first_output(only_record(), seen, "chat")


async def test_async_raw_read_ttft_is_the_first_output_anthropic(
    aant: anthropic.AsyncAnthropic, slow: FakeProvider
) -> None:
    tokenspy.observe(aant)
    seen = Seen()
    async with aant.messages.with_streaming_response.create(**ANTHROPIC_ARGS, stream=True) as response:
        await seen.alines(response.iter_lines())
    _assert_ttft_is_the_first_output(only_record(), seen, "anthropic")
