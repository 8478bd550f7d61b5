"""Shared by the LangChain tests: pinned prices, expected usage from the fake provider's log, models.

Prices are pinned (USD per million tokens), so expected costs are computed by hand from the fake
provider's logged usage, independently of the bundled price data and of the core's arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
from langchain_anthropic import ChatAnthropic
from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, StateGraph
from pydantic import SecretStr

from tokenspy.testing import FakeProvider

GPT = "gpt-4o"
MINI = "gpt-4o-mini"
CLAUDE = "claude-haiku-4-5"
# model -> (input, output, cache read, cache write) in USD per million tokens
PRICES: dict[str, tuple[float, float, float, float]] = {
    GPT: (2.5, 10, 1.25, 3.125),
    MINI: (0.15, 0.6, 0.075, 0.1875),
    CLAUDE: (1, 5, 0.1, 1.25),
}
KEY = SecretStr("test")


@dataclass(frozen=True)
class Expected:
    """Normalized usage (input includes cache reads and writes) and its exact cost in femto-USD."""

    input_tokens: int
    output_tokens: int
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    model: str = GPT

    @property
    def cost_femto(self) -> int:
        i, o, r, w = (Decimal(str(p)) * 10**9 for p in PRICES[self.model])
        uncached = self.input_tokens - self.cached_input_tokens - self.cache_write_tokens
        return int(uncached * i + self.cached_input_tokens * r + self.cache_write_tokens * w
                   + self.output_tokens * o)

    def matches(self, record: Any) -> bool:
        fields = ("input_tokens", "output_tokens", "cached_input_tokens", "cache_write_tokens",
                  "reasoning_tokens", "cost_femto")
        return all(getattr(record, name) == getattr(self, name) for name in fields)


def from_log(entry: dict[str, Any]) -> Expected:
    """What the fake provider sent on the wire for one request, normalized."""
    usage, model = entry["usage"], entry["model"]
    if entry["path"].startswith("/v1/messages"):  # raw Anthropic: input excludes cache reads/writes
        read, write = usage.get("cache_read_input_tokens") or 0, usage.get("cache_creation_input_tokens") or 0
        return Expected(usage["input_tokens"] + read + write, usage["output_tokens"], read, write, 0, model)
    prompt = usage.get("prompt_tokens_details") or {}
    completion = usage.get("completion_tokens_details") or {}
    return Expected(usage["prompt_tokens"], usage["completion_tokens"], prompt.get("cached_tokens") or 0,
                    prompt.get("cache_write_tokens") or 0, completion.get("reasoning_tokens") or 0, model)


def total_femto(expected: list[Expected]) -> int:
    return sum(e.cost_femto for e in expected)


def openai_chat(fp: FakeProvider, model: str = GPT, *, aio: httpx.AsyncClient | None = None,
                **kwargs: Any) -> ChatOpenAI:
    """ChatOpenAI on the fake provider; async tests pass the `aio` fixture's client (see conftest)."""
    if aio is not None:
        kwargs["http_async_client"] = aio
    return ChatOpenAI(model=model, base_url=fp.openai_base_url, api_key=KEY, max_retries=0, **kwargs)


def anthropic_chat(fp: FakeProvider, model: str = CLAUDE, **kwargs: Any) -> ChatAnthropic:
    return ChatAnthropic(model_name=model, base_url=fp.anthropic_base_url, api_key=KEY, max_retries=0,
                         **kwargs)


def linear_graph(state: type, *nodes: tuple[str, Any]) -> Any:
    """A compiled LangGraph running `(name, node)` one after another, START to END."""
    graph = StateGraph(state)
    previous = START
    for name, node in nodes:
        graph.add_node(name, node)
        graph.add_edge(previous, name)
        previous = name
    graph.add_edge(previous, END)
    return graph.compile()
