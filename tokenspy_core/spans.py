"""The attribution tree: spans for functions, sessions, chains, agent steps, tools, graph nodes.

A live `Span` knows its parent, its path of names (the key the tracker aggregates under, so the
report's tree stays bounded by distinct paths, not by runs) and the sinks and budgets it inherits.
The current span travels in a ContextVar, so it follows asyncio tasks and `contextvars.copy_context`;
adapters that get parents from a framework (LangChain run ids) pass `parent=` explicitly.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any

from ._guard import guarded

if TYPE_CHECKING:
    from .budget import Budget
    from .call import CallRecord
    from .tracker import Tracker

__all__ = ["Home", "Sink", "Span", "current_span", "enclosing_levels", "enter_span", "exit_span", "inner_span",
           "span_listeners", "use_span", "user_span_parent"]


class Sink:
    """Anything that receives finished call records (a session's tracker, a handler's own view)."""

    def add(self, record: CallRecord) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class Home:
    """Where a call started under a span records when it names no tracker of its own (a raw SDK call or a
    `tokenspy.record` in a tool of an agent run): with the framework handler that owns the span, in that
    handler's tracker (None: the default one) and the sinks it feeds besides (its own view)."""

    __slots__ = ("sinks", "tracker")

    def __init__(self, tracker: Tracker | None, sinks: tuple[Sink, ...] = ()) -> None:
        self.tracker = tracker
        self.sinks = sinks


_ids = itertools.count(1)
# Whether any span has a home (see `Home`): until one does, a call that names no tracker goes to the
# default one without looking.
homes = False
# (on_start, on_end) pairs; the OpenTelemetry exporter registers here.
span_listeners: list[tuple[Callable[[Span], None], Callable[[Span, BaseException | None], None]]] = []


