"""Failures, early exits and budgets: a record for what was billed, nothing left behind."""

from __future__ import annotations

import asyncio
import functools
import gc
import warnings
from collections.abc import AsyncGenerator, Generator
from typing import Any, cast

import httpx
import openai
import pytest
from langchain.agents import create_agent
from langchain_core.documents import Document
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import tool
from langgraph.config import get_stream_writer
from lc_helpers import GPT, from_log, openai_chat

import tokenspy
from tokenspy.langchain import TokenSpyHandler
from tokenspy.testing import DEFAULT_REPLY, FakeProvider
from tokenspy_core import BudgetExceededError, Call, current_span
from tokenspy_core.tokenizer import count_tokens


def test_http_error_before_any_output_is_a_failed_record_with_nothing_billed(
        fp: FakeProvider, handler: TokenSpyHandler) -> None:
    fp.set_flags("http500")
    with pytest.raises(openai.InternalServerError):
        openai_chat(fp).invoke("hi", config={"callbacks": [handler]})
    (record,) = tokenspy.calls()
    assert (record.status, record.partial) == ("failed", False)
    assert (record.input_tokens, record.output_tokens) == (0, 0)
    assert "Error code: 500" in (record.error or "")
    assert handler.open_runs == 0


def test_error_mid_stream_counts_what_was_streamed(fp: FakeProvider, handler: TokenSpyHandler) -> None:
    fp.set_flags("midstream")
    received: list[str] = []
    with pytest.raises(openai.APIError):
        for chunk in openai_chat(fp, stream_usage=True).stream("hi", config={"callbacks": [handler]}):
            received.append(str(chunk.content))
    (record,) = tokenspy.calls()
    assert (record.status, record.partial, record.streamed) == ("failed", True, True)
    assert received and record.output_tokens == count_tokens("".join(received), GPT) > 0
    assert record.input_tokens > 0  # the prompt was billed: estimated
    assert handler.open_runs == 0


def test_a_stream_cut_before_its_first_text_bills_the_prompt_through_the_sdk_layer(
        fp: FakeProvider, sdk_layer: None, handler: TokenSpyHandler) -> None:
    # The SDK layer saw the stream's response arrive; LangChain alone cannot tell it from a refused request.
    fp.reply = "Paris"
    fp.set_flags("cut")
    with pytest.raises(httpx.RemoteProtocolError):
        for _ in openai_chat(fp).stream("hi", config={"callbacks": [handler]}):
            pass
    fp.set_flags()
    openai_chat(fp).invoke("hi", config={"callbacks": [handler]})  # the same prompt, answered: its count
    failed, answered = tokenspy.calls()
    assert (failed.status, failed.partial, failed.output_tokens) == ("failed", True, 0)
    assert failed.input_tokens == answered.input_tokens == from_log(fp.requests[1]).input_tokens
    assert failed.usage_source == "estimated" and handler.open_runs == 0


def test_error_mid_stream_inside_invoke_counts_what_was_streamed(
        fp: FakeProvider, handler: TokenSpyHandler) -> None:
    # invoke() on a streaming model: LangChain passes no partial message to on_llm_error here, so
    # the handler's own copy of the streamed text is what gets estimated.
    fp.set_flags("midstream")
    with pytest.raises(openai.APIError):
        openai_chat(fp, streaming=True).invoke("hi", config={"callbacks": [handler]})
    (record,) = tokenspy.calls()
    assert (record.status, record.partial, record.streamed) == ("failed", True, True)
    assert record.output_tokens == count_tokens("The capital of", GPT)  # the first half of the reply
    assert handler.open_runs == 0


def test_closing_a_stream_early_records_a_partial_call(fp: FakeProvider, handler: TokenSpyHandler) -> None:
    fp.set_flags("slow")  # the server is still writing when the client hangs up
    stream = cast(Generator[Any, None, None],
                  openai_chat(fp, stream_usage=True).stream("hi", config={"callbacks": [handler]}))
    first = [str(next(stream).content) for _ in range(3)]  # role chunk, "The", " capital"
    assert tokenspy.calls() == [] and handler.open_runs == 1  # suspended: nothing is decided yet
    stream.close()
    (record,) = tokenspy.calls()
    assert (record.status, record.partial) == ("aborted", True)
    assert record.output_tokens == count_tokens("".join(first), GPT)
    assert handler.open_runs == 0
    assert fp.wait_for_outcome(0)["outcome"] == "client_disconnected"


def test_an_abandoned_chain_stream_is_recorded_when_collected(
        fp: FakeProvider, handler: TokenSpyHandler) -> None:
    chain = (ChatPromptTemplate.from_messages([("human", "{q}")]) | openai_chat(fp) | StrOutputParser()
             ).with_config(run_name="qa")
    stream = chain.stream({"q": "hi"}, config={"callbacks": [handler]})
    assert next(stream) == ""
    assert next(stream) == "The"
    del stream
    gc.collect()
    (record,) = tokenspy.calls()
    assert (record.status, record.partial, record.span_path) == ("aborted", True, ("qa",))
    assert handler.open_runs == 0


