"""Reading LangChain's callback payloads: the model, the provider, the usage, the text.

Pure functions over duck-typed objects, so they work across langchain-core 0.3 and 1.x and never
need the provider packages. Where the numbers come from (reference §1, §4.5, §4.6):

- `AIMessage.usage_metadata` is LangChain's normalized usage (input includes cache reads and writes)
  and the only place present in every mode; streamed chunks carry *deltas* of it that LangChain sums
  into the final message.
- `llm_output["token_usage"]` (OpenAI shape) and `llm_output["usage"]` (raw Anthropic shape, input
  excluding cache) are fallbacks for integrations that fill no `usage_metadata`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from tokenspy_core import (
    UsageReport,
    usage_from_anthropic,
    usage_from_any,
    usage_from_langchain,
    usage_from_openai,
)
from tokenspy_core.usage import field_of as _get
from tokenspy_core.usage import provider_usage

__all__ = [
    "chunk_has_output",
    "content_text",
    "event_output",
    "is_cache_hit",
    "llm_output_usage",
    "message_of",
    "message_text",
    "provider_of",
    "report_from_usage_metadata",
    "request_model",
    "result_message",
    "result_usage",
    "served_model",
    "service_tier",
    "speed",
]


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


# -- at the start --------------------------------------------------------------------------------
_PARAM_MODEL_KEYS = ("model", "model_name", "model_id", "deployment_name")
_SERIALIZED_MODEL_KEYS = ("model", "model_name", "model_id")


def request_model(serialized: Any, invocation_params: Any, metadata: Any) -> str | None:
    """The model the caller asked for: invocation params, then the serialized constructor args,
    then LangSmith's `ls_model_name` (which every chat model fills from its own fields)."""
    # Once per model run: plain dicts (what LangChain passes) are read without the generic accessor.
    if type(invocation_params) is dict:
        get = invocation_params.get
        value = get("model") or get("model_name") or get("model_id") or get("deployment_name")
        if value.__class__ is str:  # (non-empty: `or` skipped the empty ones)
            return value
        if value:  # something else under a model key: look at each key as the generic path does
            value = _first_str(invocation_params, _PARAM_MODEL_KEYS)
            if value:
                return value
    else:
        value = _first_str(invocation_params, _PARAM_MODEL_KEYS)
        if value:
            return value
    kwargs = serialized.get("kwargs") if type(serialized) is dict else _get(serialized, "kwargs")
    if kwargs:
        value = _first_str(kwargs, _SERIALIZED_MODEL_KEYS)
        if value:
            return value
    value = metadata.get("ls_model_name") if type(metadata) is dict else _get(metadata, "ls_model_name")
    return value if value.__class__ is str and value else _str(value)


def _first_str(source: Any, keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = _str(_get(source, key))
        if value:
            return value
    return None


def provider_of(metadata: Any) -> str | None:
    value = metadata.get("ls_provider") if type(metadata) is dict else _get(metadata, "ls_provider")
    return value if value.__class__ is str and value else _str(value)


# -- streamed chunks -----------------------------------------------------------------------------
def content_text(content: Any) -> str:
    """The text of message content: a string, or content blocks (text, thinking, reasoning).

    Tool-use blocks are skipped: their arguments are counted from the final message's tool calls.
    """
    return _blocks_text(content, with_tool_calls=False)


def streamed_text(content: Any) -> str:
    """Streamed content as an estimate of a stream cut short counts it: the text `content_text` reads,
    and each tool-call block's name and raw argument deltas. Such a stream ends with no message whose
    tool calls `message_text` would count; parsed, its partial arguments would be `{}` anyway."""
    return _blocks_text(content, with_tool_calls=True)


_TEXT_KEYS = ("text", "thinking", "reasoning")
# Where a streamed tool-call block (Anthropic `tool_use` / `input_json_delta`, Responses `function_call`,
# v1 `tool_call_chunk`) holds its name and its raw argument text.
_TOOL_DELTA_KEYS = ("name", "partial_json", "arguments", "args")
_TEXT_AND_TOOL_KEYS = _TEXT_KEYS + _TOOL_DELTA_KEYS


def _blocks_text(content: Any, *, with_tool_calls: bool) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, Sequence):
        return ""
    other_keys = _TEXT_AND_TOOL_KEYS if with_tool_calls else _TEXT_KEYS  # a block of another type
    parts: list[str] = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, Mapping):
            kind = block.get("type")
            for key in _TEXT_KEYS if kind in _TEXT_BLOCK_TYPES else other_keys:
                value = block.get(key)
                if isinstance(value, str):
                    parts.append(value)
            if kind == "reasoning":
                parts.append(_summary_text(block))
    return "".join(parts)


