"""`TokenSpyHandler`: the LlamaIndex callback handler users register, and its global install.

Two pipelines report one LlamaIndex LLM call: the legacy callback manager (this class) and the
instrumentation dispatcher (`instrumentation.TAP`, installed when a handler is created). The
dispatcher is the primary source; the callback path
- raises a budget refusal into the caller (LlamaIndex swallows what dispatcher handlers raise,
  but lets callback handlers' exceptions propagate), and
- records only the LLM/embedding calls the dispatcher did not see (an LLM class that emits
  callback events only, or the tap uninstalled), keyed by the callback event id.
"""

from __future__ import annotations

from typing import Any, ClassVar

from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.callbacks.base_handler import BaseCallbackHandler
from llama_index.core.instrumentation.span import active_span_id

from tokenspy_core import Call, Span, Tracker, default_tracker
from tokenspy_core._guard import guard

from .._api import TrackerView
from . import payloads
from .calls import EmbeddingCall, LLMCall, nested_llm, start_llm
from .instrumentation import TAP
from .legacy import LEGACY

__all__ = ["TokenSpyHandler", "handler_of"]

_TRACKED = (CBEventType.LLM, CBEventType.EMBEDDING)  # the callback events that are calls


class TokenSpyHandler(TrackerView, BaseCallbackHandler):
    """Tracks the LLM and embedding calls of LlamaIndex components, and the spans they run in.

    - `Settings.callback_manager = CallbackManager([TokenSpyHandler()])` (or `callback_manager=` on a
      component): calls of components that carry it (directly or via an enclosing query engine,
      chat engine, ...) are recorded.
    - `tokenspy.set_handler(handler)`: every LlamaIndex call in the process, objects built before
      included.

    Records go to the default tracker (`tokenspy.report()`), or to `tracker=` if given;
    `handler.stats()` / `handler.report()` show only what this handler recorded.
    """

    _tokenspy_framework: ClassVar[str] = "llamaindex"

    def __init__(self, tracker: Tracker | None = None) -> None:
        super().__init__(event_starts_to_ignore=[], event_ends_to_ignore=[])
        if tracker is not None and not isinstance(tracker, Tracker):
            raise TypeError(f"tracker must be a tokenspy Tracker, got {type(tracker).__name__}")
        self._tracker = tracker
        # What this handler saw: its own tracker if it has one, else a view fed as an extra sink.
        self._view = tracker if tracker is not None else Tracker(name="llamaindex")
        self._sinks: tuple[Tracker, ...] = () if tracker is not None else (self._view,)
        TAP.install()

    def __deepcopy__(self, memo: dict[int, Any]) -> TokenSpyHandler:
        # A component deep-copied with its callback manager keeps reporting to the same handler
        # (a copy would split its view; its tracker's lock cannot be copied anyway).
        return self

    # -- what the call helpers need ------------------------------------------------------------
    def new_call(self, model: str | None, *, parent: Span | None, call_type: type[Call] = Call,
                 **options: Any) -> Call:
        tracker = self._tracker if self._tracker is not None else default_tracker()
        return call_type(tracker, model, parent=parent, sinks=self._sinks, **options)

    # -- legacy callbacks --------------------------------------------------------------------------
    def on_event_start(self, event_type: CBEventType, payload: dict[str, Any] | None = None,
                       event_id: str = "", parent_id: str = "", **kwargs: Any) -> str:
        if event_type in _TRACKED and event_id:
            self._start(event_type, payload or {}, event_id)
        return event_id

    def on_event_end(self, event_type: CBEventType, payload: dict[str, Any] | None = None,
                     event_id: str = "", **kwargs: Any) -> None:
        if event_type in _TRACKED and event_id:
            self._end(event_type, payload or {}, event_id)

    def start_trace(self, trace_id: str | None = None) -> None:
        pass

    def end_trace(self, trace_id: str | None = None, trace_map: dict[str, list[str]] | None = None) -> None:
        pass

    @guard("llamaindex callback start")
    def _start(self, event_type: CBEventType, payload: dict[str, Any], event_id: str) -> None:
        span_id = active_span_id.get()
        refusal = TAP.take_refusal(span_id)
        if refusal is not None:
            raise refusal  # the budget is spent: the request is not sent
        if TAP.tracks(span_id) or not LEGACY.claim(event_id):
            return
        model_dict = payload.get(EventPayload.SERIALIZED)
        try:
            state = (self._start_embedding(span_id, model_dict) if event_type == CBEventType.EMBEDDING
                     else self._start_llm(span_id, model_dict, payload))
        except BaseException:
            LEGACY.release(event_id)
            raise
        LEGACY.put(event_id, state, model_dict)

    def _start_embedding(self, span_id: str | None, model_dict: Any) -> EmbeddingCall:
        folded = LEGACY.open_embedding(span_id)
        if folded is not None:
            folded.add_batch()  # an async batch call: its batches are sent together
            return folded
        state = EmbeddingCall(self, payloads.model_of(model_dict), payloads.provider_of(model_dict),
                              TAP.anchor(span_id), True)
        LEGACY.remember_embedding(span_id, state)
        return state

    def _start_llm(self, span_id: str | None, model_dict: Any, payload: dict[str, Any]) -> LLMCall:
        messages = payload.get(EventPayload.MESSAGES)
        outer = LEGACY.enclosing(model_dict)
        if outer is not None:
            return nested_llm(outer, model_dict, None, messages)
        chat = messages is not None
        return start_llm(self, model_dict, None, prompt=messages if chat else payload.get(EventPayload.PROMPT),
                         extra=payload.get(EventPayload.ADDITIONAL_KWARGS), chat=chat,
                         streamed=payloads.is_stream_method(span_id), parent=TAP.anchor(span_id),
                         enforce_budget=True)

    @guard("llamaindex callback end")
    def _end(self, event_type: CBEventType, payload: dict[str, Any], event_id: str) -> None:
        state = LEGACY.pop(event_id)
        if state is None:
            return
        if EventPayload.EXCEPTION in payload:
            state.error(payload[EventPayload.EXCEPTION])
        elif isinstance(state, EmbeddingCall):
            state.end(payload.get(EventPayload.CHUNKS))
        else:
            response = payload.get(EventPayload.RESPONSE)
            state.end(response if response is not None else payload.get(EventPayload.COMPLETION))
        if isinstance(state, EmbeddingCall) and state.ended:
            LEGACY.forget_embedding(state)

    # -- tokenspy.set_handler protocol -------------------------------------------------------------
    def _install_global(self) -> None:
        """Register for every LlamaIndex call: the dispatcher (objects built before included), and
        the callback path of objects built from now on (`global_handler` / `Settings`)."""
        TokenSpyHandler._uninstall_global()
        TAP.install()
        TAP.global_owner = self
        proxy = _GlobalCallbacks(self)
        _Installed.proxy = proxy
        import llama_index.core as li
        from llama_index.core import Settings

        # Only if free: replacing a user's global handler (wandb, langfuse, ...) would break theirs.
        if li.global_handler is None:
            li.global_handler = proxy
        manager = Settings._callback_manager  # the private field: the property would create one
        if manager is not None and proxy not in manager.handlers:
            manager.add_handler(proxy)

    @classmethod
    def _uninstall_global(cls) -> None:
        TAP.global_owner = None
        proxy = _Installed.proxy
        _Installed.proxy = None
        if proxy is None:
            return
        proxy.active = False  # objects built meanwhile keep the proxy in their managers: make it inert
        import llama_index.core as li
        from llama_index.core import Settings

        if li.global_handler is proxy:
            li.global_handler = None
        manager = Settings._callback_manager
        if manager is not None and proxy in manager.handlers:
            manager.remove_handler(proxy)


