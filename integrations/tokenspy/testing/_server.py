"""`FakeProvider`: the HTTP server (stdlib `ThreadingHTTPServer`, HTTP/1.1, chunked SSE)."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import socket
import socketserver
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Generic, Self, TypeVar, overload
from urllib.parse import urlsplit

from ._anthropic import count_tokens_endpoint, messages
from ._chat import chat_completions, completions
from ._embeddings import embeddings
from ._errors import Api, error_reply
from ._log import RequestLog
from ._responses import responses
from ._wire import FLAGS, JSON, BadRequest, Call, Frame, JsonReply, StreamReply, dumps, midpoint

__all__ = ["DEFAULT_REPLY", "SETTINGS", "FakeProvider", "parse_flags"]

log = logging.getLogger("tokenspy.testing")
Endpoint = Callable[[Call], JsonReply | StreamReply]

DEFAULT_REPLY = "The capital of France is Paris."
SLOW_DELAY = 0.02  # seconds between SSE events with the `slow` flag

# Paths under /v1/messages speak Anthropic (errors included); all others speak OpenAI.
_ROUTES: dict[str, Endpoint] = {
    "/v1/chat/completions": chat_completions,
    "/v1/completions": completions,
    "/v1/responses": responses,
    "/v1/embeddings": embeddings,
    "/v1/messages": messages,
    "/v1/messages/count_tokens": count_tokens_endpoint,
}
# What a peer that went away looks like while we write to it.
_DISCONNECTS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)

_KNOBS = ("reply", "cached_tokens", "cache_write_tokens", "reasoning_tokens", "chunk_delay")
# Every key `configure` / `POST /_config` takes; anything else is refused, as unknown flags are.
SETTINGS = ("flags", *_KNOBS)

_T = TypeVar("_T")


def parse_flags(values: Iterable[str]) -> frozenset[str]:
    """Flags from strings like "slow", "a,b" or "a b"; raises ValueError for unknown ones."""
    values = list(values)
    for value in values:
        if not isinstance(value, str):
            raise TypeError(f"flags must be strings, got {type(value).__name__}")
    flags = frozenset(f.strip().lower() for v in values for f in v.replace(",", " ").split() if f.strip())
    unknown = flags - FLAGS
    if unknown:
        raise ValueError(f"unknown fake-provider flag(s) {sorted(unknown)}; known: {sorted(FLAGS)}")
    return flags


class _Stopped(Exception):
    """The provider is shutting down: abandon the response."""


def _check_knob(name: str, value: Any) -> Any:
    """`value` if knob `name` can take it, else a TypeError/ValueError naming the knob: one rule for
    the constructor, attribute assignment and `configure` (so `POST /_config` too)."""
    if name == "reply":
        if not isinstance(value, str):
            raise TypeError(f"reply must be a str, got {type(value).__name__}")
        return value
    number = name == "chunk_delay"
    if isinstance(value, bool) or not isinstance(value, (int, float) if number else int):
        raise TypeError(f"{name} must be {'a number' if number else 'an int'}, got {type(value).__name__}")
    if value < 0 or (number and not math.isfinite(value)):
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return value


class _Knob(Generic[_T]):
    """A setting read per request and checked whenever it is set, however it is set (`fp.cached_tokens =
    5`, the constructor, `configure`), so a bad value fails where it was written, not in a request."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name, self._slot = name, "_" + name

    @overload
    def __get__(self, obj: None, owner: type | None = None) -> Self: ...
    @overload
    def __get__(self, obj: object, owner: type | None = None) -> _T: ...
    def __get__(self, obj: object | None, owner: type | None = None) -> Self | _T:
        return self if obj is None else getattr(obj, self._slot)  # type: ignore[no-any-return]

    def __set__(self, obj: object, value: _T) -> None:
        setattr(obj, self._slot, _check_knob(self._name, value))


