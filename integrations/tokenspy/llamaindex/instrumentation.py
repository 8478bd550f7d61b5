"""The instrumentation path: one event handler and one span handler on LlamaIndex's root dispatcher.

This is the primary source of LLM and embedding calls. It reaches objects built before any
registration, sees every streamed chunk (so an abandoned stream keeps the text it consumed), and
its spans give the attribution tree. One process-wide `Tap` serves every `TokenSpyHandler`: each
call is routed to one handler: the first `TokenSpyHandler` on the callback manager of the LLM or of
the nearest enclosing component that has one (query engine, chat engine, ...), else the handler
installed with `tokenspy.set_handler` (whose forwarder in a callback manager is not one: `_owner_on`).
While installed, the two handlers stand in for the root dispatcher's no-op placeholders
(`_swap_in`/`_swap_out`), so a streamed token costs LlamaIndex no extra handler call.

LlamaIndex calls these handlers on the caller's thread (loop thread for async), synchronously,
and swallows anything they raise; every entry point is guarded anyway, and in strict mode an
internal error is also kept in `Tap.internal_errors` so tests can see what LlamaIndex swallowed.
"""

from __future__ import annotations

import atexit
import inspect
import sys
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llama_index.core import Settings
from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
from llama_index.core.instrumentation.event_handlers import BaseEventHandler, NullEventHandler
from llama_index.core.instrumentation.events.embedding import (
    EmbeddingEndEvent,
    EmbeddingStartEvent,
    SparseEmbeddingEndEvent,
)
from llama_index.core.instrumentation.events.exception import ExceptionEvent
from llama_index.core.instrumentation.events.llm import (
    LLMChatEndEvent,
    LLMChatInProgressEvent,
    LLMChatStartEvent,
    LLMCompletionEndEvent,
    LLMCompletionInProgressEvent,
    LLMCompletionStartEvent,
)
from llama_index.core.instrumentation.span import BaseSpan
from llama_index.core.instrumentation.span_handlers import BaseSpanHandler, NullSpanHandler
from pydantic import PrivateAttr

from tokenspy_core import BudgetExceededError, Call, Span, active_call, current_span
from tokenspy_core._guard import guarded, log_internal_error
from tokenspy_core.at_exit import before_exit_flush
from tokenspy_core.spans import enter_span, exit_span, user_span_parent

from . import payloads
from .calls import EmbeddingCall, LLMCall, inner_llm, start_llm
from .spans import Role, agent_named, classify, keep_parent_for_stream, runs_agents
from .stream_scope import activate_on_first_read

if TYPE_CHECKING:
    from .handler import TokenSpyHandler

__all__ = ["TAP", "Tap"]

_MAX_KEPT_ERRORS = 20
_MAX_CLOSED = 1024


@dataclass(slots=True, eq=False)
class _Open:
    """An open LlamaIndex span, as much of it as attribution and routing need."""

    anchor: Span | None  # where calls and child spans attach (our span, or the nearest one above)
    own: Span | None  # the tokenspy span opened for it, if it is a meaningful one
    owner: TokenSpyHandler | None  # a handler on this component's callback manager, or inherited
    # This component's own callback manager reaches tokenspy (a handler, or set_handler's forwarder):
    # callbacks follow.
    legacy: bool
    role: Role
    root: str
    enclosing: LLMCall | None  # the LLM call this span runs inside (a CustomLLM's chat -> complete)
    instance: Any = None  # LLM/embedding components only: a fallback for the model name
    embedding: EmbeddingCall | None = None  # the embedding call open in this span
    entered: Any = None  # a tool's: the token of making its span current for the tool's code
    agents: bool = False  # an `AgentWorkflow` run: its steps go under the agent whose turn it is
    turn: Span | None = None  # such a run's: the span of that agent (`Tap._agent_turn`)

    def end(self, error: BaseException | None = None) -> None:
        if self.turn is not None:
            self.turn.end(error)
        if self.own is not None:
            self.own.end(error)


