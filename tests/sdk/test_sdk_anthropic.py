"""anthropic Messages: create (stream and not), the messages.stream() helper, early ends, errors."""

from __future__ import annotations

import asyncio
import gc
from decimal import Decimal
from typing import Any

import anthropic
import pytest
from sdk_helpers import HAIKU, HAIKU_MODEL, MESSAGES, anthropic_expected, assert_exact, cost
from test_sdk_openai_chat import only_record

import tokenspy
from tokenspy.testing import FakeProvider
from tokenspy_core.tokenizer import count_tokens

ARGS: dict[str, Any] = {"model": HAIKU_MODEL, "max_tokens": 256, "messages": MESSAGES}


def assert_partial_after_start(record: tokenspy.CallRecord, sent: dict[str, Any], text: str) -> None:
    """Stopped after message_start: input and cache as reported, output estimated from the text."""
    start = anthropic_expected({**sent, "output_tokens": 0})
    output = count_tokens(text, HAIKU_MODEL)
    assert (record.status, record.partial, record.usage_source) == ("aborted", True, "mixed")
    assert record.estimated_fields == ("output_tokens",)
    assert (
        record.input_tokens,
        record.cached_input_tokens,
        record.cache_write_tokens,
        record.output_tokens,
    ) == (start["input_tokens"], start["cached_input_tokens"], start["cache_write_tokens"], output)
    assert record.cost == cost(
        HAIKU,
        input=start["input_tokens"],
        output=output,
        cached=start["cached_input_tokens"],
        write=start["cache_write_tokens"],
    )


def test_non_stream_records_exact_usage_with_cache_and_thinking(
    ant: anthropic.Anthropic, fp: FakeProvider
) -> None:
    fp.reasoning_tokens = 3

    @tokenspy.profile
    def ask() -> Any:
        return ant.messages.create(**ARGS)

    message = ask()
    sent = fp.requests[0]["usage"]
    assert message.usage.input_tokens == sent["input_tokens"]  # raw: excludes the cache
    record = only_record()
    assert_exact(record, anthropic_expected(sent), HAIKU)
    assert (record.cached_input_tokens, record.cache_write_tokens, record.reasoning_tokens) == (4, 2, 3)
    assert (record.provider, record.span_path) == ("anthropic", ("ask",))


@pytest.mark.parametrize("flags", [(), ("fulldelta",)], ids=["delta-output-only", "delta-cumulative-all"])
def test_create_stream_merges_message_start_and_delta(
    ant: anthropic.Anthropic, fp: FakeProvider, flags: tuple[str, ...]
) -> None:
    fp.set_flags(*flags)
    with tokenspy.session("s"):
        s = ant.messages.create(**ARGS, stream=True)
        assert isinstance(s, anthropic.Stream)
        text = "".join(e.delta.text for e in s if e.type == "content_block_delta")
    assert text == fp.reply
    assert_exact(only_record(), anthropic_expected(fp.requests[0]["usage"]), HAIKU)


def test_stream_helper_text_stream_and_final_message(ant: anthropic.Anthropic, fp: FakeProvider) -> None:
    @tokenspy.profile
    def helper() -> Any:
        with ant.messages.stream(**ARGS) as s:
            text = "".join(s.text_stream)
            return text, s.get_final_message()

    text, final = helper()
    assert text == fp.reply
    sent = fp.requests[0]["usage"]
    assert final.usage.output_tokens == sent["output_tokens"]
    record = only_record()
    assert_exact(record, anthropic_expected(sent), HAIKU)
    assert record.span_path == ("helper",)


def test_stream_helper_until_done_without_iterating(ant: anthropic.Anthropic, fp: FakeProvider) -> None:
    with tokenspy.session("s"), ant.messages.stream(**ARGS) as s:
        s.until_done()
    assert_exact(only_record(), anthropic_expected(fp.requests[0]["usage"]), HAIKU)


