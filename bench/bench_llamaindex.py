"""LlamaIndex: overhead of tokenspy's TokenSpyHandler against no handler and TokenCountingHandler.

    python bench/bench_llamaindex.py [--quick] [--repeats N]

`MockLLM` (llama-index-core's own) through `stream_chat` (20,000 tokens) and `chat` (10,000 short
calls of 20 tokens). MockLLM's stream rebuilds the whole text with `" ".join` for every token
(quadratic: 20,000 tokens would take minutes); `LinearMockLLM` only replaces that helper with a slice
of a prebuilt string, so each chunk still carries the cumulative text and the delta as LlamaIndex's
real LLMs do. MockLLM reports no usage, so every tracker estimates it (tokenspy tokenizes the streamed
text once at the end; TokenCountingHandler tokenizes prompt and completion at the end).

Variants: (a) no handler, (b) a no-op legacy `BaseCallbackHandler`, (c) `tokenspy.llamaindex.
TokenSpyHandler`, (d) `TokenCountingHandler`. Creating a TokenSpyHandler installs tokenspy's
dispatcher handlers process-wide; the other variants run with them uninstalled (untimed).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

from _common import (
    NOISE,
    Case,
    Measured,
    Options,
    Row,
    Thunk,
    against_peers,
    alternate,
    main,
    paired_difference,
    paired_ratio,
    peer_note,
    skipped,
)
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.callbacks import CallbackManager, TokenCountingHandler
from llama_index.core.callbacks.base_handler import BaseCallbackHandler
from llama_index.core.llms import MockLLM
from pydantic import PrivateAttr

MESSAGES = [ChatMessage(role="user", content="Write a very long story about a lighthouse keeper.")]
TARGET_RATIO = 1.05


class LinearMockLLM(MockLLM):
    """MockLLM whose `_generate_text(i)` is a slice of a prebuilt string instead of a fresh join."""

    _text: str = PrivateAttr(default="")

    def model_post_init(self, context: Any) -> None:
        super().model_post_init(context)
        self._text = " ".join(["text"] * (self.max_tokens or 0))

    def _generate_text(self, length: int) -> str:
        return self._text[: 5 * length - 1] if length > 0 else ""


class NoOpHandler(BaseCallbackHandler):
    """A legacy callback handler that does nothing."""

    def __init__(self) -> None:
        super().__init__(event_starts_to_ignore=[], event_ends_to_ignore=[])

    def on_event_start(self, event_type: Any, payload: dict[str, Any] | None = None, event_id: str = "",
                       parent_id: str = "", **kwargs: Any) -> str:
        return event_id

    def on_event_end(self, event_type: Any, payload: dict[str, Any] | None = None, event_id: str = "",
                     **kwargs: Any) -> None:
        pass

    def start_trace(self, trace_id: str | None = None) -> None:
        pass

    def end_trace(self, trace_id: str | None = None, trace_map: dict[str, list[str]] | None = None) -> None:
        pass


def _uninstrument() -> None:
    try:
        from tokenspy.llamaindex import uninstrument
    except ImportError:
        return
    uninstrument()


def _tokenspy() -> BaseCallbackHandler | None:
    try:
        from tokenspy.llamaindex import TokenSpyHandler
    except ImportError:
        return None
    handler: BaseCallbackHandler = TokenSpyHandler()
    return handler


def _token_counting() -> BaseCallbackHandler:
    return TokenCountingHandler()


HANDLERS: dict[str, Callable[[], BaseCallbackHandler | None]] = {
    "(a) no handler": lambda: None,
    "(b) no-op callback handler": NoOpHandler,
    "(c) tokenspy TokenSpyHandler": _tokenspy,
    "(d) TokenCountingHandler": _token_counting,
}
BASELINE = "(a) no handler"
NOOP = "(b) no-op callback handler"
TOKENSPY = "(c) tokenspy TokenSpyHandler"


def _llm(make: Callable[[], BaseCallbackHandler | None], tokens: int) -> LinearMockLLM:
    if make is not _tokenspy:
        _uninstrument()  # tokenspy's process-wide dispatcher handlers must not tax the others
    handler = make()
    manager = CallbackManager([handler] if handler is not None else [])
    return LinearMockLLM(max_tokens=tokens, callback_manager=manager)


def _stream_case(make: Callable[[], BaseCallbackHandler | None], tokens: int) -> Callable[[], Thunk]:
    def prepare() -> Thunk:
        llm = _llm(make, tokens)

        def thunk() -> None:
            for _ in llm.stream_chat(MESSAGES):
                pass

        return thunk

    return prepare


def _chat_case(make: Callable[[], BaseCallbackHandler | None], calls: int,
               tokens: int) -> Callable[[], Thunk]:
    def prepare() -> Thunk:
        llm = _llm(make, tokens)

        def thunk() -> None:
            for _ in range(calls):
                llm.chat(MESSAGES)

        return thunk

    return prepare


def _rows(bench: str, measured: dict[str, Measured], units: int, unit: str, per: str,
          check_target: bool) -> list[Row]:
    base = measured[BASELINE]
    rows: list[Row] = []
    for name, m in measured.items():
        per_unit = m.median / units * 1e6
        ratio = paired_ratio(m, base)
        added = paired_difference(m, base) / units * 1e6
        row = Row(bench=bench, variant=name, value=per_unit, unit=unit, ratio=ratio, baseline="(a)",
                  note=f"{added:+.2f} µs/{per} vs (a)")
        if name == TOKENSPY:
            if NOOP in measured:
                row.note += f"; {paired_ratio(m, measured[NOOP]):.3f}× (b)"
            peers = [measured[p] for p in measured if p not in (BASELINE, NOOP, TOKENSPY)]
            ties, losses = against_peers(m, peers)
            row.target = f"faster than every peer (±{NOISE:.0%})"
            if check_target:
                row.target = f"≤ {TARGET_RATIO}; " + row.target
            row.met = (ratio <= TARGET_RATIO or not check_target) and not losses
            row.note += peer_note(ties, losses)
        rows.append(row)
    return rows


def run(opts: Options) -> list[Row]:
    stream_tokens = opts.size(20_000, 2_000)
    calls = opts.size(10_000, 500)
    available = {name: make for name, make in HANDLERS.items() if name == BASELINE or make() is not None}
    rows: list[Row] = []
    if TOKENSPY not in available:
        rows.append(skipped("llamaindex: TokenSpyHandler"))

    stream_cases = [Case(name, _stream_case(make, stream_tokens)) for name, make in available.items()]
    stream = alternate(stream_cases, repeats=opts.repeats, warmup=opts.warmup, progress="llamaindex stream")
    rows += _rows(f"llamaindex: stream_chat {stream_tokens:,} tokens", stream, stream_tokens, "µs/token",
                  "token", check_target=True)

    chat_cases = [Case(name, _chat_case(make, calls, 20)) for name, make in available.items()]
    chat = alternate(chat_cases, repeats=opts.repeats, warmup=opts.warmup, progress="llamaindex chat")
    rows += _rows(f"llamaindex: {calls:,} chat calls × 20 tokens", chat, calls, "µs/call", "call",
                  check_target=False)
    _uninstrument()
    return rows


def cli(argv: Sequence[str] | None = None) -> None:
    main("bench_llamaindex: handler overhead, streamed and short calls", run, argv)


if __name__ == "__main__":
    cli(sys.argv[1:])