class _GlobalCallbacks(BaseCallbackHandler):
    """What `set_handler` puts in callback managers: forwards to the handler while installed.

    A distinct type on purpose: LlamaIndex refuses two handlers of the same type in one manager,
    which would break users who also pass a `TokenSpyHandler` explicitly.
    """

    def __init__(self, handler: TokenSpyHandler) -> None:
        super().__init__(event_starts_to_ignore=[], event_ends_to_ignore=[])
        self.handler = handler
        self.active = True

    def __deepcopy__(self, memo: dict[int, Any]) -> _GlobalCallbacks:
        return self

    def on_event_start(self, event_type: CBEventType, payload: dict[str, Any] | None = None,
                       event_id: str = "", parent_id: str = "", **kwargs: Any) -> str:
        if self.active:
            self.handler.on_event_start(event_type, payload, event_id, parent_id, **kwargs)
        return event_id

    def on_event_end(self, event_type: CBEventType, payload: dict[str, Any] | None = None,
                     event_id: str = "", **kwargs: Any) -> None:
        if self.active:
            self.handler.on_event_end(event_type, payload, event_id, **kwargs)

    def start_trace(self, trace_id: str | None = None) -> None:
        pass

    def end_trace(self, trace_id: str | None = None, trace_map: dict[str, list[str]] | None = None) -> None:
        pass


class _Installed:
    proxy: _GlobalCallbacks | None = None


def handler_of(candidate: Any) -> TokenSpyHandler | None:
    """The tokenspy handler behind a callback-manager entry, if it is one (and still installed)."""
    if isinstance(candidate, TokenSpyHandler):
        return candidate
    if isinstance(candidate, _GlobalCallbacks) and candidate.active:
        return candidate.handler
    return None


TAP.handler_of = handler_of
