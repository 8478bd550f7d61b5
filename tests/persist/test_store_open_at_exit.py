"""A stream the script never finished reading is in the database after a clean exit: aborted, partial,
with what was consumed (it used to end only at interpreter shutdown, after the stores' exit flush,
when prices could no longer be imported either)."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

OPEN_AT_EXIT = {
    "openai stream": """
        c = tokenspy.observe(openai.OpenAI(base_url=fp.openai_base_url, api_key="t", max_retries=0))
        c.chat.completions.create(model="gpt-4o", messages=PROMPT)  # finished
        s = c.chat.completions.create(model="gpt-4o", messages=PROMPT, stream=True)
        it = iter(s); next(it); next(it)  # the role chunk, then one token
    """,
    "langchain stream": """
        from langchain_openai import ChatOpenAI
        from tokenspy.langchain import TokenSpyHandler
        tokenspy.set_handler(TokenSpyHandler())
        tokenspy.record("gpt-4o", input_tokens=8, output_tokens=7)  # finished
        llm = ChatOpenAI(model="gpt-4o", base_url=fp.openai_base_url, api_key="t", max_retries=0,
                         stream_usage=True)
        g = llm.stream(PROMPT); next(g); next(g)
    """,
    "a call by hand": """
        tokenspy.record("gpt-4o", input_tokens=8, output_tokens=7)  # finished
        call = tokenspy.start_call("gpt-4o", prompt=PROMPT)
        call.add_text("Hello")
    """,
}


PREAMBLE = """
        import os, signal, sys, openai, tokenspy
        from tokenspy.testing import FakeProvider
        PROMPT = [{"role": "user", "content": "hi"}]
        tokenspy.set_price("gpt-4o", input=2.5, output=10)
        tokenspy.init(persist=sys.argv[1])
        fp = FakeProvider(chunk_delay=0.01).start()
    """


def assert_saved_partial(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        saved = conn.execute("SELECT status, partial, input_tokens, output_tokens, cost_femto FROM calls "
                             "ORDER BY rowid").fetchall()
    assert saved[0][:2] == ("finished", 0)
    status, partial, input_tokens, output_tokens, cost = saved[1]
    assert (status, partial) == ("aborted", 1) and len(saved) == 2
    assert input_tokens > 0 and output_tokens == 1 and cost > 0  # the prompt billed, one token read


@pytest.mark.parametrize("case", list(OPEN_AT_EXIT))
def test_a_call_still_open_at_exit_is_saved_partial(case: str, db: Path,
                                                     run: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    proc = run(PREAMBLE + OPEN_AT_EXIT[case], str(db))
    assert proc.returncode == 0, proc.stderr
    assert "no price known" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    assert_saved_partial(db)


@pytest.mark.parametrize("case", ["openai stream", "a call by hand"])
def test_a_call_still_open_at_sigterm_is_saved_partial(case: str, db: Path,
                                                        run: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    # `docker stop`, Kubernetes: the default action, so tokenspy's own handler ends the open calls too.
    proc = run(PREAMBLE + OPEN_AT_EXIT[case] + """
        os.kill(os.getpid(), signal.SIGTERM)
        print("not reached")
    """, str(db))
    assert proc.returncode == -signal.SIGTERM and "not reached" not in proc.stdout, proc.stderr
    assert "no price known" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    assert_saved_partial(db)
