"""docs/persistence.md's flush snippet: the stores `init(persist=...)` attached, flushed by hand, are read
by the CLI at once (not after the writer thread's next interval)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import tokenspy
from tokenspy.cli import main
from tokenspy_core import store


@pytest.fixture
def persisted(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "usage.db"
    tokenspy.init(persist=path)
    yield path
    store.close_all()


def test_stores_from_init_flush_by_hand_and_the_cli_reads_the_rows_at_once(
        persisted: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tokenspy.set_price("gpt-4o", input=2.5, output=10)
    tokenspy.record("gpt-4o", input_tokens=1000, output_tokens=100)
    (attached,) = store.stores()
    assert attached.path == persisted
    assert [s.flush() for s in store.stores()] == [1]
    assert main(["history", "--db", str(persisted)]) == 0
    line = capsys.readouterr().out.rstrip("\n")
    assert "(unattributed)  gpt-4o  1,000 → 100 tok  $0.0035" in line
    store.detach_store(persisted)
    assert store.stores() == []
