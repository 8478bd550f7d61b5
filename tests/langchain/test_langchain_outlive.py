"""A model call in a task that outlives the tool that started it; two handlers on two trackers in a session."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from lc_helpers import KEY, from_log

import tokenspy
from tokenspy.langchain import TokenSpyHandler
from tokenspy.testing import FakeProvider


async def test_a_call_in_a_task_that_outlives_its_tool_is_recorded_once_when_it_ends(
        fp: FakeProvider, aio: httpx.AsyncClient) -> None:
    model = ChatOpenAI(model="gpt-4o", base_url=fp.openai_base_url, api_key=KEY, max_retries=0,
                       http_async_client=aio)
    handler = TokenSpyHandler()
    tokenspy.set_handler(handler)
    pending: list[asyncio.Task[object]] = []

    @tool
    async def kick(x: str) -> str:
        """Start a summary in the background."""
        pending.append(asyncio.create_task(model.ainvoke("summarize in the background")))
        return "started"

    with tokenspy.session("req") as s:
        await kick.ainvoke({"x": "a"})  # the tool's run (the root) ends before the request does
        await asyncio.gather(*pending)
    (entry,) = fp.requests
    (record,) = tokenspy.calls()
    assert (record.status, record.partial, record.usage_source) == ("finished", False, "provider")
    assert from_log(entry).matches(record)
    assert record.span_path == ("req", "kick")
    assert s.calls == 1
    assert handler.open_runs == 0


def test_two_handlers_on_two_trackers_count_a_call_once_in_the_session_and_its_budget(fp: FakeProvider) -> None:
    model = ChatOpenAI(model="gpt-4o", base_url=fp.openai_base_url, api_key=KEY, max_retries=0)
    shared, tenant = TokenSpyHandler(), TokenSpyHandler(tracker=tokenspy.Tracker())
    with tokenspy.session("req") as s:
        model.invoke("hi", {"callbacks": [shared, tenant]})
    expected = from_log(fp.requests[0])
    assert s.calls == 1 and s.tokens == expected.input_tokens + expected.output_tokens
    for view in (tokenspy, shared, tenant):
        (record,) = view.calls()
        assert expected.matches(record)
        assert record.span_path == ("req",)
    one_call = expected.cost_femto / 10**15
    with tokenspy.session("budgeted", budget_usd=one_call * 1.5, on_exceeded="raise") as budgeted:
        model.invoke("hi", {"callbacks": [shared, tenant]})
        with pytest.warns(UserWarning, match="'budgeted' spent"):  # two calls spent: now over it
            model.invoke("hi", {"callbacks": [shared, tenant]})  # one call spent: under the budget, sent
        with pytest.raises(tokenspy.BudgetExceededError):
            model.invoke("hi", {"callbacks": [shared, tenant]})
    assert budgeted.calls == 2 and len(fp.requests) == 3



TOOLS = [{"type": "function", "function": {"name": "search_docs", "description": "Search the docs.", "parameters": {
    "type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}}]


@pytest.mark.parametrize("layers", ["langchain_only", "with_sdk_layer"], indirect=True)
def test_a_tool_call_stream_failing_midway_counts_the_tool_call_received(
        fp: FakeProvider, handler: TokenSpyHandler, layers: str) -> None:
    from tokenspy_core.tokenizer import count_tokens

    model = ChatOpenAI(model="gpt-4o-mini", base_url=fp.openai_base_url, api_key=KEY, max_retries=0, streaming=True,
                       stream_usage=True, default_headers={"x-fake-flags": "midstream"}).bind_tools(TOOLS)
    with pytest.raises(Exception, match="fake"):
        model.invoke("Can I get a refund?", config={"callbacks": [handler]})
    (record,) = handler.calls()
    assert (record.status, record.partial) == ("failed", True)
    # The fake sent the tool's name and the first half of its arguments before the error.
    assert record.output_tokens == count_tokens('search_docs{"query":', "gpt-4o-mini")
