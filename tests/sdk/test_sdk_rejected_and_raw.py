"""Answers the SDK rejects after the provider billed them (`parse()`), bodies read as raw bytes
(`with_streaming_response`), `n` > 1 streams without a usage chunk, and the peek pattern."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anthropic
import httpx
import openai
import pytest
from pydantic import BaseModel, ValidationError
from sdk_helpers import (
    GPT_4O,
    HAIKU,
    HAIKU_MODEL,
    MESSAGES,
    anthropic_expected,
    assert_exact,
    cost,
    openai_expected,
    tokens_of,
)
from test_sdk_openai_chat import PROMPT_ESTIMATE, only_record

import tokenspy
from tokenspy.testing import FakeProvider
from tokenspy_core.tokenizer import count_tokens


class City(BaseModel):
    city: str


USAGE = {"prompt_tokens": 120, "completion_tokens": 50, "total_tokens": 170}


def _completion(content: str, finish_reason: str) -> dict[str, Any]:
    return {
        "id": "c",
        "object": "chat.completion",
        "created": 0,
        "model": "gpt-4o",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish_reason}
        ],
        "usage": USAGE,
    }


def _transport(reply: Callable[[dict[str, Any]], httpx.Response]) -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: reply(json.loads(request.content)))


def _mock(reply: Callable[[dict[str, Any]], httpx.Response]) -> openai.OpenAI:
    return openai.OpenAI(base_url="http://mock/v1", api_key="sk-fake", max_retries=0,
                         http_client=httpx.Client(transport=_transport(reply)))


def _amock(reply: Callable[[dict[str, Any]], httpx.Response]) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url="http://mock/v1", api_key="sk-fake", max_retries=0,
                              http_client=httpx.AsyncClient(transport=_transport(reply)))


def _assert_failed_with_billed_usage(record: tokenspy.CallRecord, error: str) -> None:
    """The user got the SDK's exception (failed), the provider's exact usage and its cost."""
    assert (record.status, record.input_tokens, record.output_tokens, record.usage_source) == (
        "failed",
        120,
        50,
        "provider",
    )
    assert record.partial  # a failed call that got an answer, as every such record
    assert record.cost == cost(GPT_4O, input=120, output=50)
    assert record.error is not None and record.error.startswith(error)


# -- parse(): the SDK rejects an answer the provider billed ------------------------------------------


def test_parse_cut_by_max_tokens_records_the_billed_usage() -> None:
    client = tokenspy.observe(
        _mock(lambda body: httpx.Response(200, json=_completion('{"city": "Par', "length")))
    )
    with pytest.raises(openai.LengthFinishReasonError):
        client.chat.completions.parse(model="gpt-4o", messages=MESSAGES, response_format=City, max_tokens=50)
    _assert_failed_with_billed_usage(only_record(), "LengthFinishReasonError")


def test_parse_content_filter_records_the_billed_usage() -> None:
    client = tokenspy.observe(_mock(lambda body: httpx.Response(200, json=_completion("", "content_filter"))))
    with pytest.raises(openai.ContentFilterFinishReasonError):
        client.chat.completions.parse(model="gpt-4o", messages=MESSAGES, response_format=City)
    _assert_failed_with_billed_usage(only_record(), "ContentFilterFinishReasonError")


def test_parse_invalid_json_records_the_billed_usage() -> None:
    client = tokenspy.observe(_mock(lambda body: httpx.Response(200, json=_completion("not json", "stop"))))
    with pytest.raises(ValidationError):
        client.chat.completions.parse(model="gpt-4o", messages=MESSAGES, response_format=City)
    _assert_failed_with_billed_usage(only_record(), "ValidationError")


async def test_async_parse_cut_by_max_tokens_records_the_billed_usage() -> None:
    client = tokenspy.observe(
        _amock(lambda body: httpx.Response(200, json=_completion('{"city": "Par', "length")))
    )
    with pytest.raises(openai.LengthFinishReasonError):
        await client.chat.completions.parse(model="gpt-4o", messages=MESSAGES, response_format=City)
    _assert_failed_with_billed_usage(only_record(), "LengthFinishReasonError")


def test_parse_accepted_answer_still_finishes_exact() -> None:
    client = tokenspy.observe(_mock(lambda body: httpx.Response(200, json=_completion('{"city": "Paris"}', "stop"))))
    parsed = client.chat.completions.parse(model="gpt-4o", messages=MESSAGES, response_format=City)
    assert parsed.choices[0].message.parsed == City(city="Paris")
    record = only_record()
    assert (record.status, record.partial, record.input_tokens, record.output_tokens) == ("finished", False, 120, 50)


def test_anthropic_parse_invalid_json_records_the_billed_usage(ant: anthropic.Anthropic, fp: FakeProvider) -> None:
    tokenspy.observe(ant)
    with pytest.raises(Exception):  # noqa: B017 - whatever the SDK raises for invalid JSON
        ant.messages.parse(model=HAIKU_MODEL, max_tokens=100, messages=MESSAGES, output_format=City)
    record = only_record()
    assert (record.status, record.usage_source) == ("failed", "provider")
    assert tokens_of(record) == anthropic_expected(fp.requests[0]["usage"])


# -- with_streaming_response bodies read raw -----------------------------------------------------------
# tokenspy does not ask for a raw response's stream usage (test_sdk_raw_bytes.py): these streams ask.
INCLUDE_USAGE: dict[str, Any] = {"stream_options": {"include_usage": True}}

RAW_READS: dict[str, Callable[[Any], object]] = {
    "iter_bytes": lambda response: list(response.iter_bytes()),
    "iter_text": lambda response: list(response.iter_text()),
    "iter_lines": lambda response: list(response.iter_lines()),
    "http_response.read": lambda response: response.http_response.read(),
}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("read", list(RAW_READS))
def test_with_streaming_response_read_raw_to_the_end_records_exact_usage(
    oai: openai.OpenAI, fp: FakeProvider, read: str, stream: bool
) -> None:
    with (
        tokenspy.session("s"),
        oai.chat.completions.with_streaming_response.create(
            model="gpt-4o", messages=MESSAGES, stream=stream, **(INCLUDE_USAGE if stream else {})
        ) as response,
    ):
        RAW_READS[read](response)
        record = only_record()  # at the end of the read, not at close or collection
    expected = openai_expected(fp.requests[0]["usage"])
    assert tokens_of(record) == expected
    assert (record.status, record.partial, record.usage_source, record.streamed) == (
        "finished",
        False,
        "provider",
        stream,
    )


async def test_async_with_streaming_response_read_raw_records_exact_usage(
    aoai: openai.AsyncOpenAI, fp: FakeProvider
) -> None:
    tokenspy.observe(aoai)
    for stream in (False, True):
        async with aoai.chat.completions.with_streaming_response.create(
            model="gpt-4o", messages=MESSAGES, stream=stream, **(INCLUDE_USAGE if stream else {})
        ) as response:
            lines = [line async for line in response.iter_lines()]
        assert lines
    records = tokenspy.calls()
    assert [(r.status, r.partial, r.usage_source) for r in records] == [("finished", False, "provider")] * 2
    assert [tokens_of(r) for r in records] == [openai_expected(fp.requests[i]["usage"]) for i in (0, 1)]


def test_with_streaming_response_stream_read_raw_without_usage_is_estimated_not_partial(
    oai: openai.OpenAI, fp: FakeProvider
) -> None:
    tokenspy.observe(oai)
    with oai.chat.completions.with_streaming_response.create(
        model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": False}
    ) as response:
        response.read()
    record = only_record()
    assert (record.status, record.partial, record.usage_source) == ("finished", False, "estimated")
    assert (record.input_tokens, record.output_tokens) == (PROMPT_ESTIMATE, count_tokens(fp.reply, "gpt-4o"))


def test_with_streaming_response_stream_raw_read_stopped_early_is_partial(
    oai: openai.OpenAI, fp: FakeProvider
) -> None:
    tokenspy.observe(oai)
    fp.set_flags("slow")
    full = count_tokens(fp.reply, "gpt-4o")
    with oai.chat.completions.with_streaming_response.create(
        model="gpt-4o", messages=MESSAGES, stream=True
    ) as response:
        for i, _line in enumerate(response.iter_lines()):
            if i == 8:
                break
        record = only_record()  # at the break
    assert (record.status, record.partial, record.usage_source) == ("aborted", True, "estimated")
    assert 0 < record.output_tokens < full  # the text of the bytes read so far


def test_with_streaming_response_parsed_stream_is_still_tracked_per_item(
    oai: openai.OpenAI, fp: FakeProvider
) -> None:
    tokenspy.observe(oai)
    with oai.chat.completions.with_streaming_response.create(
        model="gpt-4o", messages=MESSAGES, stream=True, **INCLUDE_USAGE
    ) as response:
        chunks = list(response.parse())
    assert chunks[-1].choices == [] and chunks[-1].usage is not None  # the caller asked: the chunk is theirs
    record = only_record()
    assert tokens_of(record) == openai_expected(fp.requests[0]["usage"])
    assert (record.status, record.partial) == ("finished", False)


def test_anthropic_with_streaming_response_stream_read_raw_records_exact_usage(
    ant: anthropic.Anthropic, fp: FakeProvider
) -> None:
    tokenspy.observe(ant)
    with ant.messages.with_streaming_response.create(
        model=HAIKU_MODEL, max_tokens=100, messages=MESSAGES, stream=True
    ) as response:
        assert list(response.iter_lines())
    assert_exact(only_record(), anthropic_expected(fp.requests[0]["usage"]), HAIKU)


# -- n > 1 without a usage chunk -----------------------------------------------------------------------


def _two_choices(body: dict[str, Any]) -> httpx.Response:
    def chunk(choices: list[dict[str, Any]]) -> str:
        data = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "gpt-4o", "choices": choices}
        return f"data: {json.dumps(data)}\n\n"

    events = [
        chunk([{"index": 0, "delta": {"content": "A"}}, {"index": 1, "delta": {"content": "B"}}]),
        chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}]),
        chunk([{"index": 1, "delta": {"content": " and a longer second answer"}}]),
        chunk([{"index": 1, "delta": {}, "finish_reason": "stop"}]),
    ]
    return httpx.Response(
        200, headers={"content-type": "text/event-stream"}, content="".join(events) + "data: [DONE]\n\n"
    )


def test_n2_stop_after_first_choice_finished_is_partial() -> None:
    client = tokenspy.observe(_mock(_two_choices))
    s = client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, n=2, stream=True, stream_options={"include_usage": False}
    )
    for chunk in s:
        if chunk.choices[0].index == 0 and chunk.choices[0].finish_reason:
            break
    s.close()
    record = only_record()
    assert (record.status, record.partial) == ("aborted", True)
    assert record.output_tokens == count_tokens("AB", "gpt-4o")


def test_n2_every_choice_finished_then_closed_is_finished() -> None:
    client = tokenspy.observe(_mock(_two_choices))
    s = client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, n=2, stream=True, stream_options={"include_usage": False}
    )
    for seen, _chunk in enumerate(s, 1):
        if seen == 4:  # the last finish_reason, before [DONE]
            break
    s.close()
    record = only_record()
    assert (record.status, record.partial) == ("finished", False)
    assert record.output_tokens == count_tokens("AB and a longer second answer", "gpt-4o")


# -- peeking at the first chunk ----------------------------------------------------------------------


def test_peek_with_next_on_the_stream_then_loop_records_exact_usage(oai: openai.OpenAI, fp: FakeProvider) -> None:
    # The documented way to peek: `next(stream)`. (`next(iter(stream))` drops the iterator `iter()`
    # made, which is how tokenspy sees a `break`: see docs/sdk.md, Known limits.)
    tokenspy.observe(oai)
    s = oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
    first = next(s)
    rest = list(s)
    assert "".join(c.choices[0].delta.content or "" for c in [first, *rest]) == fp.reply
    record = only_record()
    assert tokens_of(record) == openai_expected(fp.requests[0]["usage"])
    assert (record.status, record.partial, record.usage_source) == ("finished", False, "provider")


# -- low-level requests whose stream items are plain dicts ---------------------------------------------


@pytest.mark.parametrize("read", ["for", "next"])
def test_openai_low_level_stream_of_dicts_is_accounted_and_hides_the_usage_chunk(
    oai: openai.OpenAI, fp: FakeProvider, read: str
) -> None:
    # `client.post(..., stream_cls=Stream[object])`: the SDK hands on the decoded JSON dicts.
    body = {"model": "gpt-4o", "messages": MESSAGES, "stream": True}

    def chunks(client: openai.OpenAI) -> list[Any]:
        stream = client.post("/chat/completions", body=body, cast_to=object, stream=True,
                             stream_cls=openai.Stream[object])
        if read == "for":
            return list(stream)
        got = []
        while True:
            try:
                got.append(next(stream))
            except StopIteration:
                return got

    unobserved = chunks(oai)
    observed = chunks(tokenspy.observe(oai.copy()))
    assert [c["choices"] for c in observed] == [c["choices"] for c in unobserved]  # no usage chunk shown
    assert all(type(c) is dict for c in observed)
    record = only_record()
    assert (record.usage_source, record.status, record.partial) == ("provider", "finished", False)
    assert_exact(record, openai_expected(fp.requests[-1]["usage"]), GPT_4O)


def test_anthropic_low_level_stream_of_dicts_is_accounted(ant: anthropic.Anthropic, fp: FakeProvider) -> None:
    body = {"model": HAIKU_MODEL, "max_tokens": 100, "messages": MESSAGES, "stream": True}
    events = list(tokenspy.observe(ant).post("/v1/messages", body=body, cast_to=object, stream=True,
                                             stream_cls=anthropic.Stream[object]))
    assert events[0]["type"] == "message_start" and events[-1]["type"] == "message_stop"
    record = only_record()
    assert (record.usage_source, record.status, record.partial) == ("provider", "finished", False)
    assert_exact(record, anthropic_expected(fp.requests[-1]["usage"]), HAIKU)


# -- a gateway's malformed chunk ---------------------------------------------------------------------

def test_a_chunk_tokenspy_cannot_read_is_skipped_and_the_rest_still_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    """`"choices": null` (a gateway's) made the chunk reader raise, and accounting stopped for the rest of
    the stream: the text after it was not counted, nor the usage chunk. Now only that chunk is skipped."""
    monkeypatch.setenv("TOKENSPY_STRICT", "0")
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "gpt-4o"}
    events = [
        {**chunk, "choices": None},
        {**chunk, "choices": [{"index": 0, "delta": {"content": "Hello"}, "finish_reason": None}]},
        {**chunk, "choices": [{"index": 0, "delta": {"content": " there"}, "finish_reason": "stop"}]},
        {**chunk, "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}},
    ]
    body = "".join(f"data: {json.dumps(event)}\n\n" for event in events) + "data: [DONE]\n\n"
    client = tokenspy.observe(_mock(lambda request: httpx.Response(
        200, headers={"content-type": "text/event-stream"}, content=body.encode())))
    stream = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True,
                                            stream_options={"include_usage": True})
    assert len(list(stream)) == 4  # the user's stream is untouched
    record = only_record()
    assert (record.status, record.input_tokens, record.output_tokens, record.usage_source) == (
        "finished", 9, 2, "provider")
    assert record.cost == cost(GPT_4O, input=9, output=2)


def test_a_served_model_that_is_no_name_leaves_the_requested_one() -> None:
    """A gateway's `"model": 5` (or a tier that is no name) made the call's end raise: no record at all."""
    body = {**_completion("hi", "stop"), "model": 5, "service_tier": ["flex"]}
    client = tokenspy.observe(_mock(lambda request: httpx.Response(200, json=body)))
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    record = only_record()
    assert (record.model, record.input_tokens, record.output_tokens) == ("gpt-4o", 120, 50)
    assert record.cost == cost(GPT_4O, input=120, output=50)


def test_a_stream_whose_first_event_is_an_error_is_not_billed() -> None:
    """An overloaded provider answers 200 and an error event: nothing began, nothing was billed (a stream
    failing after its first event is, see test_a_stream_failing_before_its_first_text_bills_the_prompt)."""
    body = 'data: {"error": {"message": "upstream overloaded", "type": "overloaded_error"}}\n\n'
    client = tokenspy.observe(_mock(lambda request: httpx.Response(
        200, headers={"content-type": "text/event-stream"}, content=body.encode())))
    with pytest.raises(openai.APIError, match="overloaded"):
        for _ in client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True):
            pass
    record = only_record()
    assert (record.status, record.partial, record.input_tokens, record.output_tokens) == ("failed", False, 0, 0)
    assert record.cost == 0


def test_a_usage_chunk_with_null_choices_is_read_and_hidden() -> None:
    """A gateway's usage chunk saying `"choices": null`: its usage was lost (estimated instead) and the chunk
    tokenspy had asked for was handed to the user's loop."""
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "gpt-4o"}

    def reply(request: dict[str, Any]) -> httpx.Response:
        assert request["stream_options"] == {"include_usage": True}  # asked by tokenspy
        events = [{**chunk, "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": "stop"}]},
                  {**chunk, "choices": None, "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}}]
        body = "".join(f"data: {json.dumps(event)}\n\n" for event in events) + "data: [DONE]\n\n"
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body.encode())

    client = tokenspy.observe(_mock(reply))
    chunks = list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    assert len(chunks) == 1
    record = only_record()
    assert (record.input_tokens, record.output_tokens, record.usage_source) == (9, 4, "provider")
