"""HTTP error bodies in each API's own format, so the SDKs raise their usual exception classes."""

from __future__ import annotations

from typing import Literal

from ._wire import JsonReply

__all__ = ["Api", "error_reply"]

Api = Literal["openai", "anthropic"]

# status -> (OpenAI error type, code), as the real API sends them
_OPENAI: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    404: ("invalid_request_error", "unknown_url"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
}
_ANTHROPIC: dict[int, str] = {
    400: "invalid_request_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
}


def error_reply(api: Api, status: int, message: str, *, no_retry: bool = False) -> JsonReply:
    """An error response; `no_retry` adds `x-should-retry: false`, which both SDKs obey over their
    default retry of 429/5xx (so a flagged request is answered once, and fast)."""
    headers = {"x-should-retry": "false"} if no_retry else {}
    if api == "anthropic":
        kind = _ANTHROPIC.get(status, "api_error")
        return JsonReply(
            {"type": "error", "error": {"type": kind, "message": message}}, status, None, headers
        )
    kind, code = _OPENAI.get(status, ("server_error", None))
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return JsonReply(body, status, None, headers)
