"""Offline token estimation with tiktoken and the BPE files shipped in this package.

`tiktoken.get_encoding()` downloads its BPE files on first use (with no timeout), so we never call
it: the two encodings we need ship gzipped beside this module and are loaded from there, checked
against tiktoken's own sha256, without touching the network or the process environment.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import threading
from collections.abc import Iterable, Mapping
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from .usage import field_of

if TYPE_CHECKING:
    import tiktoken

__all__ = ["count_message_tokens", "count_prompt_tokens", "count_tokens", "count_tool_tokens", "encoding_for_model"]

_ENDOFTEXT = "<|endoftext|>"
_ENDOFPROMPT = "<|endofprompt|>"

# Copied from tiktoken_ext.openai_public: calling its constructors would trigger the download.
_ENCODINGS: dict[str, dict[str, Any]] = {
    "o200k_base": {
        "sha256": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        "pat_str": "|".join(
            [
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""\p{N}{1,3}""",
                r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
                r"""\s*[\r\n]+""",
                r"""\s+(?!\S)""",
                r"""\s+""",
            ]
        ),
        "special_tokens": {_ENDOFTEXT: 199999, _ENDOFPROMPT: 200018},
    },
    "cl100k_base": {
        "sha256": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        "pat_str": r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",  # noqa: E501
        "special_tokens": {
            _ENDOFTEXT: 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            _ENDOFPROMPT: 100276,
        },
    },
}
_DEFAULT_ENCODING = "o200k_base"
_load_lock = threading.Lock()
_loaded: dict[str, tiktoken.Encoding] = {}

# OpenAI's documented chat overhead: each message is framed by 3 tokens, the reply primed by 3.
_TOKENS_PER_MESSAGE = 3
_TOKENS_REPLY_PRIMING = 3


def _load(name: str) -> tiktoken.Encoding:
    enc = _loaded.get(name)
    if enc is not None:
        return enc
    with _load_lock:
        enc = _loaded.get(name)
        if enc is not None:
            return enc
        import tiktoken

        spec = _ENCODINGS[name]
        raw = gzip.decompress(resources.files(__package__).joinpath(f"data/{name}.tiktoken.gz").read_bytes())
        if hashlib.sha256(raw).hexdigest() != spec["sha256"]:
            raise ValueError(f"tokenspy: the bundled {name} BPE file is corrupt (sha256 mismatch)")
        ranks = {
            base64.b64decode(token): int(rank)
            for token, rank in (line.split() for line in raw.splitlines() if line)
        }
        enc = tiktoken.Encoding(
            name=name,
            pat_str=spec["pat_str"],
            mergeable_ranks=ranks,
            special_tokens=spec["special_tokens"],
        )
        _loaded[name] = enc
        return enc


@lru_cache(maxsize=512)
def _encoding_name(model: str | None) -> str:
    if not model:
        return _DEFAULT_ENCODING
    try:
        from tiktoken.model import encoding_name_for_model

        name = encoding_name_for_model(model.rsplit("/", 1)[-1])
    except (KeyError, ImportError):
        return _DEFAULT_ENCODING
    return name if name in _ENCODINGS else _DEFAULT_ENCODING


def tokenizer_model(served: str | None, requested: str | None) -> str | None:
    """The model name to pick an encoding by: the served one, unless tiktoken knows only the requested
    one (a gateway's alias serving gpt-4: counted with gpt-4's encoding, as it is priced by its name)."""
    if requested and served != requested and _known(requested) and not _known(served):
        return requested
    return served or requested


def _known(model: str | None) -> bool:
    if not model:
        return False
    try:
        from tiktoken.model import encoding_name_for_model

        encoding_name_for_model(model.rsplit("/", 1)[-1])
    except (KeyError, ImportError):
        return False
    return True


def encoding_for_model(model: str | None) -> tiktoken.Encoding:
    """The encoding tiktoken assigns to `model`; o200k_base for models it does not know."""
    return _load(_encoding_name(model))


def count_tokens(text: str, model: str | None = None) -> int:
    """Exact token count of `text` under the model's encoding (special tokens counted as text)."""
    if not text:
        return 0
    return len(encoding_for_model(model).encode(text, disallowed_special=()))