def test_stream_helper_get_final_message_consumes_by_itself(
    ant: anthropic.Anthropic, fp: FakeProvider
) -> None:
    with tokenspy.session("s"), ant.messages.stream(**ARGS) as s:
        assert s.get_final_message().content[0].text == fp.reply
    assert_exact(only_record(), anthropic_expected(fp.requests[0]["usage"]), HAIKU)


def test_break_inside_stream_helper_records_partial_with_reported_input(
    ant: anthropic.Anthropic, fp: FakeProvider
) -> None:
    fp.set_flags("slow")
    with tokenspy.session("s"), ant.messages.stream(**ARGS) as s:
        for text in s.text_stream:  # noqa: B007 - the break is the point
            break
    assert_partial_after_start(only_record(), fp.wait_for_outcome(0)["usage"], text)
    assert fp.requests[0]["outcome"] == "client_disconnected"


def test_dropped_stream_records_partial_at_once(ant: anthropic.Anthropic, fp: FakeProvider) -> None:
    # anthropic streams have no reference cycle: dropping one closes it without the cyclic GC
    fp.set_flags("slow")
    with tokenspy.session("s"):
        s = ant.messages.create(**ARGS, stream=True)
        text = ""
        for event in s:
            if event.type == "content_block_delta":
                text = event.delta.text
                break
        del s, event
        assert_partial_after_start(only_record(), fp.wait_for_outcome(0)["usage"], text)


def test_break_right_after_message_start_keeps_its_reported_usage(
    ant: anthropic.Anthropic, fp: FakeProvider
) -> None:
    # message_start's usage is accounted once the consumer has the event: a stop right after it
    # still records the input and cache tokens it reported.
    fp.set_flags("slow")
    with tokenspy.session("s"):
        for event in ant.messages.create(**ARGS, stream=True):
            assert event.type == "message_start"
            break
    assert_partial_after_start(only_record(), fp.wait_for_outcome(0)["usage"], "")


def test_stream_dropped_after_next_message_start_keeps_its_reported_usage(
    ant: anthropic.Anthropic, fp: FakeProvider
) -> None:
    fp.set_flags("slow")
    with tokenspy.session("s"):
        s = ant.messages.create(**ARGS, stream=True)
        assert next(s).type == "message_start"
        del s
        assert_partial_after_start(only_record(), fp.wait_for_outcome(0)["usage"], "")


@pytest.mark.parametrize("flags", [(), ("fulldelta",)], ids=["delta-output-only", "delta-cumulative-all"])
def test_stop_after_the_final_message_delta_is_finished(
    ant: anthropic.Anthropic, fp: FakeProvider, flags: tuple[str, ...]
) -> None:
    # The last message_delta carries the stop reason and the final usage: stopping there, before the
    # empty message_stop, is a whole answer.
    fp.set_flags(*flags)
    with tokenspy.session("s"), ant.messages.stream(**ARGS) as s:
        for event in s:
            if event.type == "message_delta":
                assert event.delta.stop_reason == "end_turn"
                break
    record = only_record()
    assert (record.status, record.partial, record.usage_source) == ("finished", False, "provider")
    # The fake logs a frame's usage after writing it: read the log once the body is written.
    assert_exact(record, anthropic_expected(fp.wait_for_outcome(0)["usage"]), HAIKU)
    assert tokenspy.stats()["partial_calls"] == 0


def test_midstream_error_fails_call_and_reraises(ant: anthropic.Anthropic, fp: FakeProvider) -> None:
    fp.set_flags("midstream")
    with tokenspy.session("s"), pytest.raises(anthropic.APIStatusError, match="midstream error"):
        for _ in ant.messages.create(**ARGS, stream=True):
            pass
    record = only_record()
    assert (record.status, record.partial) == ("failed", True)
    assert record.input_tokens == anthropic_expected({**fp.requests[0]["usage"]})["input_tokens"]