class FakeProvider:
    """A fake OpenAI- and Anthropic-compatible API on 127.0.0.1 with honest token usage.

    Usable as a context manager or with `start()`/`stop()`. The knobs (`reply`, `cached_tokens`,
    `cache_write_tokens`, `reasoning_tokens`, `chunk_delay`) are attributes read per request, checked
    when set. `__slots__`: a misspelt knob (`fp.cached_tokenz = 3`) raises instead of testing nothing.
    """

    __slots__ = (
        *(f"_{knob}" for knob in _KNOBS),
        "_address",
        "_flags",
        "_log",
        "_seq",
        "_seq_lock",
        "_server",
        "_stopping",
        "_thread",
    )
    reply: _Knob[str] = _Knob()
    cached_tokens: _Knob[int] = _Knob()
    cache_write_tokens: _Knob[int] = _Knob()
    reasoning_tokens: _Knob[int] = _Knob()
    chunk_delay: _Knob[float] = _Knob()

    def __init__(
        self,
        reply: str = DEFAULT_REPLY,
        *,
        cached_tokens: int = 0,
        cache_write_tokens: int = 0,
        reasoning_tokens: int = 0,
        chunk_delay: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.reply = reply
        self.cached_tokens = cached_tokens
        self.cache_write_tokens = cache_write_tokens
        self.reasoning_tokens = reasoning_tokens
        self.chunk_delay = chunk_delay
        self._address = (host, port)
        self._flags: frozenset[str] = frozenset()
        self._log = RequestLog()
        self._seq = 0
        self._seq_lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Self:
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server(self._address, self)
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="tokenspy-fake-provider",
            daemon=True,
        )
        self._server = server
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; open connections (even idle keep-alive ones) are closed, not waited for."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # wakes streams sleeping between chunks
        server.shutdown()
        server.server_close()
        server.drop_connections(timeout=1.0)
        if self._thread is not None:
            self._thread.join(timeout=1.0)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.base_url if self._server else "stopped"
        return f"<FakeProvider {where} flags={sorted(self._flags)}>"

    # -- addresses -------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeProvider is not running: call start() or use it in a with block")
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://{self._address[0]}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """For `OpenAI(base_url=...)`, LangChain `ChatOpenAI(base_url=...)`, LlamaIndex `api_base`."""
        return self.base_url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        """For `Anthropic(base_url=...)`; the SDK appends `/v1/messages` itself."""
        return self.base_url

    # -- control ---------------------------------------------------------------------------------

    @property
    def requests(self) -> list[JSON]:
        """A snapshot (deep copy) of the request log, oldest first."""
        return self._log.snapshot()

    @property
    def flags(self) -> frozenset[str]:
        return self._flags

    def set_flags(self, *flags: str) -> None:
        """Flags for every following request (until `reset()`); replaces earlier ones."""
        self._flags = parse_flags(flags)

    def reset(self) -> None:
        """Clear the request log and the flags (the knobs and the reply are kept)."""
        self._flags = frozenset()
        self._log.clear()

    def wait_for_outcome(self, index: int, timeout: float = 2.0) -> JSON:
        """Entry `index` once its outcome is final (the response was fully written, or failed)."""
        return self._log.wait_final(index, timeout)

    def configure(self, settings: Mapping[str, Any]) -> None:
        """Apply `{"flags", "reply", "cached_tokens", ...}` (the keys in `SETTINGS`; what `POST /_config`
        takes). All or nothing: an unknown key (ValueError) or a bad value (TypeError/ValueError), each
        named, changes nothing."""
        self._apply(_checked_settings(settings))

    def _apply(self, checked: Mapping[str, Any]) -> None:
        for name, value in checked.items():
            if name == "flags":
                self._flags = value
            else:
                setattr(self, name, value)

    # -- used by the handler ---------------------------------------------------------------------

    def _next_seq(self) -> int:
        with self._seq_lock:
            self._seq += 1
            return self._seq


