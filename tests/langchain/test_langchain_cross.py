"""Levels across layers: what a LangChain tool, retriever or LangGraph node runs outside LangChain (a raw
SDK call, a LlamaIndex query) goes under that level, and a LlamaIndex tool holds the LangChain calls
made in it; a graph streamed to a consumer does not lend its nodes to the consumer's own calls."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any, TypedDict

import openai
import pytest
from langchain_core.tools import tool
from lc_helpers import KEY, MINI, linear_graph, openai_chat
from llama_index.core.llms import MockLLM
from llama_index.core.tools import FunctionTool

import tokenspy
import tokenspy.llamaindex
from tokenspy.langchain import TokenSpyHandler
from tokenspy.testing import FakeProvider


@pytest.fixture
def both(fp: FakeProvider) -> Iterator[None]:
    tokenspy.set_handler(TokenSpyHandler())
    tokenspy.set_handler(tokenspy.llamaindex.TokenSpyHandler())
    yield
    tokenspy.llamaindex.uninstrument()


def raw_client(fp: FakeProvider) -> openai.OpenAI:
    return tokenspy.observe(openai.OpenAI(base_url=fp.openai_base_url, api_key=KEY, max_retries=0))


def ask(client: openai.OpenAI, text: str) -> str:
    answer = client.chat.completions.create(model=MINI, messages=[{"role": "user", "content": text}])
    return answer.choices[0].message.content or ""


class State(TypedDict):
    text: str


def test_a_raw_sdk_call_in_a_tool_goes_under_it_and_one_in_a_node_under_the_run(
        fp: FakeProvider, handler: TokenSpyHandler) -> None:
    client = raw_client(fp)

    @tool
    def lookup(topic: str) -> str:
        """Look a topic up."""
        return ask(client, topic)

    def fetch(state: State) -> dict[str, str]:
        return {"text": ask(client, "plan") + lookup.invoke({"topic": "Paris"})}

    with tokenspy.session("s"):
        linear_graph(State, ("fetch", fetch)).invoke({"text": ""}, config={"callbacks": [handler]})
        ask(client, "after")
    # A node is not made current (an async graph ends its run in another task): a raw call made in the
    # node itself goes where the graph was started.
    assert [r.span_path for r in tokenspy.calls()] == [("s",), ("s", "LangGraph", "fetch", "lookup"), ("s",)]
    assert [r.span_kinds[-1] for r in tokenspy.calls()] == ["session", "tool", "session"]


async def test_an_async_graph_leaves_no_level_current_after_it(fp: FakeProvider, handler: TokenSpyHandler) -> None:
    client = tokenspy.observe(openai.AsyncOpenAI(base_url=fp.openai_base_url, api_key=KEY, max_retries=0))

    async def call(text: str) -> str:
        answer = await client.chat.completions.create(model=MINI, messages=[{"role": "user", "content": text}])
        return answer.choices[0].message.content or ""

    @tool
    async def lookup(topic: str) -> str:
        """Look a topic up."""
        return await call(topic)

    async def fetch(state: State) -> dict[str, str]:
        return {"text": await lookup.ainvoke({"topic": "Paris"})}

    app = linear_graph(State, ("fetch", fetch))
    with tokenspy.session("s"):
        await app.ainvoke({"text": ""}, config={"callbacks": [handler]})
        async for _ in app.astream({"text": ""}, config={"callbacks": [handler]}):
            await call("between")
        await call("after")
    paths = [r.span_path for r in tokenspy.calls()]
    assert sorted(paths) == sorted([("s", "LangGraph", "fetch", "lookup")] * 2 + [("s",)] * 2)


def test_a_consumer_reading_a_graph_stream_makes_its_calls_outside_the_nodes(
        fp: FakeProvider, handler: TokenSpyHandler) -> None:
    client, llm = raw_client(fp), openai_chat(fp)

    def first(state: State) -> dict[str, str]:
        return {"text": str(llm.invoke("one").content)}

    def second(state: State) -> dict[str, str]:
        return {"text": str(llm.invoke("two").content)}

    app = linear_graph(State, ("first", first), ("second", second))
    with tokenspy.session("s"):
        for _ in app.stream({"text": ""}, config={"callbacks": [handler]}, stream_mode="updates"):
            ask(client, "between")
    paths = [r.span_path for r in tokenspy.calls()]
    assert sorted(paths) == sorted([("s", "LangGraph", "first"), ("s",), ("s", "LangGraph", "second"), ("s",)])
    assert handler.open_runs == 0


def test_a_llamaindex_llm_in_a_langchain_tool_goes_under_the_tool(fp: FakeProvider, both: None) -> None:
    @tool
    def summarize(text: str) -> str:
        """Summarize a text."""
        return MockLLM(max_tokens=5).complete(text).text

    with tokenspy.session("s"):
        summarize.invoke({"text": "a long text"})
    (record,) = tokenspy.calls()
    assert record.span_path == ("s", "summarize") and record.span_kinds == ("session", "tool")


def test_a_langchain_model_in_a_llamaindex_tool_goes_under_the_tool(fp: FakeProvider, both: None) -> None:
    llm = openai_chat(fp, MINI)

    def answer(question: str) -> str:
        """Answer a question."""
        return str(llm.invoke(question).content)

    with tokenspy.session("s"):
        FunctionTool.from_defaults(fn=answer, name="answer").call("Capital of France?")
        llm.invoke("outside")
    assert [r.span_path for r in tokenspy.calls()] == [("s", "answer"), ("s",)]


def test_a_tool_entered_by_two_handlers_keeps_the_first_ones_level(fp: FakeProvider) -> None:
    # A global handler and a per-request one see the same tool: the calls in it go to one level.
    client, mine = raw_client(fp), TokenSpyHandler()
    tokenspy.set_handler(TokenSpyHandler())

    @tool
    def lookup(topic: str) -> str:
        """Look a topic up."""
        return ask(client, topic)

    with tokenspy.session("s"):
        lookup.invoke({"topic": "Paris"}, config={"callbacks": [mine]})
    records: list[Any] = tokenspy.calls()
    assert [r.span_path for r in records] == [("s", "lookup")]


async def test_async_tools_run_concurrently_each_hold_their_own_calls(
        fp: FakeProvider, handler: TokenSpyHandler) -> None:
    client = tokenspy.observe(openai.AsyncOpenAI(base_url=fp.openai_base_url, api_key=KEY, max_retries=0))

    @tool
    async def lookup(topic: str) -> str:
        """Look a topic up."""
        await asyncio.sleep(0)  # the other tool starts meanwhile
        answer = await client.chat.completions.create(model=MINI, messages=[{"role": "user", "content": topic}])
        return answer.choices[0].message.content or ""

    @tool
    async def verify(topic: str) -> str:
        """Verify a topic."""
        return await lookup.ainvoke({"topic": topic}, config={"callbacks": [handler]})

    with tokenspy.session("s"):
        await asyncio.gather(lookup.ainvoke({"topic": "a"}, config={"callbacks": [handler]}),
                             verify.ainvoke({"topic": "b"}, config={"callbacks": [handler]}))
    assert sorted(r.span_path for r in tokenspy.calls()) == [("s", "lookup"), ("s", "verify", "lookup")]
    assert handler.open_runs == 0
