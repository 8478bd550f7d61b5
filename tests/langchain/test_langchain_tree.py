"""Attribution: agents, nodes, tools and named chains become the report's tree; plumbing does not."""

from __future__ import annotations

import warnings
from typing import Any, TypedDict

import pytest
from langchain.agents import create_agent
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableConfig, RunnableLambda, RunnableParallel
from langchain_core.tools import tool
from lc_helpers import MINI, from_log, linear_graph, openai_chat, total_femto

import tokenspy
from tokenspy.langchain import TokenSpyHandler
from tokenspy.testing import FakeProvider


def paths() -> list[tuple[str, ...]]:
    return [r.span_path for r in tokenspy.calls()]


def node(tree: dict[str, Any], *names: str) -> dict[str, Any]:
    for name in names:
        (tree,) = [child for child in tree["children"] if child["name"] == name]
    return tree


def build_agent(fp: FakeProvider) -> Any:
    summarizer = (ChatPromptTemplate.from_messages([("human", "Summarize: {text}")])
                  | openai_chat(fp, MINI, stream_usage=True) | StrOutputParser()
                  ).with_config(run_name="summarizer")

    @tool
    def get_weather(city: str) -> str:
        """The current weather in a city."""
        return f"Sunny and 21 degrees in {city}."

    @tool
    def summarize(text: str) -> str:
        """Summarize a text in one sentence."""
        return str(summarizer.invoke({"text": text}))

    return create_agent(openai_chat(fp, stream_usage=True), [get_weather, summarize],
                        system_prompt="You are a helpful assistant.")


def test_agent_tree_shows_each_node_and_named_chain_and_sums_exactly(
        fp: FakeProvider, handler: TokenSpyHandler) -> None:
    with tokenspy.session("request"):
        build_agent(fp).invoke({"messages": [("human", "Weather in Paris, summarized?")]},
                               config={"callbacks": [handler]})
    expected = [from_log(entry) for entry in fp.requests]
    records = tokenspy.calls()
    assert len(records) == len(expected) == 4
    assert all(e.matches(r) for e, r in zip(expected, records, strict=True))
    model = ("request", "LangGraph", "model")
    tool_chain = ("request", "LangGraph", "tools", "summarize", "summarizer")
    assert paths() == [model, model, tool_chain, model]

    tree = tokenspy.stats()["tree"]
    graph = node(tree, "request", "LangGraph")
    model_cost = total_femto([e for e, p in zip(expected, paths(), strict=True) if p == model])
    assert node(graph, "model")["cost_femto"] == model_cost
    summarizer = node(graph, "tools", "summarize", "summarizer")
    assert node(graph, "tools")["cost_femto"] == summarizer["cost_femto"] == expected[2].cost_femto
    assert graph["cost_femto"] == model_cost + expected[2].cost_femto == total_femto(expected)
    assert tree["cost_femto"] == total_femto(expected)
    assert node(graph, "tools", "summarize")["kind"] == "tool" and node(graph, "model")["kind"] == "node"
    assert handler.open_runs == 0


def test_react_agent_internals_are_not_levels(fp: FakeProvider, handler: TokenSpyHandler) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # create_react_agent is deprecated in favour of create_agent
        from langgraph.prebuilt import create_react_agent

        @tool
        def get_weather(city: str) -> str:
            """The current weather in a city."""
            return "Sunny."

        agent = create_react_agent(openai_chat(fp), [get_weather])
    agent.invoke({"messages": [("human", "Weather?")]}, config={"callbacks": [handler]})
    # call_model, RunnableSequence, Prompt and should_continue run inside the "agent" node.
    assert paths() == [("LangGraph", "agent"), ("LangGraph", "agent")]
    assert total_femto([from_log(e) for e in fp.requests]) == tokenspy.stats()["tree"]["cost_femto"]


def test_anonymous_plumbing_adds_no_level_and_named_runs_do(
        fp: FakeProvider, handler: TokenSpyHandler) -> None:
    llm = openai_chat(fp)
    prompt = ChatPromptTemplate.from_messages([("human", "{q}")])
    plain = prompt | llm | StrOutputParser()
    named = plain.with_config(run_name="qa")
    config: RunnableConfig = {"callbacks": [handler]}
    with tokenspy.session("s"):
        plain.invoke({"q": "a"}, config=config)
        named.invoke({"q": "b"}, config=config)
        (RunnableLambda(lambda q: q) | named).with_config(run_name="outer").invoke({"q": "c"}, config=config)
        RunnableLambda[str, Any](lambda q: llm.invoke(q)).invoke("d", config=config)
        llm.with_config(run_name="classifier").invoke("e", config=config)
    assert paths() == [("s",), ("s", "qa"), ("s", "outer", "qa"), ("s",), ("s", "classifier")]
    assert handler.open_runs == 0


