"""The module-level API: stats, calls, report, reset, prices, manual calls, init, set_handler."""

from __future__ import annotations

import io
import os
import sqlite3
import sys
from collections.abc import Mapping
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any, TextIO

from tokenspy_core import PRICES, Call, CallRecord, MergedCall, Tracker, UsageReport, config, default_tracker, spans
from tokenspy_core import start_call as _core_start_call
from tokenspy_core.report import BOX_GLYPHS
from tokenspy_core.spans import current_span
from tokenspy_core.tracker import DEFAULT_MAX_RECORDS, home_of, set_records_limit
from tokenspy_core.usage import TOKEN_BITS, impossible_parts, user_count

from . import _instrument

__all__ = ["calls", "init", "record", "report", "reset", "set_handler", "set_price", "start_call", "stats"]


def stats() -> dict[str, Any]:
    """Totals, `by_function`, `by_model`, the `calls` list and the span `tree` of everything tracked."""
    return default_tracker().stats()


def calls() -> list[CallRecord]:
    """The recorded calls (the most recent ones, up to the tracker's buffer size)."""
    return default_tracker().calls()


def _can_encode(stream: TextIO, sample: str = BOX_GLYPHS) -> bool:
    encoding = getattr(stream, "encoding", None)
    if encoding is None:  # an in-memory text stream holds any character
        return True
    try:
        sample.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def report(format: str = "text", *, path: str | os.PathLike[str] | None = None, hints: bool = True,
           file: TextIO | None = None) -> str | None:
    """Print the cost box (`format="text"`), or return the stats as JSON text (`format="json"`).

    With `file=` (an open text file) or `path=` (not both), write the report there instead
    (`format="html"` writes the HTML cost tree, to ./tokenspy_report.html when given neither).
    """
    return report_tracker(default_tracker(), format, path=path, hints=hints, file=file)


def report_tracker(tracker: Tracker, format: str = "text", *, path: str | os.PathLike[str] | None = None,
                   hints: bool = True, file: TextIO | None = None) -> str | None:
    """`tokenspy.report()` for any tracker (a session's, a handler's own view)."""
    if format not in ("text", "json", "html"):
        raise ValueError(f"format must be 'text', 'json' or 'html', got {format!r}")
    if not isinstance(hints, bool):
        raise TypeError("hints must be True or False")
    if path is not None and file is not None:
        raise ValueError("report() writes to path= or to file=, not both")
    if file is not None:
        _check_file(file)
    if path is not None:
        _check_path(path)
    if format == "html":
        from tokenspy_core.html_report import render_html

        html = render_html(tracker.stats(), hints=hints)
        if file is not None:
            file.write(html)
            return None
        target = Path(path if path is not None else "tokenspy_report.html")
        target.write_text(html, encoding="utf-8")
        return str(target)
    if path is not None:
        text = tracker.render(format, hints=hints)
        Path(path).write_text(text + "\n", encoding="utf-8")
        return os.fspath(path)
    if format == "json":
        text = tracker.render("json", hints=hints)
        if file is None:
            return text
        file.write(text + "\n")
        return None
    out = file if file is not None else sys.stdout
    text = tracker.render("text", ascii=not _can_encode(out), hints=hints) + "\n"
    encoding = getattr(out, "encoding", None)
    if encoding is not None:
        try:  # a span or model name the stream cannot print is written with "?" in its place
            text = text.encode(encoding, "replace").decode(encoding)
        except LookupError:
            text = text.encode("ascii", "replace").decode("ascii")
    out.write(text)
    return None


def _check_file(file: Any) -> None:
    if not callable(getattr(file, "write", None)):
        raise TypeError(f"file must be an open text file (an object with a write() method), got {file!r}; "
                        "to write to a file by name, pass path=")
    if isinstance(file, io.RawIOBase | io.BufferedIOBase):
        raise TypeError(f"file must be opened in text mode ('w', not 'wb'), got {file!r}")


def _check_path(path: Any) -> None:
    if not isinstance(path, str | os.PathLike) or not isinstance(os.fspath(path), str):
        raise TypeError(f"path must be a file path (a str or os.PathLike), got {path!r}")
    if not os.fspath(path):  # likely an unset variable (os.environ.get("OUT", "")): never write to "."
        raise ValueError("path must be a file path, got an empty path ''")
    if os.path.isdir(path):
        raise ValueError(f"path must be a file path, got the directory {os.fspath(path)!r}")


