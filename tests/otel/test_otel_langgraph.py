"""OTel spans of LangGraph agents: what kind of span an agent is, and a stream closed early."""

from __future__ import annotations

import asyncio

from langchain.agents import create_agent
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from opentelemetry.trace import StatusCode
from otel_harness import Otel

from tokenspy.langchain import TokenSpyHandler
from tokenspy.testing import FakeProvider
from tokenspy.testing.fixtures import fake_provider  # noqa: F401  (makes the fixture available here)


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return "Sunny"


def _agent(fp: FakeProvider) -> object:
    model = ChatOpenAI(model="gpt-4o", base_url=fp.openai_base_url, api_key="test", max_retries=0)
    return create_agent(model, [get_weather], name="weather_agent")


def test_a_named_create_agent_is_an_agent_span(otel: Otel, fake_provider: FakeProvider) -> None:  # noqa: F811
    # Its graph was a plain chain span: no `invoke_agent`, no `gen_ai.agent.name`.
    _agent(fake_provider).invoke({"messages": [("human", "weather?")]},  # type: ignore[attr-defined]
                                 config={"callbacks": [TokenSpyHandler()]})
    attributes = dict(otel.span("weather_agent").attributes or {})
    assert attributes["gen_ai.operation.name"] == "invoke_agent"
    assert attributes["gen_ai.agent.name"] == "weather_agent"
    assert attributes["tokenspy.span.kind"] == "agent"


def test_closing_an_agents_stream_early_marks_no_span_as_an_error(otel: Otel,
                                                                  fake_provider: FakeProvider) -> None:  # noqa: F811
    # LangGraph cancels the running node, with an object as the message: the node's span was ERROR, its
    # description that object's repr (a new one every run).
    fake_provider.reply = " ".join(["word"] * 40)
    fake_provider.chunk_delay = 0.01

    async def main() -> None:
        stream = _agent(fake_provider).astream(  # type: ignore[attr-defined]
            {"messages": [("human", "weather?")]}, config={"callbacks": [TokenSpyHandler()]},
            stream_mode="messages")
        seen = 0
        async for _ in stream:
            seen += 1
            if seen == 3:
                break
        await stream.aclose()

    asyncio.run(main())
    assert [s.name for s in otel.spans() if s.status.status_code is StatusCode.ERROR] == []
    (call,) = [s for s in otel.spans() if s.name == "chat gpt-4o"]
    assert (call.attributes or {})["tokenspy.partial"] is True
