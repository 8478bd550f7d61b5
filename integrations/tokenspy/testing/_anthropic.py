"""Anthropic `POST /v1/messages` and `POST /v1/messages/count_tokens`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tokenspy_core.tokenizer import count_tokens

from ._tiers import anthropic_speed, check_anthropic_tier
from ._tools import Tool, ToolCall, choose_tool
from ._usage import Tokens, anthropic_usage, count_prompt, flatten, tokens_for
from ._wire import JSON, BadRequest, Call, JsonReply, StreamReply, split_pieces, sse

__all__ = ["count_tokens_endpoint", "messages"]


def _conversation(call: Call) -> list[Mapping[str, Any]]:
    value = call.body.get("messages")
    if not isinstance(value, list) or not all(isinstance(m, Mapping) for m in value):
        raise BadRequest("messages: Field required (a list of message objects)")
    return value


def _prompt_tokens(call: Call, conversation: list[Mapping[str, Any]]) -> int:
    # Anthropic has no per-message framing of its own; we reuse OpenAI's so the rule is one rule.
    system = flatten(call.body.get("system"))
    messages = [{"role": "system", "content": system}, *conversation] if system else conversation
    return count_prompt(messages, call.body.get("tools"), call.model)


def _blocks(conversation: list[Mapping[str, Any]]) -> list[tuple[str, Mapping[str, Any]]]:
    found = []
    for message in conversation:
        content = message.get("content")
        if isinstance(content, list):
            found += [(str(message.get("role")), b) for b in content if isinstance(b, Mapping)]
    return found


def _tool_call(call: Call, conversation: list[Mapping[str, Any]]) -> ToolCall | None:
    choice = call.body.get("tool_choice")
    if isinstance(choice, Mapping) and choice.get("type") == "none":
        return None
    tools = [
        Tool(t["name"], t.get("input_schema") or {})
        for t in call.body.get("tools") or []
        # server tools (web_search_..., bash_...) have no input_schema: never "called" by us
        if isinstance(t, Mapping) and isinstance(t.get("name"), str) and "input_schema" in t
    ]
    blocks = _blocks(conversation)
    called = [str(b.get("name")) for role, b in blocks if role == "assistant" and b.get("type") == "tool_use"]
    n_results = sum(1 for _, b in blocks if b.get("type") == "tool_result")
    return choose_tool(tools, called, n_results)


def messages(call: Call) -> JsonReply | StreamReply:
    conversation = _conversation(call)
    check_anthropic_tier(call)
    speed = anthropic_speed(call)
    tool_call = _tool_call(call, conversation)
    visible = tool_call.tokens(call.model) if tool_call else count_tokens(call.reply, call.model)
    tokens = tokens_for(call, _prompt_tokens(call, conversation), visible)
    usage = anthropic_usage(tokens, speed=speed)
    stop_reason = "tool_use" if tool_call else "end_turn"
    message: JSON = {
        "id": f"msg_fake{call.seq:06d}",
        "type": "message",
        "role": "assistant",
        "model": call.model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage,
    }
    tool_id = f"toolu_fake{call.seq:06d}"
    if not call.stream:
        block = (
            {"type": "tool_use", "id": tool_id, "name": tool_call.name, "input": tool_call.input}
            if tool_call
            else {"type": "text", "text": call.reply}
        )
        return JsonReply(message | {"content": [block], "stop_reason": stop_reason}, usage=usage)

    start_usage = anthropic_usage(tokens, output_tokens=1, speed=speed)  # the real API's placeholder output
    head = [
        sse(
            {"type": "message_start", "message": message | {"usage": start_usage}},
            "message_start",
            usage=start_usage,
        ),
        sse(
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "tool_use", "id": tool_id, "name": tool_call.name, "input": {}}
                if tool_call
                else {"type": "text", "text": ""},
            },
            "content_block_start",
        ),
        sse({"type": "ping"}, "ping"),
    ]
    if tool_call:
        deltas = [{"type": "input_json_delta", "partial_json": p} for p in split_pieces(tool_call.arguments)]
    else:
        deltas = [{"type": "text_delta", "text": p} for p in split_pieces(call.reply)]
    body = [
        sse({"type": "content_block_delta", "index": 0, "delta": d}, "content_block_delta") for d in deltas
    ]
    delta_usage = _delta_usage(tokens, full="fulldelta" in call.flags)
    tail = [
        sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
        sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": delta_usage,
            },
            "message_delta",
            usage=delta_usage,
        ),
        sse({"type": "message_stop"}, "message_stop"),
    ]
    error = sse(
        {"type": "error", "error": {"type": "api_error", "message": "fake provider: midstream error"}},
        "error",
    )
    return StreamReply(head, body, tail, error)


def _delta_usage(tokens: Tokens, *, full: bool) -> JSON:
    """`message_delta.usage`: cumulative output only ("classic"), or also input and cache (`fulldelta`)."""
    final = anthropic_usage(tokens)
    keys = ["output_tokens", "output_tokens_details"]
    if full:
        keys += ["input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"]
    return {k: final[k] for k in keys if k in final}


def count_tokens_endpoint(call: Call) -> JsonReply:
    # The real endpoint reports the whole prompt, whatever would be cached.
    return JsonReply({"input_tokens": _prompt_tokens(call, _conversation(call))})
