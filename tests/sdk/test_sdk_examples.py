"""The examples run offline, and tokenspy does not change a single character the program prints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TOKENSPY_LINES = ("import tokenspy", "@tokenspy.profile", "tokenspy.report()")


def run(path: Path) -> str:
    env = {**os.environ, "TOKENSPY_STRICT": "1", "PYTHONIOENCODING": "utf-8"}
    result = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=180, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_seed_example_prints_identical_text_with_and_without_tokenspy(tmp_path: Path) -> None:
    source = (EXAMPLES / "openai_stream.py").read_text(encoding="utf-8")
    without = "\n".join(
        line for line in source.splitlines() if line.split("  #")[0].strip() not in TOKENSPY_LINES
    )
    assert len(without.splitlines()) == len(source.splitlines()) - len(TOKENSPY_LINES)
    (tmp_path / "seed_without_tokenspy.py").write_text(without, encoding="utf-8")

    plain = run(tmp_path / "seed_without_tokenspy.py")
    tracked = run(EXAMPLES / "openai_stream.py")

    assert plain == "Why do programmers prefer dark mode? Because light attracts bugs.\n"
    assert tracked.startswith(plain)
    report = tracked[len(plain) :]
    assert "tokenspy cost report" in report and "stream_response" in report and "gpt-4o" in report
    assert "1 call" in report and "partial" not in report and "estimated" not in report


def test_anthropic_example_streams_and_reports() -> None:
    out = run(EXAMPLES / "anthropic_stream.py")
    assert out.startswith("A haiku: tokens fall like rain, each one counted, none wasted.\n")
    assert "write_haiku" in out and "claude-haiku-4-5" in out and "cached 6" in out
