"""Attribution: query, retrieve, synthesize, chat engine, agent and workflow steps, tools and user
spans become the cost tree, nested under any open profile or session; per-step sums are exact."""

from __future__ import annotations

from typing import Any

import pytest
from li_helpers import EMBED_MODEL, assert_matches, expected_cost, logged, openai_embedding, openai_llm
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.agent.workflow import AgentWorkflow, FunctionAgent, ReActAgent
from llama_index.core.base.response.schema import StreamingResponse
from llama_index.core.chat_engine import SimpleChatEngine
from llama_index.core.chat_engine.types import ChatMode
from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
from llama_index.core.llms import MockLLM
from llama_index.core.tools import FunctionTool
from llama_index.core.workflow import StartEvent, StopEvent, Workflow, step

import tokenspy
from tokenspy.llamaindex import TokenSpyHandler
from tokenspy.testing import FakeProvider

DOCS = [Document(text="Paris is the capital of France."), Document(text="Berlin is the capital of Germany.")]
QUERY = ("RetrieverQueryEngine.query",)
RETRIEVE = (*QUERY, "VectorIndexRetriever.retrieve")
SYNTHESIZE = (*QUERY, "CompactAndRefine.synthesize")


def node(stats: dict[str, Any], *path: str) -> dict[str, Any]:
    tree: dict[str, Any] = stats["tree"]
    for name in path:
        tree = next(child for child in tree["children"] if child["name"] == name)
    return tree


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


@pytest.mark.parametrize("streaming", [False, True])
def test_query_engine_tree_has_retrieve_and_synthesize_with_exact_sums(
        fp: FakeProvider, global_handler: TokenSpyHandler, streaming: bool) -> None:
    index = VectorStoreIndex.from_documents(DOCS, embed_model=openai_embedding(fp))
    engine = index.as_query_engine(llm=openai_llm(fp), streaming=streaming)
    with tokenspy.session("ask") as session:
        response = engine.query("What is the capital of France?")
        if streaming:  # the LLM call starts only now, after the query span has ended
            assert isinstance(response, StreamingResponse)
            assert "".join(response.response_gen) == fp.reply
    build, query_embedding, answer = tokenspy.calls()
    assert (build.span_path, query_embedding.span_path, answer.span_path) == (
        (), ("ask", *RETRIEVE), ("ask", *SYNTHESIZE))
    assert answer.span_kinds == ("session", "query", "step") and answer.streamed == streaming
    assert_matches(answer, logged(fp)[0])
    for record, usage in zip((build, query_embedding), logged(fp, "/v1/embeddings"), strict=True):
        assert_matches(record, usage, EMBED_MODEL)
    stats = session.stats()
    assert node(stats, "ask", *SYNTHESIZE)["cost_femto"] == answer.cost_femto
    assert node(stats, "ask", *RETRIEVE)["cost_femto"] == query_embedding.cost_femto
    query = node(stats, "ask", *QUERY)
    assert query["cost_femto"] == answer.cost_femto + query_embedding.cost_femto  # type: ignore[operator]
    assert (query["calls"], query["tokens"]) == (2, answer.total_tokens + query_embedding.total_tokens)


async def test_async_streaming_query_is_attributed_to_synthesize(fp: FakeProvider,
                                                                 global_handler: TokenSpyHandler) -> None:
    index = VectorStoreIndex.from_documents(DOCS, embed_model=openai_embedding(fp))
    response = await index.as_query_engine(llm=openai_llm(fp), streaming=True).aquery("Capital of France?")
    text = "".join([t async for t in response.async_response_gen()])  # type: ignore[union-attr]
    assert text == fp.reply
    answer = tokenspy.calls()[-1]
    assert answer.span_path == SYNTHESIZE
    assert_matches(answer, logged(fp)[0])


def test_streaming_chat_engine_keeps_the_query_engine_levels(fp: FakeProvider,
                                                             global_handler: TokenSpyHandler) -> None:
    index = VectorStoreIndex.from_documents(DOCS, embed_model=openai_embedding(fp))
    engine = index.as_chat_engine(chat_mode=ChatMode.CONDENSE_QUESTION, llm=openai_llm(fp), streaming=True)
    response = engine.stream_chat("Capital of France?")
    for _ in response.response_gen:
        pass
    answer = tokenspy.calls()[-1]
    # LlamaIndex reads the stream in a worker thread after the chat span returned.
    assert answer.span_path == ("CondenseQuestionChatEngine.chat", *SYNTHESIZE)
    assert_matches(answer, logged(fp)[-1])


async def test_function_agent_steps_and_tools(fp: FakeProvider, global_handler: TokenSpyHandler) -> None:
    agent = FunctionAgent(tools=[FunctionTool.from_defaults(multiply)], llm=openai_llm(fp))
    with tokenspy.session("agent") as session:
        await agent.run("What is 2 times 3?")
    records = tokenspy.calls()
    assert len(records) == 2  # the tool call, then the answer
    for record, usage in zip(records, logged(fp), strict=True):
        assert record.span_path == ("agent", "FunctionAgent", "run_agent_step")
        assert record.span_kinds == ("session", "agent", "step")
        assert_matches(record, usage)
    step_node = node(session.stats(), "agent", "FunctionAgent", "run_agent_step")
    assert step_node["calls"] == 2
    assert step_node["cost_femto"] == sum(r.cost_femto or 0 for r in records)
    assert step_node["cost_femto"] == sum(
        expected_cost(r.model or "", r.input_tokens, r.output_tokens, r.cached_input_tokens) for r in records)


