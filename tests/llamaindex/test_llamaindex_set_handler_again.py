"""`tokenspy.set_handler` called again (a re-run notebook cell, a test fixture, another handler): the
components built since the first call keep the forwarder, so a spent budget still refuses their calls.

Components built from `Settings.callback_manager` share its handler list: the new forwarder goes into
the lists the last one was in, the manager tokenspy created included (made `Settings`' manager again).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from li_helpers import assert_matches, logged, openai_llm
from llama_index.core import Settings
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.callbacks import CallbackManager, LlamaDebugHandler
from llama_index.llms.openai import OpenAI

import tokenspy
from tokenspy.llamaindex import TokenSpyHandler
from tokenspy.testing import FakeProvider
from tokenspy_core import BudgetExceededError

QUESTION = [ChatMessage(role="user", content="What is the capital of France?")]


def same_handler(first: TokenSpyHandler) -> TokenSpyHandler:
    tokenspy.set_handler(first)
    return first


def another_handler(first: TokenSpyHandler) -> TokenSpyHandler:
    second = TokenSpyHandler()
    tokenspy.set_handler(second)
    return second


def after_none(first: TokenSpyHandler) -> TokenSpyHandler:
    tokenspy.set_handler(None)
    second = TokenSpyHandler()
    tokenspy.set_handler(second)
    return second


@pytest.mark.parametrize("again", [same_handler, another_handler, after_none])
def test_an_llm_built_before_set_handler_is_called_again_is_refused_by_a_spent_budget(
        fp: FakeProvider, again: Callable[[TokenSpyHandler], TokenSpyHandler]) -> None:
    first = TokenSpyHandler()
    tokenspy.set_handler(first)
    llm = openai_llm(fp)  # built from the Settings manager set_handler created
    installed = again(first)
    assert [type(h).__name__ for h in llm.callback_manager.handlers] == ["_GlobalCallbacks"]
    with tokenspy.session("capped", budget_usd=0.000001, on_exceeded="raise") as session:
        with pytest.warns(UserWarning, match="over its budget"):
            llm.chat(QUESTION)
        with pytest.raises(BudgetExceededError):
            llm.chat(QUESTION)
    [sent] = logged(fp)  # the refused call was not sent
    [record] = session.calls
    assert_matches(record, sent)
    assert installed.calls() == [record]


def test_set_handler_none_after_a_reinstall_restores_settings(fp: FakeProvider) -> None:
    tokenspy.set_handler(TokenSpyHandler())
    llm = openai_llm(fp)
    after_none(TokenSpyHandler())
    tokenspy.set_handler(None)
    assert Settings._callback_manager is None
    assert llm.callback_manager.handlers == []


def refuses_its_second_call(llm: OpenAI) -> bool:
    with tokenspy.session("capped", budget_usd=0.000001, on_exceeded="raise"):
        with pytest.warns(UserWarning, match="over its budget"):
            llm.chat(QUESTION)
        try:
            llm.chat(QUESTION)
        except BudgetExceededError:
            return True
    return False


def test_a_reinstall_reaches_a_user_manager_no_longer_in_settings(fp: FakeProvider) -> None:
    first, second = LlamaDebugHandler(), LlamaDebugHandler()
    Settings.callback_manager = replaced = CallbackManager([first])
    tokenspy.set_handler(TokenSpyHandler())
    llm = openai_llm(fp)  # shares the handler list of the user's first manager
    Settings.callback_manager = CallbackManager([second])
    after_none(TokenSpyHandler())
    [forwarder] = [h for h in Settings.callback_manager.handlers if h is not second]
    assert replaced.handlers == llm.callback_manager.handlers == [first, forwarder]
    assert refuses_its_second_call(llm)
    tokenspy.set_handler(None)
    assert (llm.callback_manager.handlers, Settings.callback_manager.handlers) == ([first], [second])


def test_a_reinstall_reaches_a_list_whose_manager_is_gone(fp: FakeProvider) -> None:
    Settings.callback_manager = CallbackManager([LlamaDebugHandler()])
    tokenspy.set_handler(TokenSpyHandler())
    llm = openai_llm(fp)  # shares the handler list of a manager nothing else keeps
    Settings.callback_manager = CallbackManager([LlamaDebugHandler()])
    openai_llm(fp).complete("Hi")  # the forwarder follows the new manager; the first one is freed
    after_none(TokenSpyHandler())
    assert refuses_its_second_call(llm)
