"""Honest token counts and the per-API usage dicts built from them.

The numbers are real tiktoken counts (`tokenspy_core.tokenizer`), so a test can recompute them
independently. What is counted (also in docs/testing.md):

- prompt: `count_message_tokens(messages)` (OpenAI framing: 3 per message + 3) plus, if the request
  has `tools`, `count_tokens(json.dumps(tools, separators=(",", ":"), ensure_ascii=False))`.
  A message counts its text parts, tool results their text, and tool calls in the history their
  name plus JSON arguments (as tokenspy's own estimates do).
- output: `count_tokens(visible text)` + `reasoning_tokens` (hidden but billed, as real APIs do);
  for a tool call the visible text is the tool name plus its JSON arguments.
- cache: `cache_read = min(cached_tokens, prompt)`, `cache_write = min(cache_write_tokens,
  prompt - cache_read)`. OpenAI's prompt/input tokens include both; Anthropic's `input_tokens`
  excludes both (its wire semantics).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tokenspy_core.tokenizer import count_message_tokens, count_tokens

from ._wire import JSON, Call, dumps

__all__ = [
    "Tokens",
    "anthropic_usage",
    "chat_usage",
    "count_prompt",
    "count_raw_input",
    "flatten",
    "legacy_usage",
    "responses_usage",
    "tokens_for",
]


@dataclass(frozen=True)
class Tokens:
    prompt: int  # every input token, cached or not
    cache_read: int
    cache_write: int
    visible: int  # tokens of the text (or tool call) actually sent
    reasoning: int

    @property
    def output(self) -> int:
        return self.visible + self.reasoning

    @property
    def total(self) -> int:
        return self.prompt + self.output


def flatten(content: Any) -> str:
    """The text of a message content: a string, a list of parts/blocks, or a tool result."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Mapping):
        if isinstance(content.get("text"), str):
            return str(content["text"])
        # tool results (Anthropic `tool_result.content`, Responses `function_call_output.output`)
        for key in ("content", "output"):
            if key in content:
                return flatten(content[key])
        return ""
    if isinstance(content, Iterable):
        return "".join(flatten(part) for part in content)
    return ""


def count_prompt(messages: Sequence[Mapping[str, Any]], tools: Any, model: str) -> int:
    total = count_message_tokens(messages, model)
    if tools:
        total += count_tokens(dumps(tools), model)
    return total


def count_raw_input(value: Any, model: str) -> int:
    """Tokens of a legacy-completions prompt or an embeddings input: text, texts or token arrays."""
    if isinstance(value, str):
        return count_tokens(value, model)
    if isinstance(value, list):
        if all(isinstance(v, int) for v in value):
            return len(value)
        return sum(count_raw_input(v, model) for v in value)
    return 0


def tokens_for(call: Call, prompt: int, visible: int) -> Tokens:
    cache_read = min(call.cached_tokens, prompt)
    cache_write = min(call.cache_write_tokens, prompt - cache_read)
    return Tokens(prompt, cache_read, cache_write, visible, call.reasoning_tokens)


def chat_usage(t: Tokens) -> JSON:
    prompt_details: JSON = {"cached_tokens": t.cache_read, "audio_tokens": 0}
    if t.cache_write:  # newer field; only sent when cache writes are configured, like the real API
        prompt_details["cache_write_tokens"] = t.cache_write
    return {
        "prompt_tokens": t.prompt,
        "completion_tokens": t.output,
        "total_tokens": t.total,
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {
            "reasoning_tokens": t.reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def legacy_usage(t: Tokens) -> JSON:
    # The legacy completions API reports no cache or reasoning details.
    return {"prompt_tokens": t.prompt, "completion_tokens": t.output, "total_tokens": t.total}


def responses_usage(t: Tokens) -> JSON:
    return {
        "input_tokens": t.prompt,
        # openai's InputTokensDetails declares both fields as required
        "input_tokens_details": {"cached_tokens": t.cache_read, "cache_write_tokens": t.cache_write},
        "output_tokens": t.output,
        "output_tokens_details": {"reasoning_tokens": t.reasoning},
        "total_tokens": t.total,
    }


def anthropic_usage(t: Tokens, output_tokens: int | None = None, speed: str | None = None) -> JSON:
    """Anthropic usage; `output_tokens` overrides the final count (message_start sends 1); `speed` is
    the inference speed asked for, sent only then."""
    usage: JSON = {
        "input_tokens": t.prompt - t.cache_read - t.cache_write,
        "cache_creation_input_tokens": t.cache_write,
        "cache_read_input_tokens": t.cache_read,
        "cache_creation": {"ephemeral_5m_input_tokens": t.cache_write, "ephemeral_1h_input_tokens": 0},
        "output_tokens": t.output if output_tokens is None else output_tokens,
        "service_tier": "standard",  # whatever was asked: see _tiers.check_anthropic_tier
    }
    if speed is not None:
        usage["speed"] = speed
    if t.reasoning and output_tokens is None:
        # A breakdown of output_tokens (not additive), as the SDK documents it.
        usage["output_tokens_details"] = {"thinking_tokens": t.reasoning}
    return usage