async def test_closing_an_async_stream_early_records_a_partial_call(
        fp: FakeProvider, aio: httpx.AsyncClient, handler: TokenSpyHandler) -> None:
    stream = cast(AsyncGenerator[Any, None],
                  openai_chat(fp, aio=aio, stream_usage=True).astream("hi", config={"callbacks": [handler]}))
    got = [str((await anext(stream)).content) for _ in range(2)]
    await stream.aclose()
    (record,) = tokenspy.calls()
    assert (record.status, record.partial) == ("aborted", True)
    assert record.output_tokens == count_tokens("".join(got), GPT)
    assert handler.open_runs == 0


def test_budget_with_raise_stops_the_next_model_call(fp: FakeProvider, handler: TokenSpyHandler) -> None:
    llm = openai_chat(fp)
    config: RunnableConfig = {"callbacks": [handler]}
    with tokenspy.session("capped", budget_usd=0.000001, on_exceeded="raise") as session:
        with pytest.warns(UserWarning, match="over its budget"):
            llm.invoke("first", config=config)
        with pytest.raises(BudgetExceededError):
            llm.invoke("second", config=config)
    assert len(fp.requests) == 1  # the second request was never sent
    assert int(session.calls) == 1 and from_log(fp.requests[0]).matches(session.records()[0])
    assert handler.open_runs == 0


