"""`python -m tokenspy` in a real child process: the same output, clean one-line errors, exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def tokenspy(*argv: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    env.pop("TOKENSPY_STRICT", None)  # as users run it
    return subprocess.run([sys.executable, "-m", "tokenspy", *map(str, argv)], capture_output=True, text=True,
                          timeout=60, env=env, check=False)


def test_python_m_tokenspy_report_prints_the_recorded_box(dbs: Any) -> None:
    proc = tokenspy("report", "--db", dbs.both, "--no-hints")
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout == dbs.box_no_hints + "\n"


def test_python_m_tokenspy_errors_are_one_line_with_status_2(tmp_path: Path) -> None:
    proc = tokenspy("history", "--db", tmp_path / "missing.db")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == f"tokenspy: error: no tokenspy database at {tmp_path / 'missing.db'}\n"
    proc = tokenspy("report", "--since", "7x", "--db", tmp_path / "missing.db")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
