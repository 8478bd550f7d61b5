"""A streamed LlamaIndex call is the one the SDK layer below merges into only while its stream runs.

LlamaIndex starts a stream's call when `stream_chat`/`astream_chat` hands the generator back; the
request goes out at the first read, after whatever the caller does in between: create another
stream, call the provider directly. Each request must land in its own record, at its own model.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from li_helpers import MODEL, assert_matches, logged, openai_llm
from llama_index.core.base.llms.types import ChatMessage, ChatResponse
from llama_index.core.llms import CompletionResponse, CompletionResponseGen, CustomLLM, LLMMetadata
from llama_index.core.llms.callbacks import llm_completion_callback
from openai import AsyncOpenAI, OpenAI
from test_llamaindex_nested import Wrapper

import tokenspy
from tokenspy.llamaindex import TokenSpyHandler
from tokenspy.testing import FakeProvider
from tokenspy_core import active_call

SHORT = [ChatMessage(role="user", content="Hi?")]
LONG = [ChatMessage(role="user", content="Please tell me, in detail, what the capital city of France is. " * 5)]
RAW_MODEL = "gpt-4o"
RAW_RATES = (2_500_000_000, 10_000_000_000)  # femto-USD per input / output token ($2.50 / $10 per 1M)


def _read(stream: Iterator[ChatResponse]) -> None:
    for _ in stream:
        assert active_call() is None  # between steps: not even its own call is active out here


async def _aread(stream: AsyncIterator[ChatResponse]) -> None:
    async for _ in stream:
        assert active_call() is None


@pytest.mark.parametrize("stream_usage", [True, False], ids=["usage in the stream", "usage from the sdk only"])
@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_two_streams_created_before_either_is_read_make_one_record_each(
        fp: FakeProvider, sdk_layer: None, global_handler: TokenSpyHandler, stream_usage: bool, mode: str) -> None:
    llm = openai_llm(fp, stream_usage=stream_usage)
    with tokenspy.session("two streams") as session:
        if mode == "sync":
            short, long = llm.stream_chat(SHORT), llm.stream_chat(LONG)
            assert active_call() is None
            _read(short)
            _read(long)
        else:
            ashort, along = await llm.astream_chat(SHORT), await llm.astream_chat(LONG)
            assert active_call() is None
            await _aread(ashort)
            await _aread(along)
    sent_short, sent_long = logged(fp)
    assert sent_short["prompt_tokens"] < sent_long["prompt_tokens"]
    first, second = tokenspy.calls()
    assert [(r.usage_source, r.span_path) for r in (first, second)] == [("provider", ("two streams",))] * 2
    assert_matches(first, sent_short)
    assert_matches(second, sent_long)
    assert len(session.calls) == 2


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_an_sdk_call_made_before_a_stream_is_read_is_a_call_of_its_own(
        fp: FakeProvider, sdk_layer: None, global_handler: TokenSpyHandler, mode: str) -> None:
    tokenspy.set_price(RAW_MODEL, input=2.5, output=10)
    llm = openai_llm(fp)
    body: dict[str, Any] = {"model": RAW_MODEL, "messages": [{"role": "user", "content": LONG[0].content}]}
    if mode == "sync":
        stream = llm.stream_chat(SHORT)
        tokenspy.observe(OpenAI(base_url=fp.openai_base_url, api_key="test", max_retries=0)
                         ).chat.completions.create(**body)
        _read(stream)
    else:
        astream = await llm.astream_chat(SHORT)
        await tokenspy.observe(AsyncOpenAI(base_url=fp.openai_base_url, api_key="test", max_retries=0)
                               ).chat.completions.create(**body)
        await _aread(astream)
    sent_raw, sent_stream = logged(fp)
    raw, streamed = tokenspy.calls()
    assert (raw.model, raw.streamed, streamed.model, streamed.streamed) == (RAW_MODEL, False, MODEL, True)
    assert (raw.input_tokens, raw.output_tokens) == (sent_raw["prompt_tokens"], sent_raw["completion_tokens"])
    assert raw.cost_femto == raw.input_tokens * RAW_RATES[0] + raw.output_tokens * RAW_RATES[1]
    assert_matches(streamed, sent_stream)


def test_a_stream_read_in_a_plain_thread_still_gets_the_sdk_layers_usage(
        fp: FakeProvider, sdk_layer: None, global_handler: TokenSpyHandler) -> None:
    with tokenspy.session("handed over"):
        stream = openai_llm(fp, stream_usage=False).stream_chat(SHORT)  # only the SDK layer has usage
        reader = threading.Thread(target=_read, args=(stream,))  # a fresh context: no session there
        reader.start()
        reader.join(10)
    [sent] = logged(fp)
    [record] = tokenspy.calls()
    assert (record.usage_source, record.span_path) == ("provider", ("handed over",))
    assert_matches(record, sent)


def test_a_wrapper_stream_read_in_a_plain_thread_is_one_call(fp: FakeProvider,
                                                             global_handler: TokenSpyHandler) -> None:
    stream = Wrapper(inner=openai_llm(fp)).stream_complete("Capital of France?")
    reader = threading.Thread(target=lambda: list(stream))
    reader.start()
    reader.join(10)
    [sent] = logged(fp)
    [record] = tokenspy.calls()
    assert (record.model, record.streamed) == (MODEL, True)
    assert_matches(record, sent)


class Eager(CustomLLM):
    """An LLM that sends its request before it hands the stream back (LlamaIndex's own send it lazily)."""

    client: Any = None

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=MODEL)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        raise NotImplementedError

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        stream = self.client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": prompt}],
                                                     stream=True)

        def gen() -> Iterator[CompletionResponse]:
            text = ""
            for chunk in stream:
                delta = (chunk.choices[0].delta.content or "") if chunk.choices else ""
                text += delta
                yield CompletionResponse(text=text, delta=delta)

        return gen()


def test_a_request_sent_before_the_stream_is_handed_back_still_joins_its_call(
        fp: FakeProvider, sdk_layer: None, global_handler: TokenSpyHandler) -> None:
    llm = Eager(client=OpenAI(base_url=fp.openai_base_url, api_key="test", max_retries=0))
    with tokenspy.session("eager"):
        stream = llm.stream_complete("Capital of France?")
        assert len(fp.requests) == 1  # sent already
        for _ in stream:
            pass
    [sent] = logged(fp)
    [record] = tokenspy.calls()
    assert (record.usage_source, record.streamed) == ("provider", True)
    assert_matches(record, sent)