def _jsonable(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)  # pydantic models (SDK params, LangChain tool schemas)
    if callable(dump):
        return dump()
    if isinstance(value, Mapping):
        return dict(value)
    return str(value)


def _json(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_jsonable)


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Mapping):
        return _block_text(content)
    # An SDK's own content block or item (anthropic's `TextBlock`/`ToolUseBlock`, a Responses
    # `function_call`), put back in the history as the SDK returned it: a pydantic model, which
    # iterates over its (field, value) pairs, so it is read by its fields, as its dict would be.
    if isinstance(getattr(content, "type", None), str):
        return _block_text(content)
    if isinstance(content, Iterable):
        return "".join(_content_text(part) for part in content)
    text = getattr(content, "text", None)
    return text if isinstance(text, str) else ""


def _block_text(block: Any) -> str:
    """A content block's billed text, the block a dict or an object with the same fields."""
    for key in ("text", "content", "input_text", "output"):
        value = field_of(block, key)
        if isinstance(value, str):
            return value
        if key in ("content", "output") and value is not None:  # a tool result's own blocks
            return _content_text(value)
    kind = field_of(block, "type")
    if kind == "tool_use":  # an Anthropic tool call in the history
        # A streamed one, merged by LangChain, has `input: {}` and the arguments as `partial_json`.
        args = field_of(block, "input") or field_of(block, "partial_json") or {}
        return f"{field_of(block, 'name') or ''}{_json(args)}"
    if kind == "function_call":  # a Responses API tool call in the input
        return f"{field_of(block, 'name') or ''}{_json(field_of(block, 'arguments') or '')}"
    return ""


def _tool_calls_text(calls: Any) -> str:
    """The tool calls of an assistant message in the history (billed as prompt like its text)."""
    if not calls or isinstance(calls, str | Mapping) or not isinstance(calls, Iterable):
        return ""
    parts = []
    for call in calls:
        if isinstance(call, Mapping):
            function = call.get("function")
            if isinstance(function, Mapping):  # OpenAI: {"function": {"name", "arguments"}}
                parts.append(f"{function.get('name') or ''}{_json(function.get('arguments') or '')}")
            else:  # LangChain: {"name", "args"}
                parts.append(f"{call.get('name') or ''}{_json(call.get('args') or {})}")
        else:
            function = getattr(call, "function", None)
            if function is not None:
                parts.append(f"{getattr(function, 'name', '') or ''}{getattr(function, 'arguments', '') or ''}")
    return "".join(parts)


_ABSENT = object()


def _message_parts(message: Any) -> tuple[str, str]:
    if isinstance(message, str):
        return "", message
    if isinstance(message, Mapping):
        # Responses API items (function_call, function_call_output) are their own content.
        text = _content_text(message.get("content") if "content" in message else message)
        calls = message.get("tool_calls")
        role = message.get("role") or _item_role(message.get("type"))
        return str(role or ""), text + _tool_calls_text(calls) if calls else text
    content = getattr(message, "content", _ABSENT)
    kind = getattr(message, "type", None)
    if content is _ABSENT and isinstance(kind, str):
        # A Responses API item object (`function_call`): its own content, as its dict is.
        return str(getattr(message, "role", None) or _item_role(kind)), _content_text(message)
    role = getattr(message, "role", None) or getattr(message, "type", None) or ""
    role = str(getattr(role, "value", role))  # an enum (LlamaIndex's MessageRole)
    text = _content_text(None if content is _ABSENT else content)
    calls = getattr(message, "tool_calls", None)
    if calls and _has_tool_blocks(content):
        calls = None  # a LangChain message holding the provider's own tool-call blocks: counted there
    return _ROLES.get(role, role), text + _tool_calls_text(calls) if calls else text


_TOOL_BLOCKS = frozenset({"tool_use", "function_call"})


def _has_tool_blocks(content: Any) -> bool:
    return isinstance(content, list) and any(field_of(block, "type") in _TOOL_BLOCKS for block in content
                                             if not isinstance(block, str))


