"""Calls recorded from legacy callback events: the ones the dispatcher did not see.

Shared by every handler, because one callback manager may hold two tokenspy handlers (an explicit
one and `set_handler`'s forwarder): the first to see an event id records it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from tokenspy_core import active_call

from .calls import EmbeddingCall, LLMCall

__all__ = ["LEGACY", "LegacyCalls"]

_MAX_LEGACY_OPEN = 10_000


class LegacyCalls:
    """Calls by callback event id (an async embedding batch's events share one call).

    Bounded: a stream that is never read nor closed sends no end event; past the bound the oldest
    open call ends aborted.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # event id -> (call, the model payload); (None, None) while the start is being handled
        self._calls: OrderedDict[str, tuple[LLMCall | EmbeddingCall | None, Any]] = OrderedDict()
        # span id -> the embedding call open in it: an async batch call folds its batches into one
        self._embeddings: dict[str, EmbeddingCall] = {}

    def claim(self, event_id: str) -> bool:
        with self._lock:
            if event_id in self._calls:
                return False
            self._calls[event_id] = (None, None)
            return True

    def put(self, event_id: str, state: LLMCall | EmbeddingCall, model_dict: Any) -> None:
        evicted = []
        with self._lock:
            self._calls[event_id] = (state, model_dict)
            while len(self._calls) > _MAX_LEGACY_OPEN:
                evicted.append(self._calls.popitem(last=False)[1][0])
        for old in evicted:
            if old is not None:
                old.call.abort()

    def release(self, event_id: str) -> None:
        with self._lock:
            self._calls.pop(event_id, None)

    def pop(self, event_id: str) -> LLMCall | EmbeddingCall | None:
        if event_id not in self._calls:  # the dispatcher recorded it (the common case): no lock
            return None
        with self._lock:
            entry = self._calls.pop(event_id, None)
        return entry[0] if entry is not None else None

    def enclosing(self, model_dict: Any) -> LLMCall | None:
        """The legacy LLM call this one runs inside, if any (a CustomLLM's chat -> complete).

        Without the dispatcher's span tree the only evidence is the context: our call is the active
        one, still open, and made by an identical model.
        """
        outer = active_call()
        if outer is None or outer.ended:
            return None
        with self._lock:
            for state, outer_dict in self._calls.values():
                if isinstance(state, LLMCall) and state.call is outer and outer_dict == model_dict:
                    return state
        return None

    def open_embedding(self, span_id: str | None) -> EmbeddingCall | None:
        with self._lock:
            state = self._embeddings.get(span_id) if span_id else None
        return state if state is not None and not state.ended else None

    def remember_embedding(self, span_id: str | None, state: EmbeddingCall) -> None:
        if span_id:
            with self._lock:
                self._embeddings[span_id] = state

    def forget_embedding(self, state: EmbeddingCall) -> None:
        with self._lock:
            for key in [k for k, v in self._embeddings.items() if v is state]:
                del self._embeddings[key]

    def drain(self) -> list[LLMCall | EmbeddingCall]:
        with self._lock:
            states = [state for state, _ in self._calls.values() if state is not None]
            states.extend(self._embeddings.values())
            self._calls.clear()
            self._embeddings.clear()
        return states


LEGACY = LegacyCalls()