def _owner_on(instance: Any) -> tuple[TokenSpyHandler | None, bool]:
    """The first `TokenSpyHandler` on the component's callback manager, and whether that manager
    reaches tokenspy at all (such a handler, or `set_handler`'s forwarder still installed): its
    callbacks then follow the dispatcher's events, and can raise a budget refusal into the caller.

    The forwarder owns nothing: it stands for the `set_handler` handler, the last resort
    (`Tap._owner`). Components built from `Settings` carry it (they share its handler list), so
    counting it would let it beat a handler the user gave an enclosing component (a query engine's),
    and split one query's records between two handlers.
    """
    handler_of, forwards = TAP.handler_of, TAP.forwards
    if handler_of is None or forwards is None:  # set when handler.py is imported: any TokenSpyHandler
        return None, False
    try:
        handlers = getattr(payloads.get(instance, "callback_manager"), "handlers", None)
    except Exception:  # a property that raises on some component: it simply has none
        return None, False
    if not isinstance(handlers, list):
        return None, False
    follows = False
    for candidate in handlers:
        handler = handler_of(candidate)
        if handler is not None:
            return handler, True
        follows = follows or forwards(candidate)
    return None, follows


def _swap_in(handlers: list[Any], placeholder_type: type, ours: Any) -> Any:
    """Put `ours` in place of the root dispatcher's no-op placeholder handler; return it (None: none).

    LlamaIndex's root dispatcher starts with a `NullEventHandler` and a `NullSpanHandler` that do
    nothing: dispatching to one costs ~2,000 instructions per event (two events per streamed token),
    as much as our handler's own work. Nothing reads them (LlamaIndex only iterates the lists), so
    ours takes the placeholder's slot (same list, same length; handlers added before or after keep
    running) and `_swap_out` puts the very same placeholder back.
    """
    for index, handler in enumerate(handlers):
        if type(handler) is placeholder_type:
            handlers[index] = ours  # in place: a dispatch iterating the list sees one or the other
            return handler
    return None


def _swap_out(handlers: list[Any], ours: Any, placeholder: Any) -> list[Any]:
    """`handlers` without `ours`, the placeholder back in its slot (unless the list was replaced)."""
    kept: list[Any] = []
    for handler in handlers:
        if handler is not ours:
            kept.append(handler)
        elif placeholder is not None:
            kept.append(placeholder)
            placeholder = None
    return kept


def _deepest(anchor: Span | None) -> Span | None:
    """`anchor`, or the current tokenspy span if that one lies below it.

    The current span is deeper when a lazily-started stream runs under the span that produced it
    (`spans.keep_parent_for_stream`) while LlamaIndex's own context points higher up (a chat engine
    consuming a query engine's stream in its worker thread), or when a session opens inside.
    """
    current = current_span()
    if anchor is None or current is None or current is anchor:
        return current if anchor is None else anchor
    node = current.parent
    while node is not None:
        if node is anchor:
            return current
        node = node.parent
    return anchor


