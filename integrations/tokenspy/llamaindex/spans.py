"""Which LlamaIndex spans become tokenspy spans, and how lazily-started streams keep their parent.

LlamaIndex opens a dispatcher span for nearly every method (`_query`, `get_response`,
`split_text`, `_prepare_chat_with_tools`, ...). Only the ones a user reasons about become tokenspy
spans: query engine queries, retrievals, syntheses, chat engine turns, agent/workflow runs and
their steps, tools, and the user's own `@dispatcher.span` functions. The rest are transparent: an
LLM call attaches to the nearest meaningful ancestor.
"""

from __future__ import annotations

import functools
import inspect
import weakref
from collections.abc import AsyncIterator, Hashable, Iterator, Mapping
from typing import Any, cast

from tokenspy_core import Span, use_span

from .payloads import span_name

__all__ = ["Role", "agent_named", "classify", "keep_parent_for_stream", "runs_agents"]

# What a LlamaIndex span is to us: (tokenspy name, kind), "llm", "embedding" or None (transparent).
Role = tuple[str, str] | str | None

_LIBRARY_MODULES = ("llama_index.", "llama_index_instrumentation.", "workflows.")
# Module-level functions of llama_index decorated with @dispatcher.span (no instance to tell them by).
_LIBRARY_FUNCTIONS = frozenset({"run_jobs", "run_jobs.<locals>.worker"})
_STEP_TAG = "llamaindex.step.input_event"  # set by the workflow runtime on every step span


@functools.cache
def _bases() -> dict[str, tuple[type, ...]]:
    from llama_index.core.base.base_query_engine import BaseQueryEngine
    from llama_index.core.base.base_retriever import BaseRetriever
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.base.llms.base import BaseLLM
    from llama_index.core.chat_engine.types import BaseChatEngine
    from llama_index.core.multi_modal_llms.base import MultiModalLLM
    from llama_index.core.response_synthesizers.base import BaseSynthesizer
    from llama_index.core.tools.types import BaseTool
    from llama_index.core.workflow import Workflow

    agents: tuple[type, ...] = ()
    teams: tuple[type, ...] = ()
    try:
        from llama_index.core.agent.workflow import AgentWorkflow, BaseWorkflowAgent

        agents = (BaseWorkflowAgent, AgentWorkflow)
        teams = (AgentWorkflow,)
    except ImportError:  # older llama-index-core without workflow agents
        pass
    return {"llm": (BaseLLM, MultiModalLLM), "embedding": (BaseEmbedding,), "query": (BaseQueryEngine,),
            "retriever": (BaseRetriever,), "synthesizer": (BaseSynthesizer,), "chat": (BaseChatEngine,),
            "tool": (BaseTool,), "workflow": (Workflow,), "agent": agents, "team": teams}


# component -> (methods that make a span, the name's verb, kind)
_METHODS: tuple[tuple[str, frozenset[str], str, str], ...] = (
    ("query", frozenset({"query", "aquery"}), "query", "query"),
    ("retriever", frozenset({"retrieve", "aretrieve"}), "retrieve", "retriever"),
    ("synthesizer", frozenset({"synthesize", "asynthesize"}), "synthesize", "step"),
    ("chat", frozenset({"chat", "achat", "stream_chat", "astream_chat"}), "chat", "chain"),
)
_TOOL_METHODS = frozenset({"call", "acall", "__call__"})


def _is_library(cls: type) -> bool:
    return any(base.__module__.startswith(_LIBRARY_MODULES) for base in cls.__mro__)


@functools.lru_cache(maxsize=4096)
def _classify_method(cls: type, method: str) -> Role:
    bases = _bases()
    if issubclass(cls, bases["llm"]):
        return "llm"
    if issubclass(cls, bases["embedding"]):
        return "embedding"
    for component, methods, verb, kind in _METHODS:
        if issubclass(cls, bases[component]):
            return (f"{cls.__name__}.{verb}", kind) if method in methods else None
    if issubclass(cls, bases["tool"]):
        return ("", "tool") if method in _TOOL_METHODS else None  # named per instance
    if issubclass(cls, bases["workflow"]):
        if method != "run":
            return None
        return (cls.__name__, "agent" if bases["agent"] and issubclass(cls, bases["agent"]) else "chain")
    if _is_library(cls):
        return None
    return ("", "function")  # a user class's @dispatcher.span method: named by its span


