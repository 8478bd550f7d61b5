"""One LlamaIndex LLM or embedding call, fed by either pipeline, ended exactly once.

`LLMCall` translates LlamaIndex responses (in-progress chunks, the end response, exceptions) into
the core lifecycle. A nested call (a CustomLLM's `chat` running its own `complete`) gets a
`MergedCall` view of the outer one: the usage and model of its end response still count, its ends
do not, so one model invocation stays one record. Of the streamed text, the innermost calls' counts:
it is what the provider sent (a wrapper may re-serialize it, e.g. a `StructuredLLM`).

Another LLM's call inside a call (a wrapper's model) merges only if it is the first one there
(`inner_llm`): a wrapper calling its model twice (a draft, then a refine) made two provider calls.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping
from types import FrameType
from typing import TYPE_CHECKING, Any

from tokenspy_core import BudgetExceededError, Call, MergedCall, Span, UsageReport, usage_from_any
from tokenspy_core.call import active_call
from tokenspy_core.usage import provider_usage

from . import payloads

if TYPE_CHECKING:
    from .handler import TokenSpyHandler

__all__ = ["EmbeddingCall", "LLMCall", "ends_as_abort", "inner_llm", "nested_llm", "open_call", "start_llm"]

# Taking the one place a wrapper's model call has in its record (`inner_llm`): the inner calls of a
# wrapper running them in threads of its own (`asyncio.to_thread`) may start together.
_take_lock = threading.Lock()


def ends_as_abort(exc: BaseException | None) -> bool:
    """The consumer stopped (break/close, Ctrl-C, task cancelled): partial, not an error."""
    return isinstance(exc, GeneratorExit | KeyboardInterrupt) or type(exc).__name__ == "CancelledError"


def open_call(owner: TokenSpyHandler, model: str | None, *, parent: Span | None, enforce_budget: bool,
              **options: Any) -> Call:
    """Start a core call for `owner` under `parent` and mark it active for the SDK layer below.

    `enforce_budget=False` is for the instrumentation path when no callback handler follows:
    LlamaIndex swallows every exception an instrumentation handler raises, so a refusal could not
    stop the call; it is recorded (against the budget) instead of being lost.
    """
    try:
        call = owner.new_call(model, parent=parent, **options)
    except BudgetExceededError:
        if enforce_budget:
            raise
        call = owner.new_call(model, parent=None, **options)
        call.span = parent  # attribution and budget accounting as usual, minus the refusal
    call.activate()
    return call


class LLMCall:
    """An LLM call: `chunk()` per streamed response, then `end()` or `error()`."""

    __slots__ = ("answers", "call", "finalizer", "first", "framed", "ident", "inner", "keeps_text", "model",
                 "own", "parent", "plain", "started", "text")

    def __init__(self, call: Call | MergedCall, model: str | None, framed: bool = False,
                 parent: LLMCall | None = None, ident: int | None = None) -> None:
        self.call = call
        self.model = model
        self.ident = ident  # id() of the LLM making it, while it runs: its own methods nest as one call
        # Another LLM's call merged into this one (`inner_llm`): the provider call it stands for.
        self.first: LLMCall | None = None
        # Merged as that provider call: its response text is the record's (the wrapper's own is not).
        self.answers = False
        # A completion sent as chat messages (as is a call merged into one): a chat it makes inside it
        # tells the messages actually sent (`adopt`).
        self.framed = framed
        self.own = isinstance(call, Call)  # else merged into an outer call, which keeps the ends
        self.parent = parent  # a merged call: the call it runs inside
        # A merged chat keeps its streamed text for the outer call. A merged completion does not: its
        # chunks are dropped unread while no completion of its own is in flight (the per-token fast
        # path of a CustomLLM's chat over its `complete`, whose text the chat's chunks repeat).
        self.keeps_text = False
        # An own call: the calls merged into it, in start order (their streamed text for `_flush`,
        # whether the model call in a wrapper answered for `error`).
        self.inner: list[LLMCall] | None = None
        self.started = False  # a chunk arrived
        # Its own call, past the first chunk: the dispatcher's event handler appends a plain text
        # delta to `text` itself (the per-token path) instead of calling `chunk()`.
        self.plain = False
        # The streamed text, handed to the call in one piece when it ends (`_flush`): a list append
        # per token costs less than `call.add_text`.
        self.text: list[str] = []
        self.finalizer: Any = None  # weakref.finalize on the returned generator, if streamed

    @property
    def nested(self) -> bool:
        return not self.own

    @property
    def ended(self) -> bool:
        return self.call.ended

    def chunk(self, response: Any) -> None:
        """Any streamed response: text (reasoning included), first-token time, usage if it has some.

        A call merged into an outer one keeps only its text (the outer call's own `_flush` picks the
        innermost text): the outer call's chunks carry its usage (LlamaIndex's completion-to-chat
        conversion copies `raw` and `additional_kwargs`), and its end event the last response.
        """
        self.started = True
        call = self.call
        if not isinstance(call, Call):
            if not self.keeps_text:
                return
            delta = payloads.get(response, "delta")
            text = (delta if isinstance(delta, str) else "") + payloads.reasoning_delta(response)
            if text:
                self.text.append(text)
            return
        if not self.plain:
            # Its request has been answered: a later SDK request is not this call's (`stream_scope`).
            call.deactivate()
            self.plain = True
        call.streamed = True  # also for streams the span name did not announce
        call.mark_first_token()  # a text, tool-call or usage-only chunk: output has begun
        get = payloads.get
        extra = get(response, "additional_kwargs")
        delta = get(response, "delta")
        text = delta if isinstance(delta, str) else ""
        if extra:
            text += payloads.reasoning_delta(response)
        if text:
            self.text.append(text)
        if extra or get(response, "raw") is not None or get(get(response, "message"), "additional_kwargs"):
            usage = payloads.usage_of(response)
            if usage is not None:  # OpenAI's include_usage chunk; reports merge "latest wins"
                provider_usage(call.set_usage, usage)

    def adopt(self, messages: list[dict[str, Any]]) -> None:
        """The chat a completion call made inside it (an LLM whose `complete` runs its own `chat`, or
        a wrapper running another LLM's): its messages, a system one included, are what the provider
        bills, rather than our one-message framing."""
        if self.framed and messages:
            self.call.set_prompt(messages)

    def _flush(self) -> None:
        """Hand the streamed text to the call: before it ends, whichever way it ends.

        With calls merged into it, the text of the innermost ones that streamed any: what the model
        sent, which a wrapper may re-serialize (a `StructuredLLM` yields the parsed object's JSON)
        and which a `CustomLLM`'s chat over its own completion repeats (counted once).
        """
        if not self.own:
            return  # kept for the outer call's `_flush`
        texts = [self.text]
        inner, self.inner = self.inner, None  # no longer needed (and each one links back here)
        if inner:
            covered: set[int] = set()  # calls with a streaming call inside them: not counted
            for state in inner:
                if state.text:
                    parent = state.parent
                    while parent is not None and id(parent) not in covered:
                        covered.add(id(parent))
                        parent = parent.parent
            if id(self) in covered:
                texts = [s.text for s in inner if s.text and id(s) not in covered]
        self.text = []
        text = "".join("".join(parts) for parts in texts)
        if text:
            self.call.add_text(text)

    def end(self, response: Any) -> None:
        failure = None
        try:
            if response is not None:
                self._read(response)
                if self.own:  # a merged call's outer call reads the answer it hands back
                    failure = payloads.failure_of(response)
        finally:  # whatever happened reading it, the call ends (else it would be lost)
            self._flush()
            if failure is None:
                self.call.finish()
            else:  # a failed Responses answer, returned as one: billed, and partial as any failed call
                self.call.fail(failure)
            self.detach()

    def _read(self, response: Any) -> None:
        call = self.call
        if isinstance(call, Call) and call.has_inner():
            return  # a wrapper LLM: its first inner model's numbers are this record's (`Call.adopt_inner`)
        if isinstance(call, MergedCall) and not self.answers and call.outer.has_inner():
            # The wrapper's own method run inside it (its `chat` over its `complete`): its answer is the
            # wrapper's, which may be a later model call's; the record has its first model call's numbers.
            return
        usage = payloads.usage_of(response)
        if usage is not None:
            provider_usage(call.set_usage, usage)
        call.set_service_tier(payloads.service_tier(response))
        call.set_speed(payloads.speed(response))
        served = payloads.served_model(response)
        if served:
            call.set_model(served)
        elif self.nested and self.model:
            self._lend_model()
        if not self.nested:  # a merged call's text is the outer call's
            call.set_response_text(payloads.response_text(response))
        elif self.answers and isinstance(call, MergedCall):
            # The record's provider call: what an output estimate counts (the wrapper's `_read` skips
            # its own answer, which may be a later model call's).
            call.outer.set_response_text(payloads.response_text(response))

    def error(self, exc: BaseException | None) -> None:
        answered = self._answered()
        self._flush()
        if ends_as_abort(exc):
            self.call.abort()
        elif answered:
            # The model call inside it had returned its whole answer: what failed is the wrapper's own
            # work on it (a `StructuredLLM`'s validation), as `structured_predict` fails after its call
            # ended. The record is the model call's: finished, complete (a failed record is partial).
            self.call.finish()
        else:
            self.call.fail(exc)
        self.detach()

    def _answered(self) -> bool:
        """The last call merged into this one (the model invocation, in a wrapper) ended finished."""
        inner = self.inner
        return inner is not None and len(inner) > 0 and inner[-1].call.status == "finished"

    def discarded(self, started: bool) -> None:
        """The stream generator was garbage-collected before it ended."""
        self._flush()
        if started:
            self.call.abort()
        else:
            # Never iterated: LlamaIndex LLMs send the request lazily, on the first chunk.
            self.call.fail("stream discarded before it was read")

    def producing(self) -> bool:
        """Its stream's generator is executing, on this thread's stack: the caller runs inside it."""
        finalizer = self.finalizer  # once: another thread's end may detach it meanwhile
        found = finalizer.peek() if finalizer is not None else None  # (generator, ...) while it is alive
        if found is None:
            return False
        stream = found[0]
        if not (getattr(stream, "gi_running", False) or getattr(stream, "ag_running", False)):
            return False
        frame = getattr(stream, "gi_frame", None) or getattr(stream, "ag_frame", None)
        caller: FrameType | None = sys._getframe(1)
        while caller is not None:  # running on another thread, it is not on this stack
            if caller is frame:
                return True
            caller = caller.f_back
        return False

    def detach(self) -> None:
        if self.finalizer is not None:
            self.finalizer.detach()
            self.finalizer = None

    def root(self) -> LLMCall:
        state = self
        while state.parent is not None:
            state = state.parent
        return state

    def unbilled(self) -> bool:
        """A merged call that failed before any usage was reported (a 429, a connection error)."""
        call = self.call
        return isinstance(call, MergedCall) and call.status == "failed" and not call.reported

    def _lend_model(self) -> None:
        # A wrapper LLM ("unknown" model) around a real one: price the outer call by the inner model.
        call = self.call
        if isinstance(call, MergedCall) and call.outer.request_model is None:
            call.set_model(self.model)


class _BatchedEmbedding(Call):
    """An embedding call that may span several provider requests, whose usages add up.

    `aget_text_embedding_batch` starts every batch, then sends them all concurrently: the requests
    cannot be told apart from here, so the whole LlamaIndex call is one record and each SDK-layer
    request merged into it (any number may claim it) adds its own usage.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()
        self._input = 0
        self._cached = 0

    def claim(self) -> bool:
        return not self.ended

    def set_usage(self, usage: Any = None, /, **fields: int | None) -> None:
        report = usage_from_any(usage) if usage is not None else UsageReport(**fields)
        if report.input_tokens is None:
            return  # a request that reported no input count (a gateway's "n/a"): not a count of 0
        with self._lock:
            self._input += report.input_tokens or 0
            self._cached += report.cached_input_tokens or 0
            total, cached = self._input, self._cached
        super().set_usage(input_tokens=total, output_tokens=0, cached_input_tokens=cached or None)

    def add_report(self, report: UsageReport) -> None:
        self.set_usage(report)  # what the SDK layer hands over: one batch's usage, added to the others


class EmbeddingCall:
    """A LlamaIndex embedding call: one batch, or all the concurrent batches of an async one.

    Its texts arrive only with the end events, so the prompt list is filled then: the core estimates
    the input from that very list object at the end unless a merged SDK layer reported usage.
    """

    __slots__ = ("call", "pending", "texts")

    def __init__(self, owner: TokenSpyHandler, model: str | None, provider: str | None,
                 parent: Span | None, enforce_budget: bool) -> None:
        self.texts: list[str] = []
        self.pending = 1  # batches started and not yet ended
        self.call = open_call(owner, model, parent=parent, enforce_budget=enforce_budget,
                              provider=provider, prompt=self.texts, operation="embeddings",
                              call_type=_BatchedEmbedding)

    @property
    def ended(self) -> bool:
        return self.call.ended

    def add_batch(self) -> None:
        self.pending += 1

    def end(self, chunks: Any) -> None:
        self.pending -= 1
        try:
            if isinstance(chunks, list | tuple):
                self.texts.extend(c for c in chunks if isinstance(c, str))
        finally:
            if self.pending <= 0:
                self.call.finish()

    def error(self, exc: BaseException | None) -> None:
        self.call.fail(exc)


def start_llm(owner: TokenSpyHandler, model_dict: Mapping[str, Any] | None, instance: Any, *,
              prompt: Any, extra: Any, chat: bool, streamed: bool, parent: Span | None,
              enforce_budget: bool) -> LLMCall:
    """A call of its own, from a start event: chat `messages` or a completion `prompt` string.

    `extra`: the start event's `additional_kwargs`; the tool definitions it offers are counted with
    the prompt if the input must be estimated.
    """
    model = payloads.model_of(model_dict, instance)
    framed = False
    if chat:
        prompt = payloads.prompt_of_messages(prompt)
    else:
        prompt = payloads.completion_prompt(prompt, model_dict)
        framed = isinstance(prompt, list)
    operation = payloads.operation_of(chat, model_dict)
    ident = id(instance) if instance is not None else None
    outer = active_call()
    if outer is not None and outer not in MergedCall._batch and outer.adopt_inner():
        # Called inside another framework's model call (a LangChain model whose `_generate` runs a
        # LlamaIndex LLM): one provider call, the outer call's record; the SDK layer below merges there too.
        # Only the first: a wrapper's second model call is a provider call of its own.
        outer.operation = operation  # the layer nearer the provider knows which endpoint it called
        state = LLMCall(MergedCall(outer), model, framed, ident=ident)
        state.answers = True  # the outer record's provider call: its numbers are the record's
        return state
    call = open_call(owner, model, parent=parent, enforce_budget=enforce_budget,
                     provider=payloads.provider_of(model_dict, instance), prompt=prompt,
                     tools=payloads.tools_of(extra), streamed=streamed, operation=operation)
    return LLMCall(call, model, framed, ident=ident)


def nested_llm(outer: LLMCall, model_dict: Mapping[str, Any] | None, instance: Any,
               messages: Any = None) -> LLMCall:
    """A call made inside `outer`, merged into it; `messages`: its chat messages, if it is a chat."""
    if messages is not None:
        outer.adopt(payloads.prompt_of_messages(messages))
    outer_call = outer.call
    target = outer_call.outer if isinstance(outer_call, MergedCall) else outer_call
    state = LLMCall(MergedCall(target), payloads.model_of(model_dict, instance), outer.framed, outer,
                    id(instance) if instance is not None else None)
    state.keeps_text = messages is not None  # a chat: its chunks always reach it
    root = outer.root()
    if root.inner is None:
        root.inner = []
    root.inner.append(state)
    return state


def inner_llm(outer: LLMCall, model_dict: Mapping[str, Any] | None, instance: Any, messages: Any,
              operation: str) -> LLMCall | None:
    """A call starting inside `outer` (the dispatcher's span tree tells): merged into it, or None if it
    is a provider call of its own.

    The LLM's own method (a CustomLLM's `chat` running its `complete`, `astream_chat` its
    `stream_chat`) is the same invocation: merged. Another LLM's call (a wrapper's model, a
    `StructuredLLM`'s) is the provider call `outer` stands for only if it is the first one inside
    `outer`, or the one before failed with nothing billed (a fallback): a later one (a draft, then a
    refine) is a provider call of its own, and the record keeps the first one's numbers
    (`Call.adopt_inner`, as a LangChain model inside the record would).
    """
    if instance is not None and id(instance) == outer.ident:
        return nested_llm(outer, model_dict, instance, messages)
    root = outer.root()
    with _take_lock:
        taken = outer.first
        if taken is not None and not taken.unbilled():
            return None
        if (taken is None and isinstance(root.call, Call) and not any(s.answers for s in root.inner or ())
                and not root.call.adopt_inner()):
            return None  # another framework's model (a LangChain one) is this record's provider call
        state = nested_llm(outer, model_dict, instance, messages)
        state.answers = True
        outer.first = state
    if isinstance(state.call, MergedCall):
        state.call.outer.operation = operation  # the endpoint it called is the record's
    return state
