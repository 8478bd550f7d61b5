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


def test_pytest_example_prints_the_table_the_readme_shows() -> None:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k != "TOKENSPY_STRICT"}
    done = subprocess.run([sys.executable, "-m", "pytest", "--tokenspy", "--tokenspy-budget", "0.0005",
                           "-p", "no:randomly", str(EXAMPLES / "test_support_bot.py")],
                          capture_output=True, text=True, timeout=240, env=env, check=False,
                          cwd=EXAMPLES.parent)
    assert done.returncode == 1, done.stdout[-3000:]  # the one test over its own budget, and the run's budget
    readme = (EXAMPLES.parent / "README.md").read_text(encoding="utf-8")
    rows = ("examples/test_support_bot.py::", "total (")
    table = [line for line in done.stdout.splitlines() if line.startswith(rows)]
    assert len(table) == 5
    for line in table:
        assert line in readme, line
