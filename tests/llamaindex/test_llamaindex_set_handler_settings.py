"""`tokenspy.set_handler` beside the user's own `Settings.callback_manager`: theirs keep working.

LlamaIndex builds every component's default manager with `CallbackManager([])`, which takes
`Settings`' handlers only if it is still empty after adding `llama_index.core.global_handler`: a
forwarder installed there would cut the user's handlers (a `TokenCountingHandler`, a `TokenSpyHandler`
of their own) off every component built afterwards. set_handler's forwarder goes into the Settings
manager instead, and `set_handler(None)` takes it out again.
"""

from __future__ import annotations

import llama_index.core
import pytest
from li_helpers import assert_matches, logged, openai_embedding, openai_llm
from llama_index.core import Settings
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.callbacks import CallbackManager, LlamaDebugHandler, TokenCountingHandler

import tokenspy
from tokenspy.llamaindex import TokenSpyHandler
from tokenspy.testing import FakeProvider
from tokenspy_core import BudgetExceededError

QUESTION = [ChatMessage(role="user", content="What is the capital of France?")]


def _install(order: str, settings: CallbackManager, handler: TokenSpyHandler) -> None:
    if order == "settings first":
        Settings.callback_manager = settings
        tokenspy.set_handler(handler)
    else:
        tokenspy.set_handler(handler)
        Settings.callback_manager = settings


@pytest.mark.parametrize("order", ["settings first", "set_handler first"])
def test_set_handler_keeps_the_users_settings_handlers(fp: FakeProvider, order: str) -> None:
    counter = TokenCountingHandler()
    handler = TokenSpyHandler()
    _install(order, CallbackManager([counter]), handler)
    llm, embed = openai_llm(fp), openai_embedding(fp)  # built after both
    llm.chat(QUESTION)
    embed.get_text_embedding("Paris")
    assert [type(h).__name__ for h in llm.callback_manager.handlers] == ["TokenCountingHandler", "_GlobalCallbacks"]
    assert embed.callback_manager.handlers == llm.callback_manager.handlers
    assert (len(counter.llm_token_counts), len(counter.embedding_token_counts)) == (1, 1)
    chat, embedding = handler.calls()
    assert_matches(chat, logged(fp)[0])
    assert embedding.operation == "embeddings"
    assert llama_index.core.global_handler is None


@pytest.mark.parametrize("order", ["settings first", "set_handler first"])
def test_a_tokenspy_handler_in_settings_owns_the_calls_over_set_handlers(fp: FakeProvider, order: str) -> None:
    mine, process_wide = TokenSpyHandler(), TokenSpyHandler()
    _install(order, CallbackManager([mine]), process_wide)
    openai_llm(fp).chat(QUESTION)  # the first TokenSpyHandler on the LLM's manager is Settings' one
    assert (len(mine.calls()), len(process_wide.calls()), len(tokenspy.calls())) == (1, 0, 1)
    assert_matches(mine.calls()[0], logged(fp)[0])


@pytest.mark.parametrize("order", ["settings first", "set_handler first"])
def test_spent_budget_refuses_a_call_of_an_llm_built_from_the_users_settings(fp: FakeProvider, order: str) -> None:
    _install(order, CallbackManager([TokenCountingHandler()]), TokenSpyHandler())
    llm = openai_llm(fp)
    with tokenspy.session("capped", budget_usd=0.000001, on_exceeded="raise") as session:
        with pytest.warns(UserWarning, match="over its budget"):
            llm.chat(QUESTION)
        with pytest.raises(BudgetExceededError):
            llm.chat(QUESTION)
    assert len(fp.requests) == len(session.calls) == 1  # refused before it was sent


def test_set_handler_none_puts_back_no_settings_manager(fp: FakeProvider) -> None:
    assert Settings._callback_manager is None
    tokenspy.set_handler(TokenSpyHandler())
    [proxy] = Settings.callback_manager.handlers  # the manager LlamaIndex would create at first use
    llm = openai_llm(fp)
    tokenspy.set_handler(None)
    assert Settings._callback_manager is None
    assert llama_index.core.global_handler is None
    assert proxy not in llm.callback_manager.handlers
    llm.chat(QUESTION)
    assert tokenspy.calls() == [] and len(fp.requests) == 1


def test_set_handler_none_keeps_the_users_settings_manager_as_it_was() -> None:
    theirs = LlamaDebugHandler()
    manager = CallbackManager([theirs])
    Settings.callback_manager = manager
    tokenspy.set_handler(TokenSpyHandler())
    assert manager.handlers[0] is theirs and len(manager.handlers) == 2
    tokenspy.set_handler(None)
    assert Settings._callback_manager is manager and manager.handlers == [theirs]


def test_set_handler_none_keeps_a_handler_added_to_the_manager_it_created() -> None:
    tokenspy.set_handler(TokenSpyHandler())
    theirs = LlamaDebugHandler()
    Settings.callback_manager.add_handler(theirs)
    tokenspy.set_handler(None)
    assert Settings._callback_manager is not None and Settings._callback_manager.handlers == [theirs]


def test_set_handler_none_takes_the_forwarder_out_of_a_manager_assigned_later(fp: FakeProvider) -> None:
    tokenspy.set_handler(TokenSpyHandler())
    counter = TokenCountingHandler()
    Settings.callback_manager = CallbackManager([counter])
    llm = openai_llm(fp)
    llm.chat(QUESTION)  # the forwarder joins the new manager at the first LlamaIndex span
    assert len(Settings.callback_manager.handlers) == 2
    tokenspy.set_handler(None)
    assert Settings.callback_manager.handlers == llm.callback_manager.handlers == [counter]
    llm.chat(QUESTION)
    assert len(tokenspy.calls()) == 1 and len(counter.llm_token_counts) == 2
