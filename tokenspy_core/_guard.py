"""Tracking must never break the user's program: internal errors are logged once and swallowed.

Set `TOKENSPY_STRICT=1` (the project's own test suite does) to re-raise them instead, so a bug in
tokenspy fails our tests loudly rather than hiding behind a log line.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
import warnings
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

__all__ = ["guard", "guarded", "log_internal_error", "logger", "user_stacklevel", "warn_user"]

logger = logging.getLogger("tokenspy")
_seen: set[tuple[str, type[BaseException]]] = set()
_seen_lock = threading.Lock()

P = ParamSpec("P")
R = TypeVar("R")


# Where a call's warning is raised from: tokenspy, the SDK or framework that made the call, and the
# standard library's plumbing between them. (Names only: nothing is imported.)
# LlamaIndex's dispatcher lives in `llama_index_instrumentation`, its workflow runtime in `workflows`.
_LIBRARIES = frozenset(("tokenspy", "tokenspy_core", "openai", "anthropic", "httpx", "httpx2", "httpcore", "langchain",
                        "langgraph", "langsmith", "llama_index", "llama_index_instrumentation", "workflows",
                        "pydantic", "contextlib", "functools", "asyncio", "concurrent", "threading", "contextvars"))


def user_stacklevel() -> int:
    """The `warnings.warn` stacklevel, for its caller, of the first frame outside tokenspy and the SDKs
    and frameworks it tracks: a warning points at the line of the program that made the call."""
    frame = sys._getframe(1)
    level = 1
    while frame.f_back is not None:
        top = str(frame.f_globals.get("__name__", "")).partition(".")[0]
        if top not in _LIBRARIES and not top.startswith(("langchain_", "langgraph_")):
            break
        frame = frame.f_back
        level += 1
    return level


def warn_user(message: str, *, logged: bool = False) -> None:
    """A `UserWarning` pointing at the user's line that made the call. With warnings turned into errors
    (`python -W error`, pytest's `filterwarnings = error`) it would raise in the middle of ending a call,
    and lose its record: it goes to the `tokenspy` logger instead (unless the caller `logged` it)."""
    try:
        warnings.warn(message, UserWarning, stacklevel=user_stacklevel())
    except Exception:
        if not logged:
            logger.warning(message)


def _strict() -> bool:
    return os.environ.get("TOKENSPY_STRICT", "") not in ("", "0", "false")


def log_internal_error(where: str, exc: BaseException) -> None:
    """Log `exc` the first time it happens at `where`; re-raise in strict mode."""
    if _strict():
        raise exc
    key = (where, type(exc))
    with _seen_lock:
        if key in _seen:
            return
        _seen.add(key)
    logger.error("tokenspy internal error in %s (tracking skipped, your program is unaffected)", where,
                 exc_info=exc)


def _passthrough() -> tuple[type[BaseException], ...]:
    from .budget import BudgetExceededError

    return (BudgetExceededError,)


class guarded:
    """`with guarded("where"):` logs (once) and swallows an internal error; `BudgetExceededError`
    passes through. A class rather than `@contextmanager`: it runs on every adapter entry point,
    and a generator-based context manager costs several times more."""

    __slots__ = ("where",)

    def __init__(self, where: str) -> None:
        self.where = where

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> bool:
        if exc is None or not isinstance(exc, Exception) or isinstance(exc, _passthrough()):
            return False
        log_internal_error(self.where, exc)
        return True


def guard(where: str) -> Callable[[Callable[P, R]], Callable[P, R | None]]:
    """Decorator form of `guarded`: the wrapped function returns None if tokenspy itself failed."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R | None]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | None:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                if isinstance(exc, _passthrough()):
                    raise
                log_internal_error(where, exc)
                return None

        return wrapper

    return decorate
