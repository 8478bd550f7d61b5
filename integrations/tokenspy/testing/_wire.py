"""Shapes shared by the endpoint builders and the HTTP layer.

Endpoint builders are pure functions from a parsed request (`Call`) to a reply description
(`JsonReply` or `StreamReply`); only `_server.py` touches sockets. That keeps the wire formats easy
to read and lets the server apply the failure flags (`midstream`, `cut`, `slow`) uniformly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CREATED",
    "FLAGS",
    "JSON",
    "BadRequest",
    "Call",
    "Frame",
    "JsonReply",
    "StreamReply",
    "dumps",
    "midpoint",
    "split_pieces",
    "sse",
]

JSON = dict[str, Any]  # a JSON object as parsed or about to be sent

# Every flag the server understands; anything else is rejected so a typo cannot silently test nothing.
FLAGS = frozenset({"http429", "http500", "midstream", "cut", "slow", "fulldelta"})

# A fixed creation time keeps responses byte-identical between runs (snapshot-friendly).
CREATED = 1_767_225_600  # 2026-01-01T00:00:00Z

_PIECE = re.compile(r"\s*\S+")


class BadRequest(Exception):
    """The request body is not something the endpoint can answer: sent back as HTTP 400."""


@dataclass(frozen=True)
class Call:
    """One API request plus the knobs in force for it."""

    body: Mapping[str, Any]
    model: str
    seq: int  # index in the request log: makes ids deterministic
    reply: str
    cached_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    flags: frozenset[str]

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))


@dataclass(frozen=True)
class Frame:
    """One SSE event, already encoded, and the usage dict it puts on the wire (for the log)."""

    data: bytes
    usage: JSON | None = None
    counted: bool = True  # False for the `[DONE]` sentinel: `chunks_sent` counts real events only


@dataclass(frozen=True)
class JsonReply:
    body: JSON
    status: int = 200
    usage: JSON | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StreamReply:
    """An SSE stream split where the failure flags need it.

    `midstream` sends `head`, the first half of `body`, then `error`; `cut` sends the same minus
    `error` and drops the socket. A normal run sends `head + body + tail`.
    """

    head: list[Frame]
    body: list[Frame]
    tail: list[Frame]
    error: Frame


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def sse(data: Mapping[str, Any] | str, event: str | None = None, usage: JSON | None = None) -> Frame:
    payload = data if isinstance(data, str) else dumps(data)
    text = f"event: {event}\ndata: {payload}\n\n" if event else f"data: {payload}\n\n"
    return Frame(text.encode(), usage)


def split_pieces(text: str) -> list[str]:
    """Word pieces with their leading whitespace ("The", " capital", ...); they concatenate to `text`."""
    pieces = _PIECE.findall(text)
    rest = text[sum(map(len, pieces)) :]
    if rest:  # trailing whitespace rides on the last piece so nothing is lost
        if pieces:
            pieces[-1] += rest
        else:
            pieces.append(rest)
    return pieces


def midpoint(n_pieces: int) -> int:
    """How many content pieces `midstream` and `cut` let through before failing."""
    return n_pieces // 2
