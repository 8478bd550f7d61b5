"""Expected numbers, computed independently of tokenspy from what the fake provider logged it sent.

Prices are genai-prices' published rates (USD per million tokens), written out here so that a
pricing bug cannot make a test agree with itself.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from tokenspy import CallRecord

MESSAGES = [{"role": "user", "content": "Tell me a joke"}]
GPT_4O = {
    "input": Decimal("2.50"),
    "cached": Decimal("1.25"),
    "write": Decimal("2.50"),
    "output": Decimal("10"),
}
HAIKU = {"input": Decimal("1"), "cached": Decimal("0.10"), "write": Decimal("1.25"), "output": Decimal("5")}
HAIKU_MODEL = "claude-haiku-4-5"
EMBEDDING_3_SMALL = Decimal("0.02")


def cost(rates: dict[str, Decimal], *, input: int, output: int, cached: int = 0, write: int = 0) -> Decimal:
    uncached = input - cached - write
    return (
        uncached * rates["input"]
        + cached * rates["cached"]
        + write * rates["write"]
        + output * rates["output"]
    ) / 1_000_000


def openai_expected(usage: dict[str, Any]) -> dict[str, int]:
    """A Chat Completions usage dict as sent -> the normalized record fields."""
    details = usage.get("prompt_tokens_details") or {}
    return {
        "input_tokens": usage["prompt_tokens"],
        "output_tokens": usage["completion_tokens"],
        "cached_input_tokens": details.get("cached_tokens", 0),
        "cache_write_tokens": details.get("cache_write_tokens", 0),
        "reasoning_tokens": (usage.get("completion_tokens_details") or {}).get("reasoning_tokens", 0),
    }


def responses_expected(usage: dict[str, Any]) -> dict[str, int]:
    return {
        "input_tokens": usage["input_tokens"],
        "output_tokens": usage["output_tokens"],
        "cached_input_tokens": usage["input_tokens_details"]["cached_tokens"],
        "cache_write_tokens": usage["input_tokens_details"]["cache_write_tokens"],
        "reasoning_tokens": usage["output_tokens_details"]["reasoning_tokens"],
    }


def anthropic_expected(usage: dict[str, Any]) -> dict[str, int]:
    """Raw Anthropic usage as sent (input EXCLUDES cache) -> normalized fields (input includes it)."""
    read = usage["cache_read_input_tokens"]
    write = usage["cache_creation_input_tokens"]
    return {
        "input_tokens": usage["input_tokens"] + read + write,
        "output_tokens": usage["output_tokens"],
        "cached_input_tokens": read,
        "cache_write_tokens": write,
        "reasoning_tokens": (usage.get("output_tokens_details") or {}).get("thinking_tokens", 0),
    }


def tokens_of(record: CallRecord) -> dict[str, int]:
    return {
        name: getattr(record, name)
        for name in (
            "input_tokens",
            "output_tokens",
            "cached_input_tokens",
            "cache_write_tokens",
            "reasoning_tokens",
        )
    }


def assert_exact(record: CallRecord, expected: dict[str, int], rates: dict[str, Decimal]) -> None:
    """Provider-reported tokens, complete, and the exact cost of exactly those tokens."""
    assert tokens_of(record) == expected
    assert record.usage_source == "provider"
    assert record.status == "finished" and not record.partial
    assert record.cost == cost(
        rates,
        input=expected["input_tokens"],
        output=expected["output_tokens"],
        cached=expected["cached_input_tokens"],
        write=expected["cache_write_tokens"],
    )
