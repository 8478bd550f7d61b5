"""What a LlamaIndex tool's code records outside LlamaIndex (a raw SDK call) is the handler's too: in its
own tracker if it has one (and not in the shared one), in its view otherwise, once."""

from __future__ import annotations

import openai
from li_helpers import openai_llm
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.callbacks import CallbackManager
from llama_index.core.tools import FunctionTool

import tokenspy
from tokenspy import Tracker
from tokenspy.llamaindex import TokenSpyHandler
from tokenspy.testing import FakeProvider

TOOL = ("FunctionAgent", "call_tool", "lookup")


async def agent_run(fp: FakeProvider, handler: TokenSpyHandler, *, register_globally: bool) -> None:
    raw = openai.AsyncOpenAI(base_url=fp.openai_base_url, api_key="k", max_retries=0)  # not observed

    async def lookup(q: str) -> str:
        """Look a topic up."""
        answer = await raw.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": q}])
        return answer.choices[0].message.content or ""

    llm = openai_llm(fp)
    if register_globally:
        tokenspy.set_handler(handler)
    else:
        llm.callback_manager = CallbackManager([handler])
    await FunctionAgent(tools=[FunctionTool.from_defaults(async_fn=lookup)], llm=llm).run(user_msg="hi")


async def test_a_global_handler_with_its_own_tracker_gets_a_tools_raw_call(fp: FakeProvider, sdk_layer: None) -> None:
    mine = Tracker()
    await agent_run(fp, TokenSpyHandler(tracker=mine), register_globally=True)
    records = mine.calls()
    assert len(records) == len(fp.requests) == 3  # the tool call, the tool's own request, the answer
    assert [r.span_path for r in records].count(TOOL) == 1
    assert all(r.usage_source == "provider" for r in records)
    assert tokenspy.calls() == []


async def test_a_default_handler_sees_a_tools_raw_call_once_beside_the_shared_tracker(
        fp: FakeProvider, sdk_layer: None) -> None:
    handler = TokenSpyHandler()
    await agent_run(fp, handler, register_globally=True)
    shared = tokenspy.calls()
    assert len(shared) == 3 and [r.span_path for r in shared].count(TOOL) == 1
    assert [r.id for r in handler.calls()] == [r.id for r in shared]
