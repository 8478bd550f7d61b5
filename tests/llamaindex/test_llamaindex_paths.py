"""Both LlamaIndex pipelines, registration and scoping: whichever paths fire, one record per call."""

from __future__ import annotations

import copy
import gc
import subprocess
import sys
from typing import Any

import llama_index.core
import pytest
from li_helpers import EMBED_MODEL, assert_matches, logged, openai_embedding, openai_llm
from llama_index.core import Settings
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.callbacks import CallbackManager
from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
from llama_index.core.instrumentation.event_handlers import BaseEventHandler, NullEventHandler
from llama_index.core.instrumentation.span_handlers import NullSpanHandler
from llama_index.core.llms import MockLLM
from pydantic import Field

import tokenspy
from tokenspy.llamaindex import TokenSpyHandler
from tokenspy.llamaindex.instrumentation import TAP
from tokenspy.testing import FakeProvider
from tokenspy_core import BudgetExceededError, Tracker

QUESTION = [ChatMessage(role="user", content="What is the capital of France?")]


def chat_and_stream(llm: object) -> None:
    llm.chat(QUESTION)  # type: ignore[attr-defined]
    for _ in llm.stream_chat(QUESTION):  # type: ignore[attr-defined]
        pass


def test_callbacks_and_dispatcher_together_record_each_call_once(fp: FakeProvider,
                                                                 global_handler: TokenSpyHandler) -> None:
    # The handler is in the LLM's callback manager twice over (explicitly, and as the forwarder
    # set_handler put in Settings.callback_manager) and on the dispatcher: three listeners, one record
    # per call.
    llm = openai_llm(fp, handlers=[global_handler, *Settings.callback_manager.handlers])
    assert len(llm.callback_manager.handlers) == 2
    chat_and_stream(llm)
    openai_embedding(fp, callback_manager=CallbackManager([global_handler])).get_text_embedding("Paris")
    records = tokenspy.calls()
    assert [r.operation for r in records] == ["chat", "chat", "embeddings"]
    for record, usage in zip(records[:2], logged(fp), strict=True):
        assert_matches(record, usage)
    assert_matches(records[2], logged(fp, "/v1/embeddings")[0], EMBED_MODEL)
    assert global_handler.stats()["total_calls"] == 3


def test_callback_path_alone_records_exact_usage(fp: FakeProvider, handler: TokenSpyHandler) -> None:
    TAP.uninstall()  # as if the dispatcher did not exist: the legacy callbacks are all there is
    llm = openai_llm(fp, handlers=[handler])
    chat_and_stream(llm)
    records = tokenspy.calls()
    assert [r.streamed for r in records] == [False, True]
    for record, usage in zip(records, logged(fp), strict=True):
        assert_matches(record, usage)


def test_callback_path_alone_records_an_early_stop_as_partial(fp: FakeProvider,
                                                              handler: TokenSpyHandler) -> None:
    TAP.uninstall()
    stream = openai_llm(fp, handlers=[handler]).stream_chat(QUESTION)
    next(iter(stream))
    stream.close()
    [record] = tokenspy.calls()
    # Callbacks carry no streamed text: the consumed output is unknown (0), the prompt estimated.
    assert (record.status, record.partial, record.output_tokens) == ("aborted", True, 0)
    assert record.input_tokens > 0 and record.usage_source == "estimated"


def test_callback_path_alone_counts_a_nested_mock_llm_call_once(handler: TokenSpyHandler) -> None:
    TAP.uninstall()
    MockLLM(max_tokens=3, callback_manager=CallbackManager([handler])).chat(QUESTION)
    assert len(tokenspy.calls()) == 1


