"""LangChain: per-token and per-call overhead of TokenSpyHandler against a no-op handler and peers.

    python bench/bench_langchain.py [--quick] [--repeats N]

A tiny `BaseChatModel` replays pre-built chunks (built untimed, fresh for every repetition), so what
is timed is LangChain's own streaming loop and callback dispatch plus each handler's work:

- a 20,000-token stream (`model.stream(...)`, the last chunk carries usage, as real providers do),
- 10,000 short calls (`model.invoke(...)` answering 20 tokens, with usage).

Variants: (a) no handler, (b) a no-op `BaseCallbackHandler`, (c) `tokenspy.langchain.TokenSpyHandler`,
(d) langchain-core's `UsageMetadataCallbackHandler`, and the peers that install offline from PyPI:
(e) Langfuse's `CallbackHandler` (tracing on, spans handed to an in-process exporter that drops them,
base URL a closed local port), (f) LangSmith's `LangChainTracer` (its HTTP session answered in-process),
(g) langchain-community's `OpenAICallbackHandler`. Ratios are paired against (b).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
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
from langchain_core.callbacks import BaseCallbackHandler, UsageMetadataCallbackHandler
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import PrivateAttr

MODEL = "gpt-4o-mini"
PROMPT: list[BaseMessage] = [HumanMessage("Write a very long story about a lighthouse keeper.")]
WORDS = ("the", " keeper", " climbed", " stairs", ",", " counting", " every", " wave", " below", ".")
TARGET_RATIO = 1.05


class ReplayChatModel(BaseChatModel):
    """Streams the chunks it was given; answers `invoke` with a fixed message. No I/O, no work."""

    model_name: str = MODEL
    _chunks: list[ChatGenerationChunk] = PrivateAttr(default_factory=list)
    _answer: str = PrivateAttr(default="")
    _answer_tokens: int = PrivateAttr(default=0)

    @property
    def _llm_type(self) -> str:
        return "replay"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "openai"
        params["ls_model_name"] = self.model_name
        return params

    def load(self, chunks: list[ChatGenerationChunk]) -> None:
        self._chunks = chunks

    def answer(self, tokens: int) -> None:
        self._answer = "".join(WORDS[i % len(WORDS)] for i in range(tokens))
        self._answer_tokens = tokens

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        message = AIMessage(
            content=self._answer, response_metadata={"model_name": self.model_name, "finish_reason": "stop"},
            usage_metadata={"input_tokens": 14, "output_tokens": self._answer_tokens,
                            "total_tokens": 14 + self._answer_tokens},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        # BaseChatModel.stream itself calls run_manager.on_llm_new_token for each chunk.
        chunks, self._chunks = self._chunks, []
        yield from chunks


def build_chunks(tokens: int) -> list[ChatGenerationChunk]:
    """`tokens` one-token chunks; the last one carries the usage and the finish reason."""
    chunks = [ChatGenerationChunk(message=AIMessageChunk(content=WORDS[i % len(WORDS)]))
              for i in range(tokens - 1)]
    chunks.append(ChatGenerationChunk(message=AIMessageChunk(
        content=WORDS[(tokens - 1) % len(WORDS)], chunk_position="last",
        usage_metadata={"input_tokens": 14, "output_tokens": tokens, "total_tokens": 14 + tokens},
        response_metadata={"model_name": MODEL, "finish_reason": "stop"},
    )))
    return chunks


# -- handlers ----------------------------------------------------------------------------------------

class NoOpHandler(BaseCallbackHandler):
    """Every callback inherited from BaseCallbackHandler: called, does nothing."""


def _tokenspy() -> BaseCallbackHandler | None:
    try:
        from tokenspy.langchain import TokenSpyHandler
    except ImportError:
        return None
    return TokenSpyHandler()


def _langfuse() -> BaseCallbackHandler | None:
    """Langfuse with tracing on, exporting to an in-process exporter that drops the spans.

    Nothing leaves the process: the base URL is a closed local port and the span exporter (Langfuse's
    `span_exporter=` option) discards. Langfuse's own work (OTel spans, attributes, serialization of
    inputs/outputs) is all done.
    """
    try:
        from langfuse import Langfuse
        from langfuse.langchain import CallbackHandler
        from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
    except ImportError:
        return None

    class DropExporter(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            pass

    global _langfuse_client
    if _langfuse_client is None:
        _langfuse_client = Langfuse(public_key="pk-lf-bench", secret_key="sk-lf-bench",
                                    base_url="http://127.0.0.1:9", span_exporter=DropExporter(),
                                    tracing_enabled=True, flush_interval=3600)
    return CallbackHandler(public_key="pk-lf-bench")


_langfuse_client: Any = None


def _langsmith() -> BaseCallbackHandler | None:
    """LangSmith's LangChainTracer whose HTTP session answers 200 in-process (no network)."""
    try:
        import requests
        from langchain_core.tracers import LangChainTracer
        from langsmith import Client
    except ImportError:
        return None

    class OkAdapter(requests.adapters.BaseAdapter):
        def send(self, request: Any, *args: Any, **kwargs: Any) -> requests.Response:
            response = requests.Response()
            response.status_code = 200
            response._content = b"{}"
            response.headers["Content-Type"] = "application/json"
            response.request = request
            response.url = request.url
            return response

        def close(self) -> None:
            pass

    client = Client(api_url="http://127.0.0.1:9", api_key="ls-bench",
                    info={"version": "0.0.0", "batch_ingest_config": {}})
    # The client mounts its own adapters on its session: replace them after construction.
    client.session.mount("http://", OkAdapter())
    client.session.mount("https://", OkAdapter())
    return LangChainTracer(client=client, project_name="bench")