def test_a_model_wrapped_with_retry_adds_no_level(fp: FakeProvider, handler: TokenSpyHandler) -> None:
    # `with_retry()` runs the model under a chain named after it (its class name, or its `name`).
    llm = openai_chat(fp)
    writer = openai_chat(fp).with_config(run_name="ignored")  # run_name of the model run, not of the wrapper
    named = ChatPromptTemplate.from_messages([("human", "{q}")]) | llm.with_retry(stop_after_attempt=2)
    config: RunnableConfig = {"callbacks": [handler]}
    with tokenspy.session("s"):
        llm.with_retry(stop_after_attempt=2).invoke("a", config=config)
        named.with_config(run_name="qa").invoke({"q": "b"}, config=config)
        llm.bind(stop=["x"]).with_retry().invoke("c", config=config)
        writer.with_retry().invoke("d", config=config)
    assert paths() == [("s",), ("s", "qa"), ("s",), ("s", "ignored")]
    assert handler.open_runs == 0


def test_a_named_chain_keeps_its_level_when_its_model_has_the_same_name(
        fp: FakeProvider, handler: TokenSpyHandler) -> None:
    # The model is a step of the chain (a sequence, a map), not wrapped by it as `with_retry()` does.
    llm = openai_chat(fp, name="summarizer")
    prompt = ChatPromptTemplate.from_messages([("human", "{q}")])
    chain = (prompt | llm | StrOutputParser()).with_config(run_name="summarizer")
    first = (llm | StrOutputParser()).with_config(run_name="summarizer")
    mapped = RunnableParallel(summary=llm).with_config(run_name="summarizer")
    config: RunnableConfig = {"callbacks": [handler]}
    with tokenspy.session("s"):
        chain.invoke({"q": "a"}, config=config)
        first.invoke("b", config=config)
        mapped.invoke("c", config=config)
        llm.with_retry(stop_after_attempt=2).invoke("d", config=config)  # still no level of its own
    assert paths() == [("s", "summarizer"), ("s", "summarizer"), ("s", "summarizer"), ("s",)]
    assert handler.open_runs == 0


def test_langgraph_nodes_and_named_chains_inside_them(fp: FakeProvider, handler: TokenSpyHandler) -> None:
    llm = openai_chat(fp)
    writer = (ChatPromptTemplate.from_messages([("human", "Write about {topic}")]) | llm).with_config(
        run_name="writer")

    class State(TypedDict):
        topic: str
        text: str

    def research(state: State) -> dict[str, str]:
        return {"text": str(llm.invoke(f"Facts about {state['topic']}").content)}

    def write(state: State) -> dict[str, str]:
        return {"text": str(writer.invoke({"topic": state["topic"]}).content)}

    app = linear_graph(State, ("research", research), ("write", write)).with_config(run_name="pipeline")
    app.invoke({"topic": "Paris", "text": ""}, config={"callbacks": [handler]})
    assert paths() == [("pipeline", "research"), ("pipeline", "write", "writer")]
    assert [c["kind"] for c in node(tokenspy.stats()["tree"], "pipeline")["children"]] == ["node", "node"]


def test_a_subgraph_is_named_by_its_node(fp: FakeProvider, handler: TokenSpyHandler) -> None:
    llm = openai_chat(fp, stream_usage=True)

    class State(TypedDict):
        text: str

    def ask(state: State) -> dict[str, str]:
        return {"text": str(llm.invoke("hi").content)}

    app = linear_graph(State, ("sub", linear_graph(State, ("inner_llm", ask))), ("outer_llm", ask))
    app.invoke({"text": ""}, config={"callbacks": [handler]})
    # stream_mode="messages" makes every model call stream (reference §4.8): same tree, same numbers.
    list(app.stream({"text": ""}, config={"callbacks": [handler]}, stream_mode="messages"))
    expected = [("LangGraph", "sub", "inner_llm"), ("LangGraph", "outer_llm")] * 2
    assert paths() == expected
    assert [r.streamed for r in tokenspy.calls()] == [False, False, True, True]
    assert all(from_log(e).matches(r) for e, r in zip(fp.requests, tokenspy.calls(), strict=True))
    assert handler.open_runs == 0


