"""Every example runs offline, with no API key, and prints the breakdown it promises."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _run(name: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k != "TOKENSPY_STRICT"}
    done = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=240,
                          env=env, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_main_demo_langchain_agent_shows_each_node_and_the_named_sub_chain() -> None:
    out = _run("langchain_agent.py")
    assert "tokenspy cost report" in out and "4 calls" in out
    rows = [line.strip("║ ").split() for line in out.splitlines() if line.startswith("║")]
    names = [row[0] for row in rows if row]
    for node in ("trip-planner", "LangGraph", "model", "tools", "summarizer"):
        assert node in names, node
    assert "unpriced" not in out


@pytest.mark.parametrize("name", ["llamaindex_query.py", "openai_stream.py", "anthropic_stream.py"])
def test_example_runs_and_reports(name: str) -> None:
    out = _run(name)
    assert "tokenspy cost report" in out and "unpriced" not in out
