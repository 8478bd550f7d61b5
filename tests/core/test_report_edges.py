"""The box report where it meets odd terminals, calls outside every span, and unpriced models."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import warnings

import pytest

import tokenspy


def _lines() -> list[str]:
    out = io.StringIO()
    tokenspy.report(file=out, hints=False)
    return out.getvalue().splitlines()


def test_calls_outside_every_span_are_a_row_in_its_place_by_cost_with_the_unpriced_noted() -> None:
    @tokenspy.profile
    def expensive() -> None:
        tokenspy.record("gpt-4o", input_tokens=100_000, output_tokens=1_000)

    @tokenspy.profile
    def cheap() -> None:
        tokenspy.record("gpt-4o-mini", input_tokens=10, output_tokens=0)

    expensive()
    cheap()
    tokenspy.record("gpt-4o", input_tokens=10, output_tokens=5)  # $0.000075, between the two spans
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tokenspy.record("unpriced-model-zz", input_tokens=10, output_tokens=5)
    rows = [line.strip("║ ").split()[0] for line in _lines()[4:-1] if not line.strip("║ ").startswith("└─")]
    assert rows == ["expensive", "(unattributed)", "cheap"]
    unattributed = next(line for line in _lines() if "(unattributed)" in line)
    assert "$0.000075 + 1 unpriced" in unattributed


def test_an_ascii_only_stream_gets_the_ascii_box_and_names_it_cannot_print_replaced() -> None:
    for i in range(70):  # past the box's row limit: the "more rows" line
        with tokenspy.session(f"étape-{i}"):
            tokenspy.record("gpt-4o", input_tokens=1, output_tokens=1)
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="ascii")
    tokenspy.report(file=out, hints=False)
    out.flush()
    text = raw.getvalue().decode("ascii")
    assert text.startswith("+=")
    assert "... 150 more rows" in text  # 70 spans of 3 rows each (span, model, tokens), 60 shown
    assert "?tape-" in text


def test_an_unknown_model_prints_one_line_in_a_plain_script() -> None:
    script = "import tokenspy; tokenspy.record('unknown-qq', input_tokens=1, output_tokens=1)"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    said = [line for line in done.stderr.splitlines() if "no price known for model 'unknown-qq'" in line]
    assert len(said) == 1, done.stderr


def test_an_unknown_model_is_also_on_the_logger_when_logging_is_handled(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="tokenspy"), pytest.warns(UserWarning, match="unknown-rr"):
        tokenspy.record("unknown-rr", input_tokens=1, output_tokens=1)
    assert [r.getMessage() for r in caplog.records if "unknown-rr" in r.getMessage()]


@pytest.mark.parametrize("encoding", ["cp437", "cp866", "koi8_r"])
def test_a_stream_that_draws_the_box_but_not_every_glyph_or_name_still_gets_the_report(encoding: str) -> None:
    for i in range(25):  # 75 rows: the "more rows" line
        with tokenspy.session(f"résumé 日本 {i}"):
            tokenspy.record("gpt-4o", input_tokens=1, output_tokens=1)
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding=encoding)
    tokenspy.report(file=out, hints=False)
    out.flush()
    text = raw.getvalue().decode(encoding)
    assert "more rows" in text  # the "…" it cannot encode: "..." or another form, never an exception
    assert "?? 0" in text  # the name's characters it cannot print, replaced


def test_a_line_break_in_a_span_name_keeps_the_box_closed() -> None:
    with tokenspy.session("line1\nline2\r\nline3"):
        tokenspy.record("gpt-4o", input_tokens=1, output_tokens=1)
    lines = _lines()
    assert len({len(line) for line in lines}) == 1
    assert any("line1 line2 line3" in line for line in lines)


def test_the_exact_total_is_plain_decimal_text() -> None:
    tokenspy.record("gpt-4o-mini", input_tokens=1, output_tokens=0)  # $0.15 per million: 1.5e-7
    assert tokenspy.stats()["total_cost_usd_exact"] == "0.000000150000000"
