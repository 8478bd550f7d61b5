"""docs/testing.md's pytest example, run as written: its files are cut out of the page itself."""

from __future__ import annotations

import re
from pathlib import Path

import httpcore  # noqa: F401
import httpcore2  # noqa: F401
import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "testing.md"


def example_files() -> dict[str, str]:
    """The ```python block that starts with `# conftest.py`, split at its `# <file>.py` lines."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.DOTALL)
    (block,) = [b for b in blocks if b.startswith("# conftest.py\n")]
    parts = re.split(r"^# (\w+)\.py\n", block, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_the_fake_provider_pytest_example_passes_as_written(pytester: pytest.Pytester) -> None:
    files = example_files()
    assert sorted(files) == ["conftest", "test_costs"]
    pytester.makeconftest(files.pop("conftest"))
    pytester.makepyfile(**files)
    # Only the plugins a reader's run needs: the others cost seconds per in-process run (see
    # tests/pytest_plugin/plugin_files.py, LEAN) and pytest-asyncio warns about its unset loop scope.
    lean = "-p no:hypothesispytest -p no:langsmith_plugin -p no:asyncio -p no:unraisableexception -p no:cacheprovider"
    # The run is in-process: pytester then drops every module it imported, and httpx/httpx2 import
    # httpcore/httpcore2 only at a first request yet keep mapping its exception classes. Imported here
    # (above), they outlive the run, so later tests still get httpx.RemoteProtocolError, not httpcore's.
    result = pytester.runpytest(*lean.split())
    result.assert_outcomes(passed=1)
