"""One provider call, one record: the SDK layer underneath merges in; LangChain's cache costs $0."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from langchain_core.caches import InMemoryCache
from langchain_core.globals import set_llm_cache
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import RunnableConfig
from lc_helpers import GPT, Expected, from_log, openai_chat

import tokenspy
import tokenspy_core
from tokenspy.langchain import TokenSpyHandler
from tokenspy.testing import FakeProvider

SDK_USAGE = Expected(input_tokens=1000, output_tokens=50, cached_input_tokens=200)


class SdkBackedChat(BaseChatModel):
    """A chat model whose provider call goes through an "SDK layer" that reports exact usage, the way
    tokenspy's openai/anthropic adapters do: `start_call(..., merge=True)`."""

    @property
    def _llm_type(self) -> str:
        return "sdk-backed"

    @staticmethod
    def _sdk_call() -> None:
        inner = tokenspy_core.start_call(None, GPT, provider="openai", merge=True)
        inner.set_usage(input_tokens=SDK_USAGE.input_tokens, output_tokens=SDK_USAGE.output_tokens,
                        cached_input_tokens=SDK_USAGE.cached_input_tokens)
        inner.set_model(f"{GPT}-2024-08-06")
        inner.finish()

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        self._sdk_call()
        return ChatResult(generations=[ChatGeneration(message=AIMessage("answer"))])

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: Any = None, **kwargs: Any) -> ChatResult:
        await asyncio.sleep(0)
        self._sdk_call()
        return ChatResult(generations=[ChatGeneration(message=AIMessage("answer"))])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        self._sdk_call()
        for piece in ("ans", "wer"):
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager is not None:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: Any = None, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        self._sdk_call()
        for piece in ("ans", "wer"):
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
            if run_manager is not None:
                await run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk


def assert_merged(n: int) -> None:
    records = tokenspy.calls()
    assert len(records) == n
    for record in records:
        assert SDK_USAGE.matches(record) and record.usage_source == "provider"
        assert record.model == f"{GPT}-2024-08-06"


async def test_sdk_call_inside_a_model_run_merges_into_its_record(handler: TokenSpyHandler) -> None:
    model = SdkBackedChat()
    config: RunnableConfig = {"callbacks": [handler]}
    model.invoke("hi", config=config)
    assert "".join(str(c.content) for c in model.stream("hi", config=config)) == "answer"
    model.batch(["a", "b", "c"], config=config)
    await model.ainvoke("hi", config=config)
    [c async for c in model.astream("hi", config=config)]
    await model.abatch(["a", "b"], config=config)
    assert_merged(9)
    assert handler.open_runs == 0


async def test_run_inline_is_what_lets_async_runs_merge(handler: TokenSpyHandler) -> None:
    class ExecutorHandler(TokenSpyHandler):
        run_inline = False  # LangChain then runs sync handlers in executor threads, in a copied context

    await SdkBackedChat().ainvoke("hi", config={"callbacks": [ExecutorHandler()]})
    assert len(tokenspy.calls()) == 2  # the activation never reached the SDK call: counted twice


def test_langchain_cache_hits_cost_nothing(fp: FakeProvider, handler: TokenSpyHandler) -> None:
    set_llm_cache(InMemoryCache())
    llm = openai_chat(fp)
    first = llm.invoke("What is the capital of France?", config={"callbacks": [handler]})
    again = llm.invoke("What is the capital of France?", config={"callbacks": [handler]})
    assert first.content == again.content and len(fp.requests) == 1
    paid, cached = tokenspy.calls()
    assert from_log(fp.requests[0]).matches(paid) and not paid.cache_hit
    assert cached.cache_hit
    assert (cached.cost_femto, cached.total_tokens, cached.usage_source) == (0, 0, "provider")
    assert tokenspy.stats()["tree"]["cost_femto"] == paid.cost_femto
    assert handler.open_runs == 0


async def test_langchain_cache_hits_cost_nothing_in_async_runs(
        fp: FakeProvider, aio: httpx.AsyncClient, handler: TokenSpyHandler) -> None:
    set_llm_cache(InMemoryCache())
    llm = openai_chat(fp, aio=aio)
    for _ in range(3):
        await llm.ainvoke("hi", config={"callbacks": [handler]})
    assert len(fp.requests) == 1
    assert [r.cache_hit for r in tokenspy.calls()] == [False, True, True]
    assert tokenspy.stats()["tree"]["cost_femto"] == from_log(fp.requests[0]).cost_femto


@pytest.mark.parametrize("stream_usage", [True, False])
def test_a_stream_is_one_record_whatever_the_layers_report(
        fp: FakeProvider, handler: TokenSpyHandler, stream_usage: bool) -> None:
    # The SDK layer's usage, the usage chunk and on_llm_end's aggregate all describe one call.
    list(openai_chat(fp, stream_usage=stream_usage).stream("hi", config={"callbacks": [handler]}))
    (record,) = tokenspy.calls()
    assert from_log(fp.requests[0]).matches(record)


def test_an_sdk_call_in_the_consumers_loop_is_not_the_streams_own(handler: TokenSpyHandler) -> None:
    from langchain_core.language_models import GenericFakeChatModel

    model = GenericFakeChatModel(messages=iter([AIMessage("one two three")]))
    seen = 0
    for _ in model.stream("hi", config={"callbacks": [handler]}):
        seen += 1
        SdkBackedChat._sdk_call()  # another provider call, made by the loop body
    records = tokenspy.calls()
    assert len(records) == seen + 1 and seen >= 3
    (stream,) = [r for r in records if r.streamed]
    assert stream.model is None and stream.usage_source == "estimated"
    assert sum(SDK_USAGE.matches(r) for r in records) == seen
