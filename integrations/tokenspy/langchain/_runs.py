"""The run tree: LangChain run ids mapped to tokenspy spans, bounded and released per root run.

LangChain tells a handler only `run_id` and `parent_run_id`, from many threads (batch pools, asyncio
executors) and, for abandoned streams, sometimes out of order. Each run keeps the span its calls and
children attach to: its own span if it is a meaningful level (a named chain, a LangGraph node, a tool,
a retriever, the graph root), else its parent's (plumbing is transparent). A run leaves the map when
it ends; when its root ends, whatever is left under it (a stream abandoned mid-way whose close comes
later, or never) is ended there, so a long-running server keeps nothing per finished request.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from tokenspy_core import Call, Span, current_span
from tokenspy_core.spans import Home, inner_span

__all__ = ["HIDDEN_TAG", "Run", "RunTree", "chain_kind", "entered_runs", "task_key"]

HIDDEN_TAG = "langsmith:hidden"
# LangChain/LangGraph internals whose runs are glue, not a level a user would look for in a report.
# Runnables fall back to their class name, or a wrapped function's name, when no run_name is given.
_PLUMBING_NAMES = frozenset({
    "call_model", "acall_model", "should_continue", "tools_condition", "route", "RunnableCallable",
    "StateGraph", "CompiledStateGraph", "Branch", "ChannelWrite", "ChannelRead", "__start__", "__end__",
})
_PLUMBING_PREFIXES = ("Runnable", "Channel", "Pregel", "_", "<")
_PLUMBING_SUFFIXES = ("PromptTemplate", "Prompt", "OutputParser", "Parser")
# The tool and retriever spans a handler made current for the code they run (span id -> run key; see
# `_handler._enter`). Of several handlers on one run, only the first's span is made current: code run
# there reaches the others' trees through their own span for that run.
entered_runs: dict[int, int] = {}
# A compiled graph's default name; a named graph (`create_agent(name=...)`) is just a named chain.
GRAPH_DEFAULT_NAME = "LangGraph"


def task_key(metadata: Mapping[str, Any] | None) -> Any:
    """Which LangGraph task (one execution of one node) a run belongs to; None outside a graph.

    LangGraph stamps every run inside a node with the task's `langgraph_checkpoint_ns` (unique per
    execution); the node's own run is the first one carrying a new key.
    """
    if not metadata:
        return None
    node = metadata.get("langgraph_node")
    if node is None:
        return None
    namespace = metadata.get("langgraph_checkpoint_ns")
    return namespace if namespace else (node, metadata.get("langgraph_step"))


def _is_plumbing(name: str) -> bool:
    return name in _PLUMBING_NAMES or name.startswith(_PLUMBING_PREFIXES) or name.endswith(_PLUMBING_SUFFIXES)


def chain_kind(name: str | None, *, tags: list[str] | None, metadata: Mapping[str, Any] | None,
               run_type: str | None, parent: Run | None) -> str | None:
    """The span kind a chain run opens, or None for plumbing whose children attach to its parent."""
    if not name or (tags and HIDDEN_TAG in tags):
        return None
    if metadata and metadata.get("langgraph_node") == name:
        task = task_key(metadata)
        if parent is None or task != parent.task:
            return None if name in ("__start__", "__end__") else "node"
    if run_type in ("prompt", "parser"):
        return None
    if metadata and metadata.get("lc_agent_name") == name:
        # `langchain.agents.create_agent(name=...)`'s graph (its runs inherit the metadata: only the one
        # of that name is the agent).
        return "agent"
    if name == GRAPH_DEFAULT_NAME:
        # The root graph is the report's top level; a subgraph is already named by its node or tool.
        return "chain" if parent is None else None
    if _is_plumbing(name):
        return None
    return "agent" if name == "AgentExecutor" else "chain"


@dataclass(slots=True, eq=False)
class Run:
    root: int                    # the root run's key (run_id.int)
    attach: Span | None          # where this run's calls and child spans go
    span: Span | None            # the span this run opened; None for a transparent run
    task: Any = None             # LangGraph task key (see task_key)
    call: Call | None = None
    parts: list[Any] | None = None  # streamed tokens: str, or content-block lists (None: no chunk yet)
    first: str | None = None     # what brought the first output: "tokens" (on_llm_new_token) or "events" (v3)
    owner_key: Any = None        # this handler's claim on a model run (see _handler._owners)
    children: set[int] | None = None  # roots only: open runs under this root (made by the first child)
    entered: Any = None          # `span` made current for the code the run runs (see _handler._enter)
    watch: Any = None            # roots: the asyncio task watched for a cancelled start (_handler._watch)
    batched: bool = False        # a model run of a generate() with several prompts (see _handler._start_model)
    thread: Any = None           # model runs: the thread that started it (see _handler._running_elsewhere)


class RunTree:
    """Thread-safe `run_id -> Run` map; every run is forgotten when it ends, the rest when its root ends.

    Keyed by `run_id.int`: a UUID hashes and compares in Python code, an int in C, and every
    callback looks its run up.
    """

    def __init__(self, home: Home | None = None) -> None:
        """`home`: the handler's, for its spans: what the code of its runs records by other ways (a raw SDK
        call in a tool, a `tokenspy.record`) is the handler's too."""
        self._home = home
        self._lock = threading.Lock()
        self._runs: dict[int, Run] = {}
        # A plain dict read is atomic under the GIL: lookups (once per streamed token) take no lock.
        self.lookup = self._runs.get

    def __len__(self) -> int:
        return len(self._runs)

    def get(self, run_id: UUID | None) -> Run | None:
        return None if run_id is None else self._runs.get(run_id.int)

    def start(self, run_id: UUID, parent_run_id: UUID | None, *, name: str | None, kind: str | None,
              task: Any = None, attributes: Mapping[str, Any] | None = None, model: str | None = None) -> Run | None:
        """Register a run; None if it is already known (the same handler reached twice).

        `model`: a model run's model name (the model's `name`, else its class name)."""
        key = run_id.int
        if key in self._runs:
            return None
        current = current_span()
        if entered_runs and current is not None:
            current = self._own(current, key)
        parent = self.get(parent_run_id)
        if parent is not None:
            outer = parent.attach
            wrapper = parent.span
            if model is not None and wrapper is not None and wrapper.kind == "chain" and wrapper.name == model:
                # A chain named after the model it runs is a wrapper of it (`model.with_retry()`), not a
                # level of the user's: the model's calls go where the model alone would put them.
                outer = wrapper.parent
            attach = inner_span(current, outer)
        else:
            # A run whose parent this handler never saw (callbacks passed to one model only, or a root
            # that already ended) is a root of its own, under whatever tokenspy span is current here.
            attach = current
        span = (Span(name or kind or "run", kind, attach, attributes=attributes, home=self._home)
                if kind else None)
        with self._lock:
            root_run = self._runs.get(parent.root) if parent is not None else None
            if root_run is not None:
                if root_run.children is None:
                    root_run.children = {key}
                else:
                    root_run.children.add(key)
                root = root_run.root
            else:
                root = key
            run = self._runs[key] = Run(root, span if span is not None else attach, span, task)
        return run

    def _own(self, current: Span, starting: int) -> Span | None:
        """`current`, or this handler's own span for the run another handler made `current` current (where
        that span is, for the `starting` run itself: the other handler's own span of it)."""
        key = entered_runs.get(current.id)
        if key == starting:
            return current.parent
        run = None if key is None else self._runs.get(key)
        return current if run is None or run.span is None else run.span

    def end(self, run_id: UUID, error: BaseException | None = None,
            release: Callable[[Run], None] | None = None,
            outlives: Callable[[Run], bool] | None = None) -> Run | None:
        """Forget a run and end its span; ending a root also ends what is still open under it.

        `release(run)` is called for each run still open under an ending root, before its span ends.
        A run for which `outlives(run)` is true stays open instead, as a root of its own: it still runs
        (a request in flight in a task that outlived the root), and ends with its own callback.
        """
        key = run_id.int
        with self._lock:
            run = self._runs.pop(key, None)
            if run is None:
                return None
            leftovers: list[Run] = []
            if run.root == key:
                children = run.children
                if children:
                    for child in children:
                        left = self._runs.get(child)
                        if left is None:
                            continue
                        if outlives is not None and outlives(left):
                            left.root = child
                        else:
                            leftovers.append(self._runs.pop(child))
                    run.children = None
            else:
                root = self._runs.get(run.root)
                if root is not None and root.children:
                    root.children.discard(key)
        for left in leftovers:
            # Closed after its root (an abandoned stream finalized late) or never: it was cut short.
            if release is not None:
                release(left)
            if left.span is not None:
                left.span.end(error)
        if run.span is not None:
            run.span.end(error)
        return run