def _summary_text(reasoning: Mapping[str, Any]) -> str:
    """A Responses API reasoning item's summary text (`summary: [{"type": "summary_text", "text": ...}]`):
    langchain-openai's content block of it (output_version "responses/v1", its default), and its v0
    `additional_kwargs["reasoning"]`."""
    summary = reasoning.get("summary")
    if not isinstance(summary, list):
        return ""
    return "".join(text for part in summary if isinstance(part, Mapping)
                   and isinstance(text := part.get("text"), str))


# Block types whose output is their text: a start block with empty text is not output yet (Anthropic's
# content_block_start, Responses' output_item.added). Every other block type (tool use, function call,
# input_json_delta, image, redacted thinking, ...) is output by itself.
_TEXT_BLOCK_TYPES = frozenset({None, "text", "thinking", "reasoning"})
# Message fields some integrations stream output in, next to the content (reasoning, legacy functions).
_OUTPUT_KWARGS = ("tool_calls", "function_call", "reasoning_content", "refusal", "audio")


def _block_has_output(block: Any) -> bool:
    if isinstance(block, str):
        return bool(block)
    if not isinstance(block, Mapping):
        return False
    if block.get("type") not in _TEXT_BLOCK_TYPES:
        return True
    if block.get("text") or block.get("thinking") or block.get("reasoning"):
        return True
    return bool(_summary_text(block))  # Responses reasoning summaries (output_version "responses/v1")


def _content_has_output(content: Any) -> bool:
    if isinstance(content, str):
        return bool(content)
    return isinstance(content, Sequence) and any(map(_block_has_output, content))


def chunk_has_output(token: Any, chunk: Any) -> bool:
    """Whether a streamed chunk carries output: text, reasoning, a tool-call delta, a content block.

    Not the empty chunks that open a stream (OpenAI's role chunk, Anthropic's `message_start`,
    Responses' `response.created`) or close it: those come before the first token, or after the last.
    `token` is what `on_llm_new_token` got (the content, or the integration's text); `chunk` its
    `ChatGenerationChunk`. Read until a run's first output only, never per token after it.
    """
    if token.__class__ is str:
        if token:
            return True
    elif token and _content_has_output(token):
        return True
    message = getattr(chunk, "message", None)
    if message is None:
        return False
    if getattr(message, "tool_call_chunks", None):
        return True
    content = getattr(message, "content", None)
    if content is not token and content and _content_has_output(content):
        return True
    extra = getattr(message, "additional_kwargs", None)
    if not extra or not isinstance(extra, Mapping):
        return False
    # v0 Responses reasoning: its item's start (an id, an empty summary) is not output yet.
    return any(extra.get(key) for key in _OUTPUT_KWARGS) or bool(_reasoning_kwarg_text(extra))


def event_output(event: Any) -> tuple[bool, str]:
    """A v3 protocol event (`on_stream_event`): whether it carries output, and its text.

    Content arrives in `content-block-delta` events (text, reasoning, tool-call arguments, data); a
    `content-block-start` is an empty skeleton for text and reasoning, but names a tool call or carries
    a self-contained block. `message-start`, `content-block-finish` (the whole block again) and
    `message-finish` (the usage `on_llm_end` brings too) carry nothing new.
    """
    # Per event of a run whose integration fires no on_llm_new_token: plain dicts (what langchain-core
    # sends) are read without the ABC checks.
    if event.__class__ is not dict and not isinstance(event, Mapping):
        return False, ""
    kind = event.get("event")
    if kind == "content-block-delta":
        delta = event.get("delta")
        if delta.__class__ is not dict and not isinstance(delta, Mapping):
            return False, ""
        delta_kind = delta.get("type")
        if delta_kind == "text-delta":
            text = delta.get("text")
        elif delta_kind == "reasoning-delta":
            text = delta.get("reasoning")
        elif delta_kind == "tool-call-delta":
            args = delta.get("args")
            return True, args if args.__class__ is str else ""
        else:
            return True, ""  # data and block deltas: the bridge sends them only with content
        return (True, text) if text.__class__ is str and text else (False, "")
    if kind == "content-block-start":
        block = event.get("content")
        if not _block_has_output(block):
            return False, ""
        return True, streamed_text((block,))  # a tool call's start names it
    return False, ""


