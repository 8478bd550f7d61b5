"""A warning tokenspy raises while LlamaIndex runs a call (a budget crossed) points at the user's line.

The call ends in a handler the instrumentation dispatcher calls, from `llama_index_instrumentation`
(and, in an agent, from a step the `workflows` runtime runs): those frames are the library's, not
the user's.
"""

from __future__ import annotations

import asyncio
import sys
import warnings

from li_helpers import openai_llm
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ChatMessage

import tokenspy
from tokenspy.llamaindex import TokenSpyHandler
from tokenspy.testing import FakeProvider

QUESTION = [ChatMessage(role="user", content="What is the capital of France?")]


def _next_line() -> int:
    """The line after the caller's."""
    return sys._getframe(1).f_lineno + 1


def _budget_warnings(caught: list[warnings.WarningMessage]) -> list[tuple[str, int]]:
    return [(w.filename, w.lineno) for w in caught if "over its budget" in str(w.message)]


def test_a_budget_warning_from_an_llm_call_points_at_the_callers_line(fp: FakeProvider,
                                                                      global_handler: TokenSpyHandler) -> None:
    llm = openai_llm(fp)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with tokenspy.session("ask", budget_usd=0.0000001):
            line = _next_line()
            llm.chat(QUESTION)
    assert _budget_warnings(caught) == [(__file__, line)]


def test_a_budget_warning_from_an_agent_step_points_at_the_callers_line(fp: FakeProvider,
                                                                        global_handler: TokenSpyHandler) -> None:
    agent = FunctionAgent(tools=[], llm=openai_llm(fp))

    async def ask() -> None:
        with tokenspy.session("agent", budget_usd=0.0000001):
            await agent.run("What is the capital of France?")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = _next_line()
        asyncio.run(ask())  # the step runs in a task of its own: this is the user's frame below it
    assert _budget_warnings(caught) == [(__file__, line)]
