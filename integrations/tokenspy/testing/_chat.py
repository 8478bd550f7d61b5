"""OpenAI `POST /v1/chat/completions` and the legacy `POST /v1/completions`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tokenspy_core.tokenizer import count_tokens

from ._tiers import openai_tier
from ._tools import Tool, ToolCall, choose_tool
from ._usage import Tokens, chat_usage, count_prompt, count_raw_input, legacy_usage, tokens_for
from ._wire import CREATED, JSON, BadRequest, Call, Frame, JsonReply, StreamReply, split_pieces, sse

__all__ = ["chat_completions", "completions", "midstream_error"]

_DONE = Frame(b"data: [DONE]\n\n", counted=False)


def midstream_error() -> Frame:
    # The shape the openai SDK turns into `APIError` while iterating (it checks for an "error" key).
    return sse(
        {
            "error": {
                "message": "fake provider: midstream error",
                "type": "server_error",
                "param": None,
                "code": None,
            }
        }
    )


def _include_usage(call: Call) -> bool:
    options = call.body.get("stream_options")
    return isinstance(options, Mapping) and bool(options.get("include_usage"))


def _chat_tool_call(call: Call, messages: Sequence[Mapping[str, Any]]) -> ToolCall | None:
    if call.body.get("tool_choice") == "none":
        return None
    tools = []
    for entry in call.body.get("tools") or []:
        fn = entry.get("function") if isinstance(entry, Mapping) else None
        if isinstance(fn, Mapping) and isinstance(fn.get("name"), str):
            tools.append(Tool(fn["name"], fn.get("parameters") or {}))
    called: list[str] = []
    n_results = 0
    for message in messages:
        role = message.get("role")
        if role == "assistant":
            for tc in message.get("tool_calls") or []:
                fn = tc.get("function") if isinstance(tc, Mapping) else None
                called.append(str(fn.get("name")) if isinstance(fn, Mapping) else "")
            if isinstance(message.get("function_call"), Mapping):  # pre-tools function calling
                called.append(str(message["function_call"].get("name")))
        elif role in ("tool", "function"):
            n_results += 1
    return choose_tool(tools, called, n_results)


def chat_completions(call: Call) -> JsonReply | StreamReply:
    messages = call.body.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, Mapping) for m in messages):
        raise BadRequest("'messages' must be a list of message objects")
    tier = openai_tier(call)
    tool_call = _chat_tool_call(call, messages)
    visible = tool_call.tokens(call.model) if tool_call else count_tokens(call.reply, call.model)
    usage = chat_usage(tokens_for(call, count_prompt(messages, call.body.get("tools"), call.model), visible))
    call_id = f"call_fake{call.seq:06d}"
    if not call.stream:
        message: JSON = {"role": "assistant", "content": call.reply, "refusal": None, "annotations": []}
        if tool_call:
            message["content"] = None
            message["tool_calls"] = [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": tool_call.name, "arguments": tool_call.arguments},
                }
            ]
        choice = {
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": "tool_calls" if tool_call else "stop",
        }
        return JsonReply(_envelope(call, tier, "chat.completion", [choice]) | {"usage": usage}, usage=usage)

    include_usage = _include_usage(call)

    def chunk(delta: JSON, finish_reason: str | None = None) -> Frame:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        data = _envelope(call, tier, "chat.completion.chunk", [choice])
        if include_usage:  # the real API adds `usage: null` to every chunk once usage is requested
            data["usage"] = None
        return sse(data)

    if tool_call:
        head = chunk(
            {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "tool_calls": [
                    {
                        "index": 0,
                        "id": call_id,
                        "type": "function",
                        "function": {"name": tool_call.name, "arguments": ""},
                    }
                ],
            }
        )
        body = [
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
            for piece in split_pieces(tool_call.arguments)
        ]
    else:
        head = chunk({"role": "assistant", "content": "", "refusal": None})
        body = [chunk({"content": piece}) for piece in split_pieces(call.reply)]
    tail = [chunk({}, "tool_calls" if tool_call else "stop")]
    if include_usage:
        tail.append(sse(_envelope(call, tier, "chat.completion.chunk", []) | {"usage": usage}, usage=usage))
    tail.append(_DONE)
    return StreamReply([head], body, tail, midstream_error())


def completions(call: Call) -> JsonReply | StreamReply:
    prompt = call.body.get("prompt")
    if prompt is None:
        raise BadRequest("'prompt' is required")
    tier = openai_tier(call)
    # Legacy completions have no cache or reasoning accounting: plain prompt/completion counts.
    tokens = Tokens(count_raw_input(prompt, call.model), 0, 0, count_tokens(call.reply, call.model), 0)
    usage = legacy_usage(tokens)
    if not call.stream:
        choice = {"text": call.reply, "index": 0, "logprobs": None, "finish_reason": "stop"}
        return JsonReply(_envelope(call, tier, "text_completion", [choice]) | {"usage": usage}, usage=usage)

    def chunk(text: str, finish_reason: str | None = None) -> Frame:
        choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}
        return sse(_envelope(call, tier, "text_completion", [choice]))

    tail = [chunk("", "stop")]
    if _include_usage(call):
        tail.append(sse(_envelope(call, tier, "text_completion", []) | {"usage": usage}, usage=usage))
    tail.append(_DONE)
    # Legacy streams have no role chunk: no head.
    return StreamReply([], [chunk(p) for p in split_pieces(call.reply)], tail, midstream_error())


def _envelope(call: Call, tier: str, kind: str, choices: list[Any]) -> JSON:
    prefix = "cmpl" if kind == "text_completion" else "chatcmpl"
    return {
        "id": f"{prefix}-fake{call.seq:06d}",
        "object": kind,
        "created": CREATED,
        "model": call.model,
        "choices": choices,
        "service_tier": tier,  # the one served (see _tiers.py); a stream names it on every chunk
        "system_fingerprint": "fp_fake",
    }