class Tap:
    """Routes dispatcher events to tokenspy calls and spans; state is per open span and per call."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[str, _Open] = {}
        # Recently closed spans: a child may start after its parent returned (a worker thread or a
        # generator the parent handed back); it still attaches there. Bounded.
        self._closed: OrderedDict[str, tuple[Span | None, TokenSpyHandler | None]] = OrderedDict()
        self._roots: dict[str, set[str]] = {}
        self._llm: dict[str, LLMCall] = {}
        # The span ids in `_llm` of completion calls of their own (not merged into a chat): while
        # there is none, a completion chunk (a CustomLLM's chat -> complete) is dropped unread.
        self._completions: set[str] = set()
        self._refused: dict[str, BudgetExceededError] = {}
        # The handler owning the calls of a stream that runs under a span after it exited
        # (`spans.keep_parent_for_stream`): LlamaIndex gives those calls no parent, so the span
        # carries the owner of the component that produced the stream. Weak: as long as the span lives.
        self.stream_owners: weakref.WeakKeyDictionary[Span, TokenSpyHandler] = weakref.WeakKeyDictionary()
        self.global_owner: TokenSpyHandler | None = None
        # What a callback-manager entry is (`handler.handler_of`, `handler.forwards`): a handler of ours,
        # or `set_handler`'s forwarder.
        self.handler_of: Callable[[Any], TokenSpyHandler | None] | None = None
        self.forwards: Callable[[Any], bool] | None = None
        # While `set_handler` is in force: the `Settings.callback_manager` its forwarder was put in, and
        # what puts it in another one the user assigns (`handler.follow_settings`).
        self.settings_manager: Any = None
        self.follow_settings: Callable[[], None] | None = None
        self.internal_errors: list[BaseException] = []
        self._event_handler = _EventHandler()
        self._event_handler._tap = self
        self._span_handler = _SpanHandler()
        self._span_handler._tap = self
        # The root dispatcher's no-op handlers that ours stand in for while installed (`_swap_in`).
        self._span_placeholder: BaseSpanHandler[Any] | None = None
        self._event_placeholder: BaseEventHandler | None = None

    # -- registration ---------------------------------------------------------------------------
    @property
    def installed(self) -> bool:
        return self._span_handler in get_dispatcher().span_handlers

    def install(self) -> None:
        root = get_dispatcher()
        with self._lock:
            if self._span_handler not in root.span_handlers:
                self._span_placeholder = _swap_in(root.span_handlers, NullSpanHandler, self._span_handler)
                if self._span_placeholder is None:
                    root.add_span_handler(self._span_handler)
            if self._event_handler not in root.event_handlers:
                self._event_placeholder = _swap_in(root.event_handlers, NullEventHandler, self._event_handler)
                if self._event_placeholder is None:
                    root.add_event_handler(self._event_handler)

    def uninstall(self) -> None:
        """Remove both handlers and forget every open span and call (calls in flight end aborted)."""
        root = get_dispatcher()
        with self._lock:
            root.span_handlers = _swap_out(root.span_handlers, self._span_handler, self._span_placeholder)
            root.event_handlers = _swap_out(root.event_handlers, self._event_handler, self._event_placeholder)
            self._span_placeholder = self._event_placeholder = None
            calls = list(self._llm.values())
            self._open.clear()
            self._closed.clear()
            self._roots.clear()
            self._llm.clear()
            self._completions.clear()
            self._refused.clear()
        for state in calls:
            with guarded("llamaindex uninstall"):
                state.error(GeneratorExit())

    # -- what the legacy path asks ----------------------------------------------------------------
    def tracks(self, span_id: str | None) -> bool:
        """Whether the LLM/embedding call running in this LlamaIndex span is recorded here already."""
        if not span_id:
            return False
        if span_id in self._llm:
            return True
        info = self._open.get(span_id)
        return info is not None and info.embedding is not None

    def take_refusal(self, span_id: str | None) -> BudgetExceededError | None:
        if not span_id or span_id not in self._refused:  # the common case: no lock
            return None
        with self._lock:
            return self._refused.pop(span_id, None)

    def owner_of(self, span_id: str | None) -> TokenSpyHandler | None:
        """The handler the open span's calls belong to by the component rule (`_owner_on`, inherited
        from enclosing components), not counting `set_handler`'s; None if there is none or the span is
        unknown here."""
        info = self._open.get(span_id) if span_id else None
        return info.owner if info is not None else None

    def anchor(self, span_id: str | None) -> Span | None:
        info = self._open.get(span_id) if span_id else None
        return info.anchor if info is not None else current_span()

    # -- guarded entry ----------------------------------------------------------------------------
    def run(self, where: str, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:
            self.failed(where, exc)

    def failed(self, where: str, exc: Exception) -> None:
        """`guarded(where)`'s except clause, called from inside an `except` block."""
        if not isinstance(exc, BudgetExceededError):
            try:
                log_internal_error(where, exc)
                return
            except Exception:  # strict mode re-raises: keep what LlamaIndex is about to swallow
                pass
        if len(self.internal_errors) < _MAX_KEPT_ERRORS:
            self.internal_errors.append(exc)
        raise exc

    # -- spans --------------------------------------------------------------------------------------
    def span_enter(self, id_: str, instance: Any, parent_id: str | None, tags: dict[str, Any] | None,
                   arguments: dict[str, Any] | None = None) -> None:
        if (self.global_owner is not None and Settings._callback_manager is not self.settings_manager
                and self.follow_settings is not None):
            # Assigned after `set_handler`: components built from it (before this span included) share
            # its handler list, so putting the forwarder in now reaches them before their callbacks fire.
            self.follow_settings()
        parent = self._open.get(parent_id) if parent_id else None
        if parent is not None:
            anchor = _deepest(parent.anchor)
            owner = parent.owner
            if anchor is not parent.anchor and self.stream_owners:
                # A stream read in this span (a chat engine reading a query engine's): the component
                # that produced the stream is the nearer one.
                owner = self._stream_owner(anchor, parent.anchor) or owner
            enclosing = self._llm.get(parent_id or "") or parent.enclosing
            root = parent.root
        else:
            closed = self._closed.get(parent_id) if parent_id else None
            if closed is not None:  # a late child: it inherits where to attach, and the handler
                closed_anchor, owner = closed
                anchor = _deepest(closed_anchor)
                if anchor is not closed_anchor and self.stream_owners:
                    owner = self._stream_owner(anchor, closed_anchor) or owner
                enclosing = self._llm.get(parent_id or "")
            else:
                # A root LlamaIndex span attaches where a user's span would: under the framework level
                # whose code runs here (a LangGraph node calling a query engine), else the current span.
                # Under a stream's span (a streamed answer read after its query returned), it belongs
                # to the handler of the component that produced the stream.
                anchor, enclosing = user_span_parent(), None
                owner = self._stream_owner(anchor, None) if self.stream_owners else None
            # A root of its own for bookkeeping (a late child's parent's root may be gone already).
            root = id_
        if enclosing is None:
            enclosing = self._running_stream()
        role = classify(id_, instance, tags)
        if parent is not None and parent.agents and isinstance(role, tuple) and role[1] == "step":
            anchor = self._agent_turn(parent, agent_named(arguments)) or anchor
        here, legacy = _owner_on(instance) if instance is not None else (None, False)
        own = None
        if isinstance(role, tuple):
            name, kind = role
            # A span named like its parent (FunctionTool.__call__ -> call, recursion) adds no level.
            if anchor is None or anchor.name != name or anchor.kind != kind:
                handler = here or owner or self.global_owner  # `set_handler`'s: the last resort
                own = Span(name, kind, anchor, attributes={"llamaindex.span_id": id_},
                           home=None if handler is None else handler.span_home)
        info = _Open(own or anchor, own, here or owner, legacy, role, root, enclosing,
                     instance if role == "llm" or role == "embedding" else None)
        if own is not None and own.kind == "agent":
            info.agents = runs_agents(instance)  # its own span is the run's (`classify`)
        if own is not None and own.kind == "tool":
            # What the tool's code does outside LlamaIndex (a LangChain model, a raw SDK call, a
            # `profile`) attaches to it. A tool call runs to completion where it was entered: its exit
            # comes in the same context.
            info.entered = enter_span(own)
        with self._lock:
            self._open[id_] = info
            siblings = self._roots.get(root)
            if siblings is None:
                self._roots[root] = {id_}
            else:
                siblings.add(id_)

    def _stream_owner(self, span: Span | None, stop: Span | None) -> TokenSpyHandler | None:
        """The owner kept for the nearest stream span from `span` up to (not including) `stop`."""
        owners = self.stream_owners
        while span is not None and span is not stop:
            owner = owners.get(span)
            if owner is not None:
                return owner
            span = span.parent
        return None

    def _agent_turn(self, run: _Open, agent: str | None) -> Span | None:
        """The span of the agent whose turn it is in a multi-agent run, for a step of that run.

        `agent`: the name the step's input event gives (`setup_agent`, `run_agent_step`,
        `parse_agent_output`); the tool steps give none and run for the agent whose turn it already
        is. A handoff starts the next agent's turn, which ends the last one's span. None before
        the first agent's turn (`init_run`): the step stays under the workflow.
        """
        with self._lock:
            last = run.turn
            if agent is None or (last is not None and last.name == agent):
                return last
            turn = run.turn = Span(agent, "agent", run.anchor)
        if last is not None:
            last.end()
        return turn

    def _running_stream(self) -> LLMCall | None:
        """The streamed LLM call whose generator is running the caller, if any.

        A span entered by code inside that generator belongs to that call, as a span entered while
        the call's own span is open does: a CustomLLM's `astream_chat` calls its `stream_chat`, and a
        wrapper LLM's stream another LLM's, only once their generator is read, when LlamaIndex has
        exited the outer span and gives the inner one no link to it. Only looked for while a call
        is active in this context (an outer stream's call is, from its first read to its first
        chunk: `stream_scope`).
        """
        if active_call() is None:  # the common case: no call in flight in this context
            return None
        with self._lock:
            streams = [state for state in self._llm.values() if state.finalizer is not None]
        return next((state for state in streams if state.producing()), None)

    def span_exit(self, id_: str, result: Any) -> None:
        info = self._close(id_)
        state = self._llm.get(id_)
        if state is not None:
            if inspect.isgenerator(result) or inspect.isasyncgen(result):
                self._watch_stream(id_, state, result)
                call = state.call
                # Active since its start event (a request sent before the generator is handed back
                # joins it); from now on only from the stream's first read to its first chunk.
                if isinstance(call, Call) and activate_on_first_read(result, call):
                    call.deactivate()
            else:  # non-stream: the end event came first; this only covers a missed one
                self._pop_llm(id_)
                if not state.ended:
                    state.end(result if hasattr(result, "raw") else None)
        if info is None:
            return
        if info.embedding is not None and not info.embedding.ended:
            info.embedding.call.finish()
        if info.own is not None and keep_parent_for_stream(result, info.own) and info.owner is not None:
            self.stream_owners[info.own] = info.owner
        info.end()

    def span_drop(self, id_: str, err: BaseException | None) -> None:
        info = self._close(id_)
        if id_ in self._refused:
            with self._lock:
                self._refused.pop(id_, None)
        state = self._pop_llm(id_)
        if state is not None and not state.ended:
            # A non-stream error (e.g. HTTP 429) fires no ExceptionEvent: only this drop.
            state.error(err)
        if info is None:
            return
        if info.embedding is not None:
            info.embedding.error(err)
        info.end(err)

    def _close(self, id_: str) -> _Open | None:
        leftovers: list[_Open] = []
        with self._lock:
            info = self._open.pop(id_, None)
            if info is None:
                return None
            if info.entered is not None and info.own is not None:
                exit_span(info.entered, info.own)
            if info.root == id_:
                # The root ended: forget any descendant whose exit never came (bounded memory).
                for leftover in self._roots.pop(id_, ()):
                    lost = self._open.pop(leftover, None)
                    if lost is not None:
                        leftovers.append(lost)
            else:
                siblings = self._roots.get(info.root)
                if siblings is not None:
                    siblings.discard(id_)
            # Kept for late children: what they inherit, not the component.
            self._closed[id_] = (info.anchor, info.owner)
            if len(self._closed) > _MAX_CLOSED:
                self._closed.popitem(last=False)
        for lost in leftovers:
            lost.end()
        return info

    def _pop_llm(self, id_: str | None) -> LLMCall | None:
        if id_ not in self._llm:  # most span ids are not LLM calls: no lock for them
            return None
        with self._lock:
            self._completions.discard(id_)
            return self._llm.pop(id_, None)

    def _watch_stream(self, id_: str, state: LLMCall, gen: Any) -> None:
        # A stream nobody finishes or closes ends when its generator is collected (weakref callbacks
        # run before the generator's own close, so the consumed text is all there already), or at
        # exit (`end_streams`) if it is still referenced then. weakref's own exit pass is not used:
        # it runs after the stores' exit flush (it is registered when the process's first finalizer
        # is made, usually by an import), and the record would be lost.
        finalizer = weakref.finalize(gen, self._stream_collected, id_, state)
        finalizer.atexit = False
        state.finalizer = finalizer

    def end_streams(self) -> None:
        """End every stream still open, as if its generator had been collected (at exit)."""
        with self._lock:
            finalizers = [state.finalizer for state in self._llm.values() if state.finalizer is not None]
        for finalizer in finalizers:
            finalizer()  # runs `_stream_collected` once, unless the stream ended meanwhile

    def _stream_collected(self, id_: str, state: LLMCall) -> None:
        if sys.is_finalizing():
            # Interpreter teardown: the exit pass ended every stream open then; nothing (pricing
            # included) is safe to use now.
            return

        def collected() -> None:
            with self._lock:
                if self._llm.get(id_) is state:
                    del self._llm[id_]
                    self._completions.discard(id_)
            if not state.ended:
                state.discarded(state.started)

        self.run("llamaindex stream collected", collected)

    # -- events -------------------------------------------------------------------------------------
    # One method per event kind, found by `type(event)` in `_ROUTES` by `_EventHandler.handle` (an
    # isinstance chain over the event classes costs more than handling a streamed chunk).
    def _chunk(self, event: Any) -> None:
        state = self._llm.get(event.span_id)
        if state is not None:
            state.chunk(event.response)

    def _chat_start(self, event: Any) -> None:
        self._llm_start(event.span_id, event.model_dict, event.messages, event.additional_kwargs, chat=True)

    def _completion_start(self, event: Any) -> None:
        self._llm_start(event.span_id, event.model_dict, event.prompt, event.additional_kwargs, chat=False)

    def _llm_end(self, event: Any) -> None:
        state = self._pop_llm(event.span_id)
        if state is not None:
            state.end(event.response)

    def _exception(self, event: Any) -> None:
        state = self._pop_llm(event.span_id)
        if state is not None:
            state.error(event.exception)

    def _embedding_start_event(self, event: Any) -> None:
        self._embedding_start(event.span_id, event.model_dict)

    def _embedding_end(self, event: Any) -> None:
        info = self._open.get(event.span_id)
        if info is not None and info.embedding is not None:
            info.embedding.end(event.chunks)

    def _owner(self, info: _Open | None) -> TokenSpyHandler | None:
        return (info.owner if info is not None else None) or self.global_owner

    def _llm_start(self, span_id: str | None, model_dict: dict[str, Any], prompt: Any, extra: Any, *,
                   chat: bool) -> None:
        if not span_id or span_id in self._llm:
            return
        info = self._open.get(span_id)
        instance = info.instance if info is not None else None
        state: LLMCall | None = None
        if info is not None and info.enclosing is not None and not info.enclosing.ended:
            # None: a wrapper's later model call, a provider call of its own.
            state = inner_llm(info.enclosing, model_dict, instance, prompt if chat else None,
                              payloads.operation_of(chat, model_dict))
        if state is None:
            owner = self._owner(info)
            if owner is None:
                return
            try:
                state = start_llm(owner, model_dict, instance, prompt=prompt, extra=extra, chat=chat,
                                  streamed=payloads.is_stream_method(span_id),
                                  parent=info.anchor if info is not None else user_span_parent(),
                                  enforce_budget=info is not None and info.legacy)
            except BudgetExceededError as refusal:
                # Raised from here LlamaIndex would swallow it; the callback handler that runs
                # next, on the same thread, raises it into the caller before the request is sent.
                with self._lock:
                    self._refused[span_id] = refusal
                return
        with self._lock:
            self._llm[span_id] = state
            if not chat and not state.nested:
                self._completions.add(span_id)

    def _embedding_start(self, span_id: str | None, model_dict: dict[str, Any]) -> None:
        info = self._open.get(span_id or "")
        if info is None or not span_id:
            return
        if info.embedding is not None and not info.embedding.ended:
            info.embedding.add_batch()  # an async batch call: its batches are sent together
            return
        owner = self._owner(info)
        if owner is None:
            return
        try:
            info.embedding = EmbeddingCall(owner, payloads.model_of(model_dict, info.instance),
                                           payloads.provider_of(model_dict, info.instance), info.anchor,
                                           info.legacy)
        except BudgetExceededError as refusal:
            with self._lock:
                self._refused[span_id] = refusal


