"""Calls still open at exit: ended before the stores' exit flush, so that their records are saved.

A stream the script never finished reading (held by a global, or dropped only at interpreter shutdown,
when prices can no longer be imported) would otherwise be lost from the database. Adapters register
what ends their open objects (`end_open_at_exit`); the store's exit flush runs `end_open_calls` (only
with a store attached: one pass over the heap, at exit): from atexit, from multiprocessing's exit
finalizer in a child, and from the SIGTERM handler (there in a thread it waits for a bounded time: the
interrupted code may hold a lock an end hook takes).
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

from ._guard import log_internal_error
from .call import Call

__all__ = ["before_exit_flush", "end_open_at_exit", "end_open_calls"]

_before_exit_flush: list[Callable[[], None]] = []


def before_exit_flush(end: Callable[[], None]) -> None:
    """Run `end` at exit before the stores flush (once however often registered): an adapter that keeps
    its open calls in a table of its own (LlamaIndex's streams) ends them, with their text."""
    if end not in _before_exit_flush:
        _before_exit_flush.append(end)


# What ends an object still open at exit (an adapter's stream tracker, a framework run), by class, in
# the order registered: each knows what its call still needs (text kept elsewhere, usage pending).
_open_at_exit: dict[type, Callable[[Any], None]] = {}


def end_open_at_exit(cls: type, end: Callable[[Any], None]) -> None:
    """At exit, before the stores flush, call `end(obj)` for every live instance of `cls` (subclasses
    included); then every `Call` still active is aborted. A stream the script never finished reading
    (held by a global, or dropped only at interpreter shutdown, when prices can no longer be looked up)
    is then in the database, `partial=True`."""
    _open_at_exit[cls] = end


def end_open_calls() -> None:
    """What the store's exit flush runs first: the adapters' own exit hooks, then one pass over the heap
    for their registered kinds and for any `Call` still active (only at exit, only with a store)."""
    for end_hook in _before_exit_flush:
        try:
            end_hook()
        except Exception as exc:
            log_internal_error("end at exit", exc)
    kinds = tuple(_open_at_exit)
    found: dict[type, list[Any]] = {cls: [] for cls in kinds}
    calls: list[Call] = []
    for obj in gc.get_objects():
        if type(obj) is Call:
            if obj.status == "active":
                calls.append(obj)
        elif kinds and isinstance(obj, kinds):
            for cls in kinds:
                if isinstance(obj, cls):
                    found[cls].append(obj)
                    break
    for cls, objects in found.items():
        end = _open_at_exit[cls]
        for obj in objects:
            try:
                end(obj)
            except Exception as exc:  # one open stream that cannot end must not keep the others out
                log_internal_error("end at exit", exc)
    for call in calls:
        call.abort()  # a no-op for the calls ended above
