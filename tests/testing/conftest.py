from __future__ import annotations

# Works here (not only in a top-level conftest) because pytest loads `tests/test*/conftest.py` at
# startup; if this directory is renamed, move the line to tests/conftest.py.
pytest_plugins = ["tokenspy.testing.fixtures"]
