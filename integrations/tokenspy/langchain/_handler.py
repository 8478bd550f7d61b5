"""`TokenSpyHandler`: LangChain callback events translated into tokenspy calls and spans.

Every LangChain model run becomes one core `Call` (exact provider usage when anyone reported it, the
core's estimate otherwise); chains, tools, retrievers and LangGraph nodes become spans, so the report
shows each level of an agent with its own cost. A streamed chunk costs an identity check and a list
append: no tokenization per token (the core tokenizes once, at the end, and only if it must).

Two class settings matter (reference §4.2):
- `run_inline = True`: in async runs LangChain otherwise calls sync handlers in executor threads with
  a copied context, where `current_span()` is not the caller's and `call.activate()` never reaches
  the SDK call underneath. Inline, every event runs in the caller's context, in order.
- `raise_error = True`: LangChain swallows handler errors otherwise, and a `BudgetExceededError` must
  stop the model call. Every callback body is guarded, so nothing else can escape.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables.config import var_child_runnable_config

from tokenspy_core import Call, Tracker, default_tracker
from tokenspy_core import call as core_call
from tokenspy_core._guard import _passthrough, guard, guarded, log_internal_error
from tokenspy_core.at_exit import end_open_at_exit
from tokenspy_core.call import MergedCall, _active, config
from tokenspy_core.spans import Home, Span, current_span, enclosing_levels, enter_span, exit_span
from tokenspy_core.tracker import PRICES, joined_home

from .. import _instrument
from .._api import TrackerView
from . import _agenerate
from . import _extract as ex
from ._global import set_global
from ._runs import Run, RunTree, chain_kind, entered_runs, task_key

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage
    from langchain_core.outputs import LLMResult

__all__ = ["TokenSpyHandler"]

logger = logging.getLogger("tokenspy")

# Which handler records a model run for a given tracker. Two different TokenSpyHandlers on one run
# that feed the same tracker (a global one plus a per-request one) would otherwise count it twice;
# the first to see the run records it. `dict.setdefault` and `pop` are atomic: no lock needed.
_owners: dict[tuple[int, int], TokenSpyHandler] = {}
# Runs whose span a handler made current (see _enter): the first handler's level is the run's.
_entered: dict[int, Span] = {}
# The call made active for a model run (see _start_model): a second handler's record of the run joins it.
_run_calls: dict[int, Call] = {}
_NO_RUN: tuple[UUID | None, Callable[[str], None], Run | None] = (None, lambda token: None, None)
_NO_PARAMS: Mapping[str, Any] = {}
_warned_stream_usage = False


class TokenSpyHandler(TrackerView, BaseCallbackHandler):
    """Tracks tokens and cost of every LangChain / LangGraph model call it sees.

        handler = TokenSpyHandler()                    # records into tokenspy's shared tracker
        chain.invoke(x, config={"callbacks": [handler]})
        tokenspy.set_handler(handler)                  # or: every run in the process
        handler.report()                               # what this handler saw

    `TokenSpyHandler(tracker=Tracker())` records into a tracker of your own instead.
    """

    raise_error = True
    run_inline = True
    _tokenspy_framework = "langchain"

    def __init__(self, tracker: Tracker | None = None) -> None:
        super().__init__()
        if tracker is not None and not isinstance(tracker, Tracker):
            raise TypeError(f"tracker must be a tokenspy Tracker, got {type(tracker).__name__}")
        PRICES.preload()  # now, not in the thread of the first call's end (see `PriceBook.preload`)
        self._tracker = tracker
        # The handler's own view: every record it produced, whichever tracker it feeds.
        self._view = tracker if tracker is not None else Tracker(name="langchain")
        self._sinks = () if tracker is not None else (self._view,)
        self._runs = RunTree(Home(tracker, self._sinks))
        self._last = _NO_RUN  # the run of the latest streamed chunk
        # Like a profile or session, a handler lets the SDK layer see the calls it tracks: the exact
        # provider usage then merges into this handler's record (one record per provider call), also
        # where LangChain has none (ChatOpenAI streams with a base_url, classic Anthropic streams).
        # `tokenspy.init(auto_instrument=False)` turns that off.
        with guarded("langchain auto-instrument"):
            _instrument.auto_instrument()
        with guarded("langchain agenerate hook"):
            _agenerate.install(TokenSpyHandler._cancelled)

    @property
    def open_runs(self) -> int:
        """Runs in flight. 0 between requests: nothing is kept per finished run."""
        return len(self._runs)

    # -- tokenspy.set_handler protocol ---------------------------------------------------------
    def _install_global(self) -> None:
        set_global(self)

    @classmethod
    def _uninstall_global(cls) -> None:
        set_global(None)

    # -- chains, tools, retrievers -------------------------------------------------------------
    @guard("langchain on_chain_start")
    def on_chain_start(self, serialized: dict[str, Any] | None, inputs: Any, *, run_id: UUID,
                       parent_run_id: UUID | None = None, tags: list[str] | None = None,
                       metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        name = _run_name(serialized, kwargs)
        kind = chain_kind(name, tags=tags, metadata=metadata, run_type=kwargs.get("run_type"),
                          parent=self._runs.get(parent_run_id))
        attributes = None
        if kind == "node" and metadata:
            attributes = {"langgraph_step": metadata.get("langgraph_step")}
        run = self._runs.start(run_id, parent_run_id, name=name, kind=kind, task=task_key(metadata),
                               attributes=attributes)
        if parent_run_id is None and run is not None:
            # A task cancelled while LangChain dispatches a root's start (an `astream_events` given up
            # by a timeout) fires no end for it: the task's cancellation ends it, at the latest.
            run.watch = _watch(self, run_id)

    @guard("langchain on_chain_end")
    def on_chain_end(self, outputs: Any, *, run_id: UUID, parent_run_id: UUID | None = None,
                     **kwargs: Any) -> None:
        self._end(run_id, None)

    @guard("langchain on_chain_error")
    def on_chain_error(self, error: BaseException, *, run_id: UUID, parent_run_id: UUID | None = None,
                       **kwargs: Any) -> None:
        self._end(run_id, error)

    @guard("langchain on_tool_start")
    def on_tool_start(self, serialized: dict[str, Any], input_str: str, *, run_id: UUID,
                      parent_run_id: UUID | None = None, tags: list[str] | None = None,
                      metadata: dict[str, Any] | None = None, inputs: dict[str, Any] | None = None,
                      **kwargs: Any) -> None:
        # The tool's name is in `serialized` (kwargs["name"] is None at start, reference §4.1).
        name = _run_name(serialized, kwargs) or "tool"
        _enter(self, self._runs.start(run_id, parent_run_id, name=name, kind="tool", task=task_key(metadata)),
               run_id)

    @guard("langchain on_tool_end")
    def on_tool_end(self, output: Any, *, run_id: UUID, parent_run_id: UUID | None = None,
                    **kwargs: Any) -> None:
        self._end(run_id, None)

    @guard("langchain on_tool_error")
    def on_tool_error(self, error: BaseException, *, run_id: UUID, parent_run_id: UUID | None = None,
                      **kwargs: Any) -> None:
        self._end(run_id, error)

    @guard("langchain on_retriever_start")
    def on_retriever_start(self, serialized: dict[str, Any], query: str, *, run_id: UUID,
                           parent_run_id: UUID | None = None, tags: list[str] | None = None,
                           metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        name = _run_name(serialized, kwargs) or "retriever"
        _enter(self, self._runs.start(run_id, parent_run_id, name=name, kind="retriever", task=task_key(metadata)),
               run_id)

    @guard("langchain on_retriever_end")
    def on_retriever_end(self, documents: Sequence[Any], *, run_id: UUID, parent_run_id: UUID | None = None,
                         **kwargs: Any) -> None:
        self._end(run_id, None)

    @guard("langchain on_retriever_error")
    def on_retriever_error(self, error: BaseException, *, run_id: UUID, parent_run_id: UUID | None = None,
                           **kwargs: Any) -> None:
        self._end(run_id, error)

    # on_agent_action / on_agent_finish: only the legacy AgentExecutor fires them, between the
    # AgentExecutor chain run and the tool run that follows; both of those are spans already.

    # -- model runs ----------------------------------------------------------------------------
    # The model-run callbacks run once per model call: guarded inline (a decorator is a call more).
    def on_chat_model_start(self, serialized: dict[str, Any], messages: list[list[BaseMessage]], *,
                            run_id: UUID, parent_run_id: UUID | None = None, tags: list[str] | None = None,
                            metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        # LangChain sends one message list per run; the prompt is kept only for estimation.
        try:
            self._start_model(serialized, messages[0] if messages else None, run_id, parent_run_id,
                              tags, metadata, kwargs)
        except Exception as exc:
            _internal_error("langchain on_chat_model_start", exc)

    def on_llm_start(self, serialized: dict[str, Any], prompts: list[str], *, run_id: UUID,
                     parent_run_id: UUID | None = None, tags: list[str] | None = None,
                     metadata: dict[str, Any] | None = None, **kwargs: Any) -> None:
        try:
            self._start_model(serialized, prompts[0] if prompts else None, run_id, parent_run_id, tags,
                              metadata, kwargs, operation="text_completion")
        except Exception as exc:
            _internal_error("langchain on_llm_start", exc)

    def _start_model(self, serialized: Any, prompt: Any, run_id: UUID, parent_run_id: UUID | None,
                     tags: list[str] | None, metadata: Mapping[str, Any] | None, kwargs: Mapping[str, Any],
                     operation: str = "chat") -> None:
        params = kwargs.get("invocation_params") or _NO_PARAMS
        name = kwargs.get("name")  # set only when the model run itself was given a run_name
        # A chain named after the model it runs may wrap it (`model.with_retry()`): not when the model
        # is a step of it (a sequence, a map, a branch), as in a named `prompt | model | parser`.
        wrapped = parent_run_id is not None and type(serialized) is dict and not (tags and _is_step(tags))
        run = self._runs.start(run_id, parent_run_id, name=name, kind="step" if name else None,
                               task=task_key(metadata), model=serialized.get("name") if wrapped else None)
        if run is None:
            return
        tracker = self._tracker if self._tracker is not None else default_tracker()
        key = (run_id.int, id(tracker))
        if _owners.setdefault(key, self) is not self:
            return  # another TokenSpyHandler feeding the same tracker records this run
        run.owner_key = key
        run.thread = threading.current_thread()  # (a dict read) see _running_elsewhere
        outer = _active.get()
        if (outer is not None and outer.status == "active" and kwargs.get("batch_size", 1) == 1
                and outer not in MergedCall._batch and outer is not _run_calls.get(run_id.int)
                and outer.adopt_inner()):
            # A model called inside another model's call (a wrapper or router model, another framework's
            # adapter for LangChain models): one provider call, the outer call's record. The outer stays
            # active, so the SDK layer underneath merges into it too. Only the first such model: a
            # wrapper's second model call is a provider call of its own.
            run.call = MergedCall(outer)  # type: ignore[assignment]
            _note_agenerate_run(self, run_id)
            return
        try:
            call = Call(tracker, ex.request_model(serialized, params, metadata), provider=ex.provider_of(metadata),
                        prompt=prompt, streamed=bool(params.get("stream") or params.get("streaming")),
                        parent=run.attach, sinks=self._sinks, tools=params.get("tools") or params.get("functions"),
                        operation=operation)
        except BaseException as exc:  # BudgetExceededError: the model call will not be sent
            self._end(run_id, exc)
            raise
        run.call = call
        _note_agenerate_run(self, run_id)
        if parent_run_id is None:
            # A model called directly in a task that gets cancelled (`asyncio.wait_for(llm.ainvoke(...))`):
            # LangChain's `agenerate` reports no error for it (its `gather` raises past the callbacks).
            run.watch = _watch(self, run_id)
        # One record when the SDK call underneath is intercepted too: the SDK layer merges into the
        # call active in this context.
        if kwargs.get("batch_size", 1) == 1:
            # Another TokenSpyHandler on this run, feeding another tracker, records it too: its call gets
            # the SDK layer's usage as well.
            first = _run_calls.setdefault(run_id.int, call)
            if first is call:
                call.activate()
            else:
                call.activate(alongside=first)
        else:
            # A generate() with several prompts starts all its runs, then sends their requests: one per
            # chat message list, one for all the prompts of a completion LLM. Which run a request belongs to
            # cannot be told here, and LangChain reports each run's usage itself: the SDK layer's records
            # of them are dropped.
            run.batched = True
            call.activate(batch=True)

    def on_llm_new_token(self, token: Any, *, chunk: Any = None, run_id: UUID, parent_run_id: UUID | None = None,
                         tags: list[str] | None = None, **kwargs: Any) -> None:
        # Once per streamed chunk: for the chunks after the first, an identity check and the append of
        # the run's text list, bound once (the text is only needed if the stream is cut short; on_llm_end
        # brings the whole message, usage included). Content blocks (a list) are appended as they are
        # and read as text only if that text is ever needed (`_streamed_text`). Anything else takes the
        # path below. Every keyword LangChain passes is named: binding one into **kwargs costs more
        # than this whole body.
        last_id, append, _ = self._last
        if last_id is run_id and token:
            append(token)
        else:  # an empty token may be a tool-call delta: its name and arguments are output too
            self._new_token(token, chunk, run_id)

    def _new_token(self, token: Any, chunk: Any, run_id: UUID) -> None:
        try:
            last_id, append, run = self._last
            if last_id is not run_id:  # UUID hashing is slow: consecutive chunks share one run_id
                run = self._runs.lookup(run_id.int)
                if run is None or run.call is None:  # not ours, or recorded by another handler
                    self._last = (run_id, _ignore, run)
                    return
                if run.first != "tokens":
                    # Until the first output, every chunk comes here (the fast path above is armed only
                    # then): the empty chunks that open a stream (OpenAI's role chunk, Anthropic's
                    # message_start, Responses' response.created) say it streams, not that a token came.
                    if run.parts is None:
                        _stream_started(run, run.call)
                    if not ex.chunk_has_output(token, chunk):
                        return
                    run.call.mark_first_token()  # time to first token (a no-op if v3 events marked it)
                    run.first = "tokens"  # from now on this run's text comes from here, not its events
                append = run.parts.append  # type: ignore[union-attr]
                self._last = (run_id, append, run)
            if run is None or run.call is None:
                return
            if isinstance(token, str):  # integrations that fire it pass `chunk.text`, a str subclass
                append(token or ex.chunk_tool_text(chunk))
            elif token:
                append(token)  # content blocks: read as text (`_streamed_text`) only if ever needed
        except Exception as exc:
            log_internal_error("langchain on_llm_new_token", exc)

    def on_stream_event(self, event: Any, *, run_id: UUID, parent_run_id: UUID | None = None,
                        tags: list[str] | None = None, **kwargs: Any) -> None:
        # v3 protocol streaming (`stream_events`/`astream_events(version="v3")`, LangGraph's v3 streams)
        # fires this per event, and on_llm_new_token only where the integration's `_stream` fires it
        # (langchain-openai always; langchain-anthropic only for string content, so never with tools,
        # thinking or documents). langchain-core builds a chunk's events after the integration yielded
        # it, so a chunk's on_llm_new_token comes before its events: once a token brought output, the
        # tokens carry this run (the fast check below) and its events would repeat them.
        if self._last[0] is run_id:
            return
        try:
            run = self._runs.lookup(run_id.int)
            if run is None or run.call is None or run.first == "tokens":
                return
            if run.parts is None:
                _stream_started(run, run.call)  # message-start: the response began, no token yet
            output, text = ex.event_output(event)
            if not output:
                return  # message-start/-finish (its usage comes again in on_llm_end), block skeletons
            if run.first is None:
                run.call.mark_first_token()
                run.first = "events"
            if text:
                run.parts.append(text)  # type: ignore[union-attr]
        except Exception as exc:
            log_internal_error("langchain on_stream_event", exc)

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, parent_run_id: UUID | None = None,
                   **kwargs: Any) -> None:
        try:
            run = self._runs.get(run_id)
            try:
                if run is not None and run.call is not None:
                    call = run.call
                    if run.batched:
                        call.deactivate()  # the batch's requests are done
                    try:
                        _reconcile(call, response, run.batched)
                    finally:  # the call ends and the run is released even if reading the result failed
                        record = call.finish()
                    if (record is not None and record.streamed and record.usage_source == "estimated"
                            and record.provider in ("openai", "azure")):
                        _warn_stream_without_usage()
            finally:
                self._end(run_id, None)
        except Exception as exc:
            _internal_error("langchain on_llm_end", exc)

    @guard("langchain on_llm_error")
    def on_llm_error(self, error: BaseException, *, run_id: UUID, parent_run_id: UUID | None = None,
                     **kwargs: Any) -> None:
        run = self._runs.get(run_id)
        try:
            if run is not None and run.call is not None:
                call = run.call
                if run.batched:
                    # A failed request ends a sync generate(): the batch's other runs may never end.
                    call.deactivate()
                try:
                    _keep_partial_output(run, call, kwargs.get("response"))
                finally:
                    if _cut_short(error):
                        call.abort()  # the consumer stopped reading (an abandoned stream)
                    else:
                        call.fail(error)
        finally:
            self._end(run_id, error)

    # -- run ends ------------------------------------------------------------------------------
    def _end(self, run_id: UUID, error: BaseException | None) -> None:
        last_id, _, last = self._last
        if last_id is run_id or (last is not None and last.root == run_id.int):
            self._last = _NO_RUN  # hold no finished run
        # A root that failed or was cancelled takes its model runs in flight with it (LangChain reports
        # none of their ends when it cancels them), except those running in another thread, which nothing
        # cancels; one that returned may also leave a task running one.
        run = self._runs.end(run_id, error, release=_release_leftover,
                             outlives=_in_flight if error is None else _running_elsewhere)
        if run is not None:
            if run.owner_key is not None:
                _forget_model_run(run)
            if run.entered is not None:
                _leave(run, run.entered, ended_here=True)
            if run.watch is not None:
                _unwatch(run.watch)

    def _task_done(self, run_id: UUID, task: Any) -> None:
        """The asyncio task a root, tool or retriever run started in is done and the run is still
        open: it was cancelled inside (LangChain's tools and retrievers catch `Exception` only, so a
        CancelledError reaches no callback; a root's start may be cut short). Ends it, and what is
        still open under it if it is a root."""
        # Only a cancelled task: a stream's chunks may each be awaited in a short task of their own
        # (`asyncio.wait_for(stream.__anext__(), t)`), whose end says nothing of the run. Except a model
        # run whose call already ended with no callback to follow (its request was cancelled under an
        # `asyncio.timeout()` the task lived on after, see `MergedCall.abort`): it is forgotten now.
        if not task.cancelled():
            with guarded("langchain finished task"):
                run = self._runs.get(run_id)
                if run is not None and run.call is not None and run.call.status != "active":
                    self._end(run_id, None)
            return
        with guarded("langchain cancelled run"):
            self._cancelled(run_id)

    def _cancelled(self, run_id: UUID) -> None:
        """The run was cancelled with no callback to say so: ends it, and its model call if it has one
        (aborted, with what the provider reported, else the prompt estimated)."""
        run = self._runs.get(run_id)
        if run is not None:
            if run.call is not None and run.call.status == "active":
                _release_leftover(run)
            self._end(run_id, asyncio.CancelledError())


@dataclass(slots=True, eq=False)
class _Entered:
    """A tool's or retriever's span made current for the code it runs (see `_enter`)."""

    key: int                  # the run's key in `_entered`
    token: Any                # `enter_span`'s token (None: another tree's span stays current)
    watch: Any = None         # the asyncio task it started in, watched for a cancellation (`_watch`)


def _enter(handler: TokenSpyHandler, run: Run | None, run_id: UUID) -> None:
    """Make a tool's or retriever's span current for the code it runs: what that code does outside
    LangChain (a LlamaIndex query, a raw SDK call, a `profile`) then attaches to it.

    Only for runs whose start and end callbacks come in the context of the code they run, before
    anything else runs there. Not a chain: it may be a generator the consumer drives, and its span
    would be current in the consumer's loop too. Not a LangGraph node: an async graph starts a node's
    run in the caller's task and ends it in the node's own. Of several TokenSpyHandlers on one run,
    each has the run as a level of its own tree, and the first enters its span.

    A run cancelled inside fires no callback (LangChain catches `Exception` only): when it started in
    an asyncio task, the task's cancellation ends it (`TokenSpyHandler._task_done`), and it is released when its
    root run ends, whichever comes first.
    """
    if run is None or run.span is None:
        return
    key = run_id.int
    entered_span = _entered.setdefault(key, run.span)
    if entered_span is not run.span:
        # Another handler's span of this level is current for its code: what that code records is this
        # handler's too (a raw SDK call in a tool), as the level's model calls are.
        entered_span.home = joined_home(entered_span.home, run.span.home)
        return
    entered = _Entered(key, None, _watch(handler, run_id))
    run.entered = entered
    entered_runs[run.span.id] = key
    entered.token = enter_span(run.span)


def _leave(run: Run, entered: _Entered, *, ended_here: bool) -> None:
    """Undo `_enter` when the run ends: in its own context (`ended_here`), or as a leftover of its
    root, or when its task is cancelled, in another context, where it is no longer current."""
    run.entered = None
    if _entered.get(entered.key) is run.span:
        _entered.pop(entered.key, None)
    if run.span is not None:
        entered_runs.pop(run.span.id, None)
    if entered.watch is not None and ended_here:
        _unwatch(entered.watch)
    if run.span is not None and (ended_here or current_span() is run.span):
        exit_span(entered.token, run.span)


def _current_task() -> asyncio.Task[Any] | None:
    """The asyncio task running in this thread; None outside one."""
    loop = _running_loop()  # None outside a loop, where current_task() would raise (slower)
    return None if loop is None else asyncio.current_task(loop)


_running_loop = asyncio.events._get_running_loop


def _note_agenerate_run(handler: TokenSpyHandler, run_id: UUID) -> None:
    started = _agenerate.started_here.get()
    if started is not None:  # inside langchain-core's `agenerate`: a cancellation leaving it ends the run
        started.append((handler, run_id))


def _watch(handler: TokenSpyHandler, run_id: UUID) -> tuple[asyncio.Task[Any], Callable[[Any], None]] | None:
    """End the run, if still open, when the asyncio task it starts in is cancelled (None outside a task)."""
    task = _current_task()
    if task is None:
        return None
    on_done = functools.partial(handler._task_done, run_id)
    task.add_done_callback(on_done)
    return task, on_done


def _unwatch(watch: tuple[asyncio.Task[Any], Callable[[Any], None]]) -> None:
    """The run ended: its task (which may go on long) keeps no callback for it. The end may come from
    another task (LangGraph ends a root in a task of its own) or thread (sync callbacks)."""
    task, on_done = watch
    loop = task.get_loop()
    if _running_loop() is loop:
        task.remove_done_callback(on_done)
    elif not loop.is_closed():
        loop.call_soon_threadsafe(task.remove_done_callback, on_done)


def _ignore(token: str) -> None:
    pass


def _release_leftover(run: Run) -> None:
    """A run still open when its root ended: a model's stream abandoned and finalized late, or never;
    a tool or retriever cancelled inside (no callback reports that)."""
    if run.call is not None:
        _keep_streamed_text(run, run.call)
        run.call.abort()
    if run.owner_key is not None:
        _forget_model_run(run)
    if run.entered is not None:
        _leave(run, run.entered, ended_here=False)


def _in_flight(run: Run) -> bool:
    """A model run whose request is still in flight when its root ends without error: no chunk has come
    (a stream cut short has: LangChain may end the root of an abandoned chain stream before the model
    run), so it is a call running in a task that outlived its tool or graph; or it runs in another
    thread (`_running_elsewhere`). It ends with its own callback, with the provider's usage."""
    call = run.call
    return (call is not None and call.status == "active" and not run.batched
            and (run.parts is None or _running_elsewhere(run)))


def _running_elsewhere(run: Run) -> bool:
    """A model run still open in another live thread than the one its root ends in: that thread goes
    on (a sync LangGraph node in a worker thread after the consumer broke out of `graph.astream`; no one
    can cancel a thread), and the provider bills the whole answer. It ends with its own callback, with
    the provider's usage; a stream that thread abandoned ends when it is collected, or at exit."""
    call, thread = run.call, run.thread
    return (call is not None and call.status == "active" and not run.batched and thread is not None
            and thread is not threading.current_thread() and thread.is_alive())


def _end_run_at_exit(run: Run) -> None:
    """A model run still open at exit (a stream never read to its end): recorded before the stores'
    exit flush, with the text it streamed."""
    if run.call is not None and run.call.status == "active":
        _release_leftover(run)


end_open_at_exit(Run, _end_run_at_exit)


def _forget_model_run(run: Run) -> None:
    """A model run this handler recorded ended: its claims go."""
    key = run.owner_key
    _owners.pop(key, None)
    if run.call is not None and _run_calls.get(key[0]) is run.call:
        _run_calls.pop(key[0], None)


# The tags LangChain gives a composition's direct children: a sequence's steps, a map's keys, a branch.
_STEP_TAGS = ("seq:step:", "map:key:", "branch:", "condition:")


def _is_step(tags: list[str]) -> bool:
    return any(tag.startswith(_STEP_TAGS) for tag in tags if isinstance(tag, str))


def _stream_started(run: Run, call: Call) -> None:
    """A model run's first streamed chunk or v3 event (not yet its first token)."""
    call.streamed = True
    # The model's own SDK request started before its first chunk: a request made later in this
    # context (the consumer's loop body) is another call, not this one. A batch stays active: its
    # other requests come after this one's chunks.
    if not run.batched:
        call.deactivate()
    run.parts = []


def _running_level() -> Span | None:
    """The level of the LangChain run whose code is running here (a LangGraph node's function, a
    `RunnableLambda`'s), which is not made current: a `profile` or `session` opened in that code goes
    under it, like the model calls made in it (see `inner_span`).

    LangChain runs a runnable's code with its child config in `var_child_runnable_config`, whose
    callback manager names the run (`parent_run_id`), as LangSmith's own tracing reads it.
    """
    config = var_child_runnable_config.get()
    if not config:
        return None
    manager = config.get("callbacks")
    run_id = getattr(manager, "parent_run_id", None)
    if run_id is None:
        return None
    for handler in getattr(manager, "handlers", None) or ():
        if isinstance(handler, TokenSpyHandler):
            run = handler._runs.get(run_id)
            if run is not None:
                return run.attach
    return None


enclosing_levels.append(_running_level)


def _cut_short(error: BaseException) -> bool:
    """An abandoned stream (GeneratorExit), a cancelled task or Ctrl-C: not a provider failure."""
    return isinstance(error, GeneratorExit | KeyboardInterrupt) or type(error).__name__ == "CancelledError"


def _run_name(serialized: Any, kwargs: Mapping[str, Any]) -> str | None:
    name = kwargs.get("name")
    if isinstance(name, str) and name:
        return name
    if isinstance(serialized, Mapping):
        name = serialized.get("name")
        if isinstance(name, str) and name:
            return name
        ids = serialized.get("id")
        if isinstance(ids, list) and ids and isinstance(ids[-1], str):
            return ids[-1]
    return None


def _keep_partial_output(run: Run, call: Call, response: Any) -> None:
    # stream()/astream() pass what arrived before the error as one merged chunk (text, tool calls,
    # usage if it came); other paths pass nothing, and the streamed text is all there is.
    partial = ex.result_message(response)
    report = ex.result_usage(None, ex.message_of(partial))
    if report is not None:
        call.add_framework_report(report)
    text = ex.message_text(partial) if partial is not None else ""
    streamed = _streamed_text(run.parts) if run.parts else ""
    # The partial message may lack the last chunk the consumer got: `astream_events` hands each chunk on
    # from inside its `on_llm_new_token`, before LangChain adds it to the partial message, and a consumer
    # who stops there cancels the rest. What reached the consumer is what was billed.
    call.set_response_text(text if len(text) >= len(streamed) else streamed)


def _keep_streamed_text(run: Run, call: Call) -> None:
    # What was streamed before the end: estimated (joined once) if the provider's usage never came.
    parts = run.parts
    if parts:
        call.set_response_text(lambda: _streamed_text(parts))


def _streamed_text(parts: list[Any]) -> str:
    """The streamed tokens as text: strings, and the content-block lists the per-token path keeps."""
    try:
        return "".join(parts)
    except TypeError:
        return "".join(part if part.__class__ is str else ex.streamed_text(part) for part in parts)


def _reconcile(call: Call, response: LLMResult, batched: bool) -> None:
    if core_call.any_adopted and call.has_inner():
        return  # a wrapper model: its first inner model's numbers are this record's (`Call.adopt_inner`)
    generation = ex.result_message(response)
    message = getattr(generation, "message", None)
    usage_metadata = getattr(message, "usage_metadata", None)  # read once: cache check and usage
    if usage_metadata:
        if ex.is_cache_hit(usage_metadata):
            # LangChain's own cache answered: no provider call, no tokens billed, $0, and no stream.
            call.set_cache_hit()
            call.set_usage(input_tokens=0, output_tokens=0, cached_input_tokens=0, cache_write_tokens=0,
                           reasoning_tokens=0)
            return
        report = ex.report_from_usage_metadata(usage_metadata)
    else:
        report = None
    llm_output = response.llm_output
    if report is None:
        report = ex.llm_output_usage(llm_output, batched)
    if report is not None:
        call.add_framework_report(report)
    call.set_model(ex.served_model(llm_output, generation, message))
    call.set_service_tier(ex.service_tier(message))
    call.set_speed(ex.speed(message))
    if report is None or report.output_tokens is None or config.capture_content:
        # The whole answer (text and tool calls), streamed or not: estimated only if usage is missing,
        # and kept on the record if content capture is on.
        call.set_response_text(lambda: ex.message_text(generation))


def _internal_error(where: str, exc: Exception) -> None:
    """`guard`'s body, for the callbacks guarded inline: only a budget refusal escapes."""
    if isinstance(exc, _passthrough()):
        raise exc
    log_internal_error(where, exc)


def _warn_stream_without_usage() -> None:
    global _warned_stream_usage
    if _warned_stream_usage:
        return
    _warned_stream_usage = True
    logger.warning("tokenspy: a ChatOpenAI stream ended without usage (LangChain does not ask for it when "
                   "base_url, a proxy or a custom client is set): its tokens are estimated. Pass "
                   "ChatOpenAI(stream_usage=True) for exact numbers (tokenspy's SDK interception asks "
                   "for them too, except for include_response_headers=True).")

