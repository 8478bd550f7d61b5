"""Persistence tests: every store a test attaches is closed after it (the default tracker outlives tests)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tokenspy_core import store


@pytest.fixture(autouse=True)
def _close_stores() -> Iterator[None]:
    yield
    store.close_all()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "usage.db"


def count_rows(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM calls").fetchone()[0])


@pytest.fixture
def rows() -> Callable[[Path], int]:
    return count_rows


@pytest.fixture
def python_script(tmp_path: Path) -> Callable[[str], list[str]]:
    """Write a script to a file; returns the argv that runs it in a fresh interpreter."""

    def make(source: str) -> list[str]:
        path = tmp_path / f"script_{abs(hash(source))}.py"
        path.write_text(textwrap.dedent(source), encoding="utf-8")
        return [sys.executable, str(path)]

    return make


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("TOKENSPY_DB", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def child_env() -> dict[str, str]:
    """The environment for child interpreters (strict mode inherited, no $TOKENSPY_DB)."""
    return _child_env()


@pytest.fixture
def run(python_script: Callable[[str], list[str]]) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run_script(source: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*python_script(source), *args], capture_output=True, text=True,
                              timeout=timeout, env=_child_env(), check=False)

    return run_script