class TrackerView:
    """What a session or a framework handler shows of the calls it saw: `stats()`, `calls()`,
    `report()`, `reset()` — the module-level API, for one tracker."""

    _view: Tracker

    def stats(self) -> dict[str, Any]:
        """Totals, `by_function`, `by_model`, `calls` and `tree`, as `tokenspy.stats()`."""
        return self._view.stats()

    def calls(self) -> list[CallRecord]:
        return self._view.calls()

    def report(self, format: str = "text", *, path: str | os.PathLike[str] | None = None, hints: bool = True,
               file: TextIO | None = None) -> str | None:
        """Print the cost box (`format="text"`), or return JSON text, as `tokenspy.report()`."""
        return report_tracker(self._view, format, path=path, hints=hints, file=file)

    def reset(self) -> None:
        """Forget what this view has seen."""
        self._view.reset()


def reset() -> None:
    """Forget every recorded call (prices set with `set_price` stay)."""
    default_tracker().reset()


def set_price(model: str, *, input: float | Decimal | Fraction, output: float | Decimal | Fraction,
              cached_input: float | Decimal | Fraction | None = None,
              cache_write: float | Decimal | Fraction | None = None,
              cache_write_1h: float | Decimal | Fraction | None = None) -> None:
    """Price `model` in USD per million tokens (int, float, Decimal or Fraction); wins over the bundled
    prices. `cache_write` is Anthropic's 5-minute cache write, `cache_write_1h` its 1-hour one (the
    5-minute rate when not given)."""
    PRICES.set_price(model, input=input, output=output, cached_input=cached_input, cache_write=cache_write,
                     cache_write_1h=cache_write_1h)


_count = user_count  # a token count the user passes: checked once, for record() and set_usage() alike


def _model(model: Any) -> str:
    if not isinstance(model, str) or not model.strip():
        raise TypeError(f"model must be a non-empty string, got {model!r}")
    return model


def _check_call_options(provider: Any, tags: Any) -> None:
    if provider is not None and (not isinstance(provider, str) or not provider.strip()):
        raise TypeError(f"provider must be a non-empty string, got {provider!r}")
    if tags is not None and not isinstance(tags, Mapping):
        raise TypeError(f"tags must be a mapping, got {type(tags).__name__}")


def record(model: str, *, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0,
           cache_write_tokens: int = 0, reasoning_tokens: int = 0, cache_write_1h_tokens: int = 0,
           provider: str | None = None, tags: Mapping[str, Any] | None = None) -> CallRecord | None:
    """Record a finished call made through a provider tokenspy does not wrap."""
    if not (type(input_tokens) is int and type(output_tokens) is int and type(cached_input_tokens) is int
            and type(cache_write_tokens) is int and type(reasoning_tokens) is int
            # Each in 0..MAX_TOKENS, at once (see TOKEN_BITS): the common case, once per recorded call.
            and not (input_tokens | output_tokens | cached_input_tokens | cache_write_tokens
                     | reasoning_tokens) >> TOKEN_BITS):
        input_tokens = _count("input_tokens", input_tokens)
        output_tokens = _count("output_tokens", output_tokens)
        cached_input_tokens = _count("cached_input_tokens", cached_input_tokens)
        cache_write_tokens = _count("cache_write_tokens", cache_write_tokens)
        reasoning_tokens = _count("reasoning_tokens", reasoning_tokens)
    if cache_write_1h_tokens.__class__ is not int or cache_write_1h_tokens:  # rare (Anthropic's 1-hour writes)
        cache_write_1h_tokens = _count("cache_write_1h_tokens", cache_write_1h_tokens)
    report = UsageReport(input_tokens, output_tokens, cached_input_tokens, cache_write_tokens, reasoning_tokens,
                         cache_write_1h_tokens or None)
    if cached_input_tokens or cache_write_tokens or reasoning_tokens or cache_write_1h_tokens:
        problem = impossible_parts(report)
        if problem is not None:
            raise ValueError(problem)
    _check_call_options(provider, tags)
    # Under a spent `on_exceeded="raise"` budget this raises like any call start: for a provider tokenspy
    # does not wrap, refusing to record is the only way to stop the caller's loop.
    # Under a framework handler's span, its tracker and view (`Home`); else the default tracker, looked up
    # without a span read (the hot path of programs that record by hand).
    tracker, sinks = home_of(current_span(), ()) if spans.homes else (default_tracker(), ())
    call = Call(tracker, _model(model), provider=provider, tags=tags, sinks=sinks)
    call.add_report(report)  # a ready report: the same fields set_usage(**fields) would build, without the dict
    return call.finish()