def test_budget_error_passes_through_a_chain_and_ends_its_spans(
        fp: FakeProvider, handler: TokenSpyHandler) -> None:
    chain = (ChatPromptTemplate.from_messages([("human", "{q}")]) | openai_chat(fp)
             ).with_config(run_name="ask")
    with tokenspy.session("capped", budget_usd=0.000001, on_exceeded="raise"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            chain.invoke({"q": "first"}, config={"callbacks": [handler]})
        with pytest.raises(BudgetExceededError):
            chain.invoke({"q": "second"}, config={"callbacks": [handler]})
    assert len(fp.requests) == 1 and handler.open_runs == 0


@pytest.mark.parametrize("where", ["start", "token", "end"])
def test_a_tokenspy_bug_never_breaks_the_users_chain(
        fp: FakeProvider, handler: TokenSpyHandler, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    from tokenspy.langchain import _extract

    def broken(*args: object) -> None:
        raise RuntimeError("tokenspy bug")

    monkeypatch.setenv("TOKENSPY_STRICT", "0")
    target = {"start": (_extract, "request_model"), "token": (Call, "mark_first_token"),
              "end": (_extract, "served_model")}[where]
    monkeypatch.setattr(*target, broken)
    llm = openai_chat(fp, stream_usage=True)
    assert llm.invoke("hi", config={"callbacks": [handler]}).content == DEFAULT_REPLY
    assert "".join(str(c.content) for c in llm.stream("hi", config={"callbacks": [handler]})) == DEFAULT_REPLY
    assert handler.open_runs == 0


def test_nothing_is_retained_after_runs_end(fp: FakeProvider, handler: TokenSpyHandler) -> None:
    from tokenspy.langchain import _handler

    llm = openai_chat(fp, stream_usage=True)
    chain = (ChatPromptTemplate.from_messages([("human", "{q}")]) | llm | StrOutputParser()
             ).with_config(run_name="qa")
    config: RunnableConfig = {"callbacks": [handler]}
    chain.invoke({"q": "a"}, config=config)
    list(chain.stream({"q": "b"}, config=config))
    closed = cast(Generator[Any, None, None], llm.stream("c", config=config))
    next(closed)
    closed.close()
    abandoned = chain.stream({"q": "d"}, config=config)
    next(abandoned)
    del abandoned
    fp.set_flags("http500")
    with pytest.raises(openai.InternalServerError):
        llm.invoke("e", config=config)
    gc.collect()
    assert len(tokenspy.calls()) == 5
    assert handler.open_runs == 0 and not _handler._owners and handler._last == _handler._NO_RUN
    assert not [o for o in gc.get_objects() if isinstance(o, Call)]  # no call kept alive anywhere


async def test_a_tool_cancelled_in_an_abandoned_agent_stream_leaves_nothing_behind(
        fp: FakeProvider, aio: httpx.AsyncClient, handler: TokenSpyHandler) -> None:
    # The client goes away while a tool runs: LangGraph cancels the tool's task, and LangChain's
    # tools catch `Exception` only, so no callback says that the tool ended. Its root run's end does.
    from tokenspy.langchain import _handler

    @tool
    async def slow_lookup(query: str) -> str:
        """Look something up, slowly."""
        get_stream_writer()("working")
        await asyncio.sleep(10)
        return "found"

    agent = create_agent(openai_chat(fp, aio=aio, stream_usage=True), [slow_lookup])
    for _ in range(3):
        stream = cast(AsyncGenerator[Any, None], agent.astream(
            {"messages": [("human", "go")]}, config={"callbacks": [handler]}, stream_mode="custom"))
        assert await anext(stream) == "working"
        await stream.aclose()
    assert handler.open_runs == 0 and not _handler._entered and current_span() is None
    assert [(r.status, r.span_path) for r in tokenspy.calls()] == [("finished", ("LangGraph", "model"))] * 3


@pytest.mark.parametrize("kind", ["tool", "retriever"])
async def test_a_tool_or_retriever_cancelled_as_the_root_run_is_ended(handler: TokenSpyHandler, kind: str) -> None:
    # A timeout around `tool.ainvoke(...)`: the only sign is the end of the task the run started in.
    from tokenspy.langchain import _handler

    started = asyncio.Event()

    @tool
    async def slow_lookup(query: str) -> str:
        """Look something up, slowly."""
        started.set()
        await asyncio.sleep(10)
        return "found"

    class SlowRetriever(BaseRetriever):
        async def _aget_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
            started.set()
            await asyncio.sleep(10)
            return []

        def _get_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
            return []

    runnable: Any = slow_lookup if kind == "tool" else SlowRetriever()
    for _ in range(3):
        started.clear()
        task = asyncio.create_task(runnable.ainvoke({"query": "a"} if kind == "tool" else "a",
                                                    config={"callbacks": [handler]}))
        await started.wait()
        assert handler.open_runs == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task  # the task's done callbacks, tokenspy's first, have run when this returns
        assert handler.open_runs == 0 and not _handler._entered
    assert current_span() is None


async def test_tools_run_in_a_long_lived_task_leave_no_callback_on_it(
        fp: FakeProvider, handler: TokenSpyHandler) -> None:
    @tool
    async def lookup(query: str) -> str:
        """Look something up."""
        return "found"

    for _ in range(3):
        assert await lookup.ainvoke({"query": "a"}, config={"callbacks": [handler]}) == "found"
    agent = create_agent(openai_chat(fp, stream_usage=True), [lookup])  # root runs are watched too
    for _ in range(2):
        await agent.ainvoke({"messages": [("human", "go")]}, config={"callbacks": [handler]})
        async for _ in agent.astream({"messages": [("human", "go")]}, config={"callbacks": [handler]}):
            pass
    gc.collect()
    watching = [o for o in gc.get_objects() if isinstance(o, functools.partial) and o.func == handler._task_done]
    assert not watching and handler.open_runs == 0


async def test_a_root_run_whose_start_is_cancelled_is_ended_with_its_task(handler: TokenSpyHandler) -> None:
    # The task is cancelled while LangChain dispatches the root's start to another (slow) handler:
    # LangChain then fires no end for the root (`astream_events` given up by a timeout).
    from langchain_core.callbacks import AsyncCallbackHandler
    from langchain_core.runnables import RunnableLambda

    class SlowToStart(AsyncCallbackHandler):
        async def on_chain_start(self, *args: Any, **kwargs: Any) -> None:
            await asyncio.sleep(10)

    chain = RunnableLambda(lambda text: text.upper()).with_config(run_name="shout")

    async def consume() -> None:
        async for _ in chain.astream_events("hi", version="v2", config={"callbacks": [handler, SlowToStart()]}):
            pass

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(consume(), 0.05)
    await asyncio.sleep(0)  # the task's done callbacks run on the loop
    assert handler.open_runs == 0


@pytest.mark.parametrize("wrap", ["create_task", "wait_for"])
async def test_a_stream_read_chunk_by_chunk_in_short_tasks_is_finished(
        fp: FakeProvider, aio: httpx.AsyncClient, handler: TokenSpyHandler, wrap: str) -> None:
    # Each chunk awaited in a task of its own (racing a disconnect, a per-chunk timeout): the end of
    # the task the root started in says nothing of the run (only a cancelled one does).
    chain = (ChatPromptTemplate.from_messages([("human", "{q}")]) | openai_chat(fp, aio=aio, stream_usage=True)
             ).with_config(run_name="answer")
    stream = chain.astream({"q": "hi"}, config={"callbacks": [handler]})
    while True:
        step = stream.__anext__()
        try:
            await (asyncio.create_task(step) if wrap == "create_task" else asyncio.wait_for(step, 5))
        except StopAsyncIteration:
            break
    [record] = tokenspy.calls()
    assert (record.status, record.partial, record.usage_source) == ("finished", False, "provider")
    assert record.output_tokens == fp.requests[0]["usage"]["completion_tokens"] > 0
    assert record.span_path == ("answer",) and handler.open_runs == 0
