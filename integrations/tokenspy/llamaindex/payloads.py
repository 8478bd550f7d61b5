"""Pure readers for what LlamaIndex hands us: models, prompts, chunk text, usage, span names.

Nothing here keeps state or imports llama_index: the inputs are duck-typed (`ChatResponse`,
`CompletionResponse`, `ChatMessage`, the `model_dict` of start events, dispatcher span ids), so
the same readers serve the instrumentation path and the legacy callback path.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pydantic import BaseModel

from tokenspy_core.usage import field_of

__all__ = [
    "completion_prompt",
    "failure_of",
    "get",
    "is_stream_method",
    "model_of",
    "operation_of",
    "prompt_of_messages",
    "provider_of",
    "reasoning_delta",
    "response_text",
    "served_model",
    "span_method",
    "span_name",
    "speed",
    "tools_of",
    "usage_of",
]

# LlamaIndex's LLMMetadata default: not a model name anyone can price.
_UNKNOWN_MODEL = "unknown"
_STREAM_METHODS = frozenset({"stream_chat", "astream_chat", "stream_complete", "astream_complete"})
# class_name() fragments -> our provider names (first match wins: "azure_openai" is Azure, not OpenAI).
_PROVIDERS = (("azure", "azure"), ("bedrock", "bedrock"), ("vertex", "google"), ("gemini", "google"),
              ("google", "google"), ("anthropic", "anthropic"), ("openai", "openai"),
              ("mistral", "mistral"), ("groq", "groq"), ("cohere", "cohere"))

# (type, key) -> how `get` reads it: _OTHER (field_of), _FIELD (a pydantic model's field or extra),
# _CLASS (a pydantic model's property/class attribute/private attribute: plain getattr). Bounded.
_OTHER, _FIELD, _CLASS = 0, 1, 2
_HOW: dict[tuple[type, str], int] = {}
_HOW_MAX = 4096
_ABSENT = object()


def _how(cls: type, key: str) -> int:
    if not issubclass(cls, BaseModel):
        how = _OTHER
    elif (key.startswith("_") or cls.__getattr__ is not BaseModel.__getattr__  # type: ignore[attr-defined]
          or any(key in vars(base) for base in cls.__mro__)):
        how = _CLASS
    else:
        how = _FIELD
    if len(_HOW) < _HOW_MAX:
        _HOW[cls, key] = how
    return how


def get(obj: Any, key: str) -> Any:
    """`field_of(obj, key)` (the core's accessor), without pydantic's cost for an absent attribute.

    LlamaIndex payloads are pydantic models, and `getattr(model, "absent", None)` goes through
    `BaseModel.__getattr__`, which builds and raises an AttributeError: ~4 µs, more than the rest of
    reading an event (a `CompletionResponse` has no `message`, a `MockLLM` no `model`). A pydantic
    model's fields live in its `__dict__` and its extras in `__pydantic_extra__`; anything else
    is on its class, so whether to `getattr` at all is known per class and key.
    """
    if obj is None:
        return None
    cls = type(obj)
    if cls is dict:
        return obj.get(key)
    how = _HOW.get((cls, key))
    if how is None:
        how = _how(cls, key)
    if how == _FIELD:
        value = obj.__dict__.get(key, _ABSENT)
        if value is not _ABSENT:
            return value
        extra = getattr(obj, "__pydantic_extra__", None)  # unset until the model is initialized
        return extra.get(key) if extra else None
    if how == _CLASS:
        return getattr(obj, key, None)
    return field_of(obj, key)


_get = get


def model_of(model_dict: Mapping[str, Any] | None, instance: Any = None) -> str | None:
    """The requested model: `model_name` of the payload (LLM metadata), else the object's `model`."""
    for source, key in ((model_dict, "model_name"), (model_dict, "model"), (instance, "model"),
                        (instance, "model_name")):
        value = _get(source, key)
        if isinstance(value, str) and value and value != _UNKNOWN_MODEL:
            return value
    return None


def provider_of(model_dict: Mapping[str, Any] | None, instance: Any = None) -> str | None:
    """Our provider name from the component's `class_name` ("openai_llm", "Anthropic_LLM", ...)."""
    name = _get(model_dict, "class_name")
    if not isinstance(name, str) and instance is not None:
        name = type(instance).__name__
    if not isinstance(name, str):
        return None
    return _provider_named(name)


@functools.lru_cache(maxsize=1024)
def _provider_named(name: str) -> str | None:
    lowered = name.lower()
    for fragment, provider in _PROVIDERS:
        if fragment in lowered:
            return provider
    return None


def _role(message: Any) -> str:
    role = _get(message, "role")
    value = getattr(role, "value", role)  # MessageRole is a str Enum: str() would give "MessageRole.USER"
    return str(value or "")


def prompt_of_messages(messages: Iterable[Any] | None) -> list[dict[str, Any]]:
    """Chat messages as plain `{"role", "content"}` dicts, the shape the core's estimator counts.

    An assistant message's tool calls (a `FunctionAgent`'s history after a tool step) are sent, and
    billed, with it: they are kept as OpenAI's `tool_calls`, which the core counts (name + arguments).
    """
    prompt: list[dict[str, Any]] = []
    for message in messages or ():
        blocks = _get(message, "blocks")
        content = _text_of_message(message, blocks)
        entry: dict[str, Any] = {"role": _role(message), "content": content}
        if blocks and (len(blocks) > 1 or type(blocks[0]).__name__ != "TextBlock"):
            # Images are billed with the text (the core estimates an ImageBlock from its header).
            images = [block for block in blocks if type(block).__name__ == "ImageBlock"]
            if images:
                entry["content"] = [{"type": "text", "text": content}, *images]
        calls = _history_tool_calls(message)
        if calls:
            entry["tool_calls"] = calls
        prompt.append(entry)
    return prompt


def _text_of_message(message: Any, blocks: Any) -> str:
    """A message's text as llama-index-llms-openai sends it: its text blocks (`blocks`) one after the
    other (`content` joins them with line breaks, which are not sent)."""
    if blocks and len(blocks) > 1:
        texts = [block.text for block in blocks if type(block).__name__ == "TextBlock"]
        if len(texts) > 1:
            return "".join(texts)
    content = _get(message, "content")
    return content if isinstance(content, str) else ""


def _history_tool_calls(message: Any) -> list[dict[str, Any]]:
    """The tool calls of a message in the history, as `{"function": {"name", "arguments"}}`.

    As llama-index-llms-openai sends them (`to_openai_message_dict`): the `ToolCallBlock`s if the
    message has any, else `additional_kwargs["tool_calls"]`; arguments that are not a string are
    sent as `json.dumps(...)` (default separators), so they are counted that way.
    """
    calls = [b for b in (_get(message, "blocks") or ()) if type(b).__name__ == "ToolCallBlock"]
    if not calls:
        extra = _get(message, "additional_kwargs")
        found = extra.get("tool_calls") if isinstance(extra, Mapping) else None
        if not found or not isinstance(found, list | tuple):
            return []
        calls = list(found)
    return [{"function": {"name": name, "arguments": args}}
            for name, args in map(_tool_call_parts, calls)]


def _tool_call_parts(call: Any, ensure_ascii: bool = True) -> tuple[str, str]:
    """(name, arguments as sent) of a tool call: OpenAI's (object or dict), a `ToolCallBlock`, a
    `ToolSelection`, or an Anthropic-style `{"name", "input"}`."""
    function = _get(call, "function")
    if function is not None:
        name, args = _get(function, "name"), _get(function, "arguments")
    else:
        name = _get(call, "tool_name") or _get(call, "name")
        args = _get(call, "tool_kwargs")
        if args is None:
            args = _get(call, "input")
    if not isinstance(args, str):
        try:
            args = json.dumps(args, ensure_ascii=ensure_ascii) if args is not None else ""
        except (TypeError, ValueError):  # arguments JSON cannot hold: counted without them
            args = ""
    return (name if isinstance(name, str) else ""), args


def completion_prompt(prompt: Any, model_dict: Mapping[str, Any] | None) -> Any:
    """A completion call's prompt in the shape it is sent: one user message on a chat model.

    A chat model serves `complete`/`stream_complete` (and their async forms) through its chat
    endpoint (llama-index-llms-openai: `chat_to_completion_decorator`, i.e. `prompt_to_messages`),
    so the provider bills the prompt with the per-message framing; counted as a bare string, the
    estimate falls short by it. The system prompt is not sent on this path, so it is not added; an
    LLM whose completion runs its own `chat` has that chat's messages put in (`LLMCall.adopt`).
    """
    if isinstance(prompt, str) and _is_chat_model(model_dict):
        return [{"role": "user", "content": prompt}]
    return prompt


def operation_of(chat: bool, model_dict: Mapping[str, Any] | None) -> str:
    """The endpoint the call is sent to, as the SDK layer names it: "chat", or "text_completion" for any
    call of a completion model (llama-index-llms-openai sends a `complete` of one to `/completions`, and
    its `chat` too, as the prompt its messages make: `completion_to_chat_decorator`).

    A chat call is "text_completion" only when the LLM says outright it is no chat model: a start event
    without `is_chat_model` (the callback path's payload) is taken at its word, a chat.
    """
    if chat:
        return "text_completion" if _get(model_dict, "is_chat_model") is False else "chat"
    return "chat" if _is_chat_model(model_dict) else "text_completion"


def _is_chat_model(model_dict: Mapping[str, Any] | None) -> bool:
    """The LLM's `metadata.is_chat_model` (a start event's `model_dict` is the LLM's metadata): what
    llama-index-llms-openai routes a completion call by (`OpenAI._use_chat_completions`)."""
    return _get(model_dict, "is_chat_model") is True


def tools_of(extra: Any) -> Any:
    """The tool definitions a request offers, from its start event's `additional_kwargs`.

    `chat_with_tools`/`astream_chat_with_tools` (a `FunctionAgent`'s step) pass them on to `chat`
    as `tools=`, already in the provider's own format (OpenAI's `{"type": "function", ...}` dicts).
    """
    return extra.get("tools") if isinstance(extra, dict) else None


def span_method(span_id: str | None) -> str:
    """"OpenAI.astream_chat-<uuid>" -> "astream_chat"; a function's qualname keeps its last part."""
    if not span_id:
        return ""
    name = span_name(span_id)
    return name.rsplit(".", 1)[-1]


def span_name(span_id: str) -> str:
    """The dispatcher's span id without its uuid4 suffix: "RetrieverQueryEngine.query"."""
    # Ids are f"{name}-{uuid4()}" and a uuid4 is 36 characters (with dashes of its own).
    if len(span_id) > 37 and span_id[-37] == "-":
        return span_id[:-37]
    return span_id


def is_stream_method(span_id: str | None) -> bool:
    return span_method(span_id) in _STREAM_METHODS


def usage_of(response: Any) -> Any:
    """The provider usage a ChatResponse/CompletionResponse carries, in whatever shape, or None.

    Order matters (reference §5.3/§7): `raw` first, because only it has cached/reasoning details
    (OpenAI `raw.usage`, Responses stream `raw.response.usage`, Anthropic `raw["usage"]` with raw
    cache fields, Gemini `usage_metadata`); then the `additional_kwargs` summaries
    (`prompt_tokens`/`completion_tokens`, or `usage` for OpenAIResponses); then the message's
    `additional_kwargs`: the Anthropic stream's `usage`, or the summaries of a CustomLLM's
    completion that LlamaIndex converted to a chat response (they land there).
    """
    if response is None:
        return None
    raw = _get(response, "raw")
    if raw is not None:
        for candidate in (_get(raw, "usage"), _get(_get(raw, "response"), "usage"),
                          _get(raw, "usage_metadata")):
            if candidate is not None:
                return candidate
    extra = _get(response, "additional_kwargs")
    if isinstance(extra, Mapping) and extra:
        usage = _summary(extra)
        if usage is not None:
            return usage
    message_extra = _get(_get(response, "message"), "additional_kwargs")
    if isinstance(message_extra, Mapping) and message_extra:
        return _summary(message_extra)
    return None


def _summary(extra: Mapping[str, Any]) -> Any:
    if extra.get("usage") is not None:
        return extra["usage"]
    if extra.get("prompt_tokens") is not None or extra.get("input_tokens") is not None:
        return extra
    return None


def served_model(response: Any) -> str | None:
    """The model the provider says it served (`raw.model`, or `raw.response.model` for Responses)."""
    return _raw_text(response, "model")


def service_tier(response: Any) -> str | None:
    """The tier the provider says it served the call at (openai's `service_tier`), priced at its rates."""
    return _raw_text(response, "service_tier")


def speed(response: Any) -> str | None:
    """The inference speed the provider says it served the call at: Anthropic's fast mode, `usage.speed`
    of the Message llama-index-llms-anthropic dumps into `raw` (priced at its own rates). A stream's last
    chunk carries `message_delta`, without it: only `message_start` has it, and only the SDK layer sees it."""
    value = _get(_get(_get(response, "raw"), "usage"), "speed")
    return value if isinstance(value, str) and value else None


def failure_of(response: Any) -> str | None:
    """The failure the provider reported in the answer itself, which LlamaIndex hands back as an answer,
    raising nothing: an OpenAI Responses response with `status: "failed"` (as is the one a stream's
    `response.failed` event ends with), or the `error` event that ended a stream. None otherwise."""
    raw = _get(response, "raw")
    if raw is None:
        return None
    kind = _get(raw, "type")
    if kind == "error":
        return f"{_get(raw, 'code') or 'error'}: {_get(raw, 'message') or 'response failed'}"
    failed = _get(raw, "response") if kind == "response.failed" else raw
    if _get(failed, "status") != "failed":
        return None
    error = _get(failed, "error")
    return f"{_get(error, 'code') or 'error'}: {_get(error, 'message') or 'response failed'}"


def _raw_text(response: Any, name: str) -> str | None:
    raw = _get(response, "raw")
    for value in (_get(raw, name), _get(_get(raw, "response"), name)):
        if isinstance(value, str) and value:
            return value
    return None


def reasoning_delta(response: Any) -> str:
    """Reasoning text streamed beside the answer (llama-index-llms-openai `thinking_delta`): billed output."""
    value = _get(_get(response, "additional_kwargs"), "thinking_delta")
    return value if isinstance(value, str) else ""


def _tool_call_text(call: Any) -> str:
    # The model wrote the arguments: non-ASCII stays as written (the history's are sent escaped).
    return "".join(_tool_call_parts(call, ensure_ascii=False))


def response_text(response: Any) -> Callable[[], str]:
    """The whole visible output of a response, tool calls included, computed only if it is needed.

    Used when usage must be estimated: a tool-call answer has no text but is billed for the
    tool name and its JSON arguments.
    """

    def text() -> str:
        message = _get(response, "message")
        if message is not None:
            content = _get(message, "content")
            parts = [content if isinstance(content, str) else ""]
            calls = _get(_get(message, "additional_kwargs"), "tool_calls")
            if not calls:
                calls = [b for b in (_get(message, "blocks") or ()) if type(b).__name__ == "ToolCallBlock"]
            parts.extend(_tool_call_text(c) for c in calls or ())
            return "".join(parts)
        value = _get(response, "text")
        return value if isinstance(value, str) else ""

    return text