@pytest.mark.parametrize(
    ("flag", "error"), [("http429", anthropic.RateLimitError), ("http500", anthropic.InternalServerError)]
)
def test_http_error_records_failed_call(
    ant: anthropic.Anthropic, fp: FakeProvider, flag: str, error: type[Exception]
) -> None:
    fp.set_flags(flag)
    with tokenspy.session("s"), pytest.raises(error):
        ant.messages.create(**ARGS)
    record = only_record()
    assert (record.status, record.input_tokens, record.output_tokens) == ("failed", 0, 0)


def test_http_error_on_stream_helper_records_failed_call(ant: anthropic.Anthropic, fp: FakeProvider) -> None:
    fp.set_flags("http429")
    with tokenspy.session("s"), pytest.raises(anthropic.RateLimitError), ant.messages.stream(**ARGS):
        pass
    assert only_record().status == "failed"


def test_with_raw_response_is_tracked(ant: anthropic.Anthropic, fp: FakeProvider) -> None:
    with tokenspy.session("s"):
        raw = ant.messages.with_raw_response.create(**ARGS)
    assert raw.parse() is raw.parse()
    assert_exact(only_record(), anthropic_expected(fp.requests[0]["usage"]), HAIKU)


def test_count_tokens_is_not_a_model_call(ant: anthropic.Anthropic) -> None:
    with tokenspy.session("s"):
        ant.messages.count_tokens(model=HAIKU_MODEL, messages=MESSAGES)
    assert tokenspy.calls() == []


# -- async -------------------------------------------------------------------------------------------


async def test_async_create_stream_records_exact_usage(
    aant: anthropic.AsyncAnthropic, fp: FakeProvider
) -> None:
    async with tokenspy.session("s"):
        s = await aant.messages.create(**ARGS, stream=True)
        assert isinstance(s, anthropic.AsyncStream)
        async for _ in s:
            pass
    assert_exact(only_record(), anthropic_expected(fp.requests[0]["usage"]), HAIKU)


async def test_async_break_right_after_message_start_keeps_its_reported_usage(
    aant: anthropic.AsyncAnthropic, fp: FakeProvider
) -> None:
    fp.set_flags("slow")
    async with tokenspy.session("s"):
        async for event in await aant.messages.create(**ARGS, stream=True):
            assert event.type == "message_start"
            break
    assert_partial_after_start(only_record(), fp.wait_for_outcome(0)["usage"], "")


async def test_async_stream_helper_final_message(aant: anthropic.AsyncAnthropic, fp: FakeProvider) -> None:
    @tokenspy.profile
    async def helper() -> str:
        async with aant.messages.stream(**ARGS) as s:
            text = "".join([t async for t in s.text_stream])
            await s.get_final_message()
            return text

    assert await helper() == fp.reply
    record = only_record()
    assert_exact(record, anthropic_expected(fp.requests[0]["usage"]), HAIKU)
    assert record.span_path == ("helper",)


async def test_async_break_inside_stream_helper_records_partial(
    aant: anthropic.AsyncAnthropic, fp: FakeProvider
) -> None:
    fp.set_flags("slow")
    async with tokenspy.session("s"), aant.messages.stream(**ARGS) as s:
        async for text in s.text_stream:  # noqa: B007 - the break is the point
            break
    assert_partial_after_start(only_record(), fp.wait_for_outcome(0)["usage"], text)


async def test_async_task_cancelled_mid_stream_records_partial(
    aant: anthropic.AsyncAnthropic, fp: FakeProvider
) -> None:
    fp.set_flags("slow")
    got_text = asyncio.Event()
    received: list[str] = []

    async def consume() -> None:
        async with aant.messages.stream(**ARGS) as s:
            async for text in s.text_stream:
                received.append(text)
                got_text.set()

    async with tokenspy.session("s"):
        task = asyncio.create_task(consume())
        await got_text.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert_partial_after_start(only_record(), fp.wait_for_outcome(0)["usage"], "".join(received))