def test_retrievers_and_tools_called_directly_are_levels(fp: FakeProvider, handler: TokenSpyHandler) -> None:
    llm = openai_chat(fp)

    class RewritingRetriever(BaseRetriever):
        def _get_relevant_documents(self, query: str, *,
                                    run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
            rewritten = llm.invoke(f"Rewrite: {query}", config={"callbacks": run_manager.get_child()})
            return [Document(page_content=str(rewritten.content))]

    @tool
    def lookup(q: str) -> str:
        """Look something up."""
        return str(llm.invoke(q).content)

    RewritingRetriever().invoke("paris", config={"callbacks": [handler]})
    lookup.invoke({"q": "paris"}, config={"callbacks": [handler]})
    assert paths() == [("RewritingRetriever",), ("lookup",)]
    kinds = [r.span_kinds for r in tokenspy.calls()]
    assert kinds == [("retriever",), ("tool",)]


def test_handler_on_the_model_only_attaches_to_the_current_span(fp: FakeProvider) -> None:
    handler = TokenSpyHandler()
    chain = (ChatPromptTemplate.from_messages([("human", "{q}")]) | openai_chat(fp, callbacks=[handler])
             ).with_config(run_name="qa")
    with tokenspy.session("outer") as session:
        chain.invoke({"q": "hi"})  # the handler never sees the chain: its model run's parent is unknown
    assert paths() == [("outer",)] and int(session.calls) == 1
    assert handler.open_runs == 0


def test_handler_stats_and_report_show_what_it_saw(fp: FakeProvider, capsys: Any) -> None:
    mine, other = TokenSpyHandler(), TokenSpyHandler()
    chain = (ChatPromptTemplate.from_messages([("human", "{q}")]) | openai_chat(fp)
             ).with_config(run_name="qa")
    chain.invoke({"q": "one"}, config={"callbacks": [mine]})
    chain.invoke({"q": "two"}, config={"callbacks": [other]})
    first, second = (from_log(e) for e in fp.requests)
    assert mine.stats()["total_calls"] == 1 and mine.stats()["tree"]["cost_femto"] == first.cost_femto
    assert tokenspy.stats()["tree"]["cost_femto"] == first.cost_femto + second.cost_femto
    mine.report()
    out = capsys.readouterr().out
    assert "qa" in out and "1 call" in out
    assert '"total_calls": 1' in str(mine.report(format="json"))


def test_a_handler_with_its_own_tracker_leaves_the_shared_one_alone(fp: FakeProvider) -> None:
    own = tokenspy.Tracker()
    handler = TokenSpyHandler(tracker=own)
    openai_chat(fp).invoke("hi", config={"callbacks": [handler]})
    assert tokenspy.calls() == [] and len(own.calls()) == 1
    assert handler.stats()["total_calls"] == 1
    assert from_log(fp.requests[0]).matches(own.calls()[0])


def test_a_profile_or_session_inside_a_node_or_tool_holds_its_calls(
        fp: FakeProvider, handler: TokenSpyHandler) -> None:
    llm = openai_chat(fp)
    sessions: list[Any] = []

    class State(TypedDict):
        text: str

    @tokenspy.profile(name="drafting", budget_usd=0.000001, on_exceeded="raise")
    def draft(state: State) -> dict[str, str]:
        return {"text": "".join(str(llm.invoke(f"draft {i}").content) for i in range(3))}

    @tool
    def research(topic: str) -> str:
        """Research a topic."""
        with tokenspy.session("research-sub") as s:
            sessions.append(s)
            return str(llm.invoke(topic).content)

    def look_up(state: State) -> dict[str, str]:
        return {"text": research.invoke({"topic": "Paris"})}

    graph = linear_graph(State, ("look_up", look_up), ("draft", draft))
    with pytest.warns(UserWarning, match="drafting"), pytest.raises(tokenspy.BudgetExceededError):
        graph.invoke({"text": ""}, config={"callbacks": [handler]})
    assert len(fp.requests) == 2  # the draft that crossed the budget was sent, the next one refused
    assert sessions[0].calls == 1 and sessions[0].cost == from_log(fp.requests[0]).cost_femto / 10**15
    assert paths()[:2] == [("LangGraph", "look_up", "research", "research-sub"), ("LangGraph", "draft", "drafting")]
