"""What a failed record keeps of its exception (`CallRecord.error`), and API keys kept out of it.

A provider's HTTP error is an answer like any other: its body can echo the request (FastAPI-based
gateways answer a 422 with the request body, prompt included) or the key (OpenAI's 401 quotes the key
it refused), and the openai and anthropic SDKs put that body verbatim in the exception's message
("Error code: 422 - {body}"). So without content capture a status error keeps its type, its status and
the provider's own description of the error, read field by field from the body, never the message;
and whatever is kept, with capture or without, has anything that looks like an API key replaced.

Duck-typed (`status_code`, `body`): the engine imports no SDK.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["error_text", "redact_keys"]

# Packages whose exceptions (other than HTTP answers, see `error_text`) describe a request's transport,
# never its content.
_DESCRIPTIVE = frozenset(("openai", "anthropic", "httpx", "httpx2", "httpcore", "requests", "urllib3", "aiohttp",
                          "asyncio", "concurrent", "tokenspy", "tokenspy_core"))

REDACTED = "[REDACTED]"
# Keys by their published prefixes: OpenAI (sk-, sk-proj-, sk-svcacct-), Anthropic (sk-ant-), OpenRouter
# (sk-or-), Groq (gsk_), Hugging Face (hf_), xAI (xai-), Google (AIza). `*`: a key the provider masked in
# part is still left out whole.
_PREFIXED_KEY = re.compile(r"\b(?:sk-|gsk_|hf_|xai-|AIza)[\w\-*]{8,}")
_BEARER = re.compile(r"(?i)\b(bearer)\s+[\w\-.~+/=*]{8,}")
# `api_key=...`, `x-api-key: ...`, `'token': '...'` (a URL's query, a header or a dict quoted in a message).
# The value must hold a digit, as generated keys do: "invalid_api_key: Incorrect API key" is no assignment.
_ASSIGNED = re.compile(r"(?i)\b([\w-]*(?:key|token|secret|password))([\"']?\s*[:=]\s*[\"']?)"
                       r"(?=[^\s\"'&,;()\[\]{}]*\d)[^\s\"'&,;()\[\]{}]{8,}")
# A key-looking word (16+ characters, a digit among them) right after "key": "Invalid API key provided: ...",
# "key 3f9a...".
_AFTER_KEY = re.compile(r"(?i)\b(key\b(?:\s+provided)?\s*[:=]?\s*[\"'`]?)(?=[\w\-.~+/=*]*\d)[\w\-.~+/=*]{16,}")
# A 422 can list every field of the request that failed validation: the first few say what went wrong.
_MAX_DETAILS = 5


def redact_keys(text: str) -> str:
    """`text` with every API-key-like token replaced by `[REDACTED]`."""
    text = _PREFIXED_KEY.sub(REDACTED, text)
    text = _BEARER.sub(rf"\1 {REDACTED}", text)
    text = _ASSIGNED.sub(rf"\1\2{REDACTED}", text)
    return _AFTER_KEY.sub(rf"\1{REDACTED}", text)


def error_text(error: BaseException) -> str:
    """What a failed record keeps of its exception, keys redacted.

    - With content capture on: the type and the whole message.
    - An HTTP answer (an exception with a `status_code`): the type, the status and the provider's own
      description of the error from the body (`_description`); never the message, which holds the body.
    - A transport error (an `OSError`, or from an SDK or HTTP library: timeouts, refused connections,
      an error event in a stream): the type and the message.
    - Anything else: the type alone (pydantic's validation errors quote the model's answer, a user's
      exception can hold anything).
    """
    from .call import config  # here, not at the top: call.py imports this module

    name = type(error).__name__
    if config.capture_content:
        return redact_keys(f"{name}: {error}".rstrip(": "))
    status = _status(error)
    if status is not None:
        description = _description(getattr(error, "body", None))
        if status < 400:  # an error event inside a 200 stream (Anthropic's): no error status to show
            return redact_keys(f"{name}: {description}") if description else name
        head = f"{name}: Error code: {status}"
        return redact_keys(f"{head} - {description}") if description else head
    if isinstance(error, OSError) or type(error).__module__.partition(".")[0] in _DESCRIPTIVE:
        return redact_keys(f"{name}: {error}".rstrip(": "))
    return name


def _status(error: BaseException) -> int | None:
    status = getattr(error, "status_code", None)
    if isinstance(status, int) and not isinstance(status, bool):
        return status
    if isinstance(status, str) and status.isdigit():
        return int(status)
    return None


def _description(body: Any) -> str | None:
    """The provider's description of an error from its HTTP body, or None when the body has none.

    - `{"error": {"message", "type", "code"}}` (OpenAI and the gateways copying it; the openai SDK hands
      over the inner object), `{"type": "error", "error": {...}}` (Anthropic), `{"error": {"message",
      "status"}}` (Google), a flat `{"message", "type", "code"}` (Mistral, vLLM), `{"error": "..."}`
      (Ollama, TGI): `code: message`, the code else the type or status.
    - `{"detail": "..."}` and FastAPI's `{"detail": [{"type", "loc", "msg", "input"}]}` (vLLM, LiteLLM,
      LocalAI): each item's `loc`, `msg` and `type`; never `input`, the part of the request that failed.
    - Anything else (plain text, an HTML page, another shape) is not kept: nothing in it says which part
      describes the error and which echoes the request.
    """
    if isinstance(body, str | bytes | bytearray):  # a JSON body the SDK did not decode (mistralai's raw text)
        try:
            body = json.loads(body)
        except (ValueError, RecursionError):
            return None
    if isinstance(body, list) and body:  # Google answers some errors as a one-item list
        body = body[0]
    if not isinstance(body, Mapping):
        return None
    error = body.get("error")
    if isinstance(error, str):
        return _labelled(body, error)
    nested = isinstance(error, Mapping)
    if nested:
        body = error
    message = body.get("message")
    if isinstance(message, str):
        return _labelled(body, message)
    detail = body.get("detail")
    if isinstance(detail, str):
        return detail or None
    if isinstance(detail, Mapping):
        detail = [detail]
    if isinstance(detail, list):
        items = [text for text in map(_validation_item, detail[:_MAX_DETAILS]) if text]
        if items and len(detail) > _MAX_DETAILS:
            items.append(f"and {len(detail) - _MAX_DETAILS} more")
        return "; ".join(items) or None
    return _label(body) if nested or "message" in body else None


def _label(error: Mapping[Any, Any]) -> str | None:
    """The error's code, else its type or status: the name a program would branch on."""
    for key in ("code", "type", "error_type", "status"):
        value = error.get(key)
        # A numeric code only repeats the HTTP status.
        if isinstance(value, str) and value and not value.isdigit() and value != "error":
            return value
    return None


def _labelled(error: Mapping[Any, Any], message: str) -> str | None:
    label = _label(error)
    if label and message:
        return f"{label}: {message}"
    return label or message or None


def _validation_item(item: Any) -> str | None:
    """One FastAPI/pydantic validation error: `body.messages.0.role: Input should be ... (enum)`."""
    if not isinstance(item, Mapping):
        return None
    msg, kind, loc = item.get("msg"), item.get("type"), item.get("loc")
    text = msg if isinstance(msg, str) else ""
    if isinstance(loc, list | tuple):
        where = ".".join(str(part) for part in loc if isinstance(part, str | int) and not isinstance(part, bool))
        if where:
            text = f"{where}: {text}" if text else where
    if isinstance(kind, str) and kind:
        text = f"{text} ({kind})" if text else kind
    return text or None