class Span:
    __slots__ = (
        "__weakref__",
        "_ended",
        "attributes",
        "budgets",
        "end_time",
        "home",
        "id",
        "kind",
        "kinds",
        "name",
        "parent",
        "path",
        "sinks",
        "start_time",
        "tags",
    )

    def __init__(self, name: str, kind: str = "span", parent: Span | None = None, *,
                 sink: Sink | None = None, budget: Budget | None = None,
                 tags: Mapping[str, Any] | None = None, attributes: Mapping[str, Any] | None = None,
                 home: Home | None = None) -> None:
        """`home`: see `Home`; inherited. (Not a sink: a sink gets every call under the span, those of a
        nested component another handler owns too.)"""
        self.id = next(_ids)
        self.name = name
        self.kind = kind
        self.parent = parent
        self.start_time = time.time()
        self.end_time: float | None = None
        self.attributes = dict(attributes) if attributes else {}
        self._ended = False
        if parent is None:
            self.path: tuple[str, ...] = (name,)
            self.kinds: tuple[str, ...] = (kind,)
            self.sinks: tuple[Sink, ...] = ()
            self.budgets: tuple[Budget, ...] = ()
            self.tags: Mapping[str, Any] = dict(tags) if tags else {}
            self.home = home
        else:
            self.path = (*parent.path, name)
            self.kinds = (*parent.kinds, kind)
            self.sinks = parent.sinks
            self.budgets = parent.budgets
            self.tags = {**parent.tags, **tags} if tags else parent.tags
            self.home = home if home is not None else parent.home
        if home is not None:
            global homes
            homes = True
        if sink is not None and sink not in self.sinks:  # a session entered again inside itself: counted once
            self.sinks = (*self.sinks, sink)
        if budget is not None and budget not in self.budgets:  # a session's, entered again inside itself
            self.budgets = (*self.budgets, budget)
        for on_start, _ in span_listeners:
            with guarded("span listener"):
                on_start(self)

    def end(self, error: BaseException | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        self.end_time = time.time()
        for _, on_end in span_listeners:
            with guarded("span listener"):
                on_end(self, error)

    def __repr__(self) -> str:
        return f"Span({'/'.join(self.path)!r}, kind={self.kind!r})"


_current: ContextVar[Span | None] = ContextVar("tokenspy_current_span", default=None)


def inner_span(current: Span | None, outer: Span | None) -> Span | None:
    """Where a framework run goes whose parent run attaches to `outer`, given `current`, the tokenspy
    span current in its context.

    A `profile` or `session` opened inside a framework's own level (a LangGraph node, a tool) only
    knows the span that was current when the framework run began, not the level around it. Such a
    span (opened after `outer`, and not above it) is moved under `outer`, with the spans opened in it,
    and the run goes in it: its budget and its session see the calls made there. Otherwise `outer`.
    """
    if current is None or current is outer:
        return outer
    if outer is None:
        return current
    if current.id < outer.id:  # opened before `outer`: around the framework run, not inside it
        return outer
    ancestors = set()
    span: Span | None = outer
    while span is not None:
        ancestors.add(span.id)
        span = span.parent
    segment: list[Span] = []  # from `current` up to the first span at or above `outer`
    span = current
    while span is not None and span.id not in ancestors:
        segment.append(span)
        span = span.parent
    if not segment or segment[-1].parent is outer:
        return current if segment else outer
    if segment[-1].id < outer.id:
        return outer
    # What each span added itself (its own sink and budget), read before any parent moves.
    own = [(s, s.sinks[len(s.parent.sinks):] if s.parent else s.sinks,
            s.budgets[len(s.parent.budgets):] if s.parent else s.budgets,
            s.home if s.parent is None or s.home is not s.parent.home else None) for s in segment]
    parent = outer
    for s, sinks, budgets, home in reversed(own):
        s.parent = parent
        s.path = (*parent.path, s.name)
        s.kinds = (*parent.kinds, s.kind)
        s.sinks = (*parent.sinks, *sinks)
        s.budgets = (*parent.budgets, *budgets)
        s.home = home if home is not None else parent.home
        s.tags = {**parent.tags, **s.tags} if parent.tags else s.tags
        parent = s
    return current


def current_span() -> Span | None:
    span = _current.get()
    return span if span is None or not span._ended else past_ended_sessions(span)


def past_ended_sessions(span: Span | None) -> Span | None:
    """`span`, or its nearest ancestor that is not a session whose block has exited. A session entered
    in an async generator sets the consuming task's context; when the generator is abandoned and
    finalized in another task, nothing can restore that context: its later calls are not the session's.
    (Other ended spans stay where they are: a framework may run a stream's lazy work under the ended
    level that produced it.)"""
    while span is not None and span._ended and span.kind == "session":
        span = span.parent
    return span


# Framework adapters register here how to find, for the levels they do not make current (a LangGraph
# node, a chain), the span of the framework level whose code is running in this context (None if none).
enclosing_levels: list[Callable[[], Span | None]] = []


def user_span_parent() -> Span | None:
    """The parent of a span a user opens here (a `profile`, a `session`): the framework level whose code
    is running if it is below the current span (what that code spends is the level's too), else the
    current span."""
    current = current_span()
    for find in enclosing_levels:
        with guarded("enclosing level"):
            level = find()
            if level is not None and level is not current:
                span = level.parent
                while span is not current and span is not None:
                    span = span.parent
                if span is current:  # `current` is above the level (or there is no current span)
                    return level
    return current


def enter_span(span: Span) -> Token[Span | None] | None:
    """Make `span` current in this context until `exit_span`, for an adapter whose framework brackets a
    level with two callbacks run in the context of the code inside it (a LangChain tool, a LlamaIndex
    tool call): the calls that code makes then attach to `span`, whichever layer sees them.

    None (nothing changed) unless the current span is above `span`: a span of another handler's tree,
    made current for the same level, stays current.
    """
    current = _current.get()
    if current is not None:
        above = span.parent
        while above is not None and above is not current:
            above = above.parent
        if above is None:
            return None
    return _current.set(span)


def exit_span(token: Token[Span | None] | None, span: Span) -> None:
    """Undo `enter_span`; from another context (where it was not entered), only if `span` is current there."""
    if token is None:
        return
    try:
        _current.reset(token)
    except ValueError:
        if _current.get() is span:
            _current.set(span.parent)


@contextmanager
def use_span(span: Span | None) -> Iterator[Span | None]:
    """Make `span` the current span for the block (the parent of calls and spans started in it)."""
    token = _current.set(span)
    try:
        yield span
    finally:
        try:
            _current.reset(token)
        except ValueError:
            # Exited in another context (an async generator finalized elsewhere): restore by value.
            _current.set(span.parent if span is not None else None)
