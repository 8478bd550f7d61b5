"""Deterministic tool calling, so agent loops (LangGraph, LlamaIndex agents) run to completion.

Rule: while some tool offered in the request has not been called yet in the conversation, call the
next such tool (in the order offered) with arguments synthesised from its JSON schema; once every
tool has been called, answer with text. Each API's builder only extracts the offered tools and the
names already called; the decision and the arguments live here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tokenspy_core.tokenizer import count_tokens

__all__ = ["Tool", "ToolCall", "arguments_for", "choose_tool"]


@dataclass(frozen=True)
class Tool:
    name: str
    schema: Mapping[str, Any]


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # JSON text, exactly as streamed

    @property
    def input(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.arguments)
        return value

    def tokens(self, model: str) -> int:
        # What a real model emits for a call: the tool name and its JSON arguments.
        return count_tokens(self.name, model) + count_tokens(self.arguments, model)


def _value_for(schema: Mapping[str, Any]) -> Any:
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]  # "Paris" would fail validation of e.g. Literal["c", "f"]
    kind = schema.get("type")
    if isinstance(kind, list):  # e.g. ["string", "null"]
        kind = next((k for k in kind if k != "null"), None)
    if kind == "string":
        return "Paris"
    if kind in ("integer", "number"):
        return 2
    if kind == "boolean":
        return True
    return None


def arguments_for(schema: Mapping[str, Any]) -> dict[str, Any]:
    """Values for the schema's required properties: string "Paris", number 2, boolean true, else null."""
    props = schema.get("properties")
    props = props if isinstance(props, Mapping) else {}
    required = schema.get("required")
    names = required if isinstance(required, list) else []
    return {str(n): _value_for(props.get(n) or {}) for n in names}


def choose_tool(tools: Sequence[Tool], called: Iterable[str], n_results: int) -> ToolCall | None:
    """The call to make next, or None to answer with text.

    `called` are the tool names of earlier assistant tool calls; `n_results` counts tool results.
    Some clients replay results without the matching named call: when there are more results than
    called names, the first `n_results` tools also count as called.
    """
    done = set(called)
    if n_results > len(done):
        done |= {t.name for t in tools[:n_results]}
    for tool in tools:
        if tool.name not in done:
            return ToolCall(tool.name, json.dumps(arguments_for(tool.schema), ensure_ascii=False))
    return None
