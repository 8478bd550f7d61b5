"""What the code of a handler's runs records outside LangChain (a raw SDK call in a tool, a
`tokenspy.record`) is that handler's too: in its own tracker if it has one (and not in the shared one),
in its view otherwise, once."""

from __future__ import annotations

from typing import TypedDict

import openai
import pytest
from langchain_core.tools import tool
from lc_helpers import KEY, MINI, linear_graph, openai_chat

import tokenspy
from tokenspy import Tracker
from tokenspy.langchain import TokenSpyHandler
from tokenspy.testing import FakeProvider


class State(TypedDict):
    text: str


def agent_run(fp: FakeProvider, *handlers: TokenSpyHandler) -> None:
    client = openai.OpenAI(base_url=fp.openai_base_url, api_key=KEY, max_retries=0)  # not observed
    llm = openai_chat(fp)

    @tool
    def lookup(topic: str) -> str:
        """Look a topic up."""
        tokenspy.record(MINI, input_tokens=10, output_tokens=5)
        answer = client.chat.completions.create(model=MINI, messages=[{"role": "user", "content": topic}])
        return answer.choices[0].message.content or ""

    def think(state: State) -> dict[str, str]:
        return {"text": str(llm.invoke("plan").content)}

    def act(state: State) -> dict[str, str]:
        return {"text": lookup.invoke({"topic": "Paris"})}

    linear_graph(State, ("think", think), ("act", act)).invoke({"text": ""}, config={"callbacks": list(handlers)})


PATHS = [("LangGraph", "think"), ("LangGraph", "act", "lookup"), ("LangGraph", "act", "lookup")]


def test_a_handler_with_its_own_tracker_gets_what_its_tools_record_and_the_shared_one_nothing(
        fp: FakeProvider) -> None:
    mine = Tracker()
    agent_run(fp, TokenSpyHandler(tracker=mine))
    records = mine.calls()
    assert sorted(r.span_path for r in records) == sorted(PATHS)
    assert (MINI, 10, 5) in [(r.model, r.input_tokens, r.output_tokens) for r in records]  # the record()
    assert [r.usage_source for r in records] == ["provider"] * 3
    assert tokenspy.calls() == []


def test_a_default_handler_sees_what_its_tools_record_once_beside_the_shared_tracker(fp: FakeProvider) -> None:
    handler = TokenSpyHandler()
    with tokenspy.session("s") as session:
        agent_run(fp, handler)
    shared = tokenspy.calls()
    assert sorted(r.span_path for r in shared) == sorted(("s", *path) for path in PATHS)
    assert [r.id for r in handler.calls()] == [r.id for r in shared]  # each once, the model's call included
    assert handler.stats()["total_calls"] == session.calls == 3
    assert handler.stats()["total_cost_usd"] == tokenspy.stats()["total_cost_usd"]


@pytest.mark.parametrize("tenant_first", [False, True], ids=["shared first", "tenant first"])
def test_two_handlers_on_different_trackers_both_get_what_a_tool_records(fp: FakeProvider, tenant_first: bool) -> None:
    # The documented "global plus per-tenant" pattern: each tracker gets every call of the run, a raw SDK
    # call and a record() in a tool too, whichever handler LangChain calls first.
    shared, tenant = TokenSpyHandler(), TokenSpyHandler(tracker=Tracker())
    agent_run(fp, *((tenant, shared) if tenant_first else (shared, tenant)))
    for records in (tokenspy.calls(), tenant.calls(), shared.calls()):
        assert sorted(r.span_path for r in records) == sorted(PATHS)
        assert sum(r.total_tokens for r in records) == sum(r.total_tokens for r in tokenspy.calls())