class _EventHandler(BaseEventHandler):
    _tap: Any = PrivateAttr(default=None)

    @classmethod
    def class_name(cls) -> str:
        return "TokenSpyEventHandler"

    def handle(self, event: Any, **kwargs: Any) -> None:
        # Tap.run inlined, and the in-progress events (one per streamed token, two for a CustomLLM's
        # chat -> complete) handled right here in as few steps as possible: this is tokenspy's
        # per-token cost. Pydantic sends every attribute read through its `__getattr__` slot; the
        # fields are in `__dict__`, and the events' validation guarantees the response types.
        # A chunk with more than a text delta, or the first one, goes to `LLMCall.chunk`.
        # `_call_of` and `_COMPLETIONS` are TAP's own dict method and set, read as globals.
        try:
            cls = type(event)
            chat = cls is LLMChatInProgressEvent
            if chat or cls is LLMCompletionInProgressEvent:
                if not chat and not _COMPLETIONS:  # only merged ones (a CustomLLM's chat): nothing to read
                    return
                fields = event.__dict__
                state = _call_of(fields["span_id"])
                if state is not None:
                    response = fields["response"]
                    chunk = response.__dict__
                    if (state.plain and chunk["raw"] is None and not chunk["additional_kwargs"]
                            and not (chat and chunk["message"].additional_kwargs)):
                        delta = chunk["delta"]
                        if delta:
                            state.text.append(delta)
                    else:
                        state.chunk(response)
                return
            route = _ROUTES.get(cls, _UNKNOWN)
            if route is _UNKNOWN:
                route = _route_of(cls)
            if route is not None:
                route(TAP, event)
        except Exception as exc:
            TAP.failed("llamaindex event", exc)