async def test_a_tool_that_calls_an_llm_is_a_level_of_its_own(fp: FakeProvider,
                                                              global_handler: TokenSpyHandler) -> None:
    inner = MockLLM(max_tokens=2)

    def summarize(text: str) -> str:
        """Summarize a text."""
        return str(inner.complete(text).text)

    agent = FunctionAgent(tools=[FunctionTool.from_defaults(summarize)], llm=openai_llm(fp))
    await agent.run("Summarize Paris.")
    paths = [r.span_path for r in tokenspy.calls()]
    assert ("FunctionAgent", "call_tool", "summarize") in paths
    assert paths.count(("FunctionAgent", "run_agent_step")) == 2


async def test_agent_workflow_puts_each_agents_steps_under_its_name(global_handler: TokenSpyHandler) -> None:
    inner = MockLLM(max_tokens=2)

    def summarize(text: str) -> str:
        """Summarize a text."""
        return str(inner.complete(text).text)

    # The fake provider calls the first tool offered with "Paris" for every string argument: the
    # research agent summarizes, then hands off (`to_agent="Paris"`) to the agent named Paris.
    with FakeProvider() as fp:
        llm = openai_llm(fp)
        research = FunctionAgent(name="research", description="looks things up", llm=llm,
                                 tools=[FunctionTool.from_defaults(summarize)], can_handoff_to=["Paris"])
        writer = FunctionAgent(name="Paris", description="writes", tools=[], llm=llm)
        workflow = AgentWorkflow(agents=[research, writer], root_agent="research")
        with tokenspy.session("team") as session:
            await workflow.run(user_msg="Summarize, then write.")
        sent = logged(fp)
    records = tokenspy.calls()
    assert [r.span_path for r in records] == [
        ("team", "AgentWorkflow", "research", "run_agent_step"),  # calls summarize
        ("team", "AgentWorkflow", "research", "call_tool", "summarize"),  # the tool's own LLM
        ("team", "AgentWorkflow", "research", "run_agent_step"),  # hands off
        ("team", "AgentWorkflow", "Paris", "run_agent_step"),  # answers
    ]
    assert records[0].span_kinds == ("session", "agent", "agent", "step")
    for record, usage in zip((records[0], records[2], records[3]), sent, strict=True):
        assert_matches(record, usage)
    research_node = node(session.stats(), "team", "AgentWorkflow", "research")
    assert research_node["calls"] == 3
    assert research_node["cost_femto"] == records[0].cost_femto + records[2].cost_femto  # type: ignore[operator]
    assert node(session.stats(), "team", "AgentWorkflow", "Paris")["cost_femto"] == records[3].cost_femto


async def test_react_agent_step(global_handler: TokenSpyHandler) -> None:
    with FakeProvider(reply="Thought: I can answer without a tool.\nAnswer: Paris") as fp:
        agent = ReActAgent(tools=[FunctionTool.from_defaults(multiply)], llm=openai_llm(fp))
        result = await agent.run("Capital?")
        [record] = tokenspy.calls()
        assert_matches(record, logged(fp)[0])
    assert "Paris" in str(result)
    assert record.span_path == ("ReActAgent", "run_agent_step")


async def test_custom_workflow_step(fp: FakeProvider, global_handler: TokenSpyHandler) -> None:
    llm = openai_llm(fp)

    class Haiku(Workflow):
        @step
        async def write(self, ev: StartEvent) -> StopEvent:
            return StopEvent(result=str(await llm.acomplete("A haiku about Paris")))

    await Haiku().run()
    [record] = tokenspy.calls()
    assert (record.span_path, record.span_kinds) == (("Haiku", "write"), ("chain", "step"))


def test_user_dispatcher_spans_nest_under_a_profile(fp: FakeProvider,
                                                    global_handler: TokenSpyHandler) -> None:
    dispatcher = get_dispatcher("my.app")
    llm = openai_llm(fp)

    @dispatcher.span
    def answer(question: str) -> str:
        return str(SimpleChatEngine.from_defaults(llm=llm).chat(question))

    @tokenspy.profile
    def handle_request() -> str:
        return answer("Capital of France?")

    handle_request()
    [record] = tokenspy.calls()
    user_span = "test_user_dispatcher_spans_nest_under_a_profile.<locals>.answer"  # its qualname
    assert record.span_path == ("handle_request", user_span, "SimpleChatEngine.chat")
    assert record.span_kinds == ("function", "function", "chain")


def test_per_span_state_is_released(fp: FakeProvider, global_handler: TokenSpyHandler) -> None:
    from tokenspy.llamaindex.instrumentation import TAP

    index = VectorStoreIndex.from_documents(DOCS, embed_model=openai_embedding(fp))
    engine = index.as_query_engine(llm=openai_llm(fp), streaming=True)
    for _ in range(3):
        for _ in engine.query("Capital?").response_gen:  # type: ignore[union-attr]
            pass
    assert not TAP._open and not TAP._roots and not TAP._llm
    assert len(tokenspy.calls()) == 7
