"""Offline token estimation with tiktoken and the BPE files shipped in this package.

`tiktoken.get_encoding()` downloads its BPE files on first use (with no timeout), so we never call
it: the two encodings we need ship gzipped beside this module and are loaded from there, checked
against tiktoken's own sha256, without touching the network or the process environment.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import json
import os
import re
import struct
import threading
from collections.abc import Callable, Iterable, Mapping
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


def _content_text(content: Any, media: _Media | None = None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if type(content) is list:  # the common list of parts: before the checks for objects below
        return "".join([_content_text(part, media) for part in content])
    if isinstance(content, Mapping):
        return _block_text(content, media)
    # An SDK's own content block or item (anthropic's `TextBlock`/`ToolUseBlock`, a Responses
    # `function_call`), put back in the history as the SDK returned it: a pydantic model, which
    # iterates over its (field, value) pairs, so it is read by its fields, as its dict would be.
    # LlamaIndex's blocks (`TextBlock`, `ImageBlock`) say their kind as `block_type`.
    if isinstance(getattr(content, "type", None), str) or isinstance(getattr(content, "block_type", None), str):
        return _block_text(content, media)
    if isinstance(content, Iterable):
        return "".join(_content_text(part, media) for part in content)
    text = getattr(content, "text", None)
    return text if isinstance(text, str) else ""


def _block_text(block: Any, media: _Media | None = None) -> str:
    """A content block's billed text, the block a dict or an object with the same fields; with
    `media`, an image's estimate is added to it and a document's text returned."""
    for key in ("text", "content", "input_text", "output"):
        value = field_of(block, key)
        if isinstance(value, str):
            return value
        if key in ("content", "output") and value is not None:  # a tool result's own blocks
            return _content_text(value, media)
    kind = field_of(block, "type") or field_of(block, "block_type")
    if kind == "tool_use":  # an Anthropic tool call in the history
        # A streamed one, merged by LangChain, has `input: {}` and the arguments as `partial_json`.
        args = field_of(block, "input") or field_of(block, "partial_json") or {}
        return f"{field_of(block, 'name') or ''}{_json(args)}"
    if kind == "function_call":  # a Responses API tool call in the input
        return f"{field_of(block, 'name') or ''}{_json(field_of(block, 'arguments') or '')}"
    if media is not None and kind in _MEDIA_KINDS:
        return media.add(block, kind)
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


def _message_parts(message: Any, media: _Media | None = None) -> tuple[str, str]:
    if isinstance(message, str):
        return "", message
    if isinstance(message, Mapping):
        # Responses API items (function_call, function_call_output) are their own content.
        text = _content_text(message.get("content") if "content" in message else message, media)
        calls = message.get("tool_calls")
        role = message.get("role") or _item_role(message.get("type"))
        return str(role or ""), text + _tool_calls_text(calls) if calls else text
    content = getattr(message, "content", _ABSENT)
    kind = getattr(message, "type", None)
    if content is _ABSENT and isinstance(kind, str):
        # A Responses API item object (`function_call`): its own content, as its dict is.
        return str(getattr(message, "role", None) or _item_role(kind)), _content_text(message, media)
    role = getattr(message, "role", None) or getattr(message, "type", None) or ""
    role = str(getattr(role, "value", role))  # an enum (LlamaIndex's MessageRole)
    text = _content_text(None if content is _ABSENT else content, media)
    if media is not None:
        # A LlamaIndex `ChatMessage`: its `content` joins only its text blocks; its images are blocks.
        blocks = getattr(message, "blocks", None)
        if isinstance(blocks, list):
            for block in blocks:
                if getattr(block, "block_type", None) == "image":
                    media.add(block, "image")
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
    """Estimated prompt tokens of a chat's text: contents and roles plus OpenAI's per-message framing.

    Messages may be dicts (`{"role", "content"}`, content a string or a list of parts), objects with
    `role`/`type` and `content` (LangChain, LlamaIndex), or plain strings. Only text parts count (the
    fake provider bills by this): `count_prompt_tokens` adds images and documents.
    """
    return _count_messages(messages, model, None)


def _count_messages(messages: Iterable[Any], model: str | None, media: _Media | None) -> int:
    total = 0
    count = 0
    for message in messages:
        role, text = _message_parts(message, media)
        total += _TOKENS_PER_MESSAGE + _role_tokens(role, model) + count_tokens(text, model)
        count += 1
    if media is not None:
        total += media.tokens
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


def count_prompt_tokens(prompt: Any, model: str | None = None, provider: str | None = None) -> int:
    """Estimated tokens of any prompt shape: a string, a list of strings, token ids (a list of ints,
    or a list of such lists: legacy Completions' `prompt` and Embeddings' `input` take them, and
    LangChain's `OpenAIEmbeddings` sends them), or chat messages, their images and text documents
    estimated by the rules of the provider that serves `model` (`_Media`)."""
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
        return _count_messages(items, model, _Media(model, provider))
    return _count_messages([prompt], model, _Media(model, provider))


# -- images and documents in a prompt -----------------------------------------------------------------
# A prompt's images are billed by their size, not their bytes: each is estimated by its provider's
# published rule from the width and height its file header states, read from the few bytes that hold
# them (a base64 payload is decoded only there, never whole). Files, PDFs and audio cannot be estimated
# offline: they count 0. The rules and defaults are documented in docs/sdk.md ("Estimates").

_MEDIA_KINDS = frozenset({"image_url", "input_image", "computer_screenshot", "image", "document"})

# OpenAI (gpt-4o-class models): fit in 2048×2048, shortest side down to 768, then a base plus a
# price per 512-px tile; `detail: "low"` is the base alone. gpt-4o-mini bills ~33× the tokens at
# ~1/33 of gpt-4o's rate (the same dollars), so it has its own numbers.
_OPENAI_FIT = 2048
_OPENAI_SHORT_SIDE = 768
_OPENAI_TILE = 512
_OPENAI_TOKENS = (85, 170)  # (base, per tile)
_OPENAI_MINI_TOKENS = (2833, 5667)
# An image whose size the prompt does not hold (an https URL, a file id) is taken as OpenAI's own
# example, 1024×1024 in high detail: 765 tokens on gpt-4o.
_OPENAI_UNKNOWN_SIZE = (1024, 1024)

# Anthropic: width × height / 750, the long edge first scaled down to 1568 px and the whole to about
# 1,600 tokens. An image of unknown size is taken as that largest one: a photo or a screenshot sent by
# URL usually is.
_ANTHROPIC_LONG_EDGE = 1568
_ANTHROPIC_PIXELS_PER_TOKEN = 750
_ANTHROPIC_MAX_TOKENS = 1600

_JPEG_FRAME_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_JPEG_MAX_SEGMENTS = 64  # EXIF, ICC, XMP... come before the frame header; past this many, give up
_WHITESPACE = re.compile(r"\s+")
_BASE64_PREFIX_SCAN = 1 << 18  # a base64 payload wrapped in lines is searched this far (256 KiB)
_URLSAFE = str.maketrans("-_", "+/")

_Read = Callable[[int, int], bytes]  # (offset, size) -> up to `size` bytes of the image file


class _Media:
    """The tokens of one prompt's images, by the rule of the provider that serves the call."""

    __slots__ = ("_anthropic", "model", "provider", "tokens")

    def __init__(self, model: str | None, provider: str | None) -> None:
        self.model = model
        self.provider = provider
        self.tokens = 0
        self._anthropic: bool | None = None  # decided at the first image: most prompts have none

    def add(self, block: Any, kind: str) -> str:
        """Adds the estimate of an image block; returns a document block's text (billed as text)."""
        if kind == "document":
            return _document_text(block, self)
        if kind == "image_url":  # chat: {"image_url": {"url", "detail"}} (LangChain: or a bare URL)
            value = field_of(block, "image_url")
            if isinstance(value, str):
                self._image(("url", value), None, anthropic_shape=False)
            else:
                self._image(("url", field_of(value, "url")), field_of(value, "detail"), anthropic_shape=False)
        elif kind in ("input_image", "computer_screenshot"):  # Responses: `image_url` or `file_id`
            self._image(("url", field_of(block, "image_url")), field_of(block, "detail"), anthropic_shape=False)
        else:
            source = field_of(block, "source")
            if source is not None and not isinstance(source, str):  # Anthropic's own block
                found = (("b64", field_of(source, "data")) if field_of(source, "type") == "base64"
                         else ("url", field_of(source, "url")))  # a file id: no URL, size unknown
                self._image(found, None, anthropic_shape=True)
            else:  # LangChain (v0 `source_type` + `data`/`url`, v1 `base64`/`url`), LlamaIndex's `ImageBlock`
                data = field_of(block, "base64") or field_of(block, "data") or field_of(block, "image")
                url = field_of(block, "url")
                found = (("b64", data) if data is not None else ("url", url) if url is not None
                         else ("path", field_of(block, "path")))
                self._image(found, field_of(block, "detail"), anthropic_shape=False)
        return ""

    def _image(self, source: tuple[str, Any], detail: Any, *, anthropic_shape: bool) -> None:
        if self._uses_anthropic(anthropic_shape):
            self.tokens += _anthropic_image_tokens(_readable_size(source))
            return
        base, per_tile = _OPENAI_MINI_TOKENS if self.model and "gpt-4o-mini" in self.model else _OPENAI_TOKENS
        if detail == "low":
            self.tokens += base
            return
        width, height = _readable_size(source) or _OPENAI_UNKNOWN_SIZE
        self.tokens += base + per_tile * _openai_tiles(width, height)

    def _uses_anthropic(self, anthropic_shape: bool) -> bool:
        if self._anthropic is None:
            model = (self.model or "").lower()
            provider = (self.provider or "").lower()
            if "anthropic" in provider or "claude" in model:
                self._anthropic = True
            elif provider in ("openai", "azure") or _known(self.model):
                self._anthropic = False
            else:
                return anthropic_shape  # a model neither names: the block's own shape tells
        return self._anthropic


def _document_text(block: Any, media: _Media) -> str:
    """An Anthropic `document` block's billed text: a text or content source, its title and context.
    A PDF (base64, URL or file id) cannot be counted offline: it adds nothing."""
    source = field_of(block, "source")
    if source is None:  # LlamaIndex's `DocumentBlock`: a file's bytes
        return ""
    kind = field_of(source, "type")
    body = ""
    if kind == "text":
        data = field_of(source, "data")
        body = data if isinstance(data, str) else ""
    elif kind == "content":
        body = _content_text(field_of(source, "content"), media)
    extras = [value for value in (field_of(block, "title"), field_of(block, "context")) if isinstance(value, str)]
    return "".join((*extras, body))


def _openai_tiles(width: int, height: int) -> int:
    if max(width, height) > _OPENAI_FIT:
        scale = _OPENAI_FIT / max(width, height)
        width, height = max(1, int(width * scale)), max(1, int(height * scale))
    if min(width, height) > _OPENAI_SHORT_SIDE:
        scale = _OPENAI_SHORT_SIDE / min(width, height)
        width, height = max(1, int(width * scale)), max(1, int(height * scale))
    return -(-width // _OPENAI_TILE) * -(-height // _OPENAI_TILE)


def _anthropic_image_tokens(size: tuple[int, int] | None) -> int:
    if size is None:
        return _ANTHROPIC_MAX_TOKENS
    width, height = size
    if max(width, height) > _ANTHROPIC_LONG_EDGE:
        scale = _ANTHROPIC_LONG_EDGE / max(width, height)
        width, height = max(1, int(width * scale)), max(1, int(height * scale))
    return min(-(-width * height // _ANTHROPIC_PIXELS_PER_TOKEN), _ANTHROPIC_MAX_TOKENS)


def _readable_size(source: tuple[str, Any]) -> tuple[int, int] | None:
    """The image's size, None (unknown) when its data cannot be read: bad base64, a truncated header,
    a file that is gone. The user's data, not a tokenspy error: the image still counts, at the default."""
    try:
        return _image_size(source)
    except (ValueError, struct.error, OSError):  # binascii.Error and UnicodeError are ValueErrors
        return None


def _image_size(source: tuple[str, Any]) -> tuple[int, int] | None:
    """(width, height) from an image's header, or None when the prompt does not hold it."""
    kind, value = source
    if kind == "url":
        if value is not None and not isinstance(value, str):
            value = str(value)  # LlamaIndex keeps a pydantic `AnyUrl`
        if not value or not value.startswith("data:"):
            return None  # an https URL, or no URL at all (a file id): the size is not in the prompt
        comma = value.find(",", 0, 256)
        if comma < 0 or not value[5:comma].endswith(";base64"):
            return None
        return _size_in(_base64_reader(value, comma + 1))
    if kind == "b64":
        if isinstance(value, bytes | bytearray) and _raw_image(value):
            return _size_in(lambda offset, size: bytes(value[offset:offset + size]))
        if isinstance(value, str | bytes | bytearray):
            return _size_in(_base64_reader(value, 0))
        return None  # a stream object (LlamaIndex accepts one): never read from here
    if kind == "path" and isinstance(value, str | os.PathLike):
        with open(value, "rb") as file:  # a local file LlamaIndex will send: only its header is read
            def read(offset: int, size: int) -> bytes:
                file.seek(offset)
                return file.read(size)

            return _size_in(read)
    return None


def _raw_image(data: bytes | bytearray) -> bool:
    head = bytes(data[:12])
    return (head.startswith((b"\x89PNG", b"\xff\xd8", b"GIF8"))
            or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"))


def _base64_reader(data: str | bytes | bytearray, start: int) -> _Read:
    """Reads decoded bytes at any offset of the base64 text from `start`, decoding only the 4-char
    groups that hold them."""
    text: str | bytes | bytearray = data
    if _WHITESPACE.search(text[start:start + 1024] if isinstance(text, str)
                          else bytes(text[start:start + 1024]).decode("ascii", "replace")):
        # Wrapped in lines (MIME style): the groups no longer sit at fixed offsets. The header is near
        # the start, so only a prefix is compacted.
        prefix = text[start:start + _BASE64_PREFIX_SCAN]
        text = _WHITESPACE.sub("", prefix if isinstance(prefix, str) else bytes(prefix).decode("ascii"))
        start = 0

    def read(offset: int, size: int) -> bytes:
        first = start + offset // 3 * 4
        chunk = text[first:start + -(-(offset + size) // 3) * 4]
        chars = (chunk if isinstance(chunk, str) else bytes(chunk).decode("ascii")).translate(_URLSAFE)
        raw = binascii.a2b_base64(chars + "=" * (-len(chars) % 4))
        skip = offset % 3
        return raw[skip:skip + size]

    return read


def _size_in(read: _Read) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG, GIF or WebP header; None for any other format."""
    head = read(0, 30)
    size: tuple[int, int] | None = None
    if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
        size = struct.unpack(">II", head[16:24])
    elif head[:6] in (b"GIF87a", b"GIF89a"):
        size = struct.unpack("<HH", head[6:10])
    elif head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        size = _webp_size(head)
    elif head[:2] == b"\xff\xd8":
        size = _jpeg_size(read)
    if size is None or size[0] <= 0 or size[1] <= 0:
        return None
    return size


def _webp_size(head: bytes) -> tuple[int, int] | None:
    chunk = head[12:16]
    if chunk == b"VP8 ":  # lossy: 14-bit sizes after the frame's start code
        width, height = struct.unpack("<HH", head[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L":  # lossless: two 14-bit sizes minus one, packed after the signature byte
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":  # extended: the canvas size minus one, 24 bits each
        return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    return None


def _jpeg_size(read: _Read) -> tuple[int, int] | None:
    """The frame header's size, found by hopping from segment to segment by their lengths."""
    offset = 2
    for _ in range(_JPEG_MAX_SEGMENTS):
        segment = read(offset, 9)
        if len(segment) < 4 or segment[0] != 0xFF:
            return None
        marker = segment[1]
        if marker == 0xFF:  # a fill byte before the marker
            offset += 1
        elif marker in _JPEG_FRAME_MARKERS:
            if len(segment) < 9:
                return None
            height, width = struct.unpack(">HH", segment[5:9])
            return width, height
        elif marker in (0xD9, 0xDA):  # the end, or the scan data, before any frame header
            return None
        elif 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            offset += 2
        else:
            offset += 2 + struct.unpack(">H", segment[2:4])[0]
    return None