class _SpanHandler(BaseSpanHandler[BaseSpan]):
    """Overrides the enter/exit/drop notices directly: the base class's span objects are not needed."""

    _tap: Any = PrivateAttr(default=None)

    @classmethod
    def class_name(cls) -> str:
        return "TokenSpySpanHandler"

    # Tap.run inlined (a frame less on each of the several spans of every LlamaIndex call).
    def span_enter(self, id_: str, bound_args: inspect.BoundArguments, instance: Any = None,
                   parent_id: str | None = None, tags: dict[str, Any] | None = None, **kwargs: Any) -> None:
        try:
            # A step's arguments tell which agent it runs for, in a multi-agent workflow.
            TAP.span_enter(id_, instance, parent_id, tags, bound_args.arguments if tags else None)
        except Exception as exc:
            TAP.failed("llamaindex span enter", exc)

    def span_exit(self, id_: str, bound_args: inspect.BoundArguments, instance: Any = None,
                  result: Any = None, **kwargs: Any) -> None:
        try:
            TAP.span_exit(id_, result)
        except Exception as exc:
            TAP.failed("llamaindex span exit", exc)

    def span_drop(self, id_: str, bound_args: inspect.BoundArguments, instance: Any = None,
                  err: BaseException | None = None, **kwargs: Any) -> None:
        try:
            TAP.span_drop(id_, err)
        except Exception as exc:
            TAP.failed("llamaindex span drop", exc)

    def new_span(self, id_: str, bound_args: inspect.BoundArguments, instance: Any = None,
                 parent_span_id: str | None = None, tags: dict[str, Any] | None = None,
                 **kwargs: Any) -> BaseSpan | None:
        return None

    def prepare_to_exit_span(self, id_: str, bound_args: inspect.BoundArguments, instance: Any = None,
                             result: Any = None, **kwargs: Any) -> BaseSpan | None:
        return None

    def prepare_to_drop_span(self, id_: str, bound_args: inspect.BoundArguments, instance: Any = None,
                             err: BaseException | None = None, **kwargs: Any) -> BaseSpan | None:
        return None