def start_call(model: str, provider: str | None = None, prompt: Any = None, *, stream: bool = True,
               tags: Mapping[str, Any] | None = None, tools: Any = None) -> Call | MergedCall:
    """Start tracking a (streamed) call by hand: `add_text()`, `set_usage()`, then `finish()`,
    `abort()` or `fail(exc)`. Also a context manager that finishes, aborts or fails by itself.
    `prompt` and `tools` (the tool definitions sent) are only read to estimate what the provider does
    not report, and are not kept."""
    _check_call_options(provider, tags)
    if not isinstance(stream, bool):  # stored as the record's `streamed`, in reports and the database
        raise TypeError(f"stream must be True or False, got {stream!r}")
    return _core_start_call(None, _model(model), provider=provider, prompt=prompt, streamed=stream, tags=tags,
                            tools=tools)


_OPTIONS = ("auto_instrument", "persist", "otel", "track_git", "tags", "capture_content", "max_records")


def init(*, auto_instrument: bool = True, persist: bool | str | os.PathLike[str] = False, otel: bool = False,
         track_git: bool = False, tags: Mapping[str, Any] | None = None, capture_content: bool = False,
         max_records: int | None = None) -> None:
    """Process-wide options. Everything is off by default except SDK auto-instrumentation under
    `profile`/`session`."""
    for name, value in (("auto_instrument", auto_instrument), ("otel", otel), ("track_git", track_git),
                        ("capture_content", capture_content)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {value!r}")
    if isinstance(persist, os.PathLike) and not isinstance(persist, Path):
        persist = Path(persist)  # pytest's `tmpdir`, a PurePath's str: any path-like, as report(path=...) takes
    if not isinstance(persist, bool | str | Path):
        raise TypeError(f"persist must be True, False or a database path, got {persist!r}")
    if persist == "":  # likely an unset variable (os.environ.get("DB", "")): say so, never store nothing quietly
        raise ValueError("persist must be True, False or a database path, got an empty path ''")
    if tags is not None and not isinstance(tags, Mapping):
        raise TypeError(f"tags must be a mapping, got {type(tags).__name__}")
    if max_records is not None:
        _count("max_records", max_records)
    # All or nothing: everything that can fail (a missing extra, a database that is not ours, the
    # exporter) runs before any option is applied, so a failed init() leaves the previous setup whole.
    if otel:
        from . import otel as otel_module
    new_tags = dict(tags or {})
    if track_git:
        from tokenspy_core.gitinfo import current_commit

        commit = current_commit()
        if commit:
            new_tags["git_commit"] = commit
    store = None
    if persist:
        from tokenspy_core.store import attach_store, resolve_path, stores

        attached = stores()
        try:
            store = attach_store(default_tracker(), None if persist is True else persist)
        except sqlite3.Error as exc:
            # sqlite's "unable to open database file" names no file: say which one, keeping the type
            # callers may catch.
            target = str(resolve_path(None if persist is True else persist))
            if target in str(exc):
                raise
            raise type(exc)(f"persist: cannot use {target!r} as the tokenspy database: {exc}") from exc
        if store in attached:  # already attached by an earlier init(): not ours to close on failure
            store = None
    if otel:
        try:
            otel_module.enable_otel(default_tracker())
        except BaseException:
            if store is not None:
                store.close()
            raise
    _instrument.set_enabled(auto_instrument)
    config.capture_content = capture_content
    config.tags = new_tags
    set_records_limit(DEFAULT_MAX_RECORDS if max_records is None else max_records)


# framework name -> the handler installed globally there
_global_handlers: dict[str, Any] = {}


def set_handler(handler: Any) -> None:
    """Install a framework handler process-wide (every LangChain run / LlamaIndex call picks it up
    without `callbacks=`); `set_handler(None)` removes every handler installed this way."""
    if handler is None:
        for installed in list(_global_handlers.values()):
            type(installed)._uninstall_global()
        _global_handlers.clear()
        return
    framework = getattr(handler, "_tokenspy_framework", None)
    if framework is None or isinstance(handler, type):
        raise TypeError("set_handler takes a tokenspy framework handler instance (tokenspy.langchain.TokenSpyHandler() "
                        f"or tokenspy.llamaindex.TokenSpyHandler()) or None, got {handler!r}")
    previous = _global_handlers.pop(framework, None)
    if previous is not None and previous is not handler:
        type(previous)._uninstall_global()
    handler._install_global()
    _global_handlers[framework] = handler


def get_handler(framework: str) -> Any:
    return _global_handlers.get(framework)
