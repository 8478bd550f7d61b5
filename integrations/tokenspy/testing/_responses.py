"""OpenAI `POST /v1/responses` (the Responses API), text answers and function calls."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tokenspy_core.tokenizer import count_tokens

from ._tiers import openai_tier
from ._tools import Tool, ToolCall, choose_tool
from ._usage import count_prompt, responses_usage, tokens_for
from ._wire import CREATED, JSON, BadRequest, Call, Frame, JsonReply, StreamReply, midpoint, split_pieces, sse

__all__ = ["responses"]


def _items(call: Call) -> list[Mapping[str, Any]]:
    value = call.body.get("input")
    if value is None:
        return []
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if isinstance(value, list) and all(isinstance(item, Mapping) for item in value):
        return value
    raise BadRequest("'input' must be a string or a list of input items")


def _as_messages(call: Call, items: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Items as chat messages for counting: tool outputs become tool messages, function calls
    assistant tool calls."""
    messages: list[Mapping[str, Any]] = []
    instructions = call.body.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    for item in items:
        if item.get("type") == "function_call_output":
            messages.append({"role": "tool", "content": item.get("output")})
        elif item.get("type") == "function_call":  # counted as the same call in a chat history is
            function = {"name": item.get("name"), "arguments": item.get("arguments")}
            messages.append({"role": "assistant", "content": None, "tool_calls": [{"function": function}]})
        elif "role" in item:
            messages.append(item)
        else:  # reasoning, ...: framing only
            messages.append({"role": "assistant", "content": ""})
    return messages


def _tool_call(call: Call, items: list[Mapping[str, Any]]) -> ToolCall | None:
    if call.body.get("tool_choice") == "none":
        return None
    tools = [
        Tool(t["name"], t.get("parameters") or {})
        for t in call.body.get("tools") or []
        if isinstance(t, Mapping) and t.get("type") == "function" and isinstance(t.get("name"), str)
    ]
    called = [str(i.get("name")) for i in items if i.get("type") == "function_call"]
    n_results = sum(1 for i in items if i.get("type") == "function_call_output")
    return choose_tool(tools, called, n_results)


def responses(call: Call) -> JsonReply | StreamReply:
    items = _items(call)
    tier = openai_tier(call)
    tool_call = _tool_call(call, items)
    visible = tool_call.tokens(call.model) if tool_call else count_tokens(call.reply, call.model)
    prompt = count_prompt(_as_messages(call, items), call.body.get("tools"), call.model)
    usage = responses_usage(tokens_for(call, prompt, visible))
    item_id = f"{'fc' if tool_call else 'msg'}_fake{call.seq:06d}"
    text_part = {"type": "output_text", "text": call.reply, "annotations": [], "logprobs": []}
    if tool_call:
        done_item: JSON = {
            "id": item_id,
            "type": "function_call",
            "status": "completed",
            "call_id": f"call_fake{call.seq:06d}",
            "name": tool_call.name,
            "arguments": tool_call.arguments,
        }
    else:
        done_item = {
            "id": item_id,
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [text_part],
        }
    final = _response(call, tier, "completed", [done_item], usage)
    if not call.stream:
        return JsonReply(final, usage=usage)

    seq = 0

    def event(kind: str, payload: JSON, usage: JSON | None = None) -> Frame:
        nonlocal seq
        frame = sse({"type": kind, "sequence_number": seq} | payload, event=kind, usage=usage)
        seq += 1
        return frame

    started = _response(call, tier, "in_progress", [], None)
    head = [
        event("response.created", {"response": started}),
        event("response.in_progress", {"response": started}),
    ]
    where = {"item_id": item_id, "output_index": 0}
    pieces = split_pieces(tool_call.arguments if tool_call else call.reply)
    if tool_call:
        head.append(
            event(
                "response.output_item.added",
                {"output_index": 0, "item": done_item | {"status": "in_progress", "arguments": ""}},
            )
        )
        body = [event("response.function_call_arguments.delta", where | {"delta": p}) for p in pieces]
        tail = [
            event(
                "response.function_call_arguments.done",
                where | {"name": tool_call.name, "arguments": tool_call.arguments},
            )
        ]
    else:
        where["content_index"] = 0
        head.append(
            event(
                "response.output_item.added",
                {"output_index": 0, "item": done_item | {"status": "in_progress", "content": []}},
            )
        )
        head.append(event("response.content_part.added", where | {"part": text_part | {"text": ""}}))
        body = [event("response.output_text.delta", where | {"delta": p, "logprobs": []}) for p in pieces]
        tail = [
            event("response.output_text.done", where | {"text": call.reply, "logprobs": []}),
            event("response.content_part.done", where | {"part": text_part}),
        ]
    tail.append(event("response.output_item.done", {"output_index": 0, "item": done_item}))
    tail.append(event("response.completed", {"response": final}, usage=usage))
    # The openai SDK does not raise on this event: the loop yields a ResponseErrorEvent and ends.
    error = sse(
        {
            "type": "error",
            "code": "server_error",
            "message": "fake provider: midstream error",
            "param": None,
            "sequence_number": len(head) + midpoint(len(body)),
        },
        event="error",
    )
    return StreamReply(head, body, tail, error)


def _response(call: Call, tier: str, status: str, output: list[JSON], usage: JSON | None) -> JSON:
    body = call.body
    return {
        "id": f"resp_fake{call.seq:06d}",
        "object": "response",
        "created_at": CREATED,
        "status": status,
        "completed_at": CREATED if status == "completed" else None,
        "model": call.model,
        "output": output,
        "usage": usage,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "metadata": body.get("metadata") or {},
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "temperature": body.get("temperature", 1.0),
        "top_p": body.get("top_p", 1.0),
        "max_output_tokens": body.get("max_output_tokens"),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": body.get("reasoning"),
        "text": body.get("text") or {"format": {"type": "text"}},
        "truncation": body.get("truncation", "disabled"),
        "service_tier": tier,  # the one served (see _tiers.py)
        "store": body.get("store", True),
        "user": body.get("user"),
    }
