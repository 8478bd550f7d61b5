"""A model call in a thread that outlives its root run: LangGraph cannot stop a sync node's worker thread."""

from __future__ import annotations

import threading
import time
from contextlib import aclosing
from typing import Any

from langgraph.graph import MessagesState
from lc_helpers import MINI, from_log, linear_graph, openai_chat

import tokenspy
from tokenspy.langchain import TokenSpyHandler
from tokenspy.testing import FakeProvider

REPLY = " ".join(f"word{i}" for i in range(12))
QUESTION = {"messages": [("user", "What is the capital of France?")]}


async def _read_two_chunks_and_break(graph: Any) -> None:
    texts = 0
    async with aclosing(graph.astream(QUESTION, stream_mode="messages")) as stream:
        async for message, _ in stream:
            texts += bool(message.content)
            if texts == 2:
                break


async def test_a_sync_node_whose_stream_outlives_a_broken_graph_stream_is_recorded_whole(
        fp: FakeProvider, layers: str) -> None:
    fp.reply, fp.chunk_delay = REPLY, 0.03  # the stream is still being read long after the break
    model = openai_chat(fp, MINI, stream_usage=True)
    done = threading.Event()

    def node(state: MessagesState) -> dict[str, Any]:
        try:
            return {"messages": [model.invoke(state["messages"])]}
        finally:
            done.set()

    handler = TokenSpyHandler()
    tokenspy.set_handler(handler)
    await _read_two_chunks_and_break(linear_graph(MessagesState, ("model", node)))
    # The graph's root ended at the break; its worker thread reads the whole answer, which is billed.
    assert done.wait(10)
    (entry,) = fp.requests
    assert entry["outcome"] == "completed" and entry["usage"]["completion_tokens"] == 24
    (record,) = handler.calls()
    assert (record.status, record.partial, record.usage_source) == ("finished", False, "provider")
    assert (record.input_tokens, record.output_tokens) == (14, 24)
    assert from_log(entry).matches(record)
    assert record.span_path == ("LangGraph", "model")
    for _ in range(100):  # the rest of the node's work (its state write) ends in that thread too
        if not handler.open_runs:
            break
        time.sleep(0.01)
    assert handler.open_runs == 0


async def test_an_async_node_cancelled_by_a_broken_graph_stream_is_a_partial_record(
        fp: FakeProvider, layers: str) -> None:
    fp.reply, fp.chunk_delay = REPLY, 0.05
    model = openai_chat(fp, MINI, stream_usage=True)

    async def node(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    handler = TokenSpyHandler()
    tokenspy.set_handler(handler)
    await _read_two_chunks_and_break(linear_graph(MessagesState, ("model", node)))
    # The node's task is cancelled with the graph: the stream stops where the consumer left it.
    (record,) = handler.calls()
    assert (record.status, record.partial, record.usage_source) == ("aborted", True, "estimated")
    assert (record.input_tokens, record.output_tokens) == (14, 4)  # "word0 word1"
    assert handler.open_runs == 0
