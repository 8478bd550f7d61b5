"""openai, async: the same guarantees through AsyncOpenAI, plus task cancellation."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest
from sdk_helpers import EMBEDDING_3_SMALL, GPT_4O, MESSAGES, assert_exact, openai_expected, responses_expected
from test_sdk_openai_chat import PROMPT_ESTIMATE, assert_partial, only_record

import tokenspy
from tokenspy.testing import FakeProvider
from tokenspy_core.tokenizer import count_tokens


async def astream(client: openai.AsyncOpenAI, **kwargs: Any) -> openai.AsyncStream[Any]:
    return await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True, **kwargs)


async def test_async_non_stream_chat_records_exact_usage(aoai: openai.AsyncOpenAI, fp: FakeProvider) -> None:
    @tokenspy.profile
    async def ask() -> Any:
        return await aoai.chat.completions.create(model="gpt-4o", messages=MESSAGES)

    await ask()
    record = only_record()
    assert_exact(record, openai_expected(fp.requests[0]["usage"]), GPT_4O)
    assert record.span_path == ("ask",)


async def test_async_stream_hides_usage_chunk_and_records_exact_usage(
    aoai: openai.AsyncOpenAI, fp: FakeProvider
) -> None:
    @tokenspy.profile
    async def stream_response() -> str:
        s = await astream(aoai)
        assert isinstance(s, openai.AsyncStream)
        return "".join([chunk.choices[0].delta.content or "" async for chunk in s])

    assert await stream_response() == fp.reply
    record = only_record()
    assert_exact(record, openai_expected(fp.requests[0]["usage"]), GPT_4O)
    assert record.span_path == ("stream_response",)


async def test_async_break_records_partial_at_once(aoai: openai.AsyncOpenAI, fp: FakeProvider) -> None:
    fp.set_flags("slow")
    async with tokenspy.session("s"):
        s = await astream(aoai)
        text = ""
        async for chunk in s:
            text += chunk.choices[0].delta.content or ""
            if text:
                break
        assert_partial(only_record(), text)  # no event-loop turn needed
        await s.close()
    assert fp.wait_for_outcome(0)["outcome"] == "client_disconnected"


async def test_async_close_mid_stream_records_partial(aoai: openai.AsyncOpenAI, fp: FakeProvider) -> None:
    fp.set_flags("slow")
    async with tokenspy.session("s"):
        s = await astream(aoai)
        text = (await s.__anext__()).choices[0].delta.content or ""
        text += (await s.__anext__()).choices[0].delta.content or ""
        await s.close()
    assert s.response.is_closed
    assert_partial(only_record(), text)


async def test_async_with_exit_mid_stream_records_partial(aoai: openai.AsyncOpenAI, fp: FakeProvider) -> None:
    fp.set_flags("slow")
    async with tokenspy.session("s"), await astream(aoai) as s:
        text = (await s.__anext__()).choices[0].delta.content or ""
    assert s.response.is_closed
    assert_partial(only_record(), text)
    assert fp.wait_for_outcome(0)["outcome"] == "client_disconnected"


async def test_task_cancelled_mid_stream_records_partial(aoai: openai.AsyncOpenAI, fp: FakeProvider) -> None:
    fp.set_flags("slow")
    received: list[str] = []
    two_chunks = asyncio.Event()

    async def consume() -> None:
        async for chunk in await astream(aoai):
            received.append(chunk.choices[0].delta.content or "")
            if len(received) == 2:
                two_chunks.set()

    async with tokenspy.session("s"):
        task = asyncio.create_task(consume())
        await two_chunks.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    record = only_record()
    assert (record.status, record.partial) == ("aborted", True)
    assert record.input_tokens == PROMPT_ESTIMATE
    assert record.output_tokens == count_tokens("".join(received), "gpt-4o")
    assert fp.wait_for_outcome(0)["outcome"] == "client_disconnected"


async def test_async_midstream_error_fails_call_and_reraises(
    aoai: openai.AsyncOpenAI, fp: FakeProvider
) -> None:
    fp.set_flags("midstream")
    async with tokenspy.session("s"):
        with pytest.raises(openai.APIError, match="midstream error"):
            async for _ in await astream(aoai):
                pass
    record = only_record()
    assert (record.status, record.partial) == ("failed", True)


async def test_async_http_429_records_failed_call(aoai: openai.AsyncOpenAI, fp: FakeProvider) -> None:
    fp.set_flags("http429")
    async with tokenspy.session("s"):
        with pytest.raises(openai.RateLimitError):
            await astream(aoai)
    record = only_record()
    assert (record.status, record.input_tokens, record.output_tokens) == ("failed", 0, 0)


async def test_async_stream_helper_get_final_completion(aoai: openai.AsyncOpenAI, fp: FakeProvider) -> None:
    async with tokenspy.session("s"), aoai.chat.completions.stream(model="gpt-4o", messages=MESSAGES) as s:
        final = await s.get_final_completion()
    assert final.choices[0].message.content == fp.reply
    assert_exact(only_record(), openai_expected(fp.requests[0]["usage"]), GPT_4O)


async def test_async_responses_stream_records_exact_usage(aoai: openai.AsyncOpenAI, fp: FakeProvider) -> None:
    async with tokenspy.session("s"):
        events = [e.type async for e in await aoai.responses.create(model="gpt-4o", input="hi", stream=True)]
    assert events[-1] == "response.completed"
    assert_exact(only_record(), responses_expected(fp.requests[0]["usage"]), GPT_4O)


async def test_async_embeddings_record_exact_input_tokens_and_cost(
    aoai: openai.AsyncOpenAI, fp: FakeProvider
) -> None:
    async with tokenspy.session("s"):
        await aoai.embeddings.create(model="text-embedding-3-small", input=["one two", "three"])
    record = only_record()
    assert (record.input_tokens, record.output_tokens) == (fp.requests[0]["usage"]["prompt_tokens"], 0)
    assert record.operation == "embeddings"
    assert record.cost == record.input_tokens * EMBEDDING_3_SMALL / 1_000_000


async def test_async_responses_non_stream_records_exact_usage(aoai: openai.AsyncOpenAI, fp: FakeProvider) -> None:
    async with tokenspy.session("s"):
        await aoai.responses.create(model="gpt-4o", input="hi")
    assert_exact(only_record(), responses_expected(fp.requests[0]["usage"]), GPT_4O)


async def test_async_with_raw_response_stream_is_tracked(aoai: openai.AsyncOpenAI, fp: FakeProvider) -> None:
    async with tokenspy.session("s"):
        raw = await aoai.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in raw.parse()])
    assert text == fp.reply
    # Its bytes are the caller's to read: usage is not asked for (see test_sdk_raw_bytes.py), but estimated.
    assert fp.requests[0]["stream_options"] is None
    record = only_record()
    assert (record.status, record.partial, record.usage_source) == ("finished", False, "estimated")
    assert (record.input_tokens, record.output_tokens) == (PROMPT_ESTIMATE, count_tokens(fp.reply, "gpt-4o"))