async def test_async_non_stream_records_exact_usage(aant: anthropic.AsyncAnthropic, fp: FakeProvider) -> None:
    async with tokenspy.session("s"):
        await aant.messages.create(**ARGS)
    assert_exact(only_record(), anthropic_expected(fp.requests[0]["usage"]), HAIKU)


async def test_async_with_raw_response_is_tracked(aant: anthropic.AsyncAnthropic, fp: FakeProvider) -> None:
    async with tokenspy.session("s"):
        raw = await aant.messages.with_raw_response.create(**ARGS)
    assert (await raw.parse()) is (await raw.parse())
    assert_exact(only_record(), anthropic_expected(fp.requests[0]["usage"]), HAIKU)


async def test_async_stream_helper_until_done(aant: anthropic.AsyncAnthropic, fp: FakeProvider) -> None:
    async with tokenspy.session("s"), aant.messages.stream(**ARGS) as s:
        await s.until_done()
    assert_exact(only_record(), anthropic_expected(fp.requests[0]["usage"]), HAIKU)


# -- fast mode ------------------------------------------------------------------------------------------

FAST_MODEL = "claude-opus-4-8"  # genai-prices: $5 / $25 per million, fast mode $10 / $50


def _fast_client(body: str, content_type: str) -> anthropic.Anthropic:
    import httpx2

    def provider(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": content_type}, content=body.encode())

    return tokenspy.observe(anthropic.Anthropic(base_url="http://mock", api_key="sk-ant-fake", max_retries=0,
                                                http_client=httpx2.Client(transport=httpx2.MockTransport(provider))))


def _event(kind: str, data: dict[str, Any]) -> str:
    import json

    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n"


def test_fast_mode_is_priced_at_its_own_rates_streamed_or_not() -> None:
    import json

    usage = {"input_tokens": 10_000, "output_tokens": 2_000, "speed": "fast"}
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": FAST_MODEL, "stop_reason": "end_turn",
               "content": [{"type": "text", "text": "ok"}], "usage": usage}
    _fast_client(json.dumps(message), "application/json").messages.create(
        model=FAST_MODEL, max_tokens=4000, messages=MESSAGES)
    stream = "".join([
        _event("message_start", {"message": {**message, "content": [], "stop_reason": None,
                                             "usage": {**usage, "output_tokens": 1}}}),
        _event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        _event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "ok"}}),
        _event("content_block_stop", {"index": 0}),
        _event("message_delta", {"delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2_000}}),
        _event("message_stop", {}),
    ])
    with _fast_client(stream, "text/event-stream").messages.stream(
            model=FAST_MODEL, max_tokens=4000, messages=MESSAGES) as s:
        s.get_final_message()
    records = tokenspy.calls()
    assert [(r.streamed, r.input_tokens, r.output_tokens) for r in records] == [(False, 10_000, 2_000),
                                                                               (True, 10_000, 2_000)]
    assert [r.cost for r in records] == [Decimal("0.2"), Decimal("0.2")]  # not the standard $0.10


@pytest.mark.parametrize("stream", [False, True])
def test_messages_given_as_a_generator_are_sent_and_counted(
        ant: anthropic.Anthropic, fp: FakeProvider, stream: bool) -> None:
    # The SDK takes any iterable and reads it only as it serializes the request, after tokenspy's
    # hook: read there first, a generator would go out empty.
    with tokenspy.session("s"):
        for messages in (MESSAGES, (message for message in MESSAGES)):
            response = ant.messages.create(model=HAIKU_MODEL, max_tokens=50, messages=messages, stream=stream)
            if stream:
                for _ in response:  # type: ignore[union-attr]
                    pass
    listed, generated = (entry["usage"] for entry in fp.requests)
    assert generated == listed and listed["input_tokens"] > 0  # the same prompt went out
    first, second = tokenspy.calls()
    assert (second.input_tokens, second.output_tokens, second.usage_source) == (
        first.input_tokens, first.output_tokens, "provider")