def _checked_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(settings, Mapping):
        raise TypeError(f"settings must be a mapping, got {type(settings).__name__}")
    unknown = [key for key in settings if key not in SETTINGS]
    if unknown:
        raise ValueError(f"unknown fake-provider setting(s) {unknown}; known: {sorted(SETTINGS)}")
    checked = {}
    for name, value in settings.items():
        if name != "flags":
            checked[name] = _check_knob(name, value)
        elif isinstance(value, str):
            checked[name] = parse_flags([value])
        elif isinstance(value, list):
            checked[name] = parse_flags(value)
        else:
            raise TypeError(f"flags must be a string or a list of strings, got {type(value).__name__}")
    return checked


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 overflows when a test opens ~100 connections at once: the
    # kernel then drops handshakes and clients see resets (httpx.ReadError) instead of slow accepts.
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], provider: FakeProvider) -> None:
        self.provider = provider
        self._open: dict[socket.socket, threading.Thread] = {}
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can take seconds.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def track(self, conn: socket.socket) -> None:
        with self._open_lock:
            self._open[conn] = threading.current_thread()

    def untrack(self, conn: socket.socket) -> None:
        with self._open_lock:
            self._open.pop(conn, None)

    def drop_connections(self, timeout: float) -> None:
        with self._open_lock:
            open_now = list(self._open.items())
        for conn, _ in open_now:
            with contextlib.suppress(OSError):  # unblocks a handler in recv() on an idle keep-alive
                conn.shutdown(socket.SHUT_RDWR)
        for _, thread in open_now:
            thread.join(timeout)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up (a closed stream, a stopped SDK client) is normal traffic here.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        log.exception("tokenspy fake provider: error while handling a request from %s", client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked transfer, like the real APIs
    server_version = "tokenspy-fake-provider"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    @property
    def _provider(self) -> FakeProvider:
        return self.server.provider

    def _path(self) -> str:
        return urlsplit(self.path).path.rstrip("/") or "/"

    # -- control endpoints -----------------------------------------------------------------------

    def do_GET(self) -> None:
        if self._path() == "/_log":
            self._send_plain(200, self._provider.requests)
        else:
            self._send_plain(404, {"error": {"message": f"unknown path {self._path()}"}})

    def _control(self, path: str, raw: bytes) -> None:
        try:
            settings = json.loads(raw) if raw.strip() else {}
            if not isinstance(settings, dict):
                raise ValueError("expected a JSON object")
            checked = _checked_settings(settings)
        except (TypeError, ValueError) as exc:
            self._send_plain(400, {"error": {"message": str(exc)}})
            return
        if path == "/_reset":  # only once the body is known good: a 400 changes nothing
            self._provider.reset()
        self._provider._apply(checked)
        self._send_plain(200, {"ok": True, "flags": sorted(self._provider.flags)})

    def _send_plain(self, status: int, body: Any) -> None:
        data = dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    # -- API endpoints ---------------------------------------------------------------------------

    def do_POST(self) -> None:
        path = self._path()
        raw = self._read_body()
        if raw is None:  # nobody to answer: not a request worth logging
            self.close_connection = True
            return
        if path in ("/_reset", "/_config"):
            self._control(path, raw)
            return
        api: Api = "anthropic" if path.startswith("/v1/messages") else "openai"
        endpoint = _ROUTES.get(path)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        body = body if isinstance(body, dict) else None
        provider = self._provider
        flags, bad_flags = provider.flags, ""
        try:
            flags |= parse_flags([self.headers.get("x-fake-flags", "")])
        except ValueError as exc:
            bad_flags = str(exc)
        model = str(body.get("model") or "") if body else ""
        stream_options = body.get("stream_options") if body else None
        entry = provider._log.add(
            {
                "path": path,
                "model": model,
                "stream": bool(body and body.get("stream")),
                "stream_options": stream_options if isinstance(stream_options, dict) else None,
                "flags": sorted(flags),
                "usage": None,
                "outcome": "in_progress",
                "chunks_sent": 0,
            }
        )
        seq = provider._next_seq()
        reply: JsonReply | StreamReply
        if body is None:
            reply = error_reply(api, 400, "fake provider: the request body is not a JSON object")
        elif bad_flags:
            reply = error_reply(api, 400, bad_flags)
        elif endpoint is None:
            reply = error_reply(api, 404, f"fake provider: unknown path {path}")
        elif "http429" in flags:
            reply = error_reply(api, 429, "fake provider: rate limit reached (flag http429)", no_retry=True)
        elif "http500" in flags:
            reply = error_reply(api, 500, "fake provider: internal error (flag http500)", no_retry=True)
        else:
            call = Call(
                body,
                model,
                seq,
                self._reply(),
                cached_tokens=provider.cached_tokens,
                cache_write_tokens=provider.cache_write_tokens,
                reasoning_tokens=provider.reasoning_tokens,
                flags=flags,
            )
            try:
                reply = endpoint(call)
            except BadRequest as exc:
                reply = error_reply(api, 400, f"fake provider: {exc}")
            except Exception as exc:  # a bug here must reach the client as a 500, not hang it
                log.exception("tokenspy fake provider: endpoint %s failed", path)
                reply = error_reply(api, 500, f"fake provider bug: {exc!r}")
        headers = {"x-request-id": f"req_fake{seq:06d}", "request-id": f"req_fake{seq:06d}"}
        if isinstance(reply, StreamReply):
            delay = max(provider.chunk_delay, SLOW_DELAY if "slow" in flags else 0.0)
            self._send_stream(entry, reply, flags, delay, headers)
        else:
            self._send_json(entry, reply, cut="cut" in flags, headers=headers)

    def _reply(self) -> str:
        value = self.headers.get("x-fake-reply")
        if value is None:
            return self._provider.reply
        try:  # http.server decodes header bytes as latin-1; a UTF-8 client meant UTF-8
            return value.encode("latin-1").decode("utf-8")
        except UnicodeError:
            return value

    def _read_body(self) -> bytes | None:
        """The request body, or None if the client went away (or stop() cut it) before sending it all."""
        try:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                parts = []
                while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                    part = self.rfile.read(size)
                    if len(part) < size:
                        return None
                    parts.append(part)
                    self.rfile.readline()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
                    pass
                return b"".join(parts)
            length = int(self.headers.get("Content-Length") or 0)
        except (ValueError, *_DISCONNECTS):
            return None
        raw = self.rfile.read(length)
        return raw if len(raw) == length else None

    def _send_json(self, entry: JSON, reply: JsonReply, *, cut: bool, headers: Mapping[str, str]) -> None:
        log_ = self._provider._log
        data = dumps(reply.body).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in {**headers, **reply.headers}.items():
            self.send_header(name, value)
        ok = reply.status == 200 and not cut
        # Logged before writing: once the client has the response, the log already says so.
        log_.update(entry, outcome="completed" if ok else "error", usage=reply.usage if ok else None)
        try:
            self.end_headers()
            self.wfile.write(data[: len(data) // 2] if cut else data)
        except _DISCONNECTS:
            log_.update(entry, outcome="client_disconnected")
            self.close_connection = True
            return
        if cut:
            self._drop_connection()

    def _send_stream(
        self, entry: JSON, reply: StreamReply, flags: frozenset[str], delay: float, headers: Mapping[str, str]
    ) -> None:
        log_ = self._provider._log
        stopping = self._provider._stopping
        frames: list[Frame] = [*reply.head]
        if "midstream" in flags or "cut" in flags:
            frames += reply.body[: midpoint(len(reply.body))]
            if "midstream" in flags:
                frames.append(reply.error)
            final = "error"
        else:
            frames += reply.body + reply.tail
            final = "completed"
        terminate = "cut" not in flags  # `cut` never sends the zero-length chunk that ends the body
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        for name, value in headers.items():
            self.send_header(name, value)
        sent, usage = 0, None
        try:
            self.end_headers()
            for i, frame in enumerate(frames):
                if (i and delay and stopping.wait(delay)) or stopping.is_set():
                    raise _Stopped
                new_usage = {**(usage or {}), **frame.usage} if frame.usage else usage
                data = b"%X\r\n%s\r\n" % (len(frame.data), frame.data)
                new_sent = sent + frame.counted
                if i == len(frames) - 1 and terminate:
                    # Logged before the last write, so a client that saw the end sees a final log.
                    log_.update(entry, outcome=final, chunks_sent=new_sent, usage=new_usage)
                    data += b"0\r\n\r\n"
                self.wfile.write(data)
                sent, usage = new_sent, new_usage
                log_.update(entry, chunks_sent=sent, usage=usage)
            if not frames and terminate:
                log_.update(entry, outcome=final)
                self.wfile.write(b"0\r\n\r\n")
        except _DISCONNECTS:
            outcome = "error" if stopping.is_set() else "client_disconnected"
            log_.update(entry, outcome=outcome, chunks_sent=sent, usage=usage)
            self.close_connection = True
            return
        except _Stopped:
            log_.update(entry, outcome="error", chunks_sent=sent, usage=usage)
            self._drop_connection()
            return
        if not terminate:
            log_.update(entry, outcome=final)
            self._drop_connection()

    def _drop_connection(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):  # FIN without the terminating chunk: an incomplete body
            self.connection.shutdown(socket.SHUT_RDWR)