# -- at the end ----------------------------------------------------------------------------------
def report_from_usage_metadata(usage_metadata: Any) -> UsageReport | None:
    """LangChain `UsageMetadata` as a report, with a reported input of 0 read as "unknown".

    Every chat call has a prompt, so a real input count is never 0. langchain-anthropic's classic-shape
    streams (usage only in `message_delta`) report exactly that 0 with no cache details (reference
    §1.10); taken literally it would also overwrite the exact input an SDK layer merged in.
    """
    if not usage_metadata:
        return None
    report = provider_usage(usage_from_langchain, usage_metadata)
    if report.input_tokens == 0:
        report.input_tokens = None
        if not (report.cached_input_tokens or report.cache_write_tokens):
            report.cached_input_tokens = report.cache_write_tokens = report.cache_write_1h_tokens = None
    return None if report.is_empty() else report


def message_of(generation: Any) -> Any:
    return getattr(generation, "message", None)  # generations are objects in every langchain-core


def result_message(response: Any) -> Any:
    """The first generation of a run's `LLMResult` (one per run; with n>1 usage is per response)."""
    for generations in getattr(response, "generations", None) or ():
        for generation in generations or ():
            return generation
    return None


def result_usage(llm_output: Any, message: Any, usage_metadata: Any = None) -> UsageReport | None:
    """Usage at a run's end: the message's `usage_metadata`, else `llm_output` (count one place).

    `usage_metadata`: the message's, when the caller already read it."""
    report = report_from_usage_metadata(usage_metadata if usage_metadata is not None
                                        else _get(message, "usage_metadata"))
    return report if report is not None else llm_output_usage(llm_output)


def llm_output_usage(llm_output: Any, batched: bool = False) -> UsageReport | None:
    """The fallback of `result_usage`: a provider's usage `llm_output` carries. `batched`: a run of a
    generate() with several prompts."""
    if not llm_output:
        return None
    token_usage = _get(llm_output, "token_usage")
    if token_usage == {}:
        # `LLMResult.flatten()` empties it for every prompt of a batched generate() but the first,
        # which carries the whole request's usage: these were counted there. Out of a batch it says
        # nothing (langchain-openai's streamed `_generate` always returns it empty).
        return UsageReport(input_tokens=0, output_tokens=0) if batched else None
    if token_usage:
        report = provider_usage(usage_from_openai if _get(token_usage, "prompt_tokens") is not None
                                else usage_from_any, token_usage)
        return None if report.is_empty() else report
    usage = _get(llm_output, "usage")
    if usage:
        # Raw Anthropic usage: its input excludes cache reads and writes, which this adds back.
        raw = _get(usage, "input_tokens") is not None
        report = provider_usage(usage_from_anthropic if raw else usage_from_any, usage)
        return None if report.is_empty() else report
    return None


def is_cache_hit(usage_metadata: Any) -> bool:
    """LangChain's own LLM cache answered: `_convert_cached_generations` (langchain-core >= 0.3.73)
    zeroes the cost by adding `total_cost: 0` to the cached message's usage; nothing else sets it."""
    if not usage_metadata:
        return False
    if type(usage_metadata) is dict:
        return usage_metadata.get("total_cost") == 0
    return bool(_get(usage_metadata, "total_cost") == 0)


