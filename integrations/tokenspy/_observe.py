"""SDK client interception (openai, anthropic): filled in by the SDK adapters."""

from __future__ import annotations

from typing import Any, TypeVar

__all__ = ["instrument_sdks", "observe"]

C = TypeVar("C")


def observe(client: C, **options: Any) -> C:
    raise NotImplementedError("tokenspy.observe is not implemented yet")


def instrument_sdks() -> None:
    return None