_Route = Callable[[Tap, Any], None]
# Most specific first, as in an isinstance chain: an event class is routed by the first entry it is
# a subclass of (SparseEmbeddingStartEvent is an EmbeddingStartEvent).
_ROUTE_ORDER: tuple[tuple[type, _Route], ...] = (
    (LLMChatInProgressEvent, Tap._chunk),
    (LLMCompletionInProgressEvent, Tap._chunk),
    (LLMChatStartEvent, Tap._chat_start),
    (LLMCompletionStartEvent, Tap._completion_start),
    (LLMChatEndEvent, Tap._llm_end),
    (LLMCompletionEndEvent, Tap._llm_end),
    (ExceptionEvent, Tap._exception),
    (EmbeddingStartEvent, Tap._embedding_start_event),
    (EmbeddingEndEvent, Tap._embedding_end),
    (SparseEmbeddingEndEvent, Tap._embedding_end),
)
_UNKNOWN: Any = object()
_ROUTES: dict[type, _Route | None] = {}
_MAX_ROUTES = 1024


def _route_of(cls: type) -> _Route | None:
    route = next((fn for base, fn in _ROUTE_ORDER if issubclass(cls, base)), None)
    if len(_ROUTES) < _MAX_ROUTES:  # bounded, for a program that makes event classes on the fly
        _ROUTES[cls] = route
    return route


TAP = Tap()


def _end_streams_at_exit() -> None:
    TAP.run("llamaindex exit", TAP.end_streams)


# Before the stores' exit flush, and at exit without a store too (a second pass finds nothing open).
before_exit_flush(_end_streams_at_exit)
atexit.register(_end_streams_at_exit)
# The per-token path's lookups, bound once: `Tap` only ever mutates these two in place.
_call_of: Callable[[str], LLMCall | None] = TAP._llm.get
_COMPLETIONS = TAP._completions
