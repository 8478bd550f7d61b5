"""A LangGraph agent with two tools and a named sub-chain, and where its tokens and dollars went.

    python examples/langchain_agent.py

It runs against tokenspy's bundled fake provider (an OpenAI-compatible server on 127.0.0.1), so it
needs no API key and no network; the token counts are real tiktoken counts of what was sent. With a
real key, drop the FakeProvider and the `base_url` / `api_key` arguments.
"""

from __future__ import annotations

from typing import Any

from langchain.agents import create_agent
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

import tokenspy
from tokenspy.langchain import TokenSpyHandler
from tokenspy.testing import FakeProvider

REPLY = "It is sunny and 21°C in Paris today, a fine afternoon for a walk along the Seine."


def build_agent(base_url: str) -> Any:
    def chat(model: str) -> ChatOpenAI:
        # stream_usage=True: with a custom base_url LangChain does not ask for streamed usage itself.
        # (LangChain types api_key as SecretStr; a plain str works.)
        return ChatOpenAI(model=model, base_url=base_url, api_key="test",  # type: ignore[arg-type]
                          stream_usage=True, max_retries=0)

    # A named sub-chain: `run_name` makes it a level of its own in the report.
    summarizer = (
        ChatPromptTemplate.from_messages([("system", "Summarize in one sentence."), ("human", "{text}")])
        | chat("gpt-4o-mini")
        | StrOutputParser()
    ).with_config(run_name="summarizer")

    @tool
    def get_weather(city: str) -> str:
        """The current weather in a city."""
        return f"Sunny, 21°C, light wind from the west in {city}."

    @tool
    def summarize(text: str) -> str:
        """Summarize a text in one sentence."""
        return str(summarizer.invoke({"text": text}))

    return create_agent(chat("gpt-4o"), [get_weather, summarize],
                        system_prompt="You are a concise travel assistant. Use the tools.")


def main() -> None:
    handler = TokenSpyHandler()
    tokenspy.set_handler(handler)  # every LangChain run in the process, no callbacks= needed
    with FakeProvider(reply=REPLY) as fp:
        agent = build_agent(fp.openai_base_url)
        with tokenspy.session("trip-planner"):
            result = agent.invoke(
                {"messages": [("human", "What's the weather in Paris? Summarize it for me.")]})
    tokenspy.set_handler(None)
    print("answer:", result["messages"][-1].content)
    print()
    tokenspy.report()


if __name__ == "__main__":
    main()