def _openai_callback() -> BaseCallbackHandler | None:
    try:
        from langchain_community.callbacks.openai_info import OpenAICallbackHandler
    except ImportError:
        return None
    return OpenAICallbackHandler()


HANDLERS: dict[str, Callable[[], BaseCallbackHandler | None]] = {
    "(a) no handler": lambda: None,
    "(b) no-op BaseCallbackHandler": NoOpHandler,
    "(c) tokenspy TokenSpyHandler": _tokenspy,
    "(d) UsageMetadataCallbackHandler": UsageMetadataCallbackHandler,
    "(e) langfuse CallbackHandler": _langfuse,
    "(f) langsmith LangChainTracer": _langsmith,
    "(g) community OpenAICallbackHandler": _openai_callback,
}
BASELINE = "(b) no-op BaseCallbackHandler"
TOKENSPY = "(c) tokenspy TokenSpyHandler"
NO_HANDLER = "(a) no handler"


def _config(handler: BaseCallbackHandler | None) -> dict[str, Any]:
    return {"callbacks": [handler]} if handler is not None else {}


def _stream_case(make: Callable[[], BaseCallbackHandler | None], tokens: int) -> Callable[[], Thunk]:
    def prepare() -> Thunk:
        model = ReplayChatModel()
        model.load(build_chunks(tokens))
        config = _config(make())

        def thunk() -> None:
            for _ in model.stream(PROMPT, config=config):  # type: ignore[arg-type]
                pass

        return thunk

    return prepare


def _invoke_case(make: Callable[[], BaseCallbackHandler | None], calls: int,
                 tokens: int) -> Callable[[], Thunk]:
    def prepare() -> Thunk:
        model = ReplayChatModel()
        model.answer(tokens)
        config = _config(make())

        def thunk() -> None:
            for _ in range(calls):
                model.invoke(PROMPT, config=config)  # type: ignore[arg-type]

        return thunk

    return prepare


def _rows(bench: str, measured: dict[str, Measured], units: int, unit: str, per: str,
          check_target: bool) -> list[Row]:
    base = measured[BASELINE]
    peers = [name for name in measured if name not in (BASELINE, TOKENSPY, NO_HANDLER)]
    rows: list[Row] = []
    for name, m in measured.items():
        per_unit = m.median / units * 1e6
        ratio = paired_ratio(m, base)
        added = paired_difference(m, base) / units * 1e6
        row = Row(bench=bench, variant=name, value=per_unit, unit=unit, ratio=ratio, baseline="(b)",
                  note=f"{added:+.2f} µs/{per} vs (b)")
        if name == TOKENSPY:
            ties, losses = against_peers(m, [measured[p] for p in peers])
            row.target = f"faster than every peer (±{NOISE:.0%})"
            row.met = not losses
            if check_target:
                row.target = f"≤ {TARGET_RATIO}; " + row.target
                row.met = ratio <= TARGET_RATIO and not losses
            row.note += peer_note(ties, losses)
        rows.append(row)
    return rows


def run(opts: Options) -> list[Row]:
    stream_tokens = opts.size(20_000, 2_000)
    calls = opts.size(10_000, 500)
    available = {name: make for name, make in HANDLERS.items() if name == NO_HANDLER or make() is not None}
    rows: list[Row] = []
    if TOKENSPY not in available:
        rows.append(skipped("langchain: TokenSpyHandler"))
    missing = [name for name in HANDLERS if name not in available and name != TOKENSPY]
    for name in missing:
        rows.append(skipped(f"langchain: {name}", "package not installed"))

    stream_cases = [Case(name, _stream_case(make, stream_tokens)) for name, make in available.items()]
    stream = alternate(stream_cases, repeats=opts.repeats, warmup=opts.warmup, progress="langchain stream")
    rows += _rows(f"langchain: stream {stream_tokens:,} tokens", stream, stream_tokens, "µs/token", "token",
                  check_target=True)

    invoke_cases = [Case(name, _invoke_case(make, calls, 20)) for name, make in available.items()]
    invoke = alternate(invoke_cases, repeats=opts.repeats, warmup=opts.warmup, progress="langchain invoke")
    rows += _rows(f"langchain: {calls:,} invokes × 20 tokens", invoke, calls, "µs/call", "call",
                  check_target=False)
    return rows


def cli(argv: Sequence[str] | None = None) -> None:
    main("bench_langchain: callback overhead, streamed and short calls", run, argv)


if __name__ == "__main__":
    cli(sys.argv[1:])