def _item_role(kind: Any) -> str:
    """The role a role-less Responses input item stands for, as the same history in chat messages: a
    tool's output is a tool message, a function call (or a reasoning item) an assistant one."""
    if not isinstance(kind, str):
        return ""
    if kind.endswith("_output"):
        return "tool"
    return "assistant" if kind.endswith("_call") or kind == "reasoning" else ""


# LangChain message types, as the roles a provider is sent.
_ROLES = {"human": "user", "ai": "assistant", "AIMessageChunk": "assistant", "HumanMessageChunk": "user",
          "SystemMessageChunk": "system", "ToolMessageChunk": "tool", "FunctionMessageChunk": "function"}


def plain_prompt(prompt: Any) -> Any:
    """A prompt kept by content capture, as JSON-able data: framework message objects (LangChain's,
    LlamaIndex's) become `{"role", "content"}` dicts, the shape the SDKs send; the rest is kept as given."""
    if isinstance(prompt, str | Mapping) or not isinstance(prompt, list | tuple):
        return prompt
    plain: list[Any] = []
    for message in prompt:
        if isinstance(message, str | Mapping):
            plain.append(message)
            continue
        role = getattr(message, "role", None) or getattr(message, "type", None) or ""
        role = getattr(role, "value", role)  # an enum (LlamaIndex's MessageRole)
        plain.append({"role": _ROLES.get(str(role), str(role)), "content": _message_parts(message)[1]})
    return plain


def count_message_tokens(messages: Iterable[Any], model: str | None = None) -> int:
    """Estimated prompt tokens of a chat: contents and roles plus OpenAI's per-message framing.

    Messages may be dicts (`{"role", "content"}`, content a string or a list of parts), objects with
    `role`/`type` and `content` (LangChain, LlamaIndex), or plain strings.
    """
    total = 0
    count = 0
    for message in messages:
        role, text = _message_parts(message)
        total += _TOKENS_PER_MESSAGE + _role_tokens(role, model) + count_tokens(text, model)
        count += 1
    return total + _TOKENS_REPLY_PRIMING if count else 0


# Role names ("user", "assistant", ...) are few and repeat in every message: counted once per
# encoding. (Message contents are never cached: prompts are not kept beyond their call.)
_ROLE_CACHE_MAX = 64
_role_counts: dict[tuple[str, str], int] = {}


def _role_tokens(role: str, model: str | None) -> int:
    if not role:
        return 0
    key = (role, _encoding_name(model))
    count = _role_counts.get(key)
    if count is None:
        count = count_tokens(role, model)
        if len(role) <= 32 and len(_role_counts) < _ROLE_CACHE_MAX:
            _role_counts[key] = count
    return count


def count_tool_tokens(tools: Any, model: str | None = None) -> int:
    """Estimated tokens of the tool definitions a request offers (billed as prompt): their compact
    JSON, as the schemas are sent."""
    if not tools:
        return 0
    try:
        return count_tokens(_json(tools), model)
    except (TypeError, ValueError):  # a schema JSON cannot hold (a circular reference)
        return 0


def _token_ids(value: Any) -> bool:
    """Whether `value` is a prompt already tokenized: a list of token ids (bools are not ids)."""
    return isinstance(value, list | tuple) and all(type(item) is int for item in value)


def count_prompt_tokens(prompt: Any, model: str | None = None) -> int:
    """Estimated tokens of any prompt shape: a string, a list of strings, token ids (a list of ints,
    or a list of such lists: legacy Completions' `prompt` and Embeddings' `input` take them, and
    LangChain's `OpenAIEmbeddings` sends them), or chat messages."""
    if prompt is None:
        return 0
    if callable(prompt):
        prompt = prompt()
    if isinstance(prompt, str):
        return count_tokens(prompt, model)
    if isinstance(prompt, Iterable) and not isinstance(prompt, Mapping):
        items = list(prompt)
        if all(isinstance(item, str) for item in items):
            return sum(count_tokens(item, model) for item in items)
        # Token ids are the tokens billed, whatever the model's encoding: counted, not decoded.
        if _token_ids(items):
            return len(items)
        if all(_token_ids(item) for item in items):
            return sum(len(item) for item in items)
        return count_message_tokens(items, model)
    return count_message_tokens([prompt], model)
