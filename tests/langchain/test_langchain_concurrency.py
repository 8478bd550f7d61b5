"""Threads and asyncio tasks at once: every call exact, in its own session, nothing left behind."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import httpx
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableConfig, RunnableLambda
from lc_helpers import Expected, from_log, openai_chat

import tokenspy
from tokenspy.langchain import TokenSpyHandler
from tokenspy.testing import FakeProvider


def qa_chain(llm: Any, seen_threads: set[str] | None = None) -> Any:
    def note_thread(x: Any) -> Any:
        if seen_threads is not None:
            seen_threads.add(threading.current_thread().name)
        return x

    return (RunnableLambda(note_thread) | ChatPromptTemplate.from_messages([("human", "{q}")]) | llm
            | StrOutputParser()).with_config(run_name="qa")


def question(i: int) -> dict[str, str]:
    # Prompts of strictly growing length: the fake's input count tells which request was whose.
    return {"q": "Tell me about Paris." + " And more." * i}


def by_input(expected: list[Expected]) -> list[Expected]:
    return sorted(expected, key=lambda e: e.input_tokens)


def test_batch_of_20_in_threads_is_exact(fp: FakeProvider, handler: TokenSpyHandler) -> None:
    threads: set[str] = set()
    outputs = qa_chain(openai_chat(fp, stream_usage=True), threads).batch(
        [question(i) for i in range(20)], config={"callbacks": [handler], "max_concurrency": 8})
    assert len(outputs) == 20 and len(threads) > 1
    records = sorted(tokenspy.calls(), key=lambda r: r.input_tokens)
    expected = by_input([from_log(e) for e in fp.requests])
    assert len(records) == 20 and len({e.input_tokens for e in expected}) == 20
    assert all(e.matches(r) for e, r in zip(expected, records, strict=True))
    assert {r.span_path for r in records} == {("qa",)}
    assert tokenspy.stats()["tree"]["cost_femto"] == sum(e.cost_femto for e in expected)
    assert handler.open_runs == 0


async def test_100_concurrent_sessions_and_a_threaded_batch_are_each_exact(
        fp: FakeProvider, aio: httpx.AsyncClient, handler: TokenSpyHandler) -> None:
    chain = qa_chain(openai_chat(fp, aio=aio, stream_usage=True))
    config: RunnableConfig = {"callbacks": [handler]}

    async def one(i: int) -> tokenspy.Session:
        async with tokenspy.session(f"user{i}") as session:
            if i % 2:
                await chain.ainvoke(question(i), config=config)
            else:
                [part async for part in chain.astream(question(i), config=config)]
        return session

    def threaded_batch() -> tokenspy.Session:
        with tokenspy.session("batch") as session:
            chain.batch([question(100 + i) for i in range(10)], config=config)
        return session

    *sessions, batch = await asyncio.gather(*(one(i) for i in range(100)), asyncio.to_thread(threaded_batch))
    expected = by_input([from_log(e) for e in fp.requests])
    assert len(expected) == 110 and len({e.input_tokens for e in expected}) == 110
    for i, session in enumerate(sessions):
        (record,) = session.records()
        assert record.span_path == (f"user{i}", "qa")
        assert expected[i].matches(record), i
        assert session.tracker.totals().cost == expected[i].cost_femto
    assert [r.span_path for r in batch.records()] == [("batch", "qa")] * 10
    assert batch.tracker.totals().cost == sum(e.cost_femto for e in expected[100:])
    assert tokenspy.stats()["tree"]["cost_femto"] == sum(e.cost_femto for e in expected)
    assert handler.open_runs == 0


async def test_abatch_is_exact(
        fp: FakeProvider, aio: httpx.AsyncClient, handler: TokenSpyHandler) -> None:
    await qa_chain(openai_chat(fp, aio=aio)).abatch([question(i) for i in range(5)],
                                                      config={"callbacks": [handler]})
    records = sorted(tokenspy.calls(), key=lambda r: r.input_tokens)
    expected = by_input([from_log(e) for e in fp.requests])
    assert all(e.matches(r) for e, r in zip(expected, records, strict=True)) and len(records) == 5
    assert handler.open_runs == 0
