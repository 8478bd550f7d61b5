"""`tokenspy.set_handler(handler)`: every LangChain run in the process, no callbacks passed, counted once."""

from __future__ import annotations

import subprocess
import sys
import threading

import httpx
import pytest
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tracers import context as lc_context
from lc_helpers import from_log, openai_chat

import tokenspy
from tokenspy.langchain import TokenSpyHandler, _global
from tokenspy.testing import FakeProvider


def test_importing_tokenspy_does_not_import_langchain() -> None:
    code = ("import sys, tokenspy\n"
            "print(sorted(m for m in sys.modules if m.startswith(('langchain', 'langgraph'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_global_handler_sees_runs_without_callbacks_also_in_a_plain_thread(
        fp: FakeProvider, handler: TokenSpyHandler) -> None:
    tokenspy.set_handler(handler)
    chain = (ChatPromptTemplate.from_messages([("human", "{q}")]) | openai_chat(fp)
             ).with_config(run_name="qa")
    chain.invoke({"q": "main thread"})
    # A plain thread starts from an empty context: a ContextVar set here would be invisible there.
    worker = threading.Thread(target=chain.invoke, args=({"q": "worker thread"},))
    worker.start()
    worker.join()
    records = tokenspy.calls()
    assert [r.span_path for r in records] == [("qa",), ("qa",)]
    assert all(from_log(e).matches(r) for e, r in zip(fp.requests, records, strict=True))
    assert handler.stats()["total_calls"] == 2 and handler.open_runs == 0


async def test_global_handler_sees_async_runs(
        fp: FakeProvider, aio: httpx.AsyncClient, handler: TokenSpyHandler) -> None:
    tokenspy.set_handler(handler)
    await openai_chat(fp, aio=aio).ainvoke("hi")
    (record,) = tokenspy.calls()
    assert from_log(fp.requests[0]).matches(record)


def test_handler_passed_explicitly_and_set_globally_counts_once(
        fp: FakeProvider, handler: TokenSpyHandler) -> None:
    tokenspy.set_handler(handler)
    openai_chat(fp).invoke("config", config={"callbacks": [handler]})
    openai_chat(fp, callbacks=[handler]).invoke("constructor")
    assert len(fp.requests) == len(tokenspy.calls()) == handler.stats()["total_calls"] == 2


def test_two_handlers_on_one_run_feeding_one_tracker_count_it_once(fp: FakeProvider) -> None:
    global_handler, request_handler = TokenSpyHandler(), TokenSpyHandler()
    tokenspy.set_handler(global_handler)
    openai_chat(fp).invoke("hi", config={"callbacks": [request_handler]})
    (record,) = tokenspy.calls()
    assert from_log(fp.requests[0]).matches(record)
    # The explicit handler comes first in LangChain's list, so the per-request view has it.
    assert request_handler.stats()["total_calls"] == 1 and global_handler.stats()["total_calls"] == 0


def test_set_handler_none_turns_it_off_and_a_new_handler_replaces_the_old(
        fp: FakeProvider, handler: TokenSpyHandler) -> None:
    llm = openai_chat(fp)
    tokenspy.set_handler(handler)
    llm.invoke("one")
    tokenspy.set_handler(None)
    llm.invoke("two")
    replacement = TokenSpyHandler()
    tokenspy.set_handler(replacement)
    tokenspy.set_handler(replacement)  # idempotent
    llm.invoke("three")
    assert len(fp.requests) == 3 and len(tokenspy.calls()) == 2
    assert handler.stats()["total_calls"] == 1 and replacement.stats()["total_calls"] == 1
    assert _global.get_global() is replacement


def test_the_configure_hook_is_registered_once() -> None:
    for _ in range(3):
        tokenspy.set_handler(TokenSpyHandler())
    tokenspy.set_handler(None)
    hooks: list[object] = [hook[0] for hook in lc_context._configure_hooks]
    assert hooks.count(_global._slot) == 1


@pytest.mark.parametrize("bad", ["x", 5, object()])
def test_a_tracker_that_is_not_one_is_refused_naming_it(bad: object) -> None:
    with pytest.raises(TypeError, match="tracker"):
        TokenSpyHandler(tracker=bad)  # type: ignore[arg-type]
