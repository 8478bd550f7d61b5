"""Tracking never breaks the user's program: internal errors are swallowed (logged) in production."""

from __future__ import annotations

import logging

import pytest
from li_helpers import openai_llm
from llama_index.core.base.llms.types import ChatMessage

import tokenspy
from tokenspy.llamaindex import TokenSpyHandler, payloads
from tokenspy.llamaindex.instrumentation import TAP
from tokenspy.testing import DEFAULT_REPLY, FakeProvider

QUESTION = [ChatMessage(role="user", content="Hi")]


def broken(*args: object) -> object:
    raise RuntimeError("tokenspy bug")


def test_an_internal_error_does_not_reach_the_user(fp: FakeProvider, handler: TokenSpyHandler,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("TOKENSPY_STRICT", "0")
    monkeypatch.setattr(payloads, "usage_of", broken)
    monkeypatch.setattr(payloads, "prompt_of_messages", broken)
    llm = openai_llm(fp, handlers=[handler])
    with caplog.at_level(logging.ERROR, logger="tokenspy"):
        assert llm.chat(QUESTION).message.content == DEFAULT_REPLY
        assert "".join(c.delta or "" for c in llm.stream_chat(QUESTION)) == DEFAULT_REPLY
    assert "tokenspy internal error" in caplog.text
    assert TAP.internal_errors == []  # swallowed and logged, not kept: production behaviour


def test_strict_mode_keeps_what_llamaindex_swallowed(fp: FakeProvider, global_handler: TokenSpyHandler,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(payloads, "usage_of", broken)
    openai_llm(fp).chat(QUESTION)  # LlamaIndex swallows dispatcher-handler exceptions...
    assert [str(e) for e in TAP.internal_errors] == ["tokenspy bug"]  # ...strict mode keeps them
    TAP.internal_errors.clear()
    assert len(tokenspy.calls()) == 1  # and the call still ended (aborted by the later span exit)
