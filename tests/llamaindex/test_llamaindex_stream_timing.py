"""A LlamaIndex stream is timed from its request: `stream_chat()`/`astream_chat()` hand the generator
back unsent, and the request goes out at the first read. The time the caller holds it unread is not
latency, nor time to first token."""

from __future__ import annotations

import gc
from typing import Any

from li_helpers import assert_matches, logged, openai_llm
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.callbacks import CallbackManager
from openai import OpenAI
from test_llamaindex_stream_scope import Eager

from tokenspy.llamaindex import TokenSpyHandler
from tokenspy.testing import FakeProvider
from tokenspy_core import Tracker

QUESTION = [ChatMessage(role="user", content="What is the capital of France?")]


class ManualClock:
    """The tracker's clock: moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _timed_handler() -> tuple[TokenSpyHandler, ManualClock]:
    clock = ManualClock()
    return TokenSpyHandler(tracker=Tracker(clock=clock)), clock


def test_a_stream_read_late_is_timed_from_its_first_read(fp: FakeProvider) -> None:
    handler, clock = _timed_handler()
    stream = openai_llm(fp, handlers=[handler]).stream_chat(QUESTION)
    clock.now = 100.0  # the caller holds the stream unread
    for index, _ in enumerate(stream):
        if index == 0:  # the first chunk arrived at 100.0
            clock.now = 102.5
    [record] = handler.calls()
    assert (record.ttft_s, record.latency_s) == (0.0, 2.5)
    assert_matches(record, logged(fp)[0])


async def test_an_async_stream_read_late_is_timed_from_its_first_read(fp: FakeProvider) -> None:
    handler, clock = _timed_handler()
    stream = await openai_llm(fp, handlers=[handler]).astream_chat(QUESTION)
    clock.now = 100.0
    index = 0
    async for _ in stream:
        if index == 0:
            clock.now = 102.5
        index += 1
    [record] = handler.calls()
    assert (record.ttft_s, record.latency_s) == (0.0, 2.5)
    assert_matches(record, logged(fp)[0])


def test_a_stream_dropped_unread_keeps_its_start_time(fp: FakeProvider) -> None:
    handler, clock = _timed_handler()
    stream = openai_llm(fp, handlers=[handler]).stream_chat(QUESTION)
    clock.now = 4.0
    del stream  # never read: nothing restarts its clock
    gc.collect()
    [record] = handler.calls()
    assert (record.status, record.ttft_s, record.latency_s) == ("failed", None, 4.0)
    assert fp.requests == []


def test_a_stream_whose_request_was_sent_before_it_was_handed_back_keeps_its_start_time(
        fp: FakeProvider, sdk_layer: None) -> None:
    handler, clock = _timed_handler()
    llm = Eager(client=OpenAI(base_url=fp.openai_base_url, api_key="test", max_retries=0),
                callback_manager=CallbackManager([handler]))
    stream = llm.stream_complete("Capital of France?")
    assert len(fp.requests) == 1  # sent already: the SDK layer's request joined the call
    clock.now = 100.0
    for _ in stream:
        pass
    [record] = handler.calls()
    assert (record.ttft_s, record.latency_s) == (100.0, 100.0)
    assert_matches(record, logged(fp)[0])


def test_a_stream_is_timed_from_its_request_when_its_first_read_waits_before_sending(
        fp: FakeProvider, sdk_layer: None) -> None:
    # The first call of a process: between the first read and the request, the SDK builds its `chat`
    # resources and imports their modules lazily; the SDK layer sees the request join the call.
    handler, clock = _timed_handler()

    class LazyOpenAI(OpenAI):
        @property
        def chat(self) -> Any:
            clock.now += 0.5
            return super().chat

    class LazyClientLLM(type(openai_llm(fp))):  # type: ignore[misc]
        def _get_client(self) -> OpenAI:
            return LazyOpenAI(**self._get_credential_kwargs())

    llm = LazyClientLLM(model="gpt-4o-mini", api_base=fp.openai_base_url, api_key="test", max_retries=0,
                        callback_manager=CallbackManager([handler]))
    stream = llm.stream_chat(QUESTION)
    clock.now = 100.0  # the first read; the request goes out at 100.5
    for index, _ in enumerate(stream):
        if index == 0:  # the first chunk arrived at 100.5
            clock.now = 102.5
    [record] = handler.calls()
    assert (record.ttft_s, record.latency_s) == (0.0, 2.0)
    assert_matches(record, logged(fp)[0])
