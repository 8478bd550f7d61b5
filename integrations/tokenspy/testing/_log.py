"""The request log: one entry per API request, updated while its response is being written."""

from __future__ import annotations

import copy
import threading
import time
from typing import Any

from ._wire import JSON

__all__ = ["FINAL_OUTCOMES", "RequestLog"]

# "in_progress" is the only non-final outcome: the response is still being written.
FINAL_OUTCOMES = frozenset({"completed", "client_disconnected", "error"})


class RequestLog:
    """Thread-safe list of entries.

    Handlers keep a reference to their own entry dict and update it under the lock, so `clear()`
    during an in-flight request is harmless: the orphaned entry is just no longer listed.
    """

    def __init__(self) -> None:
        self._entries: list[JSON] = []
        self._changed = threading.Condition()

    def add(self, entry: JSON) -> JSON:
        with self._changed:
            self._entries.append(entry)
            self._changed.notify_all()
        return entry

    def update(self, entry: JSON, **changes: Any) -> None:
        with self._changed:
            entry.update(changes)
            self._changed.notify_all()

    def snapshot(self) -> list[JSON]:
        with self._changed:
            return copy.deepcopy(self._entries)

    def clear(self) -> None:
        with self._changed:
            self._entries.clear()
            self._changed.notify_all()

    def wait_final(self, index: int, timeout: float) -> JSON:
        """A copy of entry `index` (negative counts from the end) once its outcome is final."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                n = len(self._entries)
                if -n <= index < n and self._entries[index]["outcome"] in FINAL_OUTCOMES:
                    return copy.deepcopy(self._entries[index])
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    state = self._entries[index]["outcome"] if -n <= index < n else "no such entry"
                    raise TimeoutError(f"request {index}: outcome still {state!r} after {timeout} s")
                self._changed.wait(remaining)
