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

import sys
import threading
import weakref
from types import FrameType
from typing import Any, ClassVar

from llama_index.core import Settings
from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload
from llama_index.core.callbacks.base_handler import BaseCallbackHandler
from llama_index.core.instrumentation.span import active_span_id

from tokenspy_core import Call, Span, Tracker, default_tracker
from tokenspy_core._guard import guard, guarded
from tokenspy_core.spans import Home
from tokenspy_core.tracker import PRICES

from .. import _instrument
from .._api import TrackerView
from . import payloads
from .calls import EmbeddingCall, LLMCall, nested_llm, start_llm
from .instrumentation import TAP
from .legacy import LEGACY

__all__ = ["TokenSpyHandler", "forwards", "handler_of"]

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
        PRICES.preload()  # now, not in the thread of the first call's end (see `PriceBook.preload`)
        self._tracker = tracker
        # What this handler saw: its own tracker if it has one, else a view fed as an extra sink.
        self._view = tracker if tracker is not None else Tracker(name="llamaindex")
        self._sinks: tuple[Tracker, ...] = () if tracker is not None else (self._view,)
        # For the spans of the components it owns: what their code records by other ways (a raw SDK call
        # in a tool, a LangChain model) goes to this handler's tracker, or into its view (see `Span`).
        self.span_home = Home(tracker, self._sinks)
        TAP.install()
        # Like a profile or session (and the LangChain handler), a handler lets the SDK layer see the
        # calls it tracks, so a call is recorded alike whether or not a session opened earlier in the
        # process: the provider's exact usage merges into the record (llama-index-llms-openai never asks
        # for stream usage; embeddings drop it). `tokenspy.init(auto_instrument=False)` turns that off.
        with guarded("llamaindex auto-instrument"):
            _instrument.auto_instrument()

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
    def _start(self, event_type: CBEventType, payload: dict[str, Any], event_id: str,
               forwarded_by: FrameType | None = None) -> None:
        """`forwarded_by`: the frame that called `set_handler`'s forwarder, which passed the event on."""
        span_id = active_span_id.get()
        refusal = TAP.take_refusal(span_id)
        if refusal is not None:
            raise refusal  # the budget is spent: the request is not sent
        if TAP.tracks(span_id):
            return
        owner = self if forwarded_by is None else _forwarded_owner(self, span_id, forwarded_by)
        if owner is None or not LEGACY.claim(event_id):
            return
        model_dict = payload.get(EventPayload.SERIALIZED)
        try:
            state = (_start_embedding(owner, span_id, model_dict) if event_type == CBEventType.EMBEDDING
                     else _start_llm(owner, span_id, model_dict, payload))
        except BaseException:
            LEGACY.release(event_id)
            raise
        LEGACY.put(event_id, state, model_dict)

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
        the callback path of objects built from now on, through `Settings.callback_manager`.

        Not as `llama_index.core.global_handler`: `CallbackManager([])` (every component's default)
        takes `Settings`' handlers only if it is still empty after adding the global handler, so one
        installed there would cut the user's `Settings` handlers off every component built afterwards.

        Installed again (the same handler, another one, or after `set_handler(None)`), the one forwarder
        is pointed at this handler and put back where it was: components built meanwhile share those
        handler lists (or copied one), and a spent budget must still refuse their calls.
        """
        TAP.install()
        with _Installed.lock:
            proxy = _Installed.proxy
            if proxy is None:
                proxy = _Installed.proxy = _GlobalCallbacks()
            proxy.handler = self
            if Settings._callback_manager is None:  # the private field: the property would create one
                created = _Installed.created
                if created is not None and created[0].handlers == created[1]:
                    # The one an earlier install created, which `set_handler(None)` took off `Settings`.
                    Settings._callback_manager = created[0]
                else:
                    # The one LlamaIndex makes at first use anyway; `set_handler(None)` puts None back.
                    manager = Settings.callback_manager
                    _Installed.created = (manager, list(manager.handlers))
            for manager in list(_Installed.managers):
                if proxy not in manager.handlers:
                    manager.add_handler(proxy)
        TAP.global_owner = self
        follow_settings()

    @classmethod
    def _uninstall_global(cls) -> None:
        TAP.global_owner = None
        with _Installed.lock:
            proxy, created, managers = _Installed.proxy, _Installed.created, list(_Installed.managers)
            TAP.settings_manager = None
            if proxy is None or proxy.handler is None:
                return
            # A list no known manager holds any more (a component's, whose manager was replaced; a
            # copy) keeps the proxy: inert until the next install.
            proxy.handler = None
        for manager in managers:
            if proxy in manager.handlers:
                manager.remove_handler(proxy)
        if created is not None:
            manager, handlers = created
            if Settings._callback_manager is manager and manager.handlers == handlers:
                Settings._callback_manager = None  # as it was (unless the user added handlers to it)


def _start_embedding(owner: TokenSpyHandler, span_id: str | None, model_dict: Any) -> EmbeddingCall:
    folded = LEGACY.open_embedding(span_id)
    if folded is not None:
        folded.add_batch()  # an async batch call: its batches are sent together
        return folded
    state = EmbeddingCall(owner, payloads.model_of(model_dict), payloads.provider_of(model_dict),
                          TAP.anchor(span_id), True)
    LEGACY.remember_embedding(span_id, state)
    return state


def _start_llm(owner: TokenSpyHandler, span_id: str | None, model_dict: Any, payload: dict[str, Any]) -> LLMCall:
    messages = payload.get(EventPayload.MESSAGES)
    outer = LEGACY.enclosing(model_dict)
    if outer is not None:
        return nested_llm(outer, model_dict, None, messages)
    chat = messages is not None
    return start_llm(owner, model_dict, None, prompt=messages if chat else payload.get(EventPayload.PROMPT),
                     extra=payload.get(EventPayload.ADDITIONAL_KWARGS), chat=chat,
                     streamed=payloads.is_stream_method(span_id), parent=TAP.anchor(span_id),
                     enforce_budget=True)


def _forwarded_owner(installed: TokenSpyHandler, span_id: str | None, caller: FrameType) -> TokenSpyHandler | None:
    """Who records a call only the callback path saw, when `set_handler`'s forwarder passes it on.

    The owner rule of the dispatcher path (`instrumentation._owner_on`), with the forwarder last: a
    `TokenSpyHandler` on the manager sending the event (None: that one records it, before or after the
    forwarder in the same loop), else the handler of the nearest enclosing component the dispatcher
    knows, else the `set_handler` handler.
    """
    # Events carry no reference to their manager; `caller` is its `CallbackManager.on_event_start`,
    # looping over its handlers. Anything else (a forwarder called by hand): no manager to consult.
    manager = caller.f_locals.get("self")
    if isinstance(manager, CallbackManager) and any(isinstance(h, TokenSpyHandler) for h in manager.handlers):
        return None
    return TAP.owner_of(span_id) or installed


def follow_settings() -> None:
    """Put `set_handler`'s forwarder in the current `Settings.callback_manager`, once per manager.

    Components built from it share its handler list (`CallbackManager([])`) or the manager itself
    (query engines), so the forwarder reaches them too, and comes after the user's own handlers.
    Called again (`Tap.span_enter`) when the user assigns another manager while installed: the
    components built from that one then carry it as well, also if built before that call.
    """
    with _Installed.lock:
        proxy = _Installed.proxy
        manager = Settings._callback_manager
        TAP.settings_manager = manager
        if proxy is None or proxy.handler is None or manager is None or proxy in manager.handlers:
            return
        manager.add_handler(proxy)
        _Installed.managers.add(manager)


class _GlobalCallbacks(BaseCallbackHandler):
    """What `set_handler` puts in callback managers: forwards to the handler while installed.

    It owns no call: a `TokenSpyHandler` on the same manager or on an enclosing component comes first
    (`_forwarded_owner`, `instrumentation._owner_on`); it lets that manager's callbacks raise a budget
    refusal into the caller.

    Not the handler itself: a component may have copied its manager's handler list (a deep copy, a
    manager built from another's handlers), where `set_handler(None)` cannot remove it; it goes inert,
    and forwards again to the handler of the next `set_handler` (one forwarder per process).
    """

    def __init__(self) -> None:
        super().__init__(event_starts_to_ignore=[], event_ends_to_ignore=[])
        self.handler: TokenSpyHandler | None = None  # None: not installed

    def __deepcopy__(self, memo: dict[int, Any]) -> _GlobalCallbacks:
        return self

    def on_event_start(self, event_type: CBEventType, payload: dict[str, Any] | None = None,
                       event_id: str = "", parent_id: str = "", **kwargs: Any) -> str:
        handler = self.handler
        if handler is not None and event_type in _TRACKED and event_id:
            # The caller's frame tells which manager sends the event: a handler of ours in it owns the call.
            handler._start(event_type, payload or {}, event_id, sys._getframe(1))
        return event_id

    def on_event_end(self, event_type: CBEventType, payload: dict[str, Any] | None = None,
                     event_id: str = "", **kwargs: Any) -> None:
        handler = self.handler
        if handler is not None:
            handler.on_event_end(event_type, payload, event_id, **kwargs)

    def start_trace(self, trace_id: str | None = None) -> None:
        pass

    def end_trace(self, trace_id: str | None = None, trace_map: dict[str, list[str]] | None = None) -> None:
        pass


class _Installed:
    """What `set_handler` changed, for `set_handler(None)` to undo exactly and a later install to redo."""

    lock: ClassVar[threading.Lock] = threading.Lock()
    proxy: ClassVar[_GlobalCallbacks | None] = None  # made at the first install, inert while uninstalled
    # The `Settings.callback_manager` set_handler created (there was none), with its handlers then. Kept
    # after `set_handler(None)` puts None back: a later install makes it `Settings`' manager again.
    created: ClassVar[tuple[CallbackManager, list[BaseCallbackHandler]] | None] = None
    # Every manager the forwarder was put in, across installs: each install puts it back there.
    managers: ClassVar[weakref.WeakSet[CallbackManager]] = weakref.WeakSet()


def handler_of(candidate: Any) -> TokenSpyHandler | None:
    """The callback-manager entry if it is a `TokenSpyHandler` (`set_handler`'s forwarder is not one)."""
    return candidate if isinstance(candidate, TokenSpyHandler) else None


def forwards(candidate: Any) -> bool:
    """Whether a callback-manager entry is `set_handler`'s forwarder, still installed."""
    return isinstance(candidate, _GlobalCallbacks) and candidate.handler is not None


TAP.handler_of = handler_of
TAP.forwards = forwards
TAP.follow_settings = follow_settings