def served_model(llm_output: Any, generation: Any, message: Any) -> str | None:
    """The model the provider says it served (priced before the requested alias)."""
    metadata = getattr(message, "response_metadata", None)
    if type(metadata) is dict:  # the common case, read directly (once per model run)
        value = metadata.get("model_name") or metadata.get("model")
        if isinstance(value, str) and value:
            return value
    for source in (_get(message, "response_metadata"), _get(generation, "generation_info"), llm_output):
        if source:
            value = _str(_get(source, "model_name")) or _str(_get(source, "model"))
            if value:
                return value
    return None


def service_tier(message: Any) -> str | None:
    """The tier the provider says it served the call at (langchain-openai's `service_tier`)."""
    metadata = getattr(message, "response_metadata", None)
    value = metadata.get("service_tier") if type(metadata) is dict else None
    return value if value.__class__ is str else None


def speed(message: Any) -> str | None:
    """The inference speed the provider says it served the call at: Anthropic's fast mode, in the raw
    usage langchain-anthropic keeps (`response_metadata["usage"]["speed"]`). Its streams drop it (it
    comes only in `message_start`): there only the SDK layer sees it."""
    metadata = getattr(message, "response_metadata", None)
    usage = metadata.get("usage") if type(metadata) is dict else None
    value = _get(usage, "speed") if usage else None
    return value if value.__class__ is str else None


def chunk_tool_text(chunk: Any) -> str:
    """A streamed chunk's tool-call deltas as text (name, then the raw arguments), for the estimate of a
    stream cut short: a tool-call chunk's token is empty."""
    calls = getattr(getattr(chunk, "message", None), "tool_call_chunks", None)
    if not calls:
        return ""
    text = ""
    for call in calls:
        name, args = _get(call, "name"), _get(call, "args")
        if isinstance(name, str):
            text += name
        if isinstance(args, str):
            text += args
    return text


def _reasoning_kwarg_text(extra: Mapping[str, Any]) -> str:
    """`additional_kwargs["reasoning"]`: a Responses reasoning item (langchain-openai's output_version
    "v0"), or reasoning as text."""
    reasoning = extra.get("reasoning")
    if isinstance(reasoning, str):
        return reasoning
    return _summary_text(reasoning) if isinstance(reasoning, Mapping) else ""


def _kwargs_text(extra: Any, content: Any) -> str:
    """The output an integration keeps beside the content, in `additional_kwargs` (`_OUTPUT_KWARGS`; tool
    calls are read from the message): reasoning streamed as text (`reasoning_content`), a v0 Responses
    reasoning summary, a legacy function call, a refusal, an audio answer's transcript."""
    if not extra or not isinstance(extra, Mapping):
        return ""
    parts: list[Any] = [extra.get("refusal")]
    # output_version "v1" copies `reasoning_content` into a reasoning block of the content, and keeps it here.
    if not (isinstance(content, list)
            and any(isinstance(block, Mapping) and block.get("type") == "reasoning" for block in content)):
        parts += (extra.get("reasoning_content"), _reasoning_kwarg_text(extra))
    function_call = extra.get("function_call")
    if isinstance(function_call, Mapping):
        parts += (function_call.get("name"), function_call.get("arguments"))
    parts.append(_get(extra.get("audio"), "transcript"))
    return "".join(part for part in parts if isinstance(part, str))


def message_text(generation: Any) -> str:
    """A whole answer as text, for an estimate: its content plus tool-call names and arguments."""
    message = _get(generation, "message")
    if message is None:
        text = _get(generation, "text")
        return text if isinstance(text, str) else ""
    content = _get(message, "content")
    text = content_text(content) + _kwargs_text(_get(message, "additional_kwargs"), content)
    # A streamed message's tool calls as the model wrote them: the raw argument text of its chunks. Parsed,
    # the arguments of a stream cut short are partial JSON, which parses to nothing (`args={}`).
    calls = _get(message, "tool_call_chunks")
    if not calls:
        # A whole message: its parsed tool calls, and those whose arguments did not parse (raw text).
        calls = [*(_get(message, "tool_calls") or ()), *(_get(message, "invalid_tool_calls") or ())]
    for call in calls:
        name = _get(call, "name")
        args = _get(call, "args")
        if isinstance(name, str):
            text += name
        if args:
            text += json.dumps(args, default=str) if not isinstance(args, str) else args
    return text