def test_callback_path_alone_is_bounded(fp: FakeProvider, handler: TokenSpyHandler,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from tokenspy.llamaindex import legacy

    TAP.uninstall()
    monkeypatch.setattr(legacy, "_MAX_LEGACY_OPEN", 1)
    llm = openai_llm(fp, handlers=[handler])
    first, second = llm.stream_chat(QUESTION), llm.stream_chat(QUESTION)  # neither read nor closed
    [record] = tokenspy.calls()  # the oldest open call made room for the new one
    assert record.status == "aborted"
    del first, second
    legacy.LEGACY.drain()


def test_a_deep_copied_component_reports_to_the_same_handler(fp: FakeProvider,
                                                             global_handler: TokenSpyHandler) -> None:
    copied = copy.deepcopy(openai_llm(fp, handlers=[global_handler]))
    assert global_handler in copied.callback_manager.handlers
    copied.chat(QUESTION)
    assert len(global_handler.calls()) == 1


def test_set_handler_reaches_objects_built_before_it(fp: FakeProvider) -> None:
    llm = openai_llm(fp)  # built with no handler anywhere
    handler = TokenSpyHandler()
    tokenspy.set_handler(handler)
    llm.chat(QUESTION)
    assert len(handler.calls()) == 1
    assert_matches(handler.calls()[0], logged(fp)[0])


def test_set_handler_registers_for_new_objects_and_none_undoes_it(fp: FakeProvider) -> None:
    Settings.callback_manager = CallbackManager([])
    handler = TokenSpyHandler()
    tokenspy.set_handler(handler)
    assert llama_index.core.global_handler is None  # it would hide Settings' handlers
    [proxy] = Settings.callback_manager.handlers
    llm = openai_llm(fp)
    assert llm.callback_manager.handlers == [proxy]
    # An explicit handler of ours beside the forwarder is fine.
    openai_llm(fp, handlers=[TokenSpyHandler(), proxy])
    copied = copy.deepcopy(llm)  # a copy of the handler list, which set_handler(None) cannot reach
    tokenspy.set_handler(None)
    assert Settings.callback_manager.handlers == llm.callback_manager.handlers == []
    assert copied.callback_manager.handlers == [proxy]
    copied.chat(QUESTION)  # the proxy it still lists is inert
    assert tokenspy.calls() == []


def test_set_handler_keeps_a_users_global_handler(fp: FakeProvider) -> None:
    from llama_index.core.callbacks import LlamaDebugHandler

    theirs = LlamaDebugHandler()
    llama_index.core.global_handler = theirs
    try:
        tokenspy.set_handler(TokenSpyHandler())
        assert llama_index.core.global_handler is theirs
        openai_llm(fp).chat(QUESTION)  # still tracked, through the dispatcher
        assert len(tokenspy.calls()) == 1
        tokenspy.set_handler(None)
        assert llama_index.core.global_handler is theirs
    finally:
        llama_index.core.global_handler = None


def test_a_handler_records_only_components_that_carry_it(fp: FakeProvider, handler: TokenSpyHandler) -> None:
    Settings.callback_manager = CallbackManager([handler])
    after = openai_llm(fp)  # picks up Settings.callback_manager
    Settings.callback_manager = None  # type: ignore[assignment]
    without = openai_llm(fp)
    after.chat(QUESTION)
    without.chat(QUESTION)
    assert len(handler.calls()) == 1


def test_two_handlers_in_one_manager_record_once(fp: FakeProvider) -> None:
    first, second = TokenSpyHandler(), TokenSpyHandler()
    openai_llm(fp, handlers=[first, second]).chat(QUESTION)
    assert (len(first.calls()), len(second.calls()), len(tokenspy.calls())) == (1, 0, 1)


def test_own_tracker_keeps_records_out_of_the_default_one(fp: FakeProvider) -> None:
    tracker = Tracker()
    handler = TokenSpyHandler(tracker=tracker)
    openai_llm(fp, handlers=[handler]).chat(QUESTION)
    assert tokenspy.calls() == []
    assert len(tracker.calls()) == 1 and handler.stats()["total_calls"] == 1
    with pytest.raises(TypeError):
        TokenSpyHandler(tracker="default")  # type: ignore[arg-type]


# -- budgets ---------------------------------------------------------------------------------------

def spend_budget(llm: object) -> None:
    with pytest.warns(UserWarning, match="over its budget"):
        llm.chat(QUESTION)  # type: ignore[attr-defined]


def test_spent_budget_refuses_the_next_call_through_the_callback_manager(
        fp: FakeProvider, global_handler: TokenSpyHandler) -> None:
    llm = openai_llm(fp)  # built after set_handler: its callback manager has the handler
    with tokenspy.session("capped", budget_usd=0.000001, on_exceeded="raise") as session:
        spend_budget(llm)
        with pytest.raises(BudgetExceededError):
            llm.chat(QUESTION)
        with pytest.raises(BudgetExceededError):
            for _ in llm.stream_chat(QUESTION):
                pass
    assert len(fp.requests) == 1  # the refused calls were not sent
    assert len(session.calls) == len(tokenspy.calls()) == 1


def test_spent_budget_cannot_stop_a_dispatcher_only_call_so_it_is_still_recorded(fp: FakeProvider) -> None:
    llm = openai_llm(fp)  # built before set_handler: only the dispatcher sees it
    tokenspy.set_handler(TokenSpyHandler())
    with tokenspy.session("capped", budget_usd=0.000001, on_exceeded="raise") as session:
        spend_budget(llm)
        llm.chat(QUESTION)  # LlamaIndex swallows what dispatcher handlers raise
    assert len(fp.requests) == len(session.calls) == 2


# -- the SDK layer underneath ------------------------------------------------------------------------

async def test_sdk_layer_below_merges_into_the_llamaindex_record(fp: FakeProvider, sdk_layer: None,
                                                                global_handler: TokenSpyHandler) -> None:
    llm = openai_llm(fp)
    embed = openai_embedding(fp, embed_batch_size=2)
    texts = ["Paris is in France.", "Berlin is in Germany.", "Rome is in Italy."]
    with tokenspy.session("both layers"):
        chat_and_stream(llm)
        embed.get_text_embedding_batch(texts)  # two requests, one after the other
        await embed.aget_text_embedding_batch(texts)  # two requests sent together
    records = tokenspy.calls()
    assert [(r.operation, r.usage_source) for r in records] == [
        ("chat", "provider"), ("chat", "provider"), ("embeddings", "provider"), ("embeddings", "provider"),
        ("embeddings", "provider")]
    for record, usage in zip(records[:2], logged(fp), strict=True):
        assert_matches(record, usage)
    batches = logged(fp, "/v1/embeddings")
    for record, usage in zip(records[2:4], batches[:2], strict=True):
        assert_matches(record, usage, EMBED_MODEL)
    # The concurrent batches of the async call: one record, their usages added.
    assert records[4].input_tokens == batches[2]["prompt_tokens"] + batches[3]["prompt_tokens"]


def test_import_tokenspy_does_not_import_llama_index() -> None:
    code = "import sys, tokenspy; sys.exit(any(m.startswith('llama_index') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_uninstall_of_the_tap_ends_calls_in_flight(fp: FakeProvider, global_handler: TokenSpyHandler) -> None:
    stream = openai_llm(fp).stream_chat(QUESTION)
    next(iter(stream))
    TAP.uninstall()
    [record] = tokenspy.calls()
    assert record.status == "aborted"
    stream.close()
    del stream
    gc.collect()
    assert len(tokenspy.calls()) == 1


class _Seen(BaseEventHandler):
    """A user's event handler: what it received."""

    events: list[str] = Field(default_factory=list)

    def handle(self, event: Any, **kwargs: Any) -> None:
        self.events.append(type(event).__name__)


def test_the_tap_stands_in_for_the_root_dispatchers_no_op_handlers_and_gives_them_back() -> None:
    root = get_dispatcher()
    before = _Seen()
    root.add_event_handler(before)
    events, spans = list(root.event_handlers), list(root.span_handlers)
    placeholders = [h for h in events if type(h) is NullEventHandler], [h for h in spans if type(h) is NullSpanHandler]
    assert placeholders[0] and placeholders[1]  # LlamaIndex's defaults, or this test proves nothing
    handler = TokenSpyHandler()
    # Ours took the placeholders' slots: same lengths, the user's handler where it was.
    assert len(root.event_handlers) == len(events) and len(root.span_handlers) == len(spans)
    assert TAP._event_handler in root.event_handlers and TAP._span_handler in root.span_handlers
    assert placeholders[0][0] not in root.event_handlers and placeholders[1][0] not in root.span_handlers
    after = _Seen()
    root.add_event_handler(after)
    for _ in MockLLM(max_tokens=3, callback_manager=CallbackManager([handler])).stream_chat(QUESTION):
        pass
    assert len(handler.calls()) == 1
    assert before.events == after.events and "LLMChatInProgressEvent" in before.events
    TAP.uninstall()
    assert root.event_handlers == [*events, after] and root.span_handlers == spans
    assert all(a is b for a, b in zip(root.event_handlers, [*events, after], strict=True))
    root.event_handlers = [h for h in root.event_handlers if h is not before and h is not after]


def test_the_tap_without_placeholders_is_appended_and_a_replaced_list_is_left_alone() -> None:
    root = get_dispatcher()
    events = list(root.event_handlers)
    root.event_handlers = [h for h in events if type(h) is not NullEventHandler]
    TokenSpyHandler()
    assert root.event_handlers[-1] is TAP._event_handler
    TAP.uninstall()
    assert TAP._event_handler not in root.event_handlers
    assert not any(type(h) is NullEventHandler for h in root.event_handlers)  # none was taken
    root.event_handlers = list(events)
    TokenSpyHandler()
    mine = _Seen()
    root.event_handlers = [mine]  # the user replaces the list, dropping ours and the placeholder
    TAP.uninstall()
    assert root.event_handlers == [mine]
    root.event_handlers = list(events)
