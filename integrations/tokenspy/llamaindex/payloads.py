"""Pure readers for what LlamaIndex hands us: models, prompts, chunk text, usage, span names.

Nothing here keeps state or imports llama_index: the inputs are duck-typed (`ChatResponse`,
`CompletionResponse`, `ChatMessage`, the `model_dict` of start events, dispatcher span ids), so
the same readers serve the instrumentation path and the legacy callback path.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from tokenspy_core.usage import field_of as _get

__all__ = [
    "is_stream_method",
    "model_of",
    "prompt_of_messages",
    "provider_of",
    "reasoning_delta",
    "response_text",
    "served_model",
    "span_method",
    "span_name",
    "usage_of",
]

# LlamaIndex's LLMMetadata default: not a model name anyone can price.
_UNKNOWN_MODEL = "unknown"
_STREAM_METHODS = frozenset({"stream_chat", "astream_chat", "stream_complete", "astream_complete"})
# class_name() fragments -> our provider names (first match wins: "azure_openai" is Azure, not OpenAI).
_PROVIDERS = (("azure", "azure"), ("bedrock", "bedrock"), ("vertex", "google"), ("gemini", "google"),
              ("google", "google"), ("anthropic", "anthropic"), ("openai", "openai"),
              ("mistral", "mistral"), ("groq", "groq"), ("cohere", "cohere"))




def model_of(model_dict: Mapping[str, Any] | None, instance: Any = None) -> str | None:
    """The requested model: `model_name` of the payload (LLM metadata), else the object's `model`."""
    for value in (_get(model_dict, "model_name"), _get(model_dict, "model"), _get(instance, "model"),
                  _get(instance, "model_name")):
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
    lowered = name.lower()
    for fragment, provider in _PROVIDERS:
        if fragment in lowered:
            return provider
    return None


def _role(message: Any) -> str:
    role = _get(message, "role")
    value = getattr(role, "value", role)  # MessageRole is a str Enum: str() would give "MessageRole.USER"
    return str(value or "")


def prompt_of_messages(messages: Iterable[Any] | None) -> list[dict[str, str]]:
    """Chat messages as plain `{"role", "content"}` dicts, the shape the core's estimator counts."""
    prompt = []
    for message in messages or ():
        content = _get(message, "content")
        prompt.append({"role": _role(message), "content": content if isinstance(content, str) else ""})
    return prompt


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
    (`prompt_tokens`/`completion_tokens`, or `usage` for OpenAIResponses); then the Anthropic
    stream's `message.additional_kwargs["usage"]`.
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
        if extra.get("usage") is not None:
            return extra["usage"]
        if extra.get("prompt_tokens") is not None or extra.get("input_tokens") is not None:
            return extra
    message_extra = _get(_get(response, "message"), "additional_kwargs")
    if isinstance(message_extra, Mapping) and message_extra.get("usage") is not None:
        return message_extra["usage"]
    return None


def served_model(response: Any) -> str | None:
    """The model the provider says it served (`raw.model`, or `raw.response.model` for Responses)."""
    raw = _get(response, "raw")
    for value in (_get(raw, "model"), _get(_get(raw, "response"), "model")):
        if isinstance(value, str) and value:
            return value
    return None


def reasoning_delta(response: Any) -> str:
    """Reasoning text streamed beside the answer (llama-index-llms-openai `thinking_delta`): billed output."""
    value = _get(_get(response, "additional_kwargs"), "thinking_delta")
    return value if isinstance(value, str) else ""


def _tool_call_text(call: Any) -> str:
    function = _get(call, "function")
    if function is not None:  # OpenAI ChatCompletionMessageToolCall (object or dict)
        return f"{_get(function, 'name') or ''}{_get(function, 'arguments') or ''}"
    name = _get(call, "tool_name") or _get(call, "name") or ""
    args = _get(call, "tool_kwargs")
    if args is None:
        args = _get(call, "input")
    if not isinstance(args, str):
        try:
            args = json.dumps(args, ensure_ascii=False) if args is not None else ""
        except (TypeError, ValueError):
            args = ""
    return f"{name}{args}"


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