def test_async_break_in_a_helper_coroutine_closes_like_the_bare_sdk(fp: FakeProvider) -> None:
    """The SDK's own `__aiter__` generator under tokenspy's is closed with it, in order: left to the event
    loop's finalizer, its close ran while `asyncio.run()` shut the SDK's inner generators down, and
    asyncio logged "aclose(): asynchronous generator is already running" (the bare SDK logs nothing)."""
    errors: list[str] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(
            lambda loop, context: errors.append(f"{context['message']}: {context.get('exception')!r}"))
        client = tokenspy.observe(anthropic.AsyncAnthropic(base_url=fp.anthropic_base_url, api_key="k",
                                                           max_retries=0))
        stream = await client.messages.create(**ARGS, stream=True)

        async def consume() -> None:
            seen = 0
            async for _ in stream:
                seen += 1
                if seen == 4:  # message_start, content_block_start, two text deltas
                    break

        await consume()
        await client.close()

    fp.reply = " ".join(["word"] * 40)
    gc.collect()  # earlier tests' clients, collected while this loop runs, report their own closed loops here
    asyncio.run(main())
    (record,) = tokenspy.calls()
    assert (record.status, record.partial, record.output_tokens) == ("aborted", True, 2)
    assert [error for error in errors if "asynchronous generator" in error] == []


def test_async_break_right_before_asyncio_run_returns_logs_nothing(fp: FakeProvider) -> None:
    """No `await` between the `break` and the end of `asyncio.run()`: the loop's shutdown closes the
    iterators left open. tokenspy's iterator reads the SDK's event generator itself (as the SDK's own
    `__aiter__` does), so there is no SDK generator under it for that shutdown to close twice."""
    errors: list[str] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda loop, context: errors.append(context["message"]))
        client = tokenspy.observe(anthropic.AsyncAnthropic(base_url=fp.anthropic_base_url, api_key="k",
                                                           max_retries=0))
        seen = 0
        async for _ in await client.messages.create(**ARGS, stream=True):
            seen += 1
            if seen == 4:
                break

    fp.reply = " ".join(["word"] * 40)
    gc.collect()
    for _ in range(3):
        asyncio.run(main())
    assert [(r.status, r.partial, r.output_tokens) for r in tokenspy.calls()] == [("aborted", True, 2)] * 3
    assert [error for error in errors if "asynchronous generator" in error] == []


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_the_sdks_own_tracing_still_sees_every_streamed_event(fp: FakeProvider, is_async: bool) -> None:
    """anthropic's OpenTelemetry tracing (`open_telemetry=`) reads a stream's usage from each event its
    iterator hands on: tokenspy's iterator, in place of the SDK's, reports them the same way."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    options: Any = {"tracer_provider": provider}
    fp.reply = "one two three"
    if is_async:
        async def main() -> None:
            client = tokenspy.observe(anthropic.AsyncAnthropic(
                base_url=fp.anthropic_base_url, api_key="k", max_retries=0, open_telemetry=options))
            async for _ in await client.messages.create(**ARGS, stream=True):
                pass
            await client.close()

        asyncio.run(main())
    else:
        client = tokenspy.observe(anthropic.Anthropic(base_url=fp.anthropic_base_url, api_key="k", max_retries=0,
                                                      open_telemetry=options))
        for _ in client.messages.create(**ARGS, stream=True):
            pass
    record = only_record()
    (span,) = exporter.get_finished_spans()
    attributes = span.attributes or {}
    assert (attributes["gen_ai.usage.input_tokens"], attributes["gen_ai.usage.output_tokens"]) == (
        record.input_tokens, record.output_tokens)
    assert (record.output_tokens, record.usage_source, record.partial) == (3, "provider", False)