def classify(span_id: str, instance: Any, tags: Mapping[str, Any] | None) -> Role:
    """The role of a dispatcher span, from the object it runs on (or its tags, for workflow steps)."""
    name = span_name(span_id)
    if instance is None:
        if tags and _STEP_TAG in tags:
            return (name.rsplit(".", 1)[-1], "step")
        if name in _LIBRARY_FUNCTIONS:
            return None
        return (name, "function")
    role = _classify_method(cast(Hashable, type(instance)), name.rsplit(".", 1)[-1])
    if isinstance(role, tuple) and not role[0]:
        if role[1] == "tool":
            tool = getattr(getattr(instance, "metadata", None), "name", None)
            return (tool if isinstance(tool, str) and tool else type(instance).__name__, "tool")
        return (name, role[1])
    return role


@functools.lru_cache(maxsize=256)
def _runs_agents(cls: type) -> bool:
    teams = _bases()["team"]
    return bool(teams) and issubclass(cls, teams)


def runs_agents(instance: Any) -> bool:
    """The workflow is an `AgentWorkflow`: several agents take turns in the steps of its run."""
    return _runs_agents(cast(Hashable, type(instance)))


def agent_named(arguments: Mapping[str, Any] | None) -> str | None:
    """The agent a multi-agent workflow step runs for, if its input event names it.

    `AgentInput`, `AgentSetup` and `AgentOutput` carry `current_agent_name`; the tool steps'
    events (`ToolCall`, `ToolCallResult`) do not: they run for the agent whose turn it is.
    """
    for value in (arguments or {}).values():
        name = getattr(value, "current_agent_name", None)
        if isinstance(name, str) and name:
            return name
    return None


# -- streams that start their LLM call after the span that produced them has exited -------------
# A streaming query engine's synthesizer returns a generator that calls the LLM only when the user
# iterates it, in the user's context, where no LlamaIndex span is active any more. Each step of the
# stream is run with the synthesizer's tokenspy span current, so that call still lands under it, and
# belongs to the handler of the query it came from (`Tap.stream_owners`, looked up by that span when
# the call's LlamaIndex span opens: nothing per step).

_wrapped: weakref.WeakSet[Any] = weakref.WeakSet()  # our wrappers, so a response is wrapped once


def _steps_under(span: Span, gen: Iterator[Any]) -> Iterator[Any]:
    try:
        while True:
            with use_span(span):
                try:
                    item = next(gen)
                except StopIteration:
                    return
            yield item
    finally:
        close = getattr(gen, "close", None)
        if close is not None:
            with use_span(span):
                close()


async def _asteps_under(span: Span, agen: AsyncIterator[Any]) -> AsyncIterator[Any]:
    try:
        while True:
            with use_span(span):
                try:
                    item = await agen.__anext__()
                except StopAsyncIteration:
                    return
            yield item
    finally:
        aclose = getattr(agen, "aclose", None)
        if aclose is not None:
            with use_span(span):
                await aclose()


def keep_parent_for_stream(result: Any, span: Span) -> bool:
    """If `result` is a streaming response whose generator has not started, run it under `span`.

    True if it now does: the calls its generator starts have no LlamaIndex parent, and attach to
    `span` (which the caller also keeps the owning handler for: `Tap.stream_owners`).
    """
    try:
        # The instance attribute only (StreamingResponse, AsyncStreamingResponse): a chat response's
        # `response_gen` is a property that makes a new generator on every access.
        gen = vars(result).get("response_gen")
    except TypeError:  # no __dict__
        return False
    if gen is None or gen in _wrapped:
        return False
    if inspect.isgenerator(gen):
        wrapper: Any = _steps_under(span, gen)
    elif inspect.isasyncgen(gen):
        wrapper = _asteps_under(span, gen)
    else:
        return False
    _wrapped.add(wrapper)
    try:
        result.response_gen = wrapper
    except (AttributeError, TypeError):  # a frozen/slotted response: leave it alone
        return False
    return True
